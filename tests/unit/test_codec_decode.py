"""The codec decodes what it encodes, through its parse-once reader and through schema resolution."""
from __future__ import annotations

import copy
import datetime as dt
import io
import struct
from decimal import Decimal
from typing import Any

import fastavro

from hip.catalogue import load_catalogue
from hip.codec import Codec


class FakeRegistry:
    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}

    def set_compatibility(self, subject: str, level: str = "BACKWARD") -> None:
        pass

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = schema
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        return self.schemas[schema_id]


def _codec() -> Codec:
    codec = Codec("http://registry.invalid", load_catalogue())
    codec.registry = FakeRegistry()  # type: ignore[assignment]
    return codec


FEE = {"org_code": "H1", "source_system": "HIS", "source_table": "inpt_cost", "source_key": "[\"F1\"]",
       "op": "c", "source_position": "pg:1", "source_ts": 1_706_000_000_000, "ingest_ts": 1_706_000_001_000,
       "mapping_id": "vendor_b.inpt_cost", "fee_detail_id": "F1", "visit_type_code": "2",
       "amount": Decimal("12.34"), "charge_date": dt.date(2024, 1, 23), "charge_time": 1_706_000_000_000}


def test_decode_returns_the_encoded_record_with_logical_types() -> None:
    codec = _codec()
    dataset, record = codec.decode(codec.encode("medical_fee", FEE))
    assert dataset == "medical_fee"
    general = fastavro.schemaless_reader(io.BytesIO(codec.encode("medical_fee", FEE)[5:]),
                                         codec.catalogue["medical_fee"].parsed)
    assert record == general
    assert record["amount"] == Decimal("12.34") and record["charge_date"] == dt.date(2024, 1, 23)
    assert isinstance(record["charge_time"], dt.datetime)


def test_a_record_of_an_older_schema_version_is_resolved_into_the_current_one() -> None:
    codec = _codec()
    current = codec.catalogue["medical_fee"].schema
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] != "self_pay_amount"]
    old_id = codec.registry.register("std.medical_fee-value", older)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(copy.deepcopy(older)), FEE)
    dataset, record = codec.decode(struct.pack(">bI", 0, old_id) + body.getvalue())
    assert dataset == "medical_fee" and record["fee_detail_id"] == "F1" and record["self_pay_amount"] is None


def test_a_reader_that_never_registered_reads_the_catalogue_schema_without_resolution() -> None:
    writer = _codec()
    body = writer.encode("medical_fee", FEE)
    reader = Codec("http://registry.invalid", load_catalogue())  # the sink: it only reads
    reader.registry = writer.registry
    dataset, record = reader.decode(body)
    assert dataset == "medical_fee" and record == writer.decode(body)[1]
    schema_id = struct.unpack_from(">bI", body)[1]
    assert reader._writers[schema_id][1] is reader.catalogue["medical_fee"].parsed
    assert "compile_decoder" in reader._readers[schema_id][1].__qualname__

"""hip.avro_compiled writes the bytes fastavro writes, for every dataset, or declines."""
from __future__ import annotations

import datetime as dt
import io
import json
import random
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from hip.avro_compiled import Fallback, compile_decoder, compile_encoder
from hip.catalogue import load_catalogue
from hip.errors import RecordError
from hip.codec import FramedEncoder

CATALOGUE = load_catalogue()
DATASETS = [d.name for d in CATALOGUE]
TEXTS = ["", "a", "张三", "北京市朝阳区" * 12, "x" * 63, "y" * 64, "z" * 300, "I型", "\u0000", "é"]


def fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(json.dumps(schema))), record)
    return buf.getvalue()


def value_of(t: Any, rnd: random.Random, named: dict[str, Any]) -> Any:
    """A random value of Avro type ``t`` (in the Python forms the normalizer produces)."""
    if isinstance(t, list):
        return None if rnd.random() < 0.3 else value_of(t[1], rnd, named)
    if isinstance(t, str):
        if t in named:
            return value_of(named[t], rnd, named)
        return {
            "string": lambda: rnd.choice(TEXTS),
            "int": lambda: rnd.choice([0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -2**31, rnd.randint(-10**6, 10**6)]),
            "long": lambda: rnd.choice([0, 2**63 - 1, -2**63, rnd.randint(-10**15, 10**15)]),
            "boolean": lambda: rnd.random() < 0.5,
            "double": lambda: rnd.choice([0.0, -1.5, 1e300, rnd.random()]),
        }[t]()
    logical, base = t.get("logicalType"), t["type"]
    if logical == "decimal":
        scale, precision = t.get("scale", 0), t["precision"]
        digits = rnd.randint(1, precision)
        unscaled = rnd.randint(-(10**digits - 1), 10**digits - 1)
        return Decimal(unscaled).scaleb(-rnd.randint(0, min(scale, digits)))
    if logical == "date":
        return rnd.choice([dt.date(1970, 1, 1), dt.date(1900, 3, 1), dt.date(2026, 11, 26), 20000])
    if logical == "timestamp-millis":
        return rnd.choice([0, -1, 1795665600000, rnd.randint(-10**12, 10**13)])
    if base == "enum":
        return rnd.choice(t["symbols"])
    if base == "array":
        return [value_of(t["items"], rnd, named) for _ in range(rnd.choice([0, 1, 3]))]
    if base == "record":
        named[t["name"]] = t
        return {f["name"]: value_of(f["type"], rnd, named) for f in t["fields"]}
    return value_of(base, rnd, named)


def named_types(t: Any, named: dict[str, Any]) -> dict[str, Any]:
    """Every named record of ``t`` by name (a later field may refer to one by name alone)."""
    if isinstance(t, list):
        for x in t:
            named_types(x, named)
    elif isinstance(t, dict):
        if t.get("type") == "record":
            named[t["name"]] = t
            for f in t["fields"]:
                named_types(f["type"], named)
        elif t.get("type") == "array":
            named_types(t["items"], named)
    return named


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_compiles_and_writes_fastavros_bytes(dataset: str) -> None:
    schema = CATALOGUE[dataset].schema
    encode = compile_encoder(schema)
    assert encode is not None
    rnd = random.Random(dataset)
    for _ in range(60):
        record = value_of(schema, rnd, named_types(schema, {}))
        assert encode(record) == fastavro_bytes(schema, record), record


SCHEMA = {"type": "record", "name": "T", "fields": [
    {"name": "s", "type": "string"},
    {"name": "n", "type": ["null", "int"], "default": None},
    {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}],
     "default": None},
    {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
]}


@pytest.mark.parametrize("record", [
    {"n": 1},                                  # required field missing
    {"s": 5},                                  # an int for a string
    {"s": "a", "n": "1"},                      # a string for an int
    {"s": "a", "n": 2**31},                    # out of the int range
    {"s": "a", "n": True},                     # a bool is not this encoder's int
    {"s": "a", "amount": Decimal("1.234")},    # more decimals than the scale
    {"s": "a", "amount": Decimal("123.45")},   # more digits than the precision
    {"s": "a", "amount": 1.5},                 # a float for a decimal
    {"s": "a", "amount": Decimal("NaN")},
    {"s": "a", "day": dt.datetime(2026, 1, 1)},  # a datetime is not a date here
    [1, 2],
])
def test_values_it_does_not_write_are_left_to_fastavro(record: Any) -> None:
    with pytest.raises(Fallback):
        compile_encoder(SCHEMA)(record)  # type: ignore[misc]


class _Codec:
    def __init__(self) -> None:
        self.catalogue = {"t": type("D", (), {"schema": SCHEMA})()}

    def register(self, dataset: str) -> int:
        return 7


def test_framed_encoder_falls_back_to_fastavro_for_its_result_and_its_errors() -> None:
    enc = FramedEncoder(_Codec())
    header = b"\x00\x00\x00\x00\x07"
    assert enc.encode("t", {"s": "a", "amount": Decimal("1.5")}) == header + fastavro_bytes(
        SCHEMA, {"s": "a", "amount": Decimal("1.5")})
    # fastavro writes what the compiled encoder declines when it can (a datetime as a date) ...
    assert enc.encode("t", {"s": "a", "day": dt.datetime(2026, 1, 2)}) == header + fastavro_bytes(
        SCHEMA, {"s": "a", "day": dt.datetime(2026, 1, 2)})
    # ... and its error is the record's dead-letter reason when it cannot.
    with pytest.raises(RecordError) as err:
        enc.encode("t", {"s": "a", "amount": Decimal("1.234")})
    assert err.value.reason == "avro_encode" and "t: record does not fit its schema" in str(err.value)


def test_schemas_with_types_it_does_not_know_are_not_compiled() -> None:
    assert compile_encoder({"type": "record", "name": "M", "fields": [{"name": "m", "type": {"type": "map", "values": "string"}}]}) is None
    assert compile_encoder({"type": "record", "name": "U", "fields": [{"name": "u", "type": ["string", "int"]}]}) is None
    assert compile_encoder({"type": "record", "name": "D", "fields": [{"name": "d", "type": "string", "default": "x"}]}) is None


def fastavro_read(schema: dict[str, Any], body: bytes) -> Any:
    parsed = fastavro.parse_schema(json.loads(json.dumps(schema)))
    return fastavro.schemaless_reader(io.BytesIO(body), parsed, None)


def plain(record: Any, schema: Any) -> Any:
    """fastavro's reading with dates as epoch days and timestamps as epoch ms."""
    import decimal

    if isinstance(record, dict):
        return {k: plain(v, None) for k, v in record.items()}
    if isinstance(record, list):
        return [plain(v, None) for v in record]
    if isinstance(record, dt.datetime):
        return (record - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1)
    if isinstance(record, dt.date):
        return record.toordinal() - dt.date(1970, 1, 1).toordinal()
    assert not isinstance(record, decimal.Decimal) or record.is_finite()
    return record


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_reads_back_what_fastavro_reads(dataset: str) -> None:
    schema = CATALOGUE[dataset].schema
    decode = compile_decoder(schema, offset=0)
    decode_plain = compile_decoder(schema, plain_times=True, offset=2)
    assert decode is not None and decode_plain is not None
    rnd = random.Random("read" + dataset)
    for _ in range(60):
        body = fastavro_bytes(schema, value_of(schema, rnd, named_types(schema, {})))
        expected = fastavro_read(schema, body)
        got = decode(body)
        assert repr(got) == repr(expected)  # repr: Decimal exponents and datetime zones too
        assert repr(decode_plain(b"\x00\x00" + body)) == repr(plain(expected, schema))


def test_a_truncated_body_is_an_error_not_a_short_record() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]}
    body = fastavro_bytes(schema, {"s": "张三李四"})
    with pytest.raises((ValueError, IndexError)):
        compile_decoder(schema, offset=0)(body[:-2])  # type: ignore[misc]


@pytest.mark.parametrize("dataset", DATASETS)
def test_a_projected_reader_reads_its_fields_marks_presence_and_skips_the_rest(dataset: str) -> None:
    schema = CATALOGUE[dataset].schema
    names = [f["name"] for f in schema["fields"]]
    rnd = random.Random("project" + dataset)
    # every third field read, every third one for its presence only, the others skipped
    project = {name: k % 3 == 0 for k, name in enumerate(names) if k % 3 != 2}
    decode_plain = compile_decoder(schema, plain_times=True, offset=0)
    projected = compile_decoder(schema, plain_times=True, offset=0, project=project)
    assert decode_plain is not None and projected is not None
    for _ in range(60):
        body = fastavro_bytes(schema, value_of(schema, rnd, named_types(schema, {})))
        whole, got = decode_plain(body), projected(body)
        assert set(got) == set(project)
        for name, wanted in project.items():
            if wanted or whole[name] is None or whole[name] == "":
                assert repr(got[name]) == repr(whole[name]), name
            else:
                assert got[name] is True, name


def test_a_projected_reader_still_checks_the_lengths_of_what_it_skips() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "a", "type": "long"},
                                                        {"name": "s", "type": ["null", "string"]}]}
    body = fastavro_bytes(schema, {"a": 1, "s": "张三李四"})
    with pytest.raises(ValueError, match="s: a length"):
        compile_decoder(schema, offset=0, project={"a": True})(body[:-2])  # type: ignore[misc]
    with pytest.raises(ValueError, match="s: union index"):
        compile_decoder(schema, offset=0, project={"a": True})(body[:1] + b"\x04" + body[2:])  # type: ignore[misc]

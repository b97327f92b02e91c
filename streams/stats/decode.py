"""Decoding standard records for the statistics: once, into plain values, with schemas parsed once.

``hip.codec.Codec.decode`` is general: it re-parses the writer schema on every call (fastavro's
``schemaless_reader`` does) and turns dates and timestamps into ``date`` / aware ``datetime`` objects.
Both cost more than the statistics themselves. The statistics read dates and timestamps as epoch
numbers anyway (``hip.conformance.to_days`` / ``to_ms`` accept both), so this decoder reads the body
with the date and time logical types removed from the schema (the binary layout is the same: ints and
longs), keeps decimals, and compiles each schema's reader once (:mod:`hip.avro_compiled`).

By default only the fields the statistics read are decoded (``core.fields_read``): the reader
still walks every field, checking lengths and union indexes, but skips the other values, and turns
the required and recommended ones that dataset 60 counts into a mark of their presence. That took
a third off the decoding (docs/benchmarks.md). ``decode(data, whole=True)`` decodes every field;
``read`` asks for it when a record comes without the normalizer's findings, as the conformance
rules then run on it.

A record written with an older schema version than the catalogue's goes through schema resolution
(fastavro's ``schemaless_reader`` with a reader schema): correct, slower, rare, and always whole.
"""
from __future__ import annotations

import io
import struct
from typing import Any, Callable

import fastavro

from hip.avro_compiled import compile_decoder
from hip.codec import MAGIC, Codec, parsed_once_reader
from hip.errors import RecordError
from hip.records import header_findings
from streams.stats.core import fields_read

_HEADER = struct.Struct(">bI")
_PLAIN = {"date", "time-millis", "time-micros", "timestamp-millis", "timestamp-micros",
          "local-timestamp-millis", "local-timestamp-micros"}


def plain_schema(schema: Any) -> Any:
    """The schema with date/time logical types removed (values decode as epoch numbers)."""
    if isinstance(schema, list):
        return [plain_schema(s) for s in schema]
    if isinstance(schema, dict):
        if schema.get("logicalType") in _PLAIN:
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: (plain_schema(v) if k in ("type", "fields", "items", "values") else v) for k, v in schema.items()}
    return schema


class StatsDecoder:
    """Registry-framed Avro → (dataset, record) with dates as epoch days and timestamps as epoch ms."""

    def __init__(self, codec: Codec, *, quality: bool = True) -> None:
        self.codec = codec
        self.quality = quality  # whether the projection keeps dataset 60's presence marks
        self._readers: dict[int, tuple[str, Callable[[bytes], dict[str, Any]]]] = {}
        self._whole: dict[int, tuple[str, Callable[[bytes], dict[str, Any]]]] = {}

    def read(self, data: bytes, headers: Any) -> tuple[str, dict[str, Any], list[tuple[str, str]] | None]:
        """(dataset, record, the normalizer's findings) of a standard record's message: the record
        whole when it comes without findings and dataset 60 is counted (the rules then run on it)."""
        findings = header_findings(headers)
        dataset, record = self.decode(data, whole=self.quality and findings is None)
        return dataset, record, findings

    def decode(self, data: bytes, *, whole: bool = False) -> tuple[str, dict[str, Any]]:
        if len(data) < 5 or data[0] != MAGIC:
            raise RecordError("bad_magic", "not a registry-framed Avro record (magic byte missing)")
        _, schema_id = _HEADER.unpack_from(data)
        reader = (self._whole if whole else self._readers).get(schema_id)
        if reader is None:
            reader = self._reader(schema_id, whole)
        dataset, read = reader
        try:
            return dataset, read(data)
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise RecordError("avro_decode", f"schema id {schema_id}: cannot decode body: {exc}") from exc

    def _reader(self, schema_id: int, whole: bool) -> tuple[str, Callable[[bytes], dict[str, Any]]]:
        writers = self.codec._writers
        if schema_id not in writers:
            self.codec._load_writer(schema_id)
        dataset, writer_parsed = writers[schema_id]
        current = self.codec.catalogue[dataset]
        reader_plain = plain_schema(current.schema)
        # The codec shares the catalogue's parsed schema for an id whose schema is the catalogue's
        # own, exactly (not merely the same parsing canonical form, which drops decimal scales).
        same = writer_parsed is current.parsed
        project = None if whole else fields_read(dataset, current.business_key, quality=self.quality)
        fast = (compile_decoder(current.schema, plain_times=True, project=project)
                or parsed_once_reader(reader_plain)) if same else None
        if fast is not None:
            read = fast
        else:
            writer_plain = fastavro.parse_schema(plain_schema(self.codec.registry.schema_by_id(schema_id)),
                                                 _write_hint=False)
            reader_parsed = fastavro.parse_schema(reader_plain, _write_hint=False)

            def read(data: bytes) -> dict[str, Any]:
                record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer_plain,
                                                                    reader_parsed)  # type: ignore[assignment]
                return record
        cache = self._whole if whole else self._readers
        cache[schema_id] = (dataset, read)
        return cache[schema_id]

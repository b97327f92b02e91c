"""Key-level comparison of a hospital's source data with the warehouse, for one dataset.

Both sides are reduced to ``{primary key: checksum of the mapped fields}`` with the same
canonical form of every value, so a difference in type representation (``Decimal('1.50')`` from
numeric vs ``Decimal('1.5')``, a jsonb number read back as float, an instant in another zone) is
not reported as a difference while a difference in value is.

Compared: the primary key, the dataset's fields and the provenance a mapping determines
(``source_system``, ``source_table``, ``source_key``, ``mapping_id``). Not compared: what records
the moment of capture rather than the data: ``op``, ``source_position``, ``ingest_ts``,
``warehouse_ts`` and ``source_ts``. ``source_ts`` is the commit time of the change that produced
the stored version; a SELECT of the source cannot know it (a snapshot read only has its own read
time), so it would differ on every row. Freshness is watched by the exporter instead.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from sinks.core.copy import to_json
from sinks.core.table import TableLike, mapped_columns

if TYPE_CHECKING:
    from sinks.core.batch import Change

# Header fields a mapping determines from the source row, so both sides must agree on them.
PROVENANCE = ("source_system", "source_table", "source_key", "mapping_id")


def compared_fields(table: TableLike) -> tuple[list[str], list[str], frozenset[str]]:
    """(key, compared non-key fields, jsonb fields) of a warehouse table."""
    cols = mapped_columns(table)
    key = list(table.primary_key)
    present = {c.name for c in table.columns}
    fields = [c.name for c in cols if c.name not in key] + [p for p in PROVENANCE if p in present]
    json_fields = frozenset(c.name for c in cols if c.pg_type.lower() in ("jsonb", "json"))
    return key, fields, json_fields


def canonical(value: Any, *, is_json: bool = False) -> str:
    """A stable text form of one value; jsonb values compare as parsed JSON."""
    if value is None:
        return "\x00null"
    if is_json:
        text = value if isinstance(value, str) else to_json(value)
        canon: str = json.dumps(json.loads(text, parse_float=Decimal, parse_int=Decimal),
                                sort_keys=True, ensure_ascii=False, default=_json_number)
        return canon
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return _number(Decimal(value))
    if isinstance(value, float):
        return _number(Decimal(repr(value)))
    if isinstance(value, dt.datetime):
        instant: dt.datetime = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        return instant.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _number(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _json_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(_number(value)) if "." in _number(value) else int(_number(value))
    raise TypeError(type(value).__name__)


def checksum(record: Mapping[str, Any], fields: Sequence[str], json_fields: frozenset[str] = frozenset()) -> str:
    """Checksum of the mapped fields of one record (MD5 of their canonical forms)."""
    h = hashlib.md5()
    for name in fields:
        h.update(canonical(record.get(name), is_json=name in json_fields).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def key_checksums(records: Iterable[Mapping[str, Any]], key: Sequence[str], fields: Sequence[str],
                  json_fields: frozenset[str] = frozenset()) -> dict[tuple[str, ...], str]:
    """``{key: checksum}`` of a record set; key values in canonical text so both sides agree."""
    out: dict[tuple[str, ...], str] = {}
    for record in records:
        out[tuple(canonical(record.get(k)) for k in key)] = checksum(record, fields, json_fields)
    return out


@dataclass
class Difference:
    """What differs for one org and dataset; keys are canonical primary-key tuples."""

    org: str
    dataset: str
    source_rows: int = 0
    warehouse_rows: int = 0
    missing: list[tuple[str, ...]] = field(default_factory=list)
    extra: list[tuple[str, ...]] = field(default_factory=list)
    different: list[tuple[str, ...]] = field(default_factory=list)
    # Source rows the mapping core dead-letters: expected to be absent, so counted, never missing.
    rejected: int = 0
    # Keys that two source rows map to: the warehouse can hold only one of them.
    duplicates: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (not (self.missing or self.extra or self.different or self.duplicates)
                and self.source_rows == self.warehouse_rows)


class KeyChecksums:
    """``{key: checksum}`` built one record at a time, noting keys seen twice."""

    def __init__(self, key: Sequence[str], fields: Sequence[str], json_fields: frozenset[str] = frozenset()) -> None:
        self.key = list(key)
        self.fields = list(fields)
        self.json_fields = json_fields
        self.sums: dict[tuple[str, ...], str] = {}
        self.duplicates: list[tuple[str, ...]] = []
        self.rejected = 0

    def add(self, record: Mapping[str, Any]) -> None:
        k = tuple(canonical(record.get(c)) for c in self.key)
        if k in self.sums:
            self.duplicates.append(k)
        self.sums[k] = checksum(record, self.fields, self.json_fields)


def compare(org: str, dataset: str, source: Mapping[tuple[str, ...], str],
            warehouse: Mapping[tuple[str, ...], str], *, rejected: int = 0,
            duplicates: Sequence[tuple[str, ...]] = ()) -> Difference:
    """Missing (in source, not in warehouse), extra (the reverse) and different keys, sorted."""
    diff = Difference(org=org, dataset=dataset, source_rows=len(source), warehouse_rows=len(warehouse),
                      rejected=rejected, duplicates=sorted(set(duplicates)))
    for k, cs in source.items():
        other = warehouse.get(k)
        if other is None:
            diff.missing.append(k)
        elif other != cs:
            diff.different.append(k)
    diff.extra = [k for k in warehouse if k not in source]
    diff.missing.sort()
    diff.extra.sort()
    diff.different.sort()
    return diff


def live_rows(changes: Iterable[Change], key: Sequence[str]) -> list[Mapping[str, Any]]:
    """The expected live rows of a stream of changes: the sink's own fold, deletes removed."""
    from sinks.core.batch import fold  # local: keeps this module light for the source side

    return [c.record for c in fold(changes, key).winners if c.record.get("op") != "d"]


def last_wins(records: Iterable[Mapping[str, Any]], key: Sequence[str]) -> list[Mapping[str, Any]]:
    """:func:`live_rows` of plain records (no fields marked as not sent)."""
    from sinks.core.batch import Change

    return live_rows((Change(r) for r in records), key)

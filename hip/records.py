"""The shared header of every standard record, its Kafka key, and source positions.

Every record of every dataset starts with ``HEADER_FIELDS``; the dataset's own fields follow.
Topics: ``std.<dataset>``, ``stat.<dataset>``; raw change topics ``raw.<org>.<system>.<schema>.<table>``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import orjson

# Avro fields shared by every standard and statistics record (in this order).
HEADER_FIELDS: list[dict[str, Any]] = [
    {"name": "org_code", "type": "string", "doc": "组织机构代码 (DE08.10.052.00)"},
    {"name": "source_system", "type": "string", "doc": "来源系统 (HIS, LIS, PACS, EMR, MRS 病案, ANES 手麻, MAT 物资, PUSH 接口)"},
    {"name": "source_table", "type": "string", "doc": "来源表"},
    {"name": "source_key", "type": "string", "doc": "来源记录主键 (JSON array of the key column values)"},
    {"name": "op", "type": {"type": "enum", "name": "Op", "namespace": "hip.std", "symbols": ["c", "u", "d", "r"]},
     "doc": "操作: c insert, u update, d delete, r snapshot read"},
    {"name": "source_position", "type": "string",
     "doc": "来源位置: fixed-width string that sorts in change order within one org + source system"},
    {"name": "source_ts", "type": {"type": "long", "logicalType": "timestamp-millis"},
     "doc": "来源提交时间 (UTC)"},
    {"name": "ingest_ts", "type": {"type": "long", "logicalType": "timestamp-millis"},
     "doc": "平台接收时间 (UTC)"},
    {"name": "mapping_id", "type": ["null", "string"], "default": None,
     "doc": "produced by this mapping (vendor profile + table), null for pushed records"},
]
HEADER_NAMES: tuple[str, ...] = tuple(f["name"] for f in HEADER_FIELDS)

OPS = ("c", "u", "d", "r")

# Kafka header of a standard record whose source sent some columns as "unchanged, value not sent"
# (PostgreSQL's TOAST placeholder): comma-separated field names, null in the record. The warehouse
# keeps the stored value of those fields instead of overwriting it with null.
UNAVAILABLE_HEADER = "hip.unavailable"


def unavailable_header(fields: Sequence[str]) -> list[tuple[str, bytes]] | None:
    """The headers of a standard record carrying ``fields`` as unavailable (None when there are none)."""
    return [(UNAVAILABLE_HEADER, ",".join(fields).encode("utf-8"))] if fields else None


# Kafka header of a standard record from the normalizer: its conformance findings as a JSON list of
# [rule, severity] pairs ("[]" for none), computed once with the record's arrival as "now". The
# statistics of dataset 60 read them instead of running the conformance rules a second time.
FINDINGS_HEADER = "hip.findings"


def findings_header(findings: Iterable[Any]) -> tuple[str, bytes]:
    """The header carrying ``findings`` (objects or dicts with ``rule`` and ``severity``)."""
    pairs = [[f["rule"], f["severity"]] if isinstance(f, dict) else [f.rule, f.severity] for f in findings]
    return FINDINGS_HEADER, orjson.dumps(pairs)


def header_value(headers: Any, wanted: str) -> bytes | None:
    """The value of header ``wanted``: ``headers`` are pairs of name and bytes (Kafka clients) or
    a mapping (Faust may give either)."""
    for name, value in (headers.items() if isinstance(headers, Mapping) else headers or ()):
        if name == wanted:
            return value  # type: ignore[no-any-return]
    return None


def header_findings(headers: Any) -> list[tuple[str, str]] | None:
    """The [rule, severity] pairs of a findings header, or ``None`` when the record has none."""
    value = header_value(headers, FINDINGS_HEADER)
    return None if value is None else [(str(rule), str(severity)) for rule, severity in orjson.loads(value)]


def unavailable_fields(headers: Any) -> tuple[str, ...]:
    """The field names a standard record's Kafka headers mark as unavailable."""
    value = header_value(headers, UNAVAILABLE_HEADER)
    return tuple(f for f in value.decode("utf-8").split(",") if f) if value else ()


def record_key(org_code: str, business_key: Sequence[Any]) -> bytes:
    """Kafka key of a standard record: JSON array ``[org, *business key]`` in UTF-8.

    One business key always hashes to one partition, so its changes stay in order.
    """
    # orjson writes exactly json.dumps(..., ensure_ascii=False, separators=(",", ":")) for lists of
    # strings and nulls (checked for every code point in tests/unit/test_records.py), 19× faster.
    return orjson.dumps([org_code, *[None if v is None else str(v) for v in business_key]])


def std_topic(dataset: str) -> str:
    return f"std.{dataset}"


def stat_topic(dataset: str) -> str:
    return f"stat.{dataset}"


def pg_position(lsn: int, snapshot: bool) -> str:
    """Position of a PostgreSQL change: snapshot rows (which share one LSN) sort below streamed ones."""
    return f"pg:{lsn:020d}:{0 if snapshot else 1}"


def binlog_position(file: str, pos: int, row: int, snapshot: bool) -> str:
    """Position of a MariaDB/MySQL change from binlog file name, event position and row index."""
    index = int(file.rsplit(".", 1)[-1]) if file and "." in file else 0
    return f"my:{index:08d}:{pos:020d}:{row:06d}:{0 if snapshot else 1}"


def poll_position(cursor_ms: int, seq: int) -> str:
    """Position of a polled change: the poll cursor (update time in ms) and a sequence within a poll."""
    return f"pl:{cursor_ms:020d}:{seq:010d}"

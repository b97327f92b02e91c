"""The dead-letter message of the sink (topic ``dlq.sink``).

The message keeps the original key and value bytes untouched, so that a fixed record can be
re-driven by producing the value back to its topic. Everything else travels in headers (UTF-8):

=================  ==========================================================
``hip.stage``      ``sink``
``hip.reason``     short stable code (also the metric label), e.g. ``not_null_violation``
``hip.error``      the full message (field, constraint, value) from the record check or database
``hip.topic``      source topic, ``hip.partition`` and ``hip.offset`` its position
``hip.dataset``    dataset name; ``hip.org`` and ``hip.mapping_id`` when the record was decoded
``hip.failed_at``  ISO instant (UTC) of the failure
=================  ==========================================================
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from hip.errors import RecordError

DLQ_TOPIC = "dlq.sink"
STAGE = "sink"


def dead_letter_headers(error: RecordError, *, topic: str, partition: int, offset: int,
                        dataset: str | None, record: Mapping[str, Any] | None,
                        now: dt.datetime | None = None) -> list[tuple[str, bytes]]:
    """Headers of one dead letter (see the module docstring)."""
    when = (now or dt.datetime.now(dt.timezone.utc)).isoformat()
    headers = {
        "hip.stage": STAGE,
        "hip.reason": error.reason,
        "hip.error": str(error),
        "hip.topic": topic,
        "hip.partition": str(partition),
        "hip.offset": str(offset),
        "hip.failed_at": when,
    }
    if dataset:
        headers["hip.dataset"] = dataset
    if record is not None:
        for name, header in (("org_code", "hip.org"), ("mapping_id", "hip.mapping_id")):
            value = record.get(name)
            if value is not None:
                headers[header] = str(value)
    return [(k, v.encode("utf-8")) for k, v in headers.items()]


def org_of(record: Mapping[str, Any] | None) -> str:
    """Metric label for a record's hospital; ``unknown`` when it could not be decoded."""
    if record is None:
        return "unknown"
    value = record.get("org_code")
    return str(value) if value else "unknown"

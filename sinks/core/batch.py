"""One batch of standard records on its way to a table, folded to the newest version per key.

Order of versions (DESIGN rule 2): a change replaces another when its ``(source_position,
ingest_ts)`` is greater. Positions sort as plain strings within one org + source system; the
ingest time breaks ties so that a change re-normalized after a mapping fix (same position, later
ingest time) replaces the earlier output, while a redelivery of the same record (same position,
same ingest time) changes nothing. The upsert SQL applies the same order in the database.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from hip.errors import RecordError

from sinks.core.table import INGEST_TS, POSITION

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class Change:
    """A decoded record plus where it came from (kept for the dead-letter topic and offsets)."""

    record: Mapping[str, Any]
    topic: str = ""
    partition: int = -1
    offset: int = -1
    key: bytes | None = None
    value: bytes | None = None
    # Fields the source did not send (``hip.records.UNAVAILABLE_HEADER``): the stored value stays.
    keep: tuple[str, ...] = ()
    # Filled by ``fold``: the primary-key values and the version used for ordering.
    pk: tuple[Any, ...] = field(default=(), compare=False)


def _position(record: Mapping[str, Any]) -> str:
    position = record.get(POSITION)
    if not isinstance(position, str) or not position:
        raise RecordError("missing_position", f"record has no source_position: {position!r}",
                          field=POSITION)
    return position


def version(record: Mapping[str, Any]) -> tuple[str, dt.datetime]:
    """The ordering version of a record: ``(source_position, ingest_ts)``."""
    ingest = record.get(INGEST_TS)
    if not isinstance(ingest, dt.datetime):
        ingest = _EPOCH
    elif ingest.tzinfo is None:
        ingest = ingest.replace(tzinfo=dt.timezone.utc)
    return _position(record), ingest


def primary_key(record: Mapping[str, Any], key_columns: Sequence[str]) -> tuple[Any, ...]:
    """The record's primary-key values; a key column without a value makes the record unusable."""
    values = tuple(map(record.get, key_columns))
    if None in values:
        name = key_columns[values.index(None)]
        raise RecordError("missing_key", f"primary-key field {name} is null", field=name)
    return values


@dataclass
class Folded:
    """The newest change per key (in first-seen key order) and the changes that lost or failed."""

    winners: list[Change]
    superseded: int
    rejected: list[tuple[Change, RecordError]]


def fold(changes: Iterable[Change], key_columns: Sequence[str]) -> Folded:
    """Keep the newest version of every key; a later offset wins a tie (it was produced later)."""
    best: dict[tuple[Any, ...], Change] = {}
    rejected: list[tuple[Change, RecordError]] = []
    seen = 0
    for change in changes:
        try:
            change.pk = pk = primary_key(change.record, key_columns)
            _position(change.record)
        except RecordError as exc:
            rejected.append((change, exc))
            continue
        seen += 1
        held = best.get(pk)
        # Versions are compared only when a key comes twice: most batches hold each key once.
        if held is None:
            best[pk] = change
        elif version(held.record) <= version(change.record):
            if change.keep:
                _inherit(change, held)
            best[pk] = change
    winners = list(best.values())
    return Folded(winners=winners, superseded=seen - len(winners), rejected=rejected)


def _inherit(newer: Change, older: Change) -> None:
    """``newer`` did not carry some fields: take them from the version it replaces in this batch."""
    known = [f for f in newer.keep if f not in older.keep]
    if not known:
        return
    record = dict(newer.record)
    for name in known:
        record[name] = older.record.get(name)
    newer.record = record
    newer.keep = tuple(f for f in newer.keep if f in older.keep)

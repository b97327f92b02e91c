"""Source rows as snapshot change events: the source side of reconciliation. Pure: no I/O.

A row read with SELECT is encoded the way Debezium encodes it (JsonConverter, schemas disabled,
``decimal.handling.mode=string``, time.precision.mode=connect), wrapped in an ``op = "r"`` envelope
and handed to :func:`streams.core.normalize.normalize`, so the standard records computed here come
from exactly the code the normalizer runs. The encoders are the inverses of
:func:`streams.core.source.decoder_for`: ``decode(encode(v)) == v`` for every value a driver returns.

Dictionary tables (departments, staff, drugs …) are read before the tables whose mappings look
them up, as the normalizer rebuilds its lookups from their topics before it consumes anything.
"""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence

from streams.core.mapping import MappingSet
from streams.core.normalize import Check, Output, normalize
from streams.core.source import Column, Table

Encoder = Callable[[Any], Any]

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH_NAIVE = datetime(1970, 1, 1)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encoder_for(column: Column, dialect: str) -> Encoder:
    """A function turning one driver value of ``column`` into Debezium's JSON value (None stays None)."""
    kind = column.kind
    if kind == "string":
        return lambda v: v if v is None or isinstance(v, str) else (
            bytes(v).decode("utf-8") if isinstance(v, (bytes, bytearray, memoryview)) else str(v))
    if kind == "int":
        return lambda v: None if v is None else int(v)
    if kind == "decimal":
        return lambda v: None if v is None else format(Decimal(v), "f")
    if kind == "bool":
        return lambda v: None if v is None else bool(v)
    if kind == "date":
        def enc_date(v: Any) -> Any:
            # MariaDB's zero date reaches the driver as a string; Debezium sends it as null.
            if not isinstance(v, date):
                return None
            day = v.date() if isinstance(v, datetime) else v
            return (day - _EPOCH_DATE).days
        return enc_date
    if kind == "datetime":
        # time.precision.mode=connect: epoch milliseconds of the wall clock, as the decoder reads it.
        def enc_datetime(v: Any) -> Any:
            if not isinstance(v, datetime):
                return None
            return _micros(v.replace(tzinfo=None) - _EPOCH_NAIVE) // 1000
        return enc_datetime
    if kind == "timestamptz":
        def enc_tstz(v: Any) -> Any:
            if not isinstance(v, datetime):
                return None
            # Naive values come from a session whose time zone the reader set to UTC.
            instant = v if v.tzinfo is not None else v.replace(tzinfo=timezone.utc)
            return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return enc_tstz
    if kind == "time":
        def enc_time(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, timedelta):  # PyMySQL returns TIME as a duration
                return _micros(v) // 1000
            if isinstance(v, time):
                return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000
            return None
        return enc_time
    if kind == "double":
        return lambda v: None if v is None else float(v)
    raise ValueError(f"unknown column kind {kind}")


def row_encoders(table: Table, dialect: str) -> dict[str, Encoder]:
    """Encoders of every described column of ``table``."""
    return {c.name: encoder_for(c, dialect) for c in table.columns.values()}


def row_image(encoders: Mapping[str, Encoder], row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``after`` image of one row; columns the description does not know are left out."""
    return {name: enc(row[name]) for name, enc in encoders.items() if name in row}


def read_event(after: dict[str, Any], *, read_ms: int, seq: int, db: str, schema: str, table: str) -> bytes:
    """A snapshot-read change event (``op = "r"``) in the poll envelope's shape."""
    source = {"connector": "poll", "cursor_ms": read_ms, "seq": seq, "ts_ms": read_ms, "snapshot": "true",
              "db": db, "schema": schema, "table": table}
    return json.dumps({"op": "r", "before": None, "after": after, "source": source, "ts_ms": read_ms},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def snapshot_order(org: str, tables: Iterable[str], mappings: MappingSet) -> list[str]:
    """Mapped tables of ``tables`` in read order: dictionary tables first, unmapped ones dropped."""
    routed = [t for t in tables if mappings.route(org, t) is not None]
    dictionaries = [t for t in routed if mappings.routes[(org, t)].dictionary_key is not None]
    return dictionaries + [t for t in routed if t not in dictionaries]


def snapshot_outputs(org: str, system: str, schema: str, tables: Sequence[str],
                     read: Callable[[str], Iterable[Mapping[str, Any]]], mappings: MappingSet,
                     lookups: MutableMapping[str, Any], *, dialect: str, read_ms: int,
                     check: Check | None = None) -> Iterator[tuple[str, Output]]:
    """(table, standard record or dead letter) for every row ``read(table)`` yields.

    ``tables`` are the actual (hospital-renamed) table names; ``read`` returns driver rows as
    mappings of column name to value. ``lookups`` is filled from the dictionary tables on the way.
    """
    seq = 0
    for table in snapshot_order(org, tables, mappings):
        route = mappings.routes[(org, table)]
        encoders = row_encoders(route.table, dialect)
        topic = f"raw.{org}.{system}.{schema}.{table}"
        for offset, row in enumerate(read(table)):
            seq += 1
            value = read_event(row_image(encoders, row), read_ms=read_ms, seq=seq, db=schema, schema=schema,
                               table=table)
            for out in normalize(None, value, topic, 0, offset, mappings, lookups, check=check, now_ms=read_ms):
                yield table, out

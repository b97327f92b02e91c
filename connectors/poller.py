"""Poll mode, pure core: change events in Debezium's envelope from rows read with SELECT only.

The adapter (``connectors.poll_worker``) runs the queries built here and produces the events.
Values are encoded as Debezium encodes them with the platform's connector settings
(``decimal.handling.mode=string``, ``time.precision.mode=connect``, JSON without schemas), so the
normalizer cannot tell a polled change from a logged one except by its position.
"""
from __future__ import annotations

import base64
import calendar
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

from hip.records import poll_position

CONNECTOR = "poll"
VERSION = "hip-poller/1"
_EPOCH = dt.date(1970, 1, 1)


def encode_value(v: Any) -> Any:
    """One column value as Debezium's JsonConverter would write it."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            # Debezium reads a zone-less wall clock as if it were UTC (connect precision: ms).
            return calendar.timegm(v.timetuple()) * 1000 + v.microsecond // 1000
        utc = v.astimezone(dt.timezone.utc)
        return utc.isoformat().replace("+00:00", "Z")
    if isinstance(v, dt.date):
        return (v - _EPOCH).days
    if isinstance(v, dt.time):
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000
    if isinstance(v, dt.timedelta):
        return int(v.total_seconds() * 1000)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return str(v)


def encode_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: encode_value(v) for k, v in row.items()}


def cursor_ms(value: Any, timezone: str) -> int:
    """A cursor value as a sortable integer: epoch ms of the instant, or the counter itself."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=ZoneInfo(timezone))
        return int(aware.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=ZoneInfo(timezone)).timestamp() * 1000)
    return int(value)


@dataclass
class TableState:
    """Durable progress of one polled table (stored in the compacted cursor topic)."""

    cursor: Any = None          # last cursor value emitted (datetime or int); None before the snapshot
    # key of the last row at ``cursor``; None: rows at ``cursor`` are still due; []: none are
    last_key: list[Any] | None = None
    seq: int = 0                # events emitted so far: the second half of every poll position
    snapshot_done: bool = False

    def to_json(self) -> bytes:
        cur: Any = self.cursor
        kind = "int"
        if isinstance(cur, dt.datetime):
            kind, cur = "ts", cur.isoformat()
        return json.dumps({"cursor": cur, "kind": kind, "last_key": self.last_key, "seq": self.seq,
                           "snapshot_done": self.snapshot_done}, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TableState:
        d = json.loads(data)
        cur = d["cursor"]
        if d.get("kind") == "ts" and cur is not None:
            cur = dt.datetime.fromisoformat(cur)
        return cls(cursor=cur, last_key=d.get("last_key"), seq=int(d.get("seq", 0)),
                   snapshot_done=bool(d.get("snapshot_done")))


@dataclass(frozen=True)
class TableRef:
    org: str
    system: str
    database: str
    schema: str
    table: str
    key: tuple[str, ...]
    cursor: str
    cursor_kind: str
    timezone: str
    db: str  # postgresql | mariadb | mysql

    @property
    def state_key(self) -> str:
        return f"{self.org}.{self.system}.{self.schema}.{self.table}"


@dataclass
class Emitted:
    """One event ready to produce."""

    topic: str
    key: bytes
    value: bytes


@dataclass
class Envelope:
    ref: TableRef
    topic: str
    events: list[Emitted] = field(default_factory=list)

    def add(self, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
            source_ms: int, state: TableState, snapshot: bool, now_ms: int) -> None:
        state.seq += 1
        row = after if after is not None else before
        assert row is not None
        key = {k: row[k] for k in self.ref.key}
        source: dict[str, Any] = {
            "version": VERSION, "connector": CONNECTOR, "name": f"raw.{self.ref.org}.{self.ref.system}",
            "ts_ms": source_ms, "snapshot": "true" if snapshot else "false", "db": self.ref.database,
            "table": self.ref.table, "poll_position": poll_position(max(source_ms, 0), state.seq),
        }
        if self.ref.db == "postgresql":
            source["schema"] = self.ref.schema
        value = {"before": before, "after": after, "op": op, "ts_ms": now_ms, "source": source}
        self.events.append(Emitted(self.topic, _dumps(key), _dumps(value)))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def key_of(row: dict[str, Any], key: Sequence[str]) -> tuple[Any, ...]:
    return tuple(encode_value(row[k]) for k in key)


def changes_from_rows(env: Envelope, rows: Iterable[dict[str, Any]], state: TableState,
                      known: set[tuple[Any, ...]], *, snapshot: bool, now_ms: int, advance: bool = True) -> None:
    """Turn fetched rows into c/u/r events, adding to ``known`` as it goes.

    Rows of the cursor query (``advance``, not ``snapshot``) move the cursor: they come in cursor
    order. Rows found any other way (by key) must leave it where it is.
    """
    ref = env.ref
    for row in rows:
        k = key_of(row, ref.key)
        op = "r" if snapshot else ("u" if k in known else "c")
        known.add(k)
        cur = row.get(ref.cursor)
        source_ms = cursor_ms(cur, ref.timezone) if cur is not None else now_ms
        env.add(op, None, encode_row(row), source_ms, state, snapshot, now_ms)
        if advance and not snapshot and cur is not None:
            state.cursor = cur
            state.last_key = [row[c] if not isinstance(row[c], (dt.datetime, dt.date, Decimal))
                              else str(row[c]) for c in ref.key]


def behind_cursor(row: dict[str, Any], ref: TableRef, state: TableState) -> bool:
    """True when the cursor query has passed ``row`` (or never will: no update time).

    A row the key comparison finds ahead of the cursor is the cursor query's to read, in order.
    """
    cur = row.get(ref.cursor)
    if cur is None or state.cursor is None:
        return True
    return cursor_ms(cur, ref.timezone) <= cursor_ms(state.cursor, ref.timezone)


def deletes_from_keys(env: Envelope, known: set[tuple[Any, ...]], current: set[tuple[Any, ...]],
                      state: TableState, now_ms: int) -> list[tuple[Any, ...]]:
    """Keys that vanished from the source become deletes (before = the key, like REPLICA IDENTITY DEFAULT).

    Returns the vanished keys; ``known`` loses them.
    """
    gone = sorted(known - current, key=lambda t: json.dumps(t, default=str))
    last = cursor_ms(state.cursor, env.ref.timezone) if state.cursor is not None else 0
    for k in gone:
        before = dict(zip(env.ref.key, k))
        # A delete is seen now, after every update already emitted: position it after the cursor.
        env.add("d", before, None, max(now_ms, last), state, False, now_ms)
        known.discard(k)
    return gone


def quote_ident(db: str, name: str) -> str:
    if db == "postgresql":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"


def table_sql(ref: TableRef) -> str:
    return f"{quote_ident(ref.db, ref.schema)}.{quote_ident(ref.db, ref.table)}"


def incremental_query(ref: TableRef, state: TableState, limit: int, lag_s: int,
                      utc_offset_s: int) -> tuple[str, list[Any]]:
    """Rows changed after the stored cursor, oldest first, at most ``limit``.

    Timestamp cursors stop ``lag_s`` before the database's own clock so that a transaction still
    open with an older update time is not overtaken; an incrementing cursor needs no such margin.
    """
    def q(c: str) -> str:
        return quote_ident(ref.db, c)

    cols = [q(ref.cursor), *[q(k) for k in ref.key]]
    where: list[str] = [f"{q(ref.cursor)} IS NOT NULL"]
    params: list[Any] = []
    if state.cursor is not None:
        if not state.last_key:
            # [] right after the snapshot, which read every row up to its starting cursor
            where.append(f"{q(ref.cursor)} {'>=' if state.last_key is None else '>'} %s")
            params.append(state.cursor)
        else:
            where.append(f"({', '.join(cols)}) > ({', '.join(['%s'] * len(cols))})")
            params.extend([state.cursor, *state.last_key])
    if ref.cursor_kind == "timestamp":
        clause, param = frontier(ref, lag_s, utc_offset_s)
        where.append(clause)
        params.append(param)
    sql = (f"SELECT * FROM {table_sql(ref)} WHERE {' AND '.join(where)} "
           f"ORDER BY {', '.join(cols)} LIMIT {int(limit)}")
    return sql, params


def frontier(ref: TableRef, lag_s: int, utc_offset_s: int) -> tuple[str, int]:
    """The condition "update time at least ``lag_s`` behind the database's clock", and its parameter."""
    col = quote_ident(ref.db, ref.cursor)
    if ref.db == "postgresql":
        return f"{col} <= LOCALTIMESTAMP - make_interval(secs => %s)", lag_s
    # The session runs in UTC (TIMESTAMP columns then read as UTC); DATETIME cursors are local.
    return f"{col} <= UTC_TIMESTAMP() + INTERVAL %s SECOND", utc_offset_s - lag_s


def snapshot_query(ref: TableRef, after_key: Sequence[Any] | None, limit: int) -> tuple[str, list[Any]]:
    """One page of the initial snapshot, by key (rows with a NULL cursor included)."""
    keys = [quote_ident(ref.db, k) for k in ref.key]
    where, params = "", []
    if after_key is not None:
        where = f" WHERE ({', '.join(keys)}) > ({', '.join(['%s'] * len(keys))})"
        params = list(after_key)
    return (f"SELECT * FROM {table_sql(ref)}{where} ORDER BY {', '.join(keys)} LIMIT {int(limit)}", params)


def max_cursor_query(ref: TableRef, lag_s: int, utc_offset_s: int) -> tuple[str, list[Any]]:
    """Where the cursor starts after the snapshot: the newest update time already due.

    Rows stamped later may still be committing; the cursor query reads them once due (those the
    snapshot saw too come twice, harmlessly: same row, later position).
    """
    sql = f"SELECT MAX({quote_ident(ref.db, ref.cursor)}) FROM {table_sql(ref)}"
    if ref.cursor_kind != "timestamp":
        return sql, []
    clause, param = frontier(ref, lag_s, utc_offset_s)
    return f"{sql} WHERE {clause}", [param]


def keys_query(ref: TableRef) -> str:
    return f"SELECT {', '.join(quote_ident(ref.db, k) for k in ref.key)} FROM {table_sql(ref)}"


def rows_by_key_query(ref: TableRef, n: int) -> str:
    """Rows for ``n`` keys (found by the key comparison, e.g. inserted with a NULL update time)."""
    one = "(" + ", ".join(f"{quote_ident(ref.db, k)} = %s" for k in ref.key) + ")"
    return f"SELECT * FROM {table_sql(ref)} WHERE " + " OR ".join([one] * n)

"""Debezium change events as the connectors would write them, made from the simulator's workload.

For the benchmark and the unit tests: the same tables, values and encodings as the real stack
(JsonConverter without schemas, ``decimal.handling.mode=string``, dates as epoch days, local
date-times as wall-clock epoch ms on MariaDB and µs on PostgreSQL ``timestamp``), without a
database or Kafka. Updates and deletes carry full before-images (binlog ``FULL`` rows, PostgreSQL
``REPLICA IDENTITY FULL``).
"""
from __future__ import annotations

import json
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any, Iterable, Iterator

from connectors.simulator.profiles import PROFILES, Profile
from connectors.simulator.workload import Transaction, Workload, seed_transactions
from connectors.topics import raw_topic
from streams.core.source import SourceDescription, Table, parse_ddl

RawMessage = tuple[bytes | None, bytes | None, str, int, int]
_EPOCH = datetime(1970, 1, 1)


def _encode(value: Any, kind: str, micros: bool) -> Any:
    if value is None:
        return None
    if kind == "date" and isinstance(value, date):
        d = value.date() if isinstance(value, datetime) else value
        return (d - date(1970, 1, 1)).days
    if kind == "datetime" and isinstance(value, datetime):
        delta = value.replace(tzinfo=None) - _EPOCH
        return delta // (delta.resolution * 1000)  # connect precision: epoch ms
    if kind == "timestamptz" and isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if kind == "time" and isinstance(value, time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 + value.microsecond // 1000
    if kind == "decimal":
        return str(value)
    if kind == "bool":
        return bool(value)
    if kind == "double":
        return float(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


class EventFactory:
    """Turns simulator transactions into Debezium messages for one simulated hospital."""

    def __init__(self, profile: Profile, org: str, *, system: str = "HIS", database: str = "hisdb") -> None:
        self.profile = profile
        self.org = org
        self.system = system
        self.schema = profile.schema or database
        self.database = database
        self.source: SourceDescription = parse_ddl(profile.ddl, profile.dialect)
        self.rows: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self.offsets: dict[str, int] = {}
        self.position = 1_000_000
        self.ts_ms = 1_709_251_200_000

    def _image(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        pg = self.profile.dialect == "postgres"
        out: dict[str, Any] = {}
        for name, col in table.columns.items():
            fsp = col.precision if col.precision is not None else (6 if pg else 0)
            out[name] = _encode(row.get(name), col.kind, fsp > 3)
        return out

    def _source(self, table: str, snapshot: bool, row_no: int) -> dict[str, Any]:
        if self.profile.dialect == "postgres":
            return {"version": "3.6.1.Final", "connector": "postgresql", "name": f"raw.{self.org}.{self.system}",
                    "ts_ms": self.ts_ms, "snapshot": "true" if snapshot else "false", "db": self.database,
                    "schema": self.schema, "table": table, "txId": self.position // 100, "lsn": self.position}
        return {"version": "3.5.0.Final", "connector": "mariadb", "name": f"raw.{self.org}.{self.system}",
                "ts_ms": self.ts_ms, "snapshot": "true" if snapshot else "false", "db": self.database,
                "table": table, "server_id": 1, "file": "mysql-bin.000003", "pos": self.position, "row": row_no}

    def messages(self, transactions: Iterable[Transaction], *, snapshot: bool = False) -> Iterator[RawMessage]:
        """One message per row change, in commit order."""
        for tx in transactions:
            self.position += 160
            self.ts_ms += 1500
            for row_no, op in enumerate(tx.ops):
                table = self.source.tables[op.table]
                keyvals = tuple(op.key[k] for k in table.key)
                state_key = (op.table, keyvals)
                before = self.rows.get(state_key)
                if op.kind == "insert":
                    after = {c: None for c in table.columns} | op.values
                    self.rows[state_key] = after
                    dbz_op, before_img, after_img = ("r" if snapshot else "c"), None, self._image(table, after)
                elif op.kind == "update":
                    after = {**(before or {c: None for c in table.columns}), **op.values}
                    self.rows[state_key] = after
                    dbz_op = "u"
                    before_img = self._image(table, before) if before else None
                    after_img = self._image(table, after)
                else:
                    self.rows.pop(state_key, None)
                    dbz_op = "d"
                    before_img = self._image(table, before or {**op.key})
                    after_img = None
                topic = raw_topic(self.org, self.system, self.schema, op.table)
                key = json.dumps({k: _encode(op.key[k], table.columns[k].kind, False) for k in table.key},
                                 ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                value = json.dumps({"before": before_img, "after": after_img,
                                    "source": self._source(op.table, snapshot, row_no), "op": dbz_op,
                                    "ts_ms": self.ts_ms + 20, "transaction": None},
                                   ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                offset = self.offsets.get(topic, 0)
                self.offsets[topic] = offset + 1
                yield key, value, topic, 0, offset


def workload_events(vendor: str, org: str, changes: int, *, seed: int = 1, dirty: float = 0.0,
                    start: datetime | None = None) -> list[RawMessage]:
    """Dictionary snapshot rows, then ``changes`` workload row changes of one hospital."""
    profile = PROFILES[vendor]
    factory = EventFactory(profile, org)
    out = list(factory.messages(seed_transactions(profile), snapshot=True))
    workload = Workload(profile, seed=seed, start=start or datetime(2024, 3, 1, 7, 30), dirty=dirty)
    out.extend(factory.messages(workload.take(changes)))
    return out

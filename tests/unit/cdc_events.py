"""Turn simulator row operations into the change events Debezium would emit for them.

Encodings follow the connectors' JSON converter with schemas disabled and
``decimal.handling.mode=string``: local date-times as wall-clock epoch ms (MariaDB DATETIME) or µs
(PostgreSQL timestamp), dates as epoch days, timestamptz as ISO-8601 UTC strings. MariaDB rows
carry full before-images; PostgreSQL tables keep REPLICA IDENTITY DEFAULT, so updates carry no
before-image and deletes only the key.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Iterator

from connectors.simulator.profiles import Profile
from connectors.simulator.workload import Transaction
from streams.core.source import SourceDescription, Table, parse_ddl

_EPOCH = datetime(1970, 1, 1)


def encode_value(value: Any, kind: str, dialect: str) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        delta = value - _EPOCH
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        return micros // 1000  # time.precision.mode=connect: epoch ms for both databases
    if kind == "timestamptz":
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == "date":
        return (value - date(1970, 1, 1)).days
    if kind == "decimal":
        return str(Decimal(value))
    return value


class EventStream:
    """Keeps table state so updates and deletes get the images a connector would send."""

    def __init__(self, profile: Profile, org: str, database: str) -> None:
        self.profile = profile
        self.source: SourceDescription = parse_ddl(profile.ddl, profile.dialect)
        self.org = org
        self.database = database
        self.state: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self.position = 1000
        self.ts_ms = 1_709_251_200_000

    def topic(self, table: str) -> str:
        schema = self.profile.schema or self.database
        return f"raw.{self.org}.HIS.{schema}.{table}"

    def _encode(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        return {c.name: encode_value(row.get(c.name), c.kind, self.profile.dialect) for c in table.columns.values()}

    def _source(self, table: str, row_index: int) -> dict[str, Any]:
        self.position += 97
        if self.profile.dialect == "postgres":
            return {"connector": "postgresql", "db": self.database, "schema": "his", "table": table,
                    "lsn": self.position, "snapshot": "false", "ts_ms": self.ts_ms}
        return {"connector": "mariadb", "db": self.database, "table": table, "file": "mariadb-bin.000003",
                "pos": self.position, "row": row_index, "snapshot": "false", "ts_ms": self.ts_ms}

    def events(self, transactions: Iterable[Transaction]) -> Iterator[tuple[bytes, bytes, str, dict[str, Any]]]:
        """(key bytes, value bytes, topic, op info) for every row change."""
        for tx in transactions:
            self.ts_ms += 1000
            for i, op in enumerate(tx.ops):
                table = self.source.tables[op.table]
                key_values = tuple(op.key[k] for k in table.key)
                sk = (op.table, key_values)
                if op.kind == "insert":
                    row = {c: op.values.get(c) for c in table.columns}
                    self.state[sk] = row
                    before, after, code = None, self._encode(table, row), "c"
                elif op.kind == "update":
                    old = dict(self.state.get(sk) or {c: op.key.get(c) for c in table.columns})
                    new = dict(old, **op.values)
                    self.state[sk] = new
                    before = self._encode(table, old) if self.profile.dialect == "mariadb" else None
                    after, code = self._encode(table, new), "u"
                else:
                    old = self.state.pop(sk, None) or {c: op.key.get(c) for c in table.columns}
                    if self.profile.dialect == "postgres":
                        old = {c: (old.get(c) if c in table.key else None) for c in table.columns}
                    before, after, code = self._encode(table, old), None, "d"
                key = {k: encode_value(op.key[k], table.columns[k].kind, self.profile.dialect) for k in table.key}
                value = {"before": before, "after": after, "source": self._source(op.table, i), "op": code,
                         "ts_ms": self.ts_ms + 150}
                info = {"table": op.table, "kind": op.kind, "dirty": op.dirty}
                yield (json.dumps(key, ensure_ascii=False).encode(), json.dumps(value, ensure_ascii=False).encode(),
                       self.topic(op.table), info)
                if code == "d":
                    yield json.dumps(key).encode(), None, self.topic(op.table), {"table": op.table, "kind": "tombstone", "dirty": None}  # type: ignore[misc]

"""Adapters that read the systems the exporter and the status view observe.

Every call has a short timeout: a slow or dead backend must cost one failed read, never a hung
scrape. Errors surface as ``TransientError`` so the caller can mark the backend down and go on.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

import requests

from hip.errors import TransientError
from hip.observability.model import (
    ConnectorStatus, PartitionLag, binlog_lag_bytes, binlog_number, group_lags, parse_connectors,
    parse_properties, resolve_config_value,
)

TIMEOUT_S = 3.0

# ---------------------------------------------------------------------------------------------
# Kafka


_ADMINS: dict[str, Any] = {}
_kafka_log = logging.getLogger("hip.observability.kafka")


def _admin(bootstrap: str, timeout_s: float) -> Any:
    # One client per process: a new AdminClient per read would leak librdkafka threads.
    from confluent_kafka.admin import AdminClient

    if bootstrap not in _ADMINS:
        _ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap,
                                          "socket.timeout.ms": int(timeout_s * 1000)},
                                         logger=_kafka_log)
    return _ADMINS[bootstrap]


def read_consumer_lags(bootstrap: str, timeout_s: float = TIMEOUT_S) -> list[PartitionLag]:
    """Lag of every consumer group with committed offsets, per partition."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin._listoffsets import OffsetSpec

    admin = _admin(bootstrap, timeout_s)
    try:
        listing = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        for g in listing.valid:
            fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g.group_id)],
                                                    request_timeout=timeout_s)[g.group_id]
            parts = fut.result(timeout=timeout_s).topic_partitions or []
            offsets = {(tp.topic, tp.partition): tp.offset for tp in parts if tp.error is None}
            if offsets:
                committed[g.group_id] = offsets
        wanted = {tp for offsets in committed.values() for tp in offsets}
        if not wanted:
            return []
        ends = _offsets(admin, wanted, OffsetSpec.latest(), timeout_s, TopicPartition)  # type: ignore[no-untyped-call]
        starts = _offsets(admin, wanted, OffsetSpec.earliest(), timeout_s, TopicPartition)  # type: ignore[no-untyped-call]
    except KafkaException as exc:
        raise TransientError(f"kafka: {exc}") from exc
    except TimeoutError as exc:
        raise TransientError("kafka: timed out") from exc
    out: list[PartitionLag] = []
    for group, offsets in sorted(committed.items()):
        out.extend(group_lags(group, offsets, ends, starts))
    return out


def _offsets(admin: Any, wanted: Iterable[tuple[str, int]], spec: Any, timeout_s: float,
             topic_partition: Any) -> dict[tuple[str, int], int]:
    request = {topic_partition(t, p): spec for t, p in wanted}
    out: dict[tuple[str, int], int] = {}
    for tp, fut in admin.list_offsets(request, request_timeout=timeout_s).items():
        try:
            out[(tp.topic, tp.partition)] = fut.result(timeout=timeout_s).offset
        except Exception:  # noqa: BLE001 - a deleted topic must not hide every other partition
            continue
    return out


# ---------------------------------------------------------------------------------------------
# Kafka Connect


def read_connectors(connect_url: str, timeout_s: float = TIMEOUT_S) -> list[ConnectorStatus]:
    """Every connector with its state, task states and config, from one REST call."""
    try:
        resp = requests.get(f"{connect_url}/connectors",
                            params=[("expand", "status"), ("expand", "info")], timeout=timeout_s)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise TransientError(f"connect: {exc}") from exc
    return parse_connectors(resp.json())


def read_connector_offset(connect_url: str, name: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The source offset Connect stored for a connector (Debezium's position), {} when none."""
    try:
        resp = requests.get(f"{connect_url}/connectors/{name}/offsets", timeout=timeout_s)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise TransientError(f"connect offsets of {name}: {exc}") from exc
    offsets = resp.json().get("offsets") or []
    return dict(offsets[0].get("offset") or {}) if offsets else {}


# ---------------------------------------------------------------------------------------------
# Source databases, read with the connector's own credentials


def _read_properties_file(path: str) -> Mapping[str, str]:
    try:
        return parse_properties(Path(path).read_text(encoding="utf-8"))
    except OSError:
        return {}


def connector_credentials(config: Mapping[str, str]) -> dict[str, Any]:
    """Host, port, user, password and database of a Debezium connector, providers expanded."""
    def get(key: str, default: str = "") -> str:
        return resolve_config_value(str(config.get(key, default)), _read_properties_file, os.environ)
    return {"host": get("database.hostname", "127.0.0.1"), "port": int(get("database.port", "0") or 0),
            "user": get("database.user"), "password": get("database.password"),
            "dbname": get("database.dbname")}


@dataclass(frozen=True)
class SlotReading:
    """A PostgreSQL replication slot as the source reports it."""

    slot: str
    active: bool
    retained_bytes: float
    lag_bytes: float


@dataclass(frozen=True)
class BinlogReading:
    """A MariaDB source's binlog head, retention, and the connector's distance from the head."""

    file_number: int
    position: int
    retained_bytes: int
    lag_bytes: int | None


def engine_of(connector_class: str) -> str:
    """``postgresql`` / ``mariadb`` / "" from a Debezium connector class name (the fleet's names)."""
    c = connector_class.lower()
    if "postgres" in c:
        return "postgresql"
    if "mariadb" in c or "mysql" in c:
        return "mariadb"
    return ""


def read_pg_slot(conn: ConnectorStatus, timeout_s: float = TIMEOUT_S) -> SlotReading | None:
    """The connector's replication slot (None when the slot does not exist)."""
    import psycopg2

    cred = connector_credentials(conn.config)
    slot = str(conn.config.get("slot.name", "debezium"))
    try:
        with psycopg2.connect(host=cred["host"], port=cred["port"] or 5432, user=cred["user"],
                              password=cred["password"], dbname=cred["dbname"] or "postgres",
                              connect_timeout=max(1, int(timeout_s)),
                              options=f"-c statement_timeout={int(timeout_s * 1000)}",
                              application_name="hip-exporter") as db, db.cursor() as cur:
            cur.execute(
                "SELECT active,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn),"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
                " FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
        db.close()
    except psycopg2.Error as exc:
        raise TransientError(f"source {conn.org}.{conn.system}: {exc}".strip()) from exc
    if row is None:
        return None
    return SlotReading(slot, bool(row[0]), float(row[1] or 0), float(row[2] or 0))


def read_binlog(conn: ConnectorStatus, connect_url: str, timeout_s: float = TIMEOUT_S) -> BinlogReading:
    """Binlog head and retention of a MariaDB source, and the connector's lag behind the head."""
    import pymysql

    cred = connector_credentials(conn.config)
    try:
        db = pymysql.connect(host=cred["host"], port=cred["port"] or 3306, user=cred["user"],
                             password=cred["password"], connect_timeout=timeout_s,
                             read_timeout=timeout_s)
        try:
            with db.cursor() as cur:
                cur.execute("SHOW BINARY LOGS")
                logs = [(str(r[0]), int(r[1])) for r in cur.fetchall()]
                cur.execute("SHOW MASTER STATUS")
                head_row = cur.fetchone()
        finally:
            db.close()
    except pymysql.MySQLError as exc:
        raise TransientError(f"source {conn.org}.{conn.system}: {exc}") from exc
    head = (str(head_row[0]), int(head_row[1])) if head_row else (logs[-1] if logs else ("", 0))
    lag: int | None = None
    try:
        offset = read_connector_offset(connect_url, conn.name, timeout_s)
    except TransientError:
        offset = {}
    if offset.get("file"):
        lag = binlog_lag_bytes(logs, head, (str(offset["file"]), int(offset.get("pos", 0))))
    return BinlogReading(binlog_number(head[0]), head[1], sum(s for _, s in logs), lag)


# ---------------------------------------------------------------------------------------------
# Warehouse


@dataclass(frozen=True)
class WarehouseReading:
    """Newest source commit per (schema, org, dataset) and live rows per (schema, dataset)."""

    newest: dict[tuple[str, str, str], datetime]
    rows: dict[tuple[str, str], float]


# Per org, max(source_ts) by a loose index scan (one index probe per org instead of reading the
# table): cheap with an index on (org_code, source_ts), and correct, only slower, without one.
_NEWEST_SQL = """
WITH RECURSIVE orgs(o) AS (
    SELECT min(org_code) FROM {t}
    UNION ALL
    SELECT (SELECT min(org_code) FROM {t} WHERE org_code > o) FROM orgs WHERE o IS NOT NULL
)
SELECT o, (SELECT max(source_ts) FROM {t} WHERE org_code = o) FROM orgs WHERE o IS NOT NULL
"""


def read_warehouse(dsn: str, schemas: tuple[str, ...] = ("std", "stat"),
                   timeout_s: float = 10.0) -> WarehouseReading:
    """Freshness inputs and row counts of every std/stat table with org_code and source_ts."""
    import psycopg2
    from psycopg2 import sql

    try:
        with psycopg2.connect(dsn, connect_timeout=3, application_name="hip-exporter",
                              options=f"-c statement_timeout={int(timeout_s * 1000)}") as db:
            db.set_session(readonly=True, autocommit=True)
            with db.cursor() as cur:
                cur.execute(
                    "SELECT table_schema, table_name FROM information_schema.columns"
                    " WHERE table_schema = ANY(%s) AND column_name IN ('org_code', 'source_ts')"
                    " GROUP BY 1, 2 HAVING count(*) = 2 ORDER BY 1, 2", (list(schemas),))
                tables = [(str(s), str(t)) for s, t in cur.fetchall()]
                newest: dict[tuple[str, str, str], datetime] = {}
                for schema, table in tables:
                    cur.execute(sql.SQL(_NEWEST_SQL).format(t=sql.Identifier(schema, table)))
                    for org, ts in cur.fetchall():
                        if ts is not None:
                            newest[(schema, str(org), table)] = ts
                cur.execute("SELECT schemaname, relname, n_live_tup FROM pg_stat_user_tables"
                            " WHERE schemaname = ANY(%s)", (list(schemas),))
                rows = {(str(s), str(t)): float(n) for s, t, n in cur.fetchall()}
        db.close()
    except psycopg2.Error as exc:
        raise TransientError(f"warehouse: {exc}".strip()) from exc
    return WarehouseReading(newest, rows)


# ---------------------------------------------------------------------------------------------
# Prometheus (for the status view and the tests)


def prometheus_query(base_url: str, promql: str, timeout_s: float = 5.0) -> list[tuple[dict[str, str], float]]:
    """Instant query: (labels, value) per series; a PromQL error raises ``TransientError``."""
    try:
        resp = requests.get(f"{base_url}/api/v1/query", params={"query": promql}, timeout=timeout_s)
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise TransientError(f"prometheus at {base_url}: {exc}") from exc
    if body.get("status") != "success":
        raise TransientError(f"prometheus: {body.get('error', body)} in {promql!r}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

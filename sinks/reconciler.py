"""Reconciliation adapters: the warehouse side, the topic side and the hospital-source side.

Each side yields standard records for one org and dataset; ``sinks.core.reconcile`` reduces them
to key checksums of the mapped fields and compares. Sources:

- ``warehouse``: rows of the dataset's table for the org that are not deleted;
- ``topic``: the newest version per key of the org's records on the dataset's topic (checks the
  sink alone: exactly what the warehouse must hold);
- ``source``: the hospital's captured tables, read with its own capture credentials in one
  read-only snapshot, encoded as Debezium encodes them and mapped through the normalizer's core
  (checks the whole pipeline), see ``source_side``. Rows the core dead-letters are counted as
  rejected at source, not as missing.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from confluent_kafka import Consumer, TopicPartition

from connectors.fleet import Fleet, SystemSpec
from connectors.topics import split_table
from hip.errors import ConfigError, RecordError
from hip.records import unavailable_fields
from streams.core.mapping import MappingSet

from sinks.core.batch import Change
from sinks.core.reconcile import Difference, KeyChecksums, compare, compared_fields, key_checksums, live_rows
from sinks.core.table import DELETED, TableLike
from sinks.replay import org_key_prefix, plan_replay
from sinks.warehouse import Warehouse
from sinks.worker import Decoder


def _fields(table: TableLike) -> tuple[list[str], list[str], frozenset[str]]:
    return compared_fields(table)


def warehouse_records(warehouse: Warehouse, table: TableLike, org: str) -> Iterator[dict[str, Any]]:
    key, fields, _ = compared_fields(table)
    names = key + fields
    yield from warehouse.rows(table, names, where=f"org_code = %s AND NOT {DELETED}", params=(org,))


def topic_records(bootstrap_servers: str, topic: str, org: str, decoder: Decoder,
                  key: list[str]) -> list[Mapping[str, Any]]:
    """Live rows the topic implies for one org: newest version per key, deletes dropped."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "enable.auto.commit": False,
                         "group.id": f"hip-sink-reconcile-{uuid.uuid4().hex[:12]}"})
    prefix = org_key_prefix(org)
    changes: list[Change] = []
    try:
        plan = plan_replay(consumer, topic, None, None)
        todo = {p: r for p, r in plan.ranges.items() if r[1] > r[0]}
        if todo:
            consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        while todo:
            for msg in consumer.consume(5000, 1.0):
                if msg.error() is not None or msg.partition() not in todo:
                    continue
                if msg.offset() + 1 >= todo[msg.partition()][1]:
                    todo.pop(msg.partition())
                if msg.offset() >= plan.ranges[msg.partition()][1]:
                    continue
                if not (msg.key() or b"").startswith(prefix) or msg.value() is None:
                    continue
                try:
                    _, record = decoder.decode(msg.value())
                except Exception:
                    continue  # undecodable records are dead letters, not warehouse rows
                changes.append(Change(record, keep=unavailable_fields(msg.headers())))
    finally:
        consumer.close()
    return live_rows(changes, key)  # fields the source did not send come from the version before


@dataclass
class SourceSide:
    """What one hospital's source tables map to: checksums per dataset, and what the core rejected."""

    org: str
    datasets: dict[str, KeyChecksums] = field(default_factory=dict)
    rows_read: int = 0
    # (dataset or "-", reason) → rows the mapping core dead-letters.
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)


def _connect_source(spec: SystemSpec, user: str, password: str) -> Any:
    """A read-only connection with the hospital's capture credentials, one consistent snapshot."""
    if spec.db == "postgresql":
        import psycopg2

        conn = psycopg2.connect(host=spec.host, port=spec.resolved_port, dbname=spec.database, user=user,
                                password=password, connect_timeout=10, application_name="hip-reconcile")
        # One transaction for every table: dictionary and fact rows come from the same moment.
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        return conn
    if spec.db in ("mariadb", "mysql"):
        import pymysql
        import pymysql.cursors

        conn = pymysql.connect(host=spec.host, port=spec.resolved_port, database=spec.database, user=user,
                               password=password, charset="utf8mb4", connect_timeout=10, autocommit=False,
                               cursorclass=pymysql.cursors.SSDictCursor)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")  # TIMESTAMP columns then read as UTC
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        return conn
    raise ConfigError(f"reading {spec.db} sources is not supported yet", field="db")


def _reader(conn: Any, spec: SystemSpec, schema: str) -> Callable[[str], Iterator[dict[str, Any]]]:
    def read(table: str) -> Iterator[dict[str, Any]]:
        if spec.db == "postgresql":
            with conn.cursor(name=f"hip_reconcile_{uuid.uuid4().hex[:8]}") as cur:
                cur.itersize = 5000
                cur.execute(f'SELECT * FROM "{schema}"."{table}"')
                names: list[str] | None = None
                for row in cur:
                    if names is None:
                        names = [d[0] for d in cur.description]
                    yield dict(zip(names, row))
        else:
            with conn.cursor() as cur:
                cur.execute(f"SELECT * FROM `{schema}`.`{table}`")
                yield from cur
    return read


def source_side(org: str, fleet: Fleet, mappings: MappingSet, *, check: Any = None,
                encode: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
                tables: Callable[[str], TableLike] | None = None,
                keep: Callable[[str, dict[str, Any]], None] | None = None) -> SourceSide:
    """Read every captured table of ``org`` and map it through the normalizer's core.

    ``encode`` turns a standard record into what the sink receives (default: an Avro round trip
    through the dataset's schema, so types match the warehouse's); ``tables`` resolves a dataset's
    warehouse table (default: the catalogue's); ``keep`` sees every record as the sink would.
    """
    from hip.settings import load_settings
    from streams.core.snapshot import snapshot_outputs
    from streams.core.normalize import StandardRecord

    if org not in mappings.hospitals:
        raise ConfigError(f"no mapping for hospital {org} (streams/mappings/hospitals/{org}.yaml)", field="--org")
    hospital = fleet.hospital(org)
    settings = load_settings()
    encode = encode or avro_round_trip()
    if tables is None:
        from sinks.sink_cli import catalogue_tables
        tables = catalogue_tables()
    side = SourceSide(org=org)
    lookups: dict[str, Any] = {}
    read_ms = int(time.time() * 1000)
    for system, spec in hospital.systems.items():
        if spec.capture == "push":
            continue
        user = settings.secret(spec.credentials, "user")
        password = settings.secret(spec.credentials, "password")
        by_schema: dict[str, list[str]] = {}
        for qualified in spec.tables:
            schema, table = split_table(qualified)
            by_schema.setdefault(schema, []).append(table)
        conn = _connect_source(spec, user, password)
        try:
            for schema, names in by_schema.items():
                dialect = "postgres" if spec.db == "postgresql" else "mariadb"
                for _, out in snapshot_outputs(org, system, schema, names, _reader(conn, spec, schema), mappings,
                                               lookups, dialect=dialect, read_ms=read_ms, check=check):
                    side.rows_read += 1
                    if not isinstance(out, StandardRecord):
                        side.rejected[(out.dataset or "-", out.reason)] += 1
                        continue
                    try:
                        record = encode(out.dataset, out.record)
                    except RecordError as exc:  # the normalizer dead-letters what Avro refuses
                        side.rejected[(out.dataset, exc.reason)] += 1
                        continue
                    if keep is not None:
                        keep(out.dataset, record)
                    sums = side.datasets.get(out.dataset)
                    if sums is None:
                        key, fields, json_fields = compared_fields(tables(out.dataset))
                        sums = side.datasets[out.dataset] = KeyChecksums(key, fields, json_fields)
                    sums.add(record)
        finally:
            conn.close()
    for (dataset, _), n in side.rejected.items():
        if dataset in side.datasets:
            side.datasets[dataset].rejected += n
    return side


def avro_round_trip() -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """Standard record → the record the sink decodes (Avro types: instants, decimals, dates)."""
    import io

    import fastavro

    from hip.catalogue import load_catalogue

    cat = load_catalogue()

    def encode(dataset: str, record: dict[str, Any]) -> dict[str, Any]:
        schema = cat[dataset].parsed
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, schema, record)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise RecordError("avro_encode", f"{dataset}: record does not fit its schema: {exc}") from exc
        buf.seek(0)
        decoded: dict[str, Any] = fastavro.schemaless_reader(buf, schema, None)  # type: ignore[assignment]
        return decoded
    return encode


def reconcile(org: str, dataset: str, table: TableLike,
              source: Iterable[Mapping[str, Any]] | KeyChecksums, warehouse: Warehouse) -> Difference:
    """Compare one org's dataset: source records (the expected live rows) or their checksums vs the warehouse."""
    key, fields, json_fields = _fields(table)
    if isinstance(source, KeyChecksums):
        sums, rejected, duplicates = source.sums, source.rejected, source.duplicates
    else:
        sums, rejected, duplicates = key_checksums(source, key, fields, json_fields), 0, []
    wh = key_checksums(warehouse_records(warehouse, table, org), key, fields, json_fields)
    return compare(org, dataset, sums, wh, rejected=rejected, duplicates=duplicates)

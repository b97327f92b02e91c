"""Adapter: the poller process. SELECT-only database sessions, confluent-kafka, durable cursors.

Per table it keeps a cursor (compacted topic ``fleet.cursor_topic``) and the set of keys it has
emitted (compacted topic ``fleet.keys_topic``, one record per key, tombstoned on delete), so that a
restart neither re-reads history nor forgets which rows exist. Order of writes per batch: change
events, then keys, then the cursor, each flushed: a crash repeats a batch (harmless for the
idempotent sink), it never skips one.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from connectors.fleet import Fleet, Hospital, SystemSpec
from connectors.poller import (Envelope, TableRef, TableState, behind_cursor, changes_from_rows,
                               deletes_from_keys, incremental_query, key_of, keys_query, max_cursor_query,
                               rows_by_key_query, snapshot_query)
from connectors.topics import raw_topic, split_table
from hip.errors import ConfigError, FatalError, TransientError
from hip.metrics import ERRORS, EVENTS_IN
from hip.topics import create_missing

log = logging.getLogger(__name__)
STAGE = "poller"


def read_credentials(secrets_dir: Path, name: str) -> dict[str, str]:
    """``user`` and ``password`` from ``<secrets_dir>/<name>.properties`` (the file Connect also reads)."""
    path = secrets_dir / f"{name}.properties"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"credentials file missing: {exc.strerror}", file=str(path)) from exc
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            values[k.strip()] = v.strip()
    for k in ("user", "password"):
        if k not in values:
            raise ConfigError(f"no {k}= line", file=str(path), field=k)
    return values


def connect_db(spec: SystemSpec, creds: dict[str, str]) -> Any:
    """A read-only session in the source's declared time zone (MariaDB: UTC, see poller)."""
    if spec.db == "postgresql":
        import psycopg2
        conn = psycopg2.connect(host=spec.host, port=spec.resolved_port, dbname=spec.database,
                                user=creds["user"], password=creds["password"], connect_timeout=10,
                                options=f"-c TimeZone={spec.timezone} -c default_transaction_read_only=on")
        conn.autocommit = True
        return conn
    if spec.db in ("mariadb", "mysql"):
        import pymysql
        return pymysql.connect(host=spec.host, port=spec.resolved_port, database=spec.database,
                               user=creds["user"], password=creds["password"], connect_timeout=10,
                               autocommit=True, init_command="SET time_zone = '+00:00'", charset="utf8mb4")
    raise ConfigError(f"poll mode supports postgresql and mariadb/mysql, not {spec.db}")


def _translate(exc: Exception) -> Exception:
    """Driver errors onto the taxonomy: lost connections are transient, the rest fatal."""
    name = type(exc).__name__
    if name in ("OperationalError", "InterfaceError"):
        return TransientError(f"{name}: {exc}")
    return FatalError(f"{name}: {exc}")


def _fetch(conn: Any, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        cur.close()
        return rows
    except Exception as exc:  # noqa: BLE001 - translated, never swallowed
        raise _translate(exc) from exc


class StateStore:
    """Cursors and known keys in two compacted topics, read back in full at start."""

    def __init__(self, bootstrap: str, cursor_topic: str, keys_topic: str, producer: Producer) -> None:
        self.bootstrap = bootstrap
        self.cursor_topic = cursor_topic
        self.keys_topic = keys_topic
        self.producer = producer
        self.cursors: dict[str, TableState] = {}
        self.keys: dict[str, set[tuple[Any, ...]]] = {}

    def ensure_topics(self, extra: list[str]) -> None:
        compact = {"cleanup.policy": "compact"}
        new = [NewTopic(t, num_partitions=1, replication_factor=1, config=compact)
               for t in (self.cursor_topic, self.keys_topic)]
        new += [NewTopic(t, num_partitions=1, replication_factor=1) for t in extra]
        try:
            create_missing(self.bootstrap, new, timeout=10)
        except KafkaException as exc:
            raise TransientError(f"cannot create topics: {exc}") from exc

    def load(self, prefix: str) -> None:
        """Read both topics to their end, keeping entries whose key starts with ``prefix``."""
        for key, value in _read_all(self.bootstrap, self.cursor_topic):
            if key.decode().startswith(prefix):
                self._apply_cursor(key, value)
        for key, value in _read_all(self.bootstrap, self.keys_topic):
            self._apply_key(key, value, prefix)

    def _apply_cursor(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.cursors.pop(key.decode(), None)
        else:
            self.cursors[key.decode()] = TableState.from_json(value)

    def _apply_key(self, key: bytes, value: bytes | None, prefix: str) -> None:
        table, row_key = json.loads(key)
        if not table.startswith(prefix):
            return
        known = self.keys.setdefault(table, set())
        if value is None:
            known.discard(tuple(row_key))
        else:
            known.add(tuple(row_key))

    def save(self, table: str, state: TableState, added: set[tuple[Any, ...]], removed: list[tuple[Any, ...]]) -> None:
        for k in added:
            self.producer.produce(self.keys_topic, key=_key_record(table, k), value=b"1")
        for k in removed:
            self.producer.produce(self.keys_topic, key=_key_record(table, k), value=None)
        self.producer.produce(self.cursor_topic, key=table.encode(), value=state.to_json())
        _flush(self.producer)


def _key_record(table: str, key: tuple[Any, ...]) -> bytes:
    return json.dumps([table, list(key)], ensure_ascii=False, separators=(",", ":")).encode()


def _watermarks(consumer: Consumer, tp: TopicPartition, attempts: int = 20) -> tuple[int, int]:
    """Watermarks, retried while a just-created topic has no leader yet."""
    for attempt in range(attempts):
        try:
            lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
            return int(lo), int(hi)
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == attempts - 1:
                raise TransientError(f"watermarks of {tp.topic}[{tp.partition}]: {exc}") from exc
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _read_all(bootstrap: str, topic: str) -> Iterator[tuple[bytes, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hip-poller-state",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return
        parts = []
        for p in meta.partitions:
            lo, hi = _watermarks(consumer, TopicPartition(topic, p))
            if hi > lo:
                parts.append((p, lo, hi))
        if not parts:
            return
        consumer.assign([TopicPartition(topic, p, lo) for p, lo, _ in parts])
        remaining = {p: hi for p, _, hi in parts}
        while remaining:
            msg = consumer.poll(5.0)
            if msg is None:
                raise TransientError(f"timed out reading {topic}")
            if msg.error():
                raise TransientError(f"reading {topic}: {msg.error()}")
            yield msg.key() or b"", msg.value()
            if (msg.offset() or 0) + 1 >= remaining.get(msg.partition() or 0, 0):
                remaining.pop(msg.partition(), None)
    finally:
        consumer.close()


def _flush(producer: Producer) -> None:
    left = producer.flush(30)
    if left:
        raise TransientError(f"{left} messages not delivered within 30 s")


def make_producer(bootstrap: str) -> Producer:
    errors: list[str] = []

    def on_error(err: Any) -> None:
        errors.append(str(err))

    # murmur2: the partitioner of Connect's Java producer, so a key lands where Debezium puts it.
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "partitioner": "murmur2_random", "linger.ms": 20, "error_cb": on_error})


class SystemPoller:
    """Polls every table of one hospital system."""

    def __init__(self, fleet: Fleet, hospital: Hospital, system: str, spec: SystemSpec,
                 secrets_dir: Path, bootstrap: str, *, batch: int = 1000, lag_s: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.fleet, self.hospital, self.system, self.spec = fleet, hospital, system, spec
        self.secrets_dir, self.bootstrap = secrets_dir, bootstrap
        self.batch, self.clock = batch, clock
        self.lag_s = spec.poll_lag_s if lag_s is None else lag_s
        self.refs = [self._ref(t) for t in spec.tables]
        self.producer = make_producer(bootstrap)
        self.store = StateStore(bootstrap, fleet.cursor_topic, fleet.keys_topic, self.producer)
        self.conn: Any = None
        self.last_diff = 0.0

    def _ref(self, qualified: str) -> TableRef:
        schema, table = split_table(qualified)
        p = self.spec.poll[qualified]
        return TableRef(self.hospital.org, self.system, self.spec.database, schema, table, tuple(p.key),
                        p.cursor, p.cursor_kind, self.spec.timezone, self.spec.db)

    def start(self) -> None:
        self.store.ensure_topics([raw_topic(r.org, r.system, r.schema, r.table) for r in self.refs])
        self.store.load(f"{self.hospital.org}.{self.system}.")
        self._connect()

    def _connect(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass
        self.conn = connect_db(self.spec, read_credentials(self.secrets_dir, self.spec.credentials))

    def _offset_s(self) -> int:
        off = dt.datetime.now(ZoneInfo(self.spec.timezone)).utcoffset()
        return int(off.total_seconds()) if off else 0

    def poll_once(self, *, diff: bool | None = None) -> int:
        """One pass over every table; a key comparison too when due (or forced). Events emitted."""
        now = self.clock()
        do_diff = diff if diff is not None else now - self.last_diff >= self.spec.key_diff_interval_s
        total = 0
        for ref in self.refs:
            total += self._poll_table(ref, do_diff)
        if do_diff:
            self.last_diff = now
        return total

    def _poll_table(self, ref: TableRef, do_diff: bool) -> int:
        state = self.store.cursors.setdefault(ref.state_key, TableState())
        known = self.store.keys.setdefault(ref.state_key, set())
        topic = raw_topic(ref.org, ref.system, ref.schema, ref.table)
        total = 0
        if not state.snapshot_done:
            total += self._snapshot(ref, state, known, topic)
        while True:
            env = Envelope(ref, topic)
            before = set(known)
            sql, params = incremental_query(ref, state, self.batch, self.lag_s, self._offset_s())
            rows = _fetch(self.conn, sql, params)
            changes_from_rows(env, rows, state, known, snapshot=False, now_ms=self._now_ms())
            self._emit(env, ref, state, known - before, [])
            total += len(env.events)
            if len(rows) < self.batch:
                break
        if do_diff:
            total += self._diff(ref, state, known, topic)
        return total

    def _snapshot(self, ref: TableRef, state: TableState, known: set[tuple[Any, ...]], topic: str) -> int:
        # The cursor starts at the snapshot's beginning: anything changed meanwhile is read again.
        start = _fetch(self.conn, *max_cursor_query(ref, self.lag_s, self._offset_s()))
        start_cursor = list(start[0].values())[0] if start else None
        after: list[Any] | None = None
        total = 0
        while True:
            sql, params = snapshot_query(ref, after, self.batch)
            rows = _fetch(self.conn, sql, params)
            env = Envelope(ref, topic)
            before = set(known)
            changes_from_rows(env, rows, state, known, snapshot=True, now_ms=self._now_ms())
            if len(rows) < self.batch:
                state.snapshot_done = True
                state.cursor, state.last_key = start_cursor, []
            self._emit(env, ref, state, known - before, [])
            total += len(env.events)
            if state.snapshot_done:
                return total
            after = [rows[-1][k] for k in ref.key]

    def _diff(self, ref: TableRef, state: TableState, known: set[tuple[Any, ...]], topic: str) -> int:
        current = {key_of(r, ref.key) for r in _fetch(self.conn, keys_query(ref))}
        env = Envelope(ref, topic)
        gone = deletes_from_keys(env, known, current, state, self._now_ms())
        missing = sorted(current - known, key=lambda t: json.dumps(t, default=str))
        before = set(known)
        for i in range(0, len(missing), 200):
            chunk = missing[i:i + 200]
            # Encoded values equal the stored ones for the key types hospitals use (text, integers).
            params = [v for k in chunk for v in k]
            rows = [r for r in _fetch(self.conn, rows_by_key_query(ref, len(chunk)), params)
                    if behind_cursor(r, ref, state)]
            changes_from_rows(env, rows, state, known, snapshot=False, now_ms=self._now_ms(), advance=False)
        self._emit(env, ref, state, known - before, gone)
        return len(env.events)

    def _emit(self, env: Envelope, ref: TableRef, state: TableState, added: set[tuple[Any, ...]],
              removed: list[tuple[Any, ...]]) -> None:
        for e in env.events:
            self.producer.produce(e.topic, key=e.key, value=e.value)
        if env.events:
            EVENTS_IN.labels(stage=STAGE, org=ref.org, system=ref.system).inc(len(env.events))
            _flush(self.producer)
        self.store.save(ref.state_key, state, added, removed)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Poll until ``stop()``; transient failures (also while starting: a just-created state
        topic may have no leader yet) retry with backoff, others stop."""
        started = False
        failures = 0
        while not stop():
            try:
                if not started:
                    self.start()
                    started = True
                self.poll_once()
                failures = 0
            except TransientError as exc:
                failures += 1
                ERRORS.labels(stage=STAGE, kind="transient").inc()
                delay = min(60.0, 2.0 ** failures)
                log.warning("%s.%s: %s; retrying in %.0f s", self.hospital.org, self.system, exc, delay)
                time.sleep(delay)
                if started:
                    try:
                        self._connect()
                    except TransientError:
                        pass
                continue
            time.sleep(self.spec.poll_interval_s)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.producer.flush(10)

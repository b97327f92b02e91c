"""The warehouse sink against the real Kafka and warehouse from ``make up``.

Each test makes its own schema, table and topics with unique names and drops them afterwards.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Iterator

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from hip.errors import FatalError
from hip.settings import ROOT, load_settings
from sinks.core.batch import version
from sinks.replay import make_producer, replay
from sinks.testing import (DemoCodec, FakeMessage, demo_ddl, demo_table, kafka_key, make_record, unique_name,
                           workload)
from sinks.warehouse import Warehouse
from sinks.worker import BatchWriter, SinkConfig, SinkWorker

pytestmark = pytest.mark.integration

SETTINGS = load_settings()
ORG = "H22010001"


# -- fixtures ----------------------------------------------------------------------------------
class Demo:
    """One throw-away dataset: schema + table in the warehouse, std and dlq topics in Kafka."""

    def __init__(self, admin: AdminClient, partitions: int = 3, check_fee: bool = True) -> None:
        self.dataset = unique_name()
        self.schema = unique_name("sinkschema")
        self.table = demo_table(self.schema, self.dataset)
        self.topic = f"std.{self.dataset}"
        self.dlq = f"dlq.{self.dataset}"
        self.codec = DemoCodec(self.dataset)
        self.admin = admin
        with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
            cur.execute(demo_ddl(self.table, check_fee=check_fee))
        conn.close()
        futures = admin.create_topics([NewTopic(self.topic, partitions, 1), NewTopic(self.dlq, 1, 1)])
        for f in futures.values():
            f.result(30)
        self.producer = Producer({"bootstrap.servers": SETTINGS.bootstrap_servers, "linger.ms": 5})

    def produce(self, records: list[dict[str, Any]], *, raw: dict[int, bytes] | None = None) -> None:
        for i, record in enumerate(records):
            value = (raw or {}).get(i) or self.codec.encode(self.dataset, record)
            self.producer.produce(self.topic, key=kafka_key(record), value=value)
        assert self.producer.flush(30) == 0

    def writer(self, warehouse: Warehouse | None = None) -> BatchWriter:
        return BatchWriter(warehouse or Warehouse(SETTINGS.warehouse_dsn), self.codec, lambda _: self.table,
                           make_producer(SETTINGS.bootstrap_servers), self.dlq)

    def state(self) -> dict[str, tuple[Any, ...]]:
        """``(org, visit_no) → (position, deleted, data fields if not deleted)`` as stored."""
        with psycopg2.connect(SETTINGS.warehouse_dsn, options="-c timezone=UTC") as conn, conn.cursor() as cur:
            cur.execute(f'SELECT org_code, visit_no, source_position, deleted, patient_id, dept_name, fee, '
                        f'visit_date, diagnoses FROM "{self.schema}"."{self.dataset}"')
            rows = cur.fetchall()
        conn.close()
        return {(r[0], r[1]): (r[2], r[3], None if r[3] else tuple(r[4:])) for r in rows}

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Every stored byte of the table plus the row versions (xmin): any write shows up."""
        with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT xmin::text, t.* FROM "{self.schema}"."{self.dataset}" t ORDER BY visit_no')
            rows = cur.fetchall()
        conn.close()
        return rows

    def dead_letters(self, expect: int, timeout: float = 30) -> list[Any]:
        consumer = Consumer({"bootstrap.servers": SETTINGS.bootstrap_servers, "group.id": unique_name("dlqread"),
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.assign([TopicPartition(self.dlq, 0, 0)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, 0.5) if m.error() is None]
        consumer.close()
        return out

    def drop(self) -> None:
        with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        conn.close()
        self.admin.delete_topics([self.topic, self.dlq])


@pytest.fixture(scope="session")
def admin() -> AdminClient:
    client = AdminClient({"bootstrap.servers": SETTINGS.bootstrap_servers})
    client.list_topics(timeout=15)  # fails the test, never skips, when Kafka is absent
    return client


@pytest.fixture
def demo(admin: AdminClient) -> Iterator[Demo]:
    d = Demo(admin)
    yield d
    d.drop()


def expected(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The last-position-wins fold of what was produced, in the shape of ``Demo.state``."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        held = best.get((r["org_code"], r["visit_no"]))
        if held is None or version(held) <= version(r):
            best[(r["org_code"], r["visit_no"])] = r
    out = {}
    for k, r in best.items():
        deleted = r["op"] == "d"
        data = None if deleted else (r["patient_id"], r["dept_name"], r["fee"], r["visit_date"], r["diagnoses"])
        out[k] = (r["source_position"], deleted, data)
    return out


def run_until(worker: SinkWorker, done: Callable[[], bool], timeout: float = 90) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and thread.is_alive():
            if done():
                return
            time.sleep(0.5)
        if errors:
            raise errors[0]
        raise AssertionError("sink did not reach the expected state in time")
    finally:
        worker.stop_event.set()
        thread.join(30)


def worker_for(demo: Demo, group: str | None = None, batch_max: int = 200,
               application_name: str = "hip-sink-test") -> SinkWorker:
    config = SinkConfig(bootstrap_servers=SETTINGS.bootstrap_servers, group_id=group or unique_name("grp"),
                        batch_max=batch_max, batch_wait_s=0.2, dlq_topic=demo.dlq)
    return SinkWorker(config, [demo.topic], lambda producer: BatchWriter(
        Warehouse(SETTINGS.warehouse_dsn, application_name=application_name), demo.codec,
        lambda _: demo.table, producer, demo.dlq))


def message(demo: Demo, offset: int, record: dict[str, Any],
            headers: list[tuple[str, bytes]] | None = None) -> FakeMessage:
    return FakeMessage(demo.topic, offset, kafka_key(record), demo.codec.encode(demo.dataset, record), headers)


# -- tests -------------------------------------------------------------------------------------
def test_bad_records_go_to_dead_letters_and_the_rest_of_the_batch_lands(demo: Demo) -> None:
    records = list(workload(ORG, keys=300, changes=1500, seed=3))
    bad_fee = make_record(ORG, 10_001, 5000, op="c", fee=Decimal("-1.00"))  # violates CHECK (fee >= 0)
    bad_text = make_record(ORG, 10_002, 5001, op="c")
    bad_text["patient_id"] = "P\x00nul"  # PostgreSQL text cannot hold NUL
    garbage = make_record(ORG, 10_003, 5002, op="c")
    all_records = records[:700] + [bad_fee, bad_text, garbage] + records[700:]
    demo.produce(all_records, raw={702: b"\x01not avro"})
    want = expected(records)

    worker = worker_for(demo, batch_max=5000)
    run_until(worker, lambda: demo.state() == want)

    letters = demo.dead_letters(3)
    reasons = {}
    for m in letters:
        h = {k: v.decode() for k, v in m.headers()}
        reasons[h["hip.reason"]] = h
        assert h["hip.topic"] == demo.topic and int(h["hip.offset"]) >= 0 and h["hip.stage"] == "sink"
    assert set(reasons) == {"check_violation", "nul_character", "undecodable"}
    assert "fee_not_negative" in reasons["check_violation"]["hip.error"]
    assert reasons["check_violation"]["hip.org"] == ORG
    assert any(m.value() == b"\x01not avro" for m in letters)  # original bytes kept
    assert any(m.value() == demo.codec.encode(demo.dataset, bad_fee) for m in letters)


def test_redelivered_and_out_of_order_batches_converge_with_delete_flags(demo: Demo) -> None:
    records = list(workload(ORG, keys=200, changes=2000, seed=5, delete_every=5))
    writer = demo.writer()

    msgs = [message(demo, i, r) for i, r in enumerate(records)]
    chunks = [msgs[i:i + 137] for i in range(0, len(msgs), 137)]
    for chunk in reversed(chunks):  # newest batches first: every older one must be ignored
        writer.write(chunk)
    want = expected(records)
    assert demo.state() == want
    assert any(deleted for _, deleted, _ in want.values())
    before = demo.snapshot()
    for chunk in chunks[::2] + chunks:  # redelivery, in order and partially
        assert writer.write(chunk).applied == 0
    assert demo.snapshot() == before

    # A delete keeps the row's fields; a newer insert brings the key back.
    key = next(k for k, (_, deleted, _) in want.items() if not deleted)
    seq = 10_000
    visit = int(key[1][1:])
    writer.write([message(demo, 90_000, make_record(ORG, visit, seq, op="d", fee=Decimal("0.01")))])
    with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT deleted, fee FROM "{demo.schema}"."{demo.dataset}" WHERE visit_no = %s', (key[1],))
        assert cur.fetchone() == (True, want[key][2][2])
    conn.close()
    writer.write([message(demo, 90_001, make_record(ORG, visit, seq + 1, op="c", fee=Decimal("7.00")))])
    assert demo.state()[key][1:] == (False, demo.state()[key][2]) and demo.state()[key][2][2] == Decimal("7.00")
    writer.warehouse.close()


def test_replaying_a_whole_topic_twice_changes_nothing(demo: Demo) -> None:
    records = list(workload(ORG, keys=500, changes=3000, seed=7))
    others = list(workload("H22010002", keys=50, changes=200, seed=8))
    demo.produce(records + others)
    want = expected(records)
    run_until(worker_for(demo), lambda: demo.state() == {**want, **expected(others)})
    before = demo.snapshot()

    writer = demo.writer()
    for _ in range(2):
        report = replay(SETTINGS.bootstrap_servers, demo.topic, writer, batch_max=700)
        assert report.read == len(records) + len(others) and report.applied == 0
    only_org = replay(SETTINGS.bootstrap_servers, demo.topic, writer, org=ORG)
    assert only_org.matched == len(records) and only_org.applied == 0
    assert demo.snapshot() == before


def test_replay_of_an_old_time_range_never_regresses_newer_rows(demo: Demo) -> None:
    old = list(workload(ORG, keys=100, changes=400, seed=9, delete_every=0))
    demo.produce(old)
    time.sleep(1.1)
    cut = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.1)
    newer = [make_record(ORG, int(r["visit_no"][1:]), 1000 + i, op="u") for i, r in enumerate(old[:150])]
    demo.produce(newer)
    want = expected(old + newer)
    run_until(worker_for(demo), lambda: demo.state() == want)
    before = demo.snapshot()

    # Only the old range: every key it touches already holds a newer position.
    report = replay(SETTINGS.bootstrap_servers, demo.topic, demo.writer(), until=cut)
    assert report.read == len(old) and report.applied == 0
    assert demo.snapshot() == before

    # Rows lost from the warehouse come back from a replay of a time range.
    with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'DELETE FROM "{demo.schema}"."{demo.dataset}"')
    conn.close()
    replay(SETTINGS.bootstrap_servers, demo.topic, demo.writer())
    assert demo.state() == want


def test_a_lost_connection_is_retried_and_the_batch_lands(demo: Demo) -> None:
    from hip import metrics

    records = list(workload(ORG, keys=400, changes=6000, seed=11))
    demo.produce(records)
    want = expected(records)
    app = unique_name("hip-sink-test")  # only this test's sessions get terminated
    worker = worker_for(demo, batch_max=100, application_name=app)
    worker.config.backoff = type(worker.config.backoff)(attempts=50, base=0.05, cap=0.5)
    retries_before = metrics.RETRIES.labels(stage="sink")._value.get()
    killed: list[int] = []

    def kill_sink_sessions() -> None:
        # Terminate the sink's warehouse sessions for a few seconds while it writes.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = %s AND pid <> pg_backend_pid()", (app,))
                killed.append(cur.fetchone()[0])
            conn.close()
            time.sleep(0.2)
    killer = threading.Thread(target=kill_sink_sessions, daemon=True)
    killer.start()
    run_until(worker, lambda: not killer.is_alive() and demo.state() == want)
    assert sum(killed) > 0
    assert metrics.RETRIES.labels(stage="sink")._value.get() > retries_before


def test_schema_mismatch_is_fatal_with_a_clear_message(demo: Demo) -> None:
    with psycopg2.connect(SETTINGS.warehouse_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'ALTER TABLE "{demo.schema}"."{demo.dataset}" DROP COLUMN dept_name')
    conn.close()
    demo.produce(list(workload(ORG, keys=5, changes=5)))
    with pytest.raises(FatalError, match="lacks columns \\['dept_name'\\]"):
        run_until(worker_for(demo), lambda: False, timeout=30)


def test_sigkill_mid_workload_then_restart_leaves_zero_differences(demo: Demo) -> None:
    records = list(workload(ORG, keys=2000, changes=40_000, seed=13))
    want = expected(records)
    group = unique_name("crash")
    cmd = [sys.executable, "-m", "sinks.testing", demo.schema, demo.dataset, group]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        producer_done = threading.Event()

        def produce() -> None:
            for i in range(0, len(records), 5000):
                demo.produce(records[i:i + 5000])
                time.sleep(0.2)
            producer_done.set()
        threading.Thread(target=produce, daemon=True).start()
        # Kill while rows are arriving: some batches written, offsets maybe not committed.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(demo.state()) < 300:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert 0 < len(demo.state())
        producer_done.wait(120)

        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and demo.state() != want:
            assert proc.poll() is None, "sink exited"
            time.sleep(0.5)
        assert demo.state() == want
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_fields_the_source_did_not_send_keep_their_stored_value(demo: Demo) -> None:
    """PostgreSQL sends an unchanged TOASTed column as a placeholder: the normalizer nulls the field
    and names it in ``hip.unavailable``; the stored value must survive, also when the version that
    carried it is in the same batch, and a plain null (no header) still clears it."""
    writer = demo.writer()
    unsent = [("hip.unavailable", b"dept_name")]

    def version_of(visit: int, seq: int, dept: str | None, fee: str) -> dict[str, Any]:
        r = make_record(ORG, visit, seq, op="c" if seq == 1 else "u", fee=Decimal(fee))
        r["dept_name"] = dept
        return r

    writer.write([message(demo, 0, version_of(1, 1, "内科", "5.00"))])
    writer.write([message(demo, 1, version_of(1, 2, None, "6.00"), unsent),              # stored, then unsent
                  message(demo, 2, version_of(2, 3, "外科", "1.00")),                      # same batch
                  message(demo, 3, version_of(2, 4, None, "2.00"), unsent),
                  message(demo, 4, version_of(3, 5, None, "3.00"), unsent)])              # never stored
    state = demo.state()
    assert state[(ORG, "V000000001")][2][1:3] == ("内科", Decimal("6.00"))
    assert state[(ORG, "V000000002")][2][1:3] == ("外科", Decimal("2.00"))
    assert state[(ORG, "V000000003")][2][1] is None
    writer.write([message(demo, 5, version_of(1, 6, None, "7.00"))])
    assert demo.state()[(ORG, "V000000001")][2][1:3] == (None, Decimal("7.00"))
    writer.warehouse.close()

"""Incremental statistics equal the SQL recomputation: corrections, deletes, a stop, SIGKILLs, a lost datadir.

Runs against the real stack (Kafka, registry, warehouse). Each run uses its own topic suffix and
organisation codes; the standard rows the sink would write are inserted directly (final versions).
"""
from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import signal
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hip.catalogue import load_catalogue
from hip.codec import codec_from_settings
from hip.records import poll_position, record_key
from hip.settings import load_settings
from sinks.ddl import migrate
from streams.stats import core, isolated
from streams.stats.recompute import describe, recompute

pytestmark = pytest.mark.integration
DATASETS = ["department", "inpatient_visit", "outpatient_registration", "medical_fee", "operation_record"]
WINDOW = core.Window(dt.date(2024, 1, 28), dt.date(2024, 2, 3))
PARTITIONS = 4


def _ms(d: dt.date, hour: int = 10) -> int:
    return int(dt.datetime(d.year, d.month, d.day, hour, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)


class Workload:
    """Random versions of source records: inserts, corrections, deletes and redeliveries."""

    def __init__(self, orgs: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.orgs = orgs
        self.seq = 0
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.final: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}
        self.catalogue = load_catalogue()

    def emit(self, dataset: str, org: str, fields: dict[str, Any], op: str) -> None:
        self.seq += 1
        now = int(time.time() * 1000)
        rec = {"org_code": org, "source_system": "HIS", "source_table": dataset, "source_key": "[]", "op": op,
               "source_position": poll_position(1_700_000_000_000, self.seq),
               "source_ts": now - self.rng.choice([500, 5_000, 90_000_000]), "ingest_ts": now, "mapping_id": None,
               **fields}
        self.messages.append((dataset, rec))
        bk = tuple(str(rec[k]) for k in self.catalogue[dataset].business_key)
        self.final[(dataset, org, bk)] = rec
        if self.rng.random() < 0.08:
            self.messages.append((dataset, rec))  # redelivery

    def day(self, lo: str = "2024-01-26", hi: str = "2024-02-02") -> dt.date:
        a, b = dt.date.fromisoformat(lo), dt.date.fromisoformat(hi)
        return a + dt.timedelta(days=self.rng.randrange((b - a).days + 1))

    def build(self) -> None:
        r = self.rng
        depts = ["IM", "SU", "PE"]
        for org in self.orgs:
            for d in depts:
                self.emit("department", org, {"dept_code": d, "open_beds": r.randrange(10, 50),
                                               "approved_beds": 50}, "r")
            self.emit("department", org, {"dept_code": "IM", "open_beds": 33, "approved_beds": 50}, "u")
            for i in range(40):
                adm = self.day()
                v = {"inpatient_no": f"Z{i}", "admission_times": 1, "admission_date": adm,
                     "admission_time": _ms(adm), "admission_dept_code": r.choice(depts),
                     "admission_route_code": r.choice(["1", "2", "3", "9"])}
                self.emit("inpatient_visit", org, v, "c")
                for _ in range(r.randrange(0, 3)):
                    kind = r.random()
                    if kind < 0.5:
                        dis = adm + dt.timedelta(days=r.choice([0, 0, 1, 2, 4, 9]))
                        v = {**v, "discharge_date": dis, "discharge_time": _ms(dis, 15),
                             "discharge_dept_code": r.choice(depts),
                             "discharge_method_code": r.choice(["1", "2", "4", "5", "9"])}
                    elif kind < 0.8:
                        v = {**v, "admission_dept_code": r.choice(depts), "current_dept_code": r.choice(depts)}
                    else:
                        v = {**v, "discharge_date": None, "discharge_time": None, "discharge_dept_code": None}
                    self.emit("inpatient_visit", org, v, "u")
                if r.random() < 0.1:
                    self.emit("inpatient_visit", org, v, "d")
            for i in range(60):
                d = self.day()
                g = {"registration_no": f"G{i}", "registration_date": d, "dept_code": r.choice(depts + [None]),
                     "visit_type_code": r.choice(["1", "1", "2"]), "is_first_visit": r.choice([True, False, None]),
                     "appointment_no": r.choice([None, "A"])}
                self.emit("outpatient_registration", org, g, "c")
                if r.random() < 0.2:
                    self.emit("outpatient_registration", org, {**g, "cancelled": True, "status": "退号"}, "u")
                elif r.random() < 0.05:
                    self.emit("outpatient_registration", org, g, "d")
            for i in range(80):
                d = self.day()
                amount = Decimal(r.randrange(1, 50000)) / 100
                f = {"fee_detail_id": f"F{i}", "visit_type_code": r.choice(["1", "2", "3"]),
                     "charge_date": d, "ordering_dept_code": r.choice(depts),
                     "fee_class_code": r.choice(["01", "06", "07", "09", "02.01", None]),
                     "amount": amount, "self_pay_amount": amount / 2 if amount * 100 % 2 == 0 else None}
                self.emit("medical_fee", org, f, "c")
                if r.random() < 0.15:
                    self.emit("medical_fee", org, {**f, "amount": amount + 1}, "u")
                if r.random() < 0.15:
                    self.emit("medical_fee", org, {**f, "fee_detail_id": f"F{i}R", "is_refund": True,
                                                   "amount": -amount, "original_fee_detail_id": f"F{i}"}, "c")
                if r.random() < 0.05:
                    self.emit("medical_fee", org, f, "d")
            for i in range(15):
                d = self.day()
                o = {"operation_no": f"S{i}", "op_date": d, "dept_code": "SU", "visit_type_code": r.choice([None, "3", "1"]),
                     "op_level_code": r.choice(["1", "3", "4"])}
                self.emit("operation_record", org, o, "c")
                if r.random() < 0.2:
                    self.emit("operation_record", org, {**o, "op_date": o["op_date"] + dt.timedelta(days=1)}, "u")


def _row_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, default=str)
    return v


def write_warehouse(conn: Any, w: Workload) -> None:
    """The warehouse state the sink converges to: each record's last version, deletes flagged."""
    cat = load_catalogue()
    with conn.cursor() as cur:
        for (dataset, _org, _bk), rec in w.final.items():
            names = [f["name"] for f in cat[dataset].fields]
            values = []
            for n in names:
                v = rec.get(n)
                if n in ("source_ts", "ingest_ts") or (n.endswith("_time") and isinstance(v, int)):
                    v = dt.datetime.fromtimestamp(v / 1000, dt.timezone.utc) if v is not None else None
                values.append(_row_value(v))
            cols = ", ".join(f'"{n}"' for n in names + ["deleted"])
            marks = ", ".join(["%s"] * (len(names) + 1))
            cur.execute(f'INSERT INTO std."{dataset}" ({cols}) VALUES ({marks})', [*values, rec["op"] == "d"])
    conn.commit()


def produce(settings: Any, suffix: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
    codec = codec_from_settings()
    for d in DATASETS:
        codec.register(d)
    cat = load_catalogue()
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
    for dataset, rec in messages:
        key = record_key(rec["org_code"], [rec[k] for k in cat[dataset].business_key])
        p.produce(f"std.{dataset}{suffix}", key=key, value=codec.encode(dataset, rec))
        p.poll(0)
    assert p.flush(30) == 0


class StatReader:
    """Folds the stat topics into cells, last position per cell wins (as the sink does)."""

    def __init__(self, settings: Any, suffix: str, orgs: list[str]) -> None:
        self.codec = codec_from_settings()
        for d in core.STAT_DATASETS:
            self.codec.register(d)
        self.orgs = set(orgs)
        self.consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"t{uuid.uuid4().hex}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([f"stat.{d}{suffix}" for d in core.STAT_DATASETS])
        self.rows: dict[core.Cell, tuple[str, core.Measures]] = {}

    def drain(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            msg = self.consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            dataset, rec = self.codec.decode(msg.value())
            cell = (dataset, rec["org_code"], *[rec[k].isoformat() if k == "stat_date" else str(rec[k])
                                                for k in core.CELL_FIELDS[dataset]])
            old = self.rows.get(cell)
            if old is None or rec["source_position"] > old[0]:
                m = core.measures_of_row(dataset, rec) if rec["op"] != "d" else {}
                self.rows[cell] = (rec["source_position"], m)

    def cells(self) -> dict[core.Cell, core.Measures]:
        return {c: m for c, (_, m) in self.rows.items() if m}


def start_worker(suffix: str, app_id: str, log: Path, **extra: str | None) -> subprocess.Popen[bytes]:
    """The worker on this run's topics; ``extra`` overrides its environment (None removes a variable)."""
    return isolated.start_worker(suffix, app_id, DATASETS, PARTITIONS, WINDOW, log, **extra)


def wait_equal(reader: StatReader, expected: dict[core.Cell, core.Measures], timeout: float) -> list[Any]:
    end = time.time() + timeout
    diffs: list[Any] = []
    while time.time() < end:
        reader.drain(3)
        diffs = core.differences(reader.cells(), expected)
        if not diffs:
            return []
    return diffs


def clean_up(worker: subprocess.Popen[bytes], conn: Any, settings: Any, app_id: str) -> None:
    """Stop the worker, close the warehouse connection, remove the worker's RocksDB tables and its
    consumer group (left behind, its lag showed on the dashboards)."""
    isolated.stop_worker(worker, 30)
    conn.close()
    shutil.rmtree(settings.faust_datadir("stats", app_id), ignore_errors=True)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    # A worker that had to be killed stays a member until its session (Faust's default: 60 s) times
    # out: one stopped while it was still joining the group did not exit on SIGTERM within 30 s.
    deadline = time.monotonic() + 150
    while True:
        try:
            for future in admin.delete_consumer_groups([app_id], request_timeout=30).values():
                future.result(30)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NON_EMPTY_GROUP or time.monotonic() > deadline:
                raise
            time.sleep(2)


def setup_run(settings: Any, suffix: str) -> Any:
    """This run's standard and statistics topics, and a connection to the migrated warehouse."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    futures = admin.create_topics([NewTopic(f"std.{d}{suffix}", PARTITIONS, 1) for d in DATASETS]
                                  + [NewTopic(f"stat.{d}{suffix}", PARTITIONS, 1) for d in core.STAT_DATASETS])
    for f in futures.values():
        f.result(30)
    conn = psycopg2.connect(settings.warehouse_dsn)
    for attempt in range(3):  # another test may be creating the same schemas concurrently
        try:
            migrate(conn)
            conn.commit()
            break
        except psycopg2.errors.UniqueViolation:
            conn.rollback()
            time.sleep(1)
    return conn


def test_incremental_equals_recompute_across_sigterm_and_sigkill(tmp_path: Path) -> None:
    settings = load_settings()
    run = uuid.uuid4().hex[:8]
    suffix, orgs = f".t{run}", [f"T{run}A", f"T{run}B"]
    conn = setup_run(settings, suffix)

    w = Workload(orgs, seed=int(run, 16))
    w.build()
    write_warehouse(conn, w)
    expected = recompute(conn, WINDOW, orgs)
    assert any(c[0] == core.BED_USAGE for c in expected) and any(c[0] == core.QUALITY for c in expected)

    half = len(w.messages) // 2
    produce(settings, suffix, w.messages[:half])
    log = tmp_path / "worker.log"
    app_id = f"hip-stats-test-{run}"
    # First run: stage 2 flushes only every 30 s, so the stop below finds it holding events.
    worker = start_worker(suffix, app_id, log, HIP_STATS_FLUSH_SECONDS="30")
    reader = StatReader(settings, suffix, orgs)
    quarter = half // 2
    try:
        reader.drain(25)  # let it process part of the first half
        produce(settings, suffix, w.messages[half:half + quarter])
        time.sleep(1.5)
        # A clean stop in mid-stream, with stage 2 holding events until it flushes: the worker
        # must release them and exit (it used to wait for them until it was killed).
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()[-3000:]
        worker = start_worker(suffix, app_id, log)
        produce(settings, suffix, w.messages[half + quarter:half + 2 * quarter])
        time.sleep(6)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        rest = half + 2 * quarter
        eighth = (len(w.messages) - rest) // 2
        produce(settings, suffix, w.messages[rest:rest + eighth])
        worker = start_worker(suffix, app_id, log)
        time.sleep(8)
        # Killed again, and its RocksDB tables lost: the restart restores them from the changelogs
        # alone, so a flush that was cut short must be finished from its write-ahead record.
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        shutil.rmtree(settings.faust_datadir("stats", app_id))
        produce(settings, suffix, w.messages[rest + eighth:])
        # The killed workers stay members of the group until their sessions expire: this worker
        # gets part of the partitions first and the rest a minute later, in a second rebalance
        # within its life (partitions of stats.deltas never committed before lost messages there:
        # streams/faust_fixes.py, fix 2).
        worker = start_worker(suffix, app_id, log)
        diffs = wait_equal(reader, expected, 240)
        assert not diffs, "\n".join(describe(diffs)) + "\n--- worker log tail:\n" + log.read_text()[-3000:]
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        clean_up(worker, conn, settings, app_id)


def test_quiet_partitions_roll_at_midnight(tmp_path: Path) -> None:
    """After midnight every stay counts in the new day's census, though no record arrives."""
    settings = load_settings()
    run = uuid.uuid4().hex[:8]
    suffix, orgs = f".t{run}", [f"T{run}A"]
    conn = setup_run(settings, suffix)
    # The worker's clock is shifted to 60 s before a local midnight.
    local = dt.timezone(dt.timedelta(hours=8))
    now = dt.datetime.now(local)
    shifted = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), local) - dt.timedelta(seconds=60)
    offset = (shifted - now).total_seconds()
    today = shifted.date()
    since = today - dt.timedelta(days=10)

    w = Workload(orgs, seed=int(run, 16))
    org = orgs[0]
    for d in ("IM", "SU", "PE"):
        w.emit("department", org, {"dept_code": d, "open_beds": 20, "approved_beds": 30}, "r")
    for i in range(24):  # stays still in hospital at midnight, spread over the partitions by key
        adm = today - dt.timedelta(days=i % 4)
        w.emit("inpatient_visit", org, {"inpatient_no": f"Q{i}", "admission_times": 1, "admission_date": adm,
                                        "admission_time": _ms(adm), "admission_dept_code": ("IM", "SU", "PE")[i % 3],
                                        "admission_route_code": "2"}, "c")
    write_warehouse(conn, w)
    before = recompute(conn, core.Window(since, today), orgs)
    after = recompute(conn, core.Window(since, today + dt.timedelta(days=1)), orgs)
    assert before != after  # the new day's census is what the rollover adds

    produce(settings, suffix, w.messages)
    app_id = f"hip-stats-test-{run}"
    log = tmp_path / "worker.log"
    started = time.time()
    worker = start_worker(suffix, app_id, log, HIP_STATS_AS_OF=None, HIP_STATS_SINCE=since.isoformat(),
                          HIP_STATS_NOW_OFFSET_S=str(offset))
    reader = StatReader(settings, suffix, orgs)
    try:
        # Everything is processed before the worker's midnight: no record arrives after it.
        diffs = wait_equal(reader, before, 50 - (time.time() - started))
        assert not diffs, "\n".join(describe(diffs)) + "\n--- worker log tail:\n" + log.read_text()[-3000:]
        assert time.time() - started < 58, "processed too late to tell a tick from a record"
        diffs = wait_equal(reader, after, 90)
        assert not diffs, "\n".join(describe(diffs)) + "\n--- worker log tail:\n" + log.read_text()[-3000:]
    finally:
        clean_up(worker, conn, settings, app_id)

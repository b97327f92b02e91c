"""End to end: hospital databases → Debezium → normalizer → sink → warehouse, proven by reconciliation.

Two simulated hospitals (vendor A on MariaDB, vendor B on PostgreSQL) under organisation codes,
databases, connector names and consumer groups unique to the run, so the demo is never touched:
the fleet and the mapping files are generated into a temporary folder (``Hospitals`` in
``test_reconcile_source.py``), connectors come from ``hip fleet apply``, and ``hip normalizer run``
and ``hip sink run`` run as subprocesses that only this module starts and stops (by pid).

The workloads run in-process with the generator and executor of ``hip simulate run``, so the delete
count of every table is known exactly (see ``WIDEN`` there for two simulator column widths).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.simulator.workload import Transaction, Workload, execute, next_free_id
from hip.settings import ROOT, Settings
from tests.integration.test_reconcile_source import HIP, Hospitals, SimHospital, difference_lines, reconcile_cli

pytestmark = pytest.mark.integration

IDLE_QUIET_S = 6.0
IDLE_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """One pipeline worker started as a subprocess; stopped or killed by its own pid only."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen([HIP, *self.args, "--metrics-port", str(_free_port())], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        path = self.log_dir / f"{self.name}.{self.starts}.log"
        all_lines = (path.read_text(encoding="utf-8", errors="replace") if path.exists() else "").splitlines()
        first = next((i for i, line in enumerate(all_lines) if "Traceback" in line or "ERROR" in line), None)
        head = all_lines[first:first + lines] + ["…"] if first is not None else []
        return f"--- {self.name} log (start {self.starts}) ---\n" + "\n".join(head + all_lines[-lines:])


class Pipeline:
    """The hospitals, their connectors and the two workers of one test run."""

    def __init__(self, settings: Settings, hospitals: Hospitals) -> None:
        self.settings = settings
        self.h = hospitals
        self.mappings = hospitals.mappings()
        self.datasets = sorted({m.dataset for (org, _), r in self.mappings.routes.items()
                                if org in self.orgs for m in r.mappings})
        token = hospitals.token
        self.normalizer = Worker("normalizer", ["normalizer", "run", "--mappings", str(hospitals.mappings_dir),
                                                "--group", f"e2e-{token}-normalizer", "--wait-for-topics", "120",
                                                "--discover-interval", "3600"], hospitals.tmp)
        sink_args = ["sink", "run", "--group", f"e2e-{token}-sink", "--batch-wait", "0.2"]
        for ds in self.datasets:
            sink_args += ["--dataset", ds]
        self.sink = Worker("sink", sink_args, hospitals.tmp)
        self.deletes: Counter[str] = Counter()
        self.changes = 0
        self._lock = threading.Lock()

    @property
    def orgs(self) -> list[str]:
        return [x.org for x in self.h.all]

    # --- connectors ---------------------------------------------------------------------------
    def connectors(self) -> dict[str, Any]:
        r = requests.get(f"{self.settings.connect_url}/connectors?expand=status", timeout=10)
        r.raise_for_status()
        return {k: v for k, v in r.json().items() if k.startswith(self.h.connector_prefix + ".")}

    def apply_fleet(self) -> None:
        out = subprocess.run([HIP, "fleet", "--fleet", str(self.h.fleet_file), "apply"], capture_output=True,
                             text=True, timeout=180, cwd=ROOT)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = {k: (v["status"]["connector"]["state"], [t["state"] for t in v["status"]["tasks"]])
                      for k, v in self.connectors().items()}
            if len(states) == 2 and all(s == "RUNNING" and t == ["RUNNING"] for s, t in states.values()):
                return
            time.sleep(1)
        raise AssertionError(f"connectors not running after 120 s: {states}")

    def delete_connectors(self) -> None:
        for name in self.connectors():
            requests.delete(f"{self.settings.connect_url}/connectors/{name}", timeout=30)

    # --- workload -----------------------------------------------------------------------------
    def workload(self, h: SimHospital, changes: int, *, seed: int, rate: float = 0.0) -> None:
        """Run ``changes`` row changes on one hospital, counting deletes per table."""
        from connectors.simulator.database import connect

        conn = connect(h.profile, h.database)
        try:
            w = Workload(h.profile, seed=seed, id_start=next_free_id(conn, h.profile))

            def counted(txs: Iterator[Transaction]) -> Iterator[Transaction]:
                for tx in txs:
                    yield tx
                    with self._lock:
                        self.deletes.update(f"{h.org}.{op.table}" for op in tx.ops if op.kind == "delete")

            done = execute(conn, h.profile, counted(w.take(changes)), rate=rate)
            with self._lock:
                self.changes += done
        finally:
            conn.close()

    def run_workloads(self, changes: int, *, seed: int, rate: float = 0.0) -> list[threading.Thread]:
        errors: list[BaseException] = []

        def target(h: SimHospital) -> None:
            try:
                self.workload(h, changes, seed=seed, rate=rate)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join_all
                errors.append(exc)
        threads = [threading.Thread(target=target, args=(h,), daemon=True) for h in self.h.all]
        for t in threads:
            t.start()
        self._errors = errors
        return threads

    def join_all(self, threads: list[threading.Thread]) -> None:
        for t in threads:
            t.join(600)
        if self._errors:
            raise self._errors[0]

    # --- idleness -----------------------------------------------------------------------------
    def _lag(self, consumer: Consumer, group: str, topics: list[str]) -> tuple[int, int]:
        """(sum of high watermarks, lag of ``group``) over ``topics``."""
        md = consumer.list_topics(timeout=10).topics
        tps = [TopicPartition(t, p) for t in topics if t in md for p in md[t].partitions]
        if not tps:
            return 0, 0
        probe = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": group,
                          "enable.auto.commit": False})
        try:
            committed = {(tp.topic, tp.partition): tp.offset for tp in probe.committed(tps, timeout=10)}
        finally:
            probe.close()
        highs = 0
        lag = 0
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            highs += high
            done = committed.get((tp.topic, tp.partition), -1)
            lag += high - (done if done >= 0 else low)
        return highs, lag

    def _warehouse_signature(self, cur: Any) -> tuple[Any, ...]:
        parts = " UNION ALL ".join(f"SELECT count(*) AS n, max(warehouse_ts) AS t FROM std.{ds} "
                                   "WHERE org_code = ANY(%s)" for ds in self.datasets)
        cur.execute(f"SELECT sum(n), max(t) FROM ({parts}) s", [self.orgs] * len(self.datasets))
        return tuple(cur.fetchone())

    def wait_captured(self, timeout: float = 180.0) -> float:
        """Wait until the connectors have written everything (raw topics unchanged for a while)."""
        started = time.monotonic()
        consumer = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": "e2e-probe"})
        last: tuple[int, int] | None = None
        quiet_since = time.monotonic()
        try:
            while time.monotonic() - started < timeout:
                raw = [t for t in consumer.list_topics(timeout=10).topics
                       if any(t.startswith(f"raw.{org}.") for org in self.orgs)]
                signature = (len(raw), self._lag(consumer, "e2e-probe", raw)[0])
                if signature != last:
                    last, quiet_since = signature, time.monotonic()
                elif time.monotonic() - quiet_since >= IDLE_QUIET_S:
                    return time.monotonic() - started
                time.sleep(1)
        finally:
            consumer.close()
        raise AssertionError(f"raw topics still growing after {timeout:.0f} s: {last}")

    def wait_idle(self, timeout: float = IDLE_TIMEOUT_S) -> float:
        """Wait until both lags are 0 and nothing changed for a few seconds; returns the seconds waited."""
        started = time.monotonic()
        consumer = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": "e2e-probe"})
        wh = psycopg2.connect(self.settings.warehouse_dsn)
        wh.autocommit = True
        last: tuple[Any, ...] | None = None
        quiet_since = time.monotonic()
        try:
            while time.monotonic() - started < timeout:
                assert self.normalizer.alive(), self.normalizer.tail()
                assert self.sink.alive(), self.sink.tail()
                raw = [t for t in consumer.list_topics(timeout=10).topics
                       if any(t.startswith(f"raw.{org}.") for org in self.orgs)]
                raw_high, raw_lag = self._lag(consumer, f"e2e-{self.h.token}-normalizer", raw)
                std_high, std_lag = self._lag(consumer, f"e2e-{self.h.token}-sink",
                                              [f"std.{ds}" for ds in self.datasets])
                with wh.cursor() as cur:
                    signature = (raw_high, std_high, *self._warehouse_signature(cur))
                if signature != last or raw_lag or std_lag or not raw:
                    last = signature
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= IDLE_QUIET_S:
                    return time.monotonic() - started
                time.sleep(1)
        finally:
            consumer.close()
            wh.close()
        raise AssertionError(f"pipeline not idle after {timeout:.0f} s (last {last})\n"
                             f"{self.normalizer.tail()}\n{self.sink.tail()}")

    # --- checks -------------------------------------------------------------------------------
    def reconcile(self) -> subprocess.CompletedProcess[str]:
        return reconcile_cli(self.h)

    def summary(self, result: subprocess.CompletedProcess[str]) -> str:
        """The per-dataset lines of a reconciliation, then the workers' logs."""
        lines = [x for x in result.stdout.splitlines() if not x.startswith("     ") or "source rows" in x]
        return "\n".join(lines) + "\n" + result.stderr[-1000:] + self.normalizer.tail(15) + self.sink.tail(15)

    def duplicate_source_rows(self) -> list[tuple[Any, ...]]:
        """Source rows stored under more than one key (one source row must be one warehouse row)."""
        out: list[tuple[Any, ...]] = []
        with psycopg2.connect(self.settings.warehouse_dsn) as conn, conn.cursor() as cur:
            for ds in self.datasets:
                cur.execute(f"SELECT org_code, source_table, source_key, mapping_id, count(*) FROM std.{ds} "
                            "WHERE org_code = ANY(%s) GROUP BY 1, 2, 3, 4 HAVING count(*) > 1", (self.orgs,))
                out += [(ds, *r) for r in cur.fetchall()]
        conn.close()
        return out

    def deleted_rows(self) -> int:
        with psycopg2.connect(self.settings.warehouse_dsn) as conn, conn.cursor() as cur:
            total = 0
            for ds in self.datasets:
                cur.execute(f"SELECT count(*) FROM std.{ds} WHERE org_code = ANY(%s) AND deleted", (self.orgs,))
                total += cur.fetchone()[0]
        conn.close()
        return total

    def mapped_deletes(self) -> int:
        """Source deletes of rows that feed a dataset (each becomes one tombstone per mapping)."""
        total = 0
        for name, n in self.deletes.items():
            org, table = name.split(".", 1)
            route = self.mappings.route(org, table)
            if route is None:
                continue
            assert all(not m.where_columns for m in route.mappings), f"{table}: filtered mapping, count by row"
            total += n * len(route.mappings)
        return total

    # --- cleanup ------------------------------------------------------------------------------
    def cleanup(self) -> None:
        for w in (self.normalizer, self.sink):
            w.stop()
        self.delete_connectors()
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers})
        ours = [t for t in admin.list_topics(timeout=10).topics
                if any(org in t for org in self.orgs) or self.h.connector_prefix in t]
        if ours:
            for f in admin.delete_topics(ours, operation_timeout=30).values():
                try:
                    f.result(60)
                except Exception:  # noqa: BLE001 - a topic already gone is fine
                    pass
        groups = [f"e2e-{self.h.token}-normalizer", f"e2e-{self.h.token}-sink"]
        for f in admin.delete_consumer_groups(groups, request_timeout=30).values():
            try:
                f.result(60)
            except Exception:  # noqa: BLE001 - a group never created is fine
                pass
        with psycopg2.connect(self.settings.warehouse_dsn) as conn, conn.cursor() as cur:
            for ds in self.datasets:
                cur.execute(f"DELETE FROM std.{ds} WHERE org_code = ANY(%s)", (self.orgs,))
        conn.close()
        deadline = time.monotonic() + 60
        while True:  # the PostgreSQL slot stays active for a moment after its connector is deleted
            try:
                self.h.drop()
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


@pytest.fixture(scope="module")
def pipeline(stack: Settings) -> Iterator[Pipeline]:
    import uuid

    hospitals = Hospitals(stack, uuid.uuid4().hex[:6], prefix="e2e")
    p = Pipeline(stack, hospitals)
    try:
        hospitals.create()
        p.mappings = hospitals.mappings()
        p.datasets = sorted({m.dataset for (org, _), r in p.mappings.routes.items()
                             if org in p.orgs for m in r.mappings})
        p.apply_fleet()
        yield p
    finally:
        p.cleanup()


def _report(step: str, started: float) -> None:
    print(f"[e2e] {step}: {time.monotonic() - started:.1f}s", flush=True)


def test_workload_reaches_the_warehouse_exactly(pipeline: Pipeline) -> None:
    started = time.monotonic()
    pipeline.join_all(pipeline.run_workloads(10_000, seed=21))
    assert pipeline.changes >= 20_000
    assert sum(pipeline.deletes.values()) > 0
    _report(f"{pipeline.changes} source changes written", started)
    # Started once every table has its raw topic, and with topic discovery pushed out of the test's
    # time: the normalizer stops when any raw topic appears on the broker while it runs
    # (AttributeError in discover_topics), and other tests create raw topics all the time.
    _report(f"captured (waited {pipeline.wait_captured():.1f}s)", started)
    pipeline.normalizer.start()
    pipeline.sink.start()
    waited = pipeline.wait_idle()
    _report(f"pipeline idle (waited {waited:.1f}s)", started)

    result = pipeline.reconcile()
    _report("reconciled against source", started)
    assert result.returncode == 0, pipeline.summary(result)
    assert difference_lines(result.stdout) == []
    assert pipeline.duplicate_source_rows() == []
    assert pipeline.deleted_rows() == pipeline.mapped_deletes()


def test_killed_sink_and_normalizer_lose_and_duplicate_nothing(pipeline: Pipeline) -> None:
    started = time.monotonic()
    threads = pipeline.run_workloads(4_000, seed=22, rate=200.0)
    time.sleep(8)
    pipeline.sink.kill()
    _report("sink killed", started)
    pipeline.sink.start()
    time.sleep(8)
    pipeline.normalizer.kill()
    _report("normalizer killed", started)
    pipeline.normalizer.start()
    pipeline.join_all(threads)
    _report("workload done", started)
    waited = pipeline.wait_idle()
    _report(f"pipeline idle (waited {waited:.1f}s)", started)

    result = pipeline.reconcile()
    assert result.returncode == 0, pipeline.summary(result)
    assert difference_lines(result.stdout) == []
    assert pipeline.duplicate_source_rows() == []
    assert pipeline.deleted_rows() == pipeline.mapped_deletes()

"""The normalizer worker against the real stack: simulated hospitals → Debezium → std.* topics.

One normalizer process (``hip normalizer run``) serves both simulated hospitals of this run; it
starts before their connectors exist, so every raw topic reaches it through topic discovery and
resubscription. The expected outputs come from the pure core applied to the raw topics; the
final patient rows are also compared with the source databases.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.connect_client import ConnectClient
from connectors.fleet import Fleet
from connectors.sandbox import MariaDbHospital, PgHospital
from connectors.simulator.database import connect, create_hospital
from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Workload, execute, next_free_id, seed_transactions
from connectors.templates import RenderContext, render_system
from hip.codec import Codec
from hip.settings import ROOT, load_settings
from streams.core.mapping import MAPPINGS_DIR, load_mappings
from streams.core.normalize import DeadLetter, StandardRecord, normalize
from streams.normalizer_stage import DLQ_TOPIC, FINDINGS_TOPIC, dictionary_topics, header_map, unescape_topic

pytestmark = pytest.mark.integration

HIP = str(Path(sys.executable).with_name("hip"))
# (profile table, key column, name column, dataset key field) of the patient master rows
PATIENTS = {"a": ("MS_BRDA", "BRID", "BRXM"), "b": ("pat_info", "pat_id", "name")}
START = datetime(2024, 3, 1, 7, 30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Any, timeout: float, what: str, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def read_all(bootstrap: str, topics: list[str], idle: float = 3.0) -> list[Any]:
    """Every message of ``topics`` from the beginning to their current end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-read-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        md = c.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics if t in md for p in md[t].partitions]
        if not parts:
            return []
        pending = {(tp.topic, tp.partition) for tp in parts}
        c.assign(parts)
        out = []
        last = time.monotonic()
        while pending and time.monotonic() - last < idle:
            for m in c.consume(1000, timeout=0.5):
                last = time.monotonic()
                if m.error():
                    if m.error().code() == -191:
                        pending.discard((m.topic(), m.partition()))
                    continue
                out.append(m)
        return out
    finally:
        c.close()


class Hospital:
    """One simulated hospital of this run: database, capture user, connector, mapping file."""

    def __init__(self, vendor: str, tag: str, prefix: str) -> None:
        self.vendor = vendor
        self.profile = PROFILES[vendor]
        self.org = f"IT{tag}{vendor}".upper()
        self.db = f"it_norm_{tag}_{vendor}"
        self.prefix = prefix
        self.settings = load_settings()
        self.sandbox: PgHospital | MariaDbHospital
        if self.profile.dialect == "postgres":
            self.sandbox = PgHospital(self.settings.hospital_pg_port, self.db, self.settings.secrets_dir)
        else:
            self.sandbox = MariaDbHospital(self.settings.hospital_mariadb_port, self.db, self.settings.secrets_dir)
        self.connector = f"{prefix}.{self.org}.HIS"

    @property
    def tables(self) -> list[str]:
        from streams.core.source import parse_ddl

        names = parse_ddl(self.profile.ddl, self.profile.dialect).tables
        return [f"{self.profile.schema or self.db}.{t}" for t in names]

    def create(self, changes: int) -> None:
        create_hospital(self.profile, self.db)
        self.changes(0, seed=True)
        if changes:
            self.changes(changes, seed_no=1)
        if isinstance(self.sandbox, PgHospital):
            # The DBA's publication, made by the superuser (publication.autocreate.mode=disabled).
            self.sandbox.execute(f'CREATE PUBLICATION "hip_capture" FOR TABLE {", ".join(self.tables)}')
            self.user = self.sandbox.add_user(f"itn_{self.org.lower()}", "replication", self.tables)
        else:
            self.user = self.sandbox.add_user(f"itn_{self.org.lower()}", "replication")

    def changes(self, n: int, *, seed: bool = False, seed_no: int = 1, dirty: float = 0.0) -> None:
        conn = connect(self.profile, self.db)
        try:
            if seed:
                execute(conn, self.profile, seed_transactions(self.profile))
                return
            if dirty and self.profile.dialect == "mariadb":
                # The simulator spoils CHAR(1) codes with "ZZ", which strict mode refuses outright;
                # non-strict keeps "Z", still an unknown code.
                with conn.cursor() as cur:
                    cur.execute("SET SESSION sql_mode = ''")
            w = Workload(self.profile, seed=seed_no, start=START, dirty=dirty,
                         id_start=next_free_id(conn, self.profile))
            execute(conn, self.profile, w.take(n))
        finally:
            conn.close()

    def connector_config(self) -> dict[str, str]:
        s = self.settings
        port = s.hospital_pg_port if self.profile.dialect == "postgres" else s.hospital_mariadb_port
        doc = {"connector_prefix": self.prefix, "hospitals": [{
            "org": self.org, "name": f"集成测试{self.vendor}", "region": "长春", "enabled": True, "systems": {
                "HIS": {"db": "postgresql" if self.profile.dialect == "postgres" else "mariadb",
                        "host": "127.0.0.1", "port": port, "database": self.db, "credentials": self.user,
                        "vendor_profile": self.profile.name, "capture": "log", "tables": self.tables}}}]}
        fleet = Fleet.model_validate(doc)
        h = fleet.hospitals[0]
        ctx = RenderContext(bootstrap=s.bootstrap_servers, secrets_dir=s.secrets_dir)
        return render_system(fleet, h, "HIS", h.systems["HIS"], ctx)

    def mapping_file(self, folder: Path) -> None:
        (folder / "hospitals" / f"{self.org}.yaml").write_text(
            f'org_code: "{self.org}"\nname: 集成测试医院{self.vendor}\nprofile: {self.profile.name}\n'
            "time_zone: Asia/Shanghai\n", encoding="utf-8")

    def patients_in_db(self) -> dict[str, str]:
        table, key, name = PATIENTS[self.vendor]
        conn = connect(self.profile, self.db)
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT {key}, {name} FROM {self.profile.qualified(table)}")
            return {str(k): (n or "").strip() for k, n in cur.fetchall()}
        finally:
            conn.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = load_settings()
    client = ConnectClient(settings.connect_url, attempts=3)
    client.plugins()  # fails, not skips, when Connect is down
    requests.get(settings.registry_url + "/subjects", timeout=10).raise_for_status()
    tag = uuid.uuid4().hex[:8]
    prefix = f"itn{tag}"
    tmp = tmp_path_factory.mktemp("normalizer")
    mappings = tmp / "mappings"
    (mappings / "hospitals").mkdir(parents=True)
    for f in MAPPINGS_DIR.glob("*.yaml"):
        shutil.copy(f, mappings / f.name)
    hospitals = {v: Hospital(v, tag, prefix) for v in ("a", "b")}
    proc: subprocess.Popen[bytes] | None = None
    log = tmp / "normalizer.log"
    port = free_port()
    try:
        for h in hospitals.values():
            h.mapping_file(mappings)
            h.create(changes=300)  # rows present before capture starts: the snapshot
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([HIP, "normalizer", "run", "--mappings", str(mappings), "--group", f"it-norm-{tag}",
                                 "--metrics-port", str(port), "--discover-interval", "2", "--batch-within", "0.1"],
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        wait_for(lambda: _metrics(port) is not None or proc.poll() is not None, 120, "normalizer metrics", 1.0)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        started = time.time()
        for h in hospitals.values():
            client.put_config(h.connector, h.connector_config())
        yield {"settings": settings, "hospitals": hospitals, "mappings": mappings, "proc": proc, "log": log,
               "port": port, "client": client, "started": started, "tag": tag}
    finally:
        for h in hospitals.values():
            client.delete(h.connector)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(3)
        for h in hospitals.values():
            h.sandbox.drop()


def _metrics(port: int) -> str | None:
    try:
        r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        return r.text if r.ok else None
    except requests.RequestException:
        return None


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _expected(settings: Any, org: str, mappings_dir: Path) -> tuple[Counter[tuple[str, ...]], set[tuple[str, int, int]], int]:
    """What the pure core makes of the org's raw topics: std identities, dead-letter positions, count in."""
    from confluent_kafka.admin import AdminClient

    names = [t for t in AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10).topics
             if t.startswith(f"raw.{org}.")]
    mappings = load_mappings(mappings_dir)
    dicts = set(dictionary_topics(names, mappings))
    ordered = sorted(names, key=lambda t: (t not in dicts, t))
    msgs = read_all(settings.bootstrap_servers, ordered)
    msgs.sort(key=lambda m: (m.topic() not in dicts, m.topic(), m.partition(), m.offset()))
    lookups: dict[str, Any] = {}
    std: Counter[tuple[str, ...]] = Counter()
    dead: set[tuple[str, int, int]] = set()
    for m in msgs:
        for o in normalize(m.key(), m.value(), unescape_topic(m.topic()), m.partition(), m.offset(), mappings, lookups):
            if isinstance(o, StandardRecord):
                std[(o.dataset, o.key.decode(), o.record["source_position"], o.record["op"])] += 1
            else:
                assert isinstance(o, DeadLetter)
                dead.add((m.topic(), m.partition(), m.offset()))
    return std, dead, len(msgs)


def _observed(settings: Any, org: str, codec: Codec, datasets: list[str]) -> tuple[list[tuple[str, Any, dict[str, Any]]], list[Any]]:
    std_msgs = read_all(settings.bootstrap_servers, [f"std.{d}" for d in datasets])
    prefix = json.dumps([org]).encode()[:-1]
    std = []
    for m in std_msgs:
        if m.key() and m.key().startswith(prefix + b","):
            ds, rec = codec.decode(m.value())
            std.append((ds, m, rec))
    dlq = [m for m in read_all(settings.bootstrap_servers, [DLQ_TOPIC])
           if header_map(m.headers()).get("hip.org") == org.encode()]
    return std, dlq


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_snapshot_and_streaming_changes_become_standard_records(run: dict[str, Any], vendor: str) -> None:
    settings = run["settings"]
    h: Hospital = run["hospitals"][vendor]
    # Streaming changes (inserts, updates, deletes), some of them dirty, while the snapshot runs.
    h.changes(700, seed_no=7, dirty=0.05)
    mappings = load_mappings(run["mappings"])
    datasets = sorted({m.dataset for r in mappings.routes.values() for m in r.mappings})
    codec = Codec(settings.registry_url)

    def settled() -> Any:
        exp_std, exp_dead, n_in = _expected(settings, h.org, run["mappings"])
        std, dlq = _observed(settings, h.org, codec, datasets)
        got_std = Counter((ds, m.key().decode(), rec["source_position"], rec["op"]) for ds, m, rec in std)
        got_dead = {(header_map(m.headers())["hip.topic"].decode(), int(header_map(m.headers())["hip.partition"]),
                     int(header_map(m.headers())["hip.offset"])) for m in dlq}
        assert run["proc"].poll() is None, run["log"].read_text(errors="replace")[-3000:]
        ops = {rec["op"] for _, _, rec in std}
        ok = (n_in > 1000 and set(got_std) >= set(exp_std) and got_dead >= exp_dead and exp_dead
              and {"r", "c", "u", "d"} <= ops)
        return (exp_std, exp_dead, n_in, std, dlq, got_std, got_dead) if ok else None

    exp_std, exp_dead, n_in, std, dlq, got_std, got_dead = wait_for(settled, 420, f"{h.org} std records", 5.0)
    # Nothing is lost or invented: the worker's outputs are the core's outputs (at-least-once may
    # repeat a record after a restart, never here), and each dead letter is a whole raw message.
    assert set(got_std) == set(exp_std)
    assert got_dead == exp_dead
    # Every raw message that should produce something did: count in = count out + dead letters.
    assert len(set(got_std)) + len(got_dead) <= n_in
    for m in dlq:
        hd = header_map(m.headers())
        assert hd["hip.reason"] and hd["hip.error"] and hd["hip.stage"] == b"normalize"
        assert m.value() and json.loads(m.value())["source"]  # the original Debezium bytes
        topic = hd["hip.topic"].decode()
        assert topic.startswith(f"raw.{h.org}.")
    assert Counter(header_map(m.headers())["hip.reason"] for m in dlq)[b"unknown_code"] > 0

    # The last record of each patient matches the source database; dirty patients are dead letters.
    table, key_col, _ = PATIENTS[vendor]
    final: dict[str, dict[str, Any]] = {}
    for ds, m, rec in sorted(std, key=lambda x: (x[1].partition(), x[1].offset())):
        if ds == "patient_info":
            final[str(json.loads(rec["source_key"])[0])] = rec
    db = h.patients_in_db()
    dead_patients = {str(json.loads(m.value())["after"][key_col]) for m in dlq
                     if unescape_topic(header_map(m.headers())["hip.topic"].decode()).endswith("." + table)}
    assert final, "no patient_info records"
    for pid, rec in final.items():
        if rec["op"] == "d":
            assert pid not in db
        else:
            assert db[pid] == rec["name"], pid
    assert set(db) <= set(final) | dead_patients

    # Metrics and findings agree with the topics.
    text = _metrics(run["port"]) or ""
    # Counters restart with the process (it restarts when new raw topics appear): bounded above.
    assert 0 < _metric_sum(text, "hip_dead_letters_total", org=h.org) <= len(dlq)
    assert 0 < _metric_sum(text, "hip_records_out_total", org=h.org) <= len(std)
    assert _metric_sum(text, "hip_conformance_findings_total", org=h.org) > 0
    findings = [json.loads(m.value()) for m in read_all(settings.bootstrap_servers, [FINDINGS_TOPIC])
                if m.key() and m.key().startswith(json.dumps([h.org]).encode()[:-1] + b",")]
    assert findings and {"accepted"} <= {f["status"] for f in findings}
    assert all(f["org"] == h.org and f["rule"] and f["day"] and f["dataset"] for f in findings)


def test_bad_mapping_is_refused_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, bad)
    text = (bad / "vendor_b.yaml").read_text(encoding="utf-8")
    assert "      name: {trim: name}\n" in text
    (bad / "vendor_b.yaml").write_text(text.replace("      name: {trim: name}\n", "      nmae: {trim: name}\n", 1),
                                       encoding="utf-8")
    line = text.splitlines().index("      name: {trim: name}") + 1
    started = time.monotonic()
    r = subprocess.run([HIP, "normalizer", "run", "--mappings", str(bad), "--metrics-port", str(free_port())],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{bad / 'vendor_b.yaml'}:{line}" in r.stderr, r.stderr
    assert "nmae" in r.stderr
    assert time.monotonic() - started < 60

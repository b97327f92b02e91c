"""``hip sink reconcile --against source`` against real hospital databases and the real warehouse.

Two small simulated hospitals (vendor A on MariaDB, vendor B on PostgreSQL) with their own
databases, capture users, organisation codes and mapping files; the expected standard records are
written by the sink's own writer into a throw-away warehouse schema. Reconciliation then shows
zero differences, and after one warehouse row is altered and another deleted, exactly those two.

``Hospitals`` is shared with ``test_e2e.py``: it makes the databases, the grants, a temporary fleet
file and a temporary mappings folder, and removes all of them afterwards.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest
import yaml

from connectors.fleet import load_fleet
from connectors.simulator.database import connect, create_hospital
from connectors.simulator.dba import capture_user, grant_capture
from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Workload, execute, next_free_id, seed_transactions
from hip.settings import ROOT, Settings, load_settings
from streams.core.mapping import MAPPINGS_DIR, load_mappings
from streams.core.source import parse_ddl

pytestmark = pytest.mark.integration

HIP = str(Path(sys.executable).with_name("hip"))

@dataclass
class SimHospital:
    vendor: str
    org: str
    database: str
    credentials: str

    @property
    def profile(self) -> Any:
        return PROFILES[self.vendor]


class Hospitals:
    """One vendor A (MariaDB) and one vendor B (PostgreSQL) hospital under unique names."""

    def __init__(self, settings: Settings, token: str, *, prefix: str = "rc") -> None:
        self.settings = settings
        self.token = token
        self.prefix = prefix
        self.connector_prefix = f"{prefix}-{token}"
        self.a = SimHospital("a", f"{prefix.upper()}A{token.upper()}", f"{prefix}_a_{token}", f"{prefix}_a_{token}-his")
        self.b = SimHospital("b", f"{prefix.upper()}B{token.upper()}", f"{prefix}_b_{token}", f"{prefix}_b_{token}-his")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"hip-{prefix}-{token}-"))
        self.fleet_file = self.tmp / "fleet.yaml"
        self.mappings_dir = self.tmp / "mappings"

    @property
    def all(self) -> list[SimHospital]:
        return [self.a, self.b]

    def _system(self, h: SimHospital) -> dict[str, Any]:
        profile = h.profile
        ddl = parse_ddl(profile.ddl, profile.dialect)
        if profile.dialect == "postgres":
            return {"db": "postgresql", "host": "127.0.0.1", "port": self.settings.hospital_pg_port,
                    "database": h.database, "credentials": h.credentials, "vendor_profile": "vendor_b",
                    "capture": "log", "publication": "hip_capture",
                    "tables": [f"{profile.schema}.{t}" for t in ddl.tables]}
        return {"db": "mariadb", "host": "127.0.0.1", "port": self.settings.hospital_mariadb_port,
                "database": h.database, "credentials": h.credentials, "vendor_profile": "vendor_a",
                "capture": "log", "tables": [f"{h.database}.{t}" for t in ddl.tables]}

    def create(self, *, changes: int = 0, seed: int = 5) -> None:
        """Databases with code tables, capture users, fleet file and mapping files."""
        fleet = {"connector_prefix": self.connector_prefix, "hospitals": [
            {"org": h.org, "name": f"test hospital {h.org}", "region": "长春", "enabled": True,
             "systems": {"HIS": self._system(h)}} for h in self.all]}
        self.fleet_file.write_text(yaml.safe_dump(fleet, allow_unicode=True), encoding="utf-8")
        (self.mappings_dir / "hospitals").mkdir(parents=True)
        for profile_file in MAPPINGS_DIR.glob("*.yaml"):
            shutil.copy(profile_file, self.mappings_dir / profile_file.name)
        for h in self.all:
            (self.mappings_dir / "hospitals" / f"{h.org}.yaml").write_text(yaml.safe_dump(
                {"org_code": h.org, "name": h.org, "profile": f"vendor_{h.vendor}", "time_zone": "Asia/Shanghai"}),
                encoding="utf-8")
        loaded = load_fleet(self.fleet_file)
        for h in self.all:
            create_hospital(h.profile, h.database)
            conn = connect(h.profile, h.database)
            try:
                execute(conn, h.profile, seed_transactions(h.profile))
            finally:
                conn.close()
            grant_capture(h.profile, loaded.hospital(h.org).systems["HIS"])
        if changes:
            for h in self.all:
                self.run_workload(h, changes, seed=seed)

    def run_workload(self, h: SimHospital, changes: int, *, seed: int,
                     start: datetime = datetime(2024, 3, 4, 7, 30)) -> Workload:
        """Run a workload in-process (same generator and executor as ``hip simulate run``).

        Returns the workload for its counts.
        """
        conn = connect(h.profile, h.database)
        try:
            workload = Workload(h.profile, seed=seed, start=start, id_start=next_free_id(conn, h.profile))
            execute(conn, h.profile, workload.take(changes))
        finally:
            conn.close()
        return workload

    def mappings(self) -> Any:
        return load_mappings(self.mappings_dir)

    def drop(self) -> None:
        """Remove databases, capture users, secrets and temporary files (errors are reported, not hidden)."""
        problems: list[str] = []
        for h in self.all:
            user = capture_user(load_fleet(self.fleet_file).hospital(h.org).systems["HIS"]) \
                if self.fleet_file.exists() else None
            try:
                admin = connect(h.profile, None)
                try:
                    if h.profile.dialect == "postgres":
                        admin.autocommit = True
                        with admin.cursor() as cur:
                            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                        "WHERE database = %s AND NOT active", (h.database,))
                            cur.execute(f"DROP DATABASE IF EXISTS {h.database} WITH (FORCE)")
                            if user:
                                cur.execute(f'DROP ROLE IF EXISTS "{user}"')
                    else:
                        with admin.cursor() as cur:
                            cur.execute(f"DROP DATABASE IF EXISTS {h.database}")
                            if user:
                                cur.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
                        admin.commit()
                finally:
                    admin.close()
            except Exception as exc:  # noqa: BLE001 - keep cleaning the rest
                problems.append(f"{h.database}: {exc}")
            self.settings.secret_file(h.credentials).unlink(missing_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            raise AssertionError(f"cleanup failed: {problems}")


def reconcile_cli(h: Hospitals, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [HIP, "sink", "reconcile", "--against", "source", "--fleet", str(h.fleet_file),
           "--mappings", str(h.mappings_dir), "--limit", "50", *extra]
    for x in h.all:
        cmd += ["--org", x.org]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


DIFF_LINE = re.compile(r"^\s+(missing|extra|different|duplicate) (\[.*\])$")


def difference_lines(output: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(DIFF_LINE.match, output.splitlines()) if m]


# --- the test ---------------------------------------------------------------------------------

@pytest.fixture
def hospitals(stack: Settings) -> Iterator[Hospitals]:
    h = Hospitals(stack, uuid.uuid4().hex[:6])
    try:
        h.create(changes=600)
        yield h
    finally:
        h.drop()


def test_reconcile_against_source_finds_exactly_the_altered_and_deleted_rows(hospitals: Hospitals) -> None:
    from sinks.core.batch import Change
    from sinks.reconciler import source_side
    from sinks.sink_cli import catalogue_tables
    from sinks.warehouse import Warehouse

    settings = load_settings()
    schema = f"rc_{hospitals.token}"
    resolve = catalogue_tables()
    mappings = hospitals.mappings()
    fleet = load_fleet(hospitals.fleet_file)
    expected: dict[str, list[dict[str, Any]]] = {}
    rejected = 0
    for h in hospitals.all:
        side = source_side(h.org, fleet, mappings, keep=lambda ds, rec: expected.setdefault(ds, []).append(rec))
        rejected += sum(side.rejected.values())
    assert set(expected) >= {"patient_info", "outpatient_registration", "department", "staff"}

    wh = psycopg2.connect(settings.warehouse_dsn)
    wh.autocommit = True
    warehouse = Warehouse(settings.warehouse_dsn, application_name="test-reconcile")
    try:
        with wh.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
            for ds in {m.dataset for r in mappings.routes.values() for m in r.mappings}:
                cur.execute(f"CREATE TABLE {schema}.{ds} (LIKE std.{ds} INCLUDING ALL)")
        from dataclasses import replace
        for ds, records in expected.items():
            table = replace(resolve(ds), schema=schema)
            result = warehouse.write(table, [Change(r, offset=i) for i, r in enumerate(records)])
            assert not result.rejected, result.rejected[:3]
        warehouse.commit()

        started = time.monotonic()
        clean = reconcile_cli(hospitals, "--warehouse-schema", schema)
        seconds = time.monotonic() - started
        assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
        assert difference_lines(clean.stdout) == []
        assert "DIFF" not in clean.stdout
        totals = re.findall(r"^\s+\S+: \d+ source rows mapped, rejected at source (\d+)", clean.stdout, re.M)
        assert sum(map(int, totals)) == rejected
        print(f"clean reconciliation of {sum(map(len, expected.values()))} records in {seconds:.1f}s")

        a, b = hospitals.a.org, hospitals.b.org
        with wh.cursor() as cur:
            cur.execute(f"SELECT registration_no FROM {schema}.outpatient_registration WHERE org_code = %s "
                        "ORDER BY registration_no LIMIT 1", (a,))
            (altered,) = cur.fetchone()
            cur.execute(f"UPDATE {schema}.outpatient_registration SET dept_name = dept_name || '?' "
                        "WHERE org_code = %s AND registration_no = %s", (a, altered))
            cur.execute(f"SELECT patient_id FROM {schema}.patient_info WHERE org_code = %s "
                        "ORDER BY patient_id LIMIT 1", (b,))
            (gone,) = cur.fetchone()
            cur.execute(f"DELETE FROM {schema}.patient_info WHERE org_code = %s AND patient_id = %s", (b, gone))

        dirty = reconcile_cli(hospitals, "--warehouse-schema", schema)
        assert dirty.returncode == 1, dirty.stdout[-3000:] + dirty.stderr[-3000:]
        assert sorted(difference_lines(dirty.stdout)) == sorted([
            ("different", str([a, str(altered)]).replace('"', "'")),
            ("missing", str([b, str(gone)]).replace('"', "'")),
        ]), dirty.stdout
        assert re.search(rf"^DIFF {a} outpatient_registration: .* different 1", dirty.stdout, re.M)
        assert re.search(rf"^DIFF {b} patient_info: .* missing 1", dirty.stdout, re.M)
        assert len(re.findall(r"^DIFF ", dirty.stdout, re.M)) == 2
    finally:
        warehouse.close()
        with wh.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        wh.close()

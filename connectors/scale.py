"""Scale run (``make scale``, not in CI): all 66 hospitals onboarded by one apply.

Each hospital of ``hospitals.yaml`` gets a small database on the local PostgreSQL or MariaDB (the
first ``--pg`` on PostgreSQL: the local cluster allows only ``max_wal_senders`` walsenders), its own
capture user, and one HIS connector. Reports time to converge, Connect's memory and CPU with every
connector running, and a throughput sample. Everything created is removed at the end unless
``--keep``.

    python -m connectors.scale [--pg 16] [--rows 200] [--keep]
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import click
import yaml

from connectors.connect_client import ConnectClient
from connectors.fleet import HOSPITALS_FILE, Fleet, load_fleet
from connectors.plan import plan
from connectors.sandbox import MariaDbHospital, PgHospital
from connectors.templates import RenderContext, render_fleet
from hip.proc import recorded_pid
from hip.settings import load_settings

PG_DDL = """
CREATE SCHEMA his;
CREATE TABLE his.pat_info (pat_id varchar(20) PRIMARY KEY, name varchar(50), updated_at timestamp);
CREATE TABLE his.outpt_register (reg_id varchar(20) PRIMARY KEY, pat_id varchar(20), fee numeric(10,2),
                                 reg_time timestamp);
CREATE TABLE his.inpt_visit (inpt_id varchar(20) PRIMARY KEY, pat_id varchar(20), admit_time timestamp);
"""
PG_TABLES = ["his.pat_info", "his.outpt_register", "his.inpt_visit"]
MY_DDL = ["CREATE TABLE MS_BRDA (BRID VARCHAR(20) PRIMARY KEY, BRXM VARCHAR(50), XGSJ DATETIME)",
          "CREATE TABLE MS_GHMX (SBXH VARCHAR(20) PRIMARY KEY, BRID VARCHAR(20), GHJE DECIMAL(10,2), GHSJ DATETIME)",
          "CREATE TABLE ZY_BRRY (ZYH VARCHAR(20) PRIMARY KEY, BRID VARCHAR(20), RYRQ DATETIME)"]
MY_TABLES = ["MS_BRDA", "MS_GHMX", "ZY_BRRY"]


def proc_stats(pid: int) -> dict[str, float]:
    """Resident memory (MiB) and cumulative CPU seconds of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_mib": rss_kb / 1024, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def cpu_percent(pid: int, seconds: float) -> float:
    a = proc_stats(pid)["cpu_s"]
    time.sleep(seconds)
    return 100.0 * (proc_stats(pid)["cpu_s"] - a) / seconds


def running(client: ConnectClient, prefix: str) -> tuple[int, int]:
    ok = failed = 0
    for name, entry in client.connectors().items():
        if not name.startswith(prefix + "."):
            continue
        st = entry["status"]
        tasks = [t["state"] for t in st.get("tasks", [])]
        if st["connector"]["state"] == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            ok += 1
        elif st["connector"]["state"] == "FAILED" or "FAILED" in tasks:
            failed += 1
    return ok, failed


@click.command()
@click.option("--pg", "n_pg", default=16, show_default=True, help="hospitals on PostgreSQL; the rest on MariaDB")
@click.option("--rows", default=200, show_default=True, help="rows inserted per hospital for the throughput sample")
@click.option("--keep", is_flag=True, help="leave databases and connectors in place")
@click.option("--out", type=click.Path(path_type=Path), help="write the measurements as JSON here")
def main(n_pg: int, rows: int, keep: bool, out: Path | None) -> None:
    settings = load_settings()
    client = ConnectClient(settings.connect_url)
    connect_pid = recorded_pid(settings.var / "run", "connect")
    if connect_pid is None:
        raise SystemExit("Kafka Connect is not running (no live pid in var/run/connect.pid): make up first")
    tag = uuid.uuid4().hex[:6]
    prefix = f"scale{tag}"
    base = load_fleet(HOSPITALS_FILE)
    sandboxes: list[Any] = []
    hospitals = []
    t0 = time.monotonic()
    try:
        with click.progressbar(list(enumerate(base.hospitals)), label="creating hospital databases") as bar:
            for i, h in bar:
                org = f"SC{tag.upper()}{i:02d}"
                db = f"scale_{tag}_{i:02d}"
                if i < n_pg:
                    sb: Any = PgHospital(settings.hospital_pg_port, db, settings.secrets_dir)
                    sb.create(PG_DDL, PG_TABLES)
                    user = sb.add_user(f"sc_{tag}_{i:02d}", "replication", PG_TABLES)
                    spec = {"db": "postgresql", "port": settings.hospital_pg_port, "database": db,
                            "tables": PG_TABLES, "vendor_profile": "vendor_b"}
                else:
                    sb = MariaDbHospital(settings.hospital_mariadb_port, db, settings.secrets_dir)
                    sb.create(MY_DDL)
                    user = sb.add_user(f"sc_{tag}_{i:02d}", "replication")
                    spec = {"db": "mariadb", "port": settings.hospital_mariadb_port, "database": db,
                            "tables": [f"{db}.{t}" for t in MY_TABLES], "vendor_profile": "vendor_a"}
                sandboxes.append(sb)
                hospitals.append({"org": org, "name": h.name, "region": h.region, "enabled": True, "systems": {
                    "HIS": {**spec, "host": "127.0.0.1", "credentials": user, "capture": "log",
                            "timezone": "Asia/Shanghai"}}})
        fleet = Fleet.model_validate({"connector_prefix": prefix, "hospitals": hospitals})
        (settings.var / "scale").mkdir(parents=True, exist_ok=True)
        (settings.var / "scale" / f"fleet-{tag}.yaml").write_text(
            yaml.safe_dump(fleet.model_dump(exclude_defaults=True), allow_unicode=True), encoding="utf-8")
        setup_s = time.monotonic() - t0
        before = proc_stats(connect_pid)
        idle_cpu_before = cpu_percent(connect_pid, 5)
        desired = render_fleet(fleet, RenderContext(settings.bootstrap_servers, settings.secrets_dir))
        t1 = time.monotonic()
        changes = plan(desired, client.configs(), prefix)
        for ch in changes:
            assert ch.desired is not None
            client.put_config(ch.name, ch.desired)
        apply_s = time.monotonic() - t1
        ok = failed = 0
        while time.monotonic() - t1 < 600:
            ok, failed = running(client, prefix)
            if ok + failed >= len(desired) and ok == len(desired):
                break
            time.sleep(2)
        converge_s = time.monotonic() - t1
        second = plan(desired, client.configs(), prefix)
        time.sleep(10)  # let the initial snapshots settle
        steady = proc_stats(connect_pid)
        idle_cpu = cpu_percent(connect_pid, 15)
        # throughput sample: rows inserted into every hospital, Connect's CPU while it streams them
        t2 = time.monotonic()
        for i, sb in enumerate(sandboxes):
            if isinstance(sb, PgHospital):
                sb.execute("INSERT INTO his.pat_info SELECT 'P' || g, '患者' || g, localtimestamp "
                           "FROM generate_series(1, %s) g", (rows,))
            else:
                sb.execute("INSERT INTO MS_BRDA SELECT CONCAT('P', seq), CONCAT('患者', seq), NOW() "
                           "FROM seq_1_to_%s" % int(rows))
        load_cpu = cpu_percent(connect_pid, 15)
        result = {
            "hospitals": len(hospitals), "on_postgresql": min(n_pg, len(hospitals)),
            "on_mariadb": max(0, len(hospitals) - n_pg), "connectors": len(desired),
            "setup_databases_s": round(setup_s, 1), "apply_requests_s": round(apply_s, 1),
            "converge_s": round(converge_s, 1), "running": ok, "failed": failed,
            "second_plan_changes": len(second),
            "connect_rss_mib_before": round(before["rss_mib"]), "connect_rss_mib_with_fleet": round(steady["rss_mib"]),
            "connect_cpu_pct_idle_before": round(idle_cpu_before, 1), "connect_cpu_pct_idle_with_fleet": round(idle_cpu, 1),
            "connect_cpu_pct_while_loading": round(load_cpu, 1), "rows_inserted": rows * len(sandboxes),
            "insert_s": round(time.monotonic() - t2, 1),
        }
        click.echo(json.dumps(result, indent=1, ensure_ascii=False))
        if out:
            out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    finally:
        if not keep:
            for name in list(client.connectors()):
                if name.startswith(prefix + "."):
                    client.delete(name)
            time.sleep(3)
            for sb in sandboxes:
                try:
                    sb.drop()
                except Exception as exc:  # noqa: BLE001 - keep cleaning the others
                    click.echo(f"cleanup of {sb.database} failed: {exc}", err=True)


if __name__ == "__main__":
    main()

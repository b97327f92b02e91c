"""The fleet against the real Connect cluster and hospital databases of ``make up``."""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner, Result

from connectors.connect_client import ConnectClient
from connectors.fleet_cli import fleet as fleet_group
from connectors.sandbox import MariaDbHospital, PgHospital
from connectors.templates import TEMPLATE_DIR
from hip.settings import load_settings

pytestmark = pytest.mark.integration

PG_DDL = """
CREATE SCHEMA his;
CREATE TABLE his.patient (id int PRIMARY KEY, name text, updated_at timestamp DEFAULT localtimestamp);
CREATE TABLE his.visit (id int PRIMARY KEY, patient_id int, fee numeric(10,2));
CREATE TABLE his.nokey (a int, b text);
"""
MY_DDL = ["CREATE TABLE patient (id INT PRIMARY KEY, name VARCHAR(50), fee DECIMAL(10,2), "
          "updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)"]


def run(args: list[str]) -> Result:
    return CliRunner().invoke(fleet_group, args, catch_exceptions=False)


def wait_for(pred: Any, timeout: float = 90.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = load_settings()
    client = ConnectClient(settings.connect_url, attempts=3)
    client.plugins()  # fails (not skips) when Connect is down
    tag = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("fleet")
    pg = PgHospital(settings.hospital_pg_port, f"it_fleet_{tag}", settings.secrets_dir)
    my = MariaDbHospital(settings.hospital_mariadb_port, f"it_fleet_{tag}", settings.secrets_dir)
    prefix = f"it{tag}"
    try:
        pg.create(PG_DDL, ["his.patient", "his.visit"])
        pg_rep = pg.add_user(f"it_{tag}_rep", "replication", ["his.patient", "his.visit", "his.nokey"])
        pg_sel = pg.add_user(f"it_{tag}_sel", "select", ["his.patient", "his.visit"])
        my.create(MY_DDL)
        my_rep = my.add_user(f"it_{tag}_myrep", "replication")
        my_sel = my.add_user(f"it_{tag}_mysel", "select")
        org_pg, org_my = f"IT{tag}P".upper(), f"IT{tag}M".upper()
        base = {"timezone": "Asia/Shanghai", "capture": "log"}
        doc = {"connector_prefix": prefix, "hospitals": [
            {"org": org_pg, "name": "集成测试医院P", "region": "长春", "enabled": True, "systems": {
                "HIS": {**base, "db": "postgresql", "host": "127.0.0.1", "port": settings.hospital_pg_port,
                        "database": pg.database, "credentials": pg_rep, "vendor_profile": "vendor_b",
                        "tables": ["his.patient", "his.visit"]}}},
            {"org": org_my, "name": "集成测试医院M", "region": "吉林", "enabled": True, "systems": {
                "HIS": {**base, "db": "mariadb", "host": "127.0.0.1", "port": settings.hospital_mariadb_port,
                        "database": my.database, "credentials": my_rep, "vendor_profile": "vendor_a",
                        "tables": [f"{my.database}.patient"]}}},
        ]}
        fleet_file = tmp / "fleet.yaml"
        fleet_file.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        yield {"tag": tag, "tmp": tmp, "pg": pg, "my": my, "doc": doc, "file": fleet_file, "client": client,
               "prefix": prefix, "org_pg": org_pg, "org_my": org_my, "pg_sel": pg_sel, "my_sel": my_sel,
               "pg_rep": pg_rep}
    finally:
        for name in list(client.connectors()):
            if name.startswith(prefix + "."):
                client.delete(name)
        time.sleep(2)
        pg.drop()
        my.drop()


def write_fleet(env: dict[str, Any], doc: dict[str, Any], name: str) -> Path:
    path: Path = env["tmp"] / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def states(env: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for name, entry in env["client"].connectors().items():
        if name.startswith(env["prefix"] + "."):
            st = entry["status"]
            out[name] = (st["connector"]["state"], [t["state"] for t in st.get("tasks", [])])
    return out


def all_running(env: dict[str, Any], n: int) -> bool:
    s = states(env)
    return len(s) == n and all(c == "RUNNING" and t and all(x == "RUNNING" for x in t) for c, t in s.values())


def test_plan_apply_converge_and_second_apply_is_a_no_op(env: dict[str, Any]) -> None:
    f = str(env["file"])
    r = run(["--fleet", f, "plan"])
    assert r.exit_code == 1, r.output
    assert "2 to create" in r.output
    r = run(["--fleet", f, "apply"])
    assert r.exit_code == 0, r.output
    wait_for(lambda: all_running(env, 2), what="both connectors RUNNING")
    r = run(["--fleet", f, "plan"])
    assert r.exit_code == 0 and "No changes" in r.output, r.output
    r = run(["--fleet", f, "apply"])
    assert r.exit_code == 0 and "No changes" in r.output, r.output
    r = run(["--fleet", f, "status", "--hospital", env["org_pg"]])
    assert r.exit_code == 0, r.output
    assert "RUNNING" in r.output and env["org_my"] not in r.output


def test_changed_template_updates_only_its_connectors(env: dict[str, Any]) -> None:
    f = str(env["file"])
    run(["--fleet", f, "apply"])
    templates = env["tmp"] / "templates"
    shutil.copytree(TEMPLATE_DIR, templates, dirs_exist_ok=True)
    with (templates / "mariadb.yaml").open("a", encoding="utf-8") as fh:
        fh.write('poll.interval.ms: "250"\n')
    r = run(["--fleet", f, "--templates", str(templates), "plan"])
    assert r.exit_code == 1, r.output
    assert f"~ update {env['prefix']}.{env['org_my']}.HIS" in r.output
    assert "poll.interval.ms: 100 → 250" in r.output
    assert "0 to create, 1 to update, 0 to delete" in r.output
    r = run(["--fleet", f, "--templates", str(templates), "apply"])
    assert r.exit_code == 0, r.output
    cfg = env["client"].configs()
    assert cfg[f"{env['prefix']}.{env['org_my']}.HIS"]["poll.interval.ms"] == "250"
    assert cfg[f"{env['prefix']}.{env['org_pg']}.HIS"]["poll.interval.ms"] == "100"
    r = run(["--fleet", f, "--templates", str(templates), "plan"])
    assert r.exit_code == 0, r.output
    # back to the committed templates for the following tests
    assert run(["--fleet", f, "apply"]).exit_code == 0


def test_failed_connector_is_reported_and_restarted(env: dict[str, Any]) -> None:
    doc = yaml.safe_load(env["file"].read_text(encoding="utf-8"))
    spec = doc["hospitals"][0]["systems"]["HIS"]
    doc["hospitals"][0]["systems"]["EMR"] = {**spec, "publication": "hip_emr_missing", "tables": ["his.visit"]}
    f = str(write_fleet(env, doc, "fleet_failing.yaml"))
    r = run(["--fleet", f, "apply"])
    assert r.exit_code == 0, r.output
    emr = f"{env['prefix']}.{env['org_pg']}.EMR"

    def failed() -> bool:
        c, t = states(env).get(emr, ("", []))
        return c == "FAILED" or "FAILED" in t

    wait_for(failed, what=f"{emr} to fail")
    r = run(["--fleet", f, "status", "--hospital", env["org_pg"]])
    assert r.exit_code == 1, r.output
    assert "FAILED" in r.output and "error:" in r.output and "Publication" in r.output, r.output
    # the DBA creates the publication; the platform restarts only what failed
    env["pg"].execute('CREATE PUBLICATION "hip_emr_missing" FOR TABLE his.visit')
    r = run(["--fleet", f, "restart", "--failed", "--hospital", env["org_pg"]])
    assert r.exit_code == 0 and f"restarted {emr}" in r.output, r.output
    assert f"restarted {env['prefix']}.{env['org_pg']}.HIS" not in r.output
    wait_for(lambda: all_running(env, 3), what="all three RUNNING after restart")
    r = run(["--fleet", f, "pause", "--region", "长春"])
    assert r.exit_code == 0 and emr in r.output
    wait_for(lambda: states(env)[emr][0] == "PAUSED", what="paused")
    assert states(env)[f"{env['prefix']}.{env['org_my']}.HIS"][0] == "RUNNING"
    assert run(["--fleet", f, "resume", "--all"]).exit_code == 0
    wait_for(lambda: all_running(env, 3), what="resumed")
    # removing the system from the declaration deletes its connector and names the slot to drop
    r = run(["--fleet", str(env["file"]), "plan"])
    assert f"- delete {emr}" in r.output and "pg_drop_replication_slot" in r.output, r.output
    assert run(["--fleet", str(env["file"]), "apply"]).exit_code == 0
    assert emr not in env["client"].connectors()


def test_preflight_names_missing_privileges(env: dict[str, Any]) -> None:
    doc = yaml.safe_load(env["file"].read_text(encoding="utf-8"))
    doc["hospitals"][0]["systems"]["HIS"]["credentials"] = env["pg_sel"]
    doc["hospitals"][0]["systems"]["HIS"]["tables"].append("his.nokey")
    doc["hospitals"][1]["systems"]["HIS"]["credentials"] = env["my_sel"]
    f = str(write_fleet(env, doc, "fleet_underprivileged.yaml"))
    r = run(["--fleet", f, "preflight", "--hospital", env["org_pg"]])
    assert r.exit_code == 1, r.output
    assert f'ALTER ROLE "{env["pg_sel"]}" WITH REPLICATION;' in r.output
    assert 'GRANT SELECT ON "his"."nokey"' in r.output
    assert 'ALTER PUBLICATION "hip_capture" ADD TABLE "his"."nokey"' in r.output
    assert "REPLICA IDENTITY FULL" in r.output
    assert "recommended push" in r.output or "recommended poll" in r.output
    r = run(["--fleet", f, "preflight", "--hospital", env["org_my"]])
    assert r.exit_code == 1, r.output
    assert f"GRANT REPLICATION SLAVE ON *.* TO '{env['my_sel']}'@'%';" in r.output
    assert "recommended poll" in r.output
    # the privileged users pass
    r = run(["--fleet", str(env["file"]), "preflight", "--hospital", env["org_my"]])
    assert r.exit_code == 0 and "recommended log" in r.output, r.output
    r = run(["--fleet", str(env["file"]), "preflight", "--hospital", env["org_pg"]])
    assert "recommended log" in r.output, r.output


def test_rendered_configs_pass_connect_validation(env: dict[str, Any]) -> None:
    r = run(["--fleet", str(env["file"]), "validate"])
    assert r.exit_code == 0, r.output
    assert r.output.count("✓") == 2

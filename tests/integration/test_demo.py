"""The main job (`make demo`) end to end: every captured change is in the warehouse, exactly."""
from __future__ import annotations

import time

import psycopg2
import pytest

from connectors.simulator.database import admin_credentials
from hip.catalogue import load_catalogue
from hip.settings import Settings

pytestmark = pytest.mark.integration


def test_demo_reconciles_with_the_hospitals_and_the_statistics(demo_pipeline: str) -> None:
    lines = demo_pipeline.splitlines()
    assert not [ln for ln in lines if ln.startswith("DIFF")], "\n".join(ln for ln in lines if ln.startswith("DIFF"))
    assert sum(ln.startswith("ok ") for ln in lines) >= 3 * 18  # three hospitals, every mapped dataset
    assert "statistics equal the recomputation" in demo_pipeline


def delete_a_registration_at_sim_b01(settings: Settings) -> int:
    """Delete one registration in the demo's PostgreSQL hospital (no visit refers to it); its id."""
    user, password = admin_credentials("postgres")
    conn = psycopg2.connect(host="127.0.0.1", port=settings.hospital_pg_port, user=user, password=password,
                            dbname="sim_b01", connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("delete from his.outpt_register where reg_id = (select r.reg_id from his.outpt_register r "
                        "where not exists (select 1 from his.outpt_visit v where v.reg_id = r.reg_id) "
                        "order by r.reg_id limit 1) returning reg_id")
            row = cur.fetchone()
        conn.commit()
    finally:
        conn.close()
    assert row is not None, "sim_b01 has no registration without a visit to delete"
    return int(row[0])


def test_demo_warehouse_has_rows_of_every_hospital_and_flags_deletes(demo_pipeline: str, settings: Settings) -> None:
    conn = psycopg2.connect(settings.warehouse_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select org_code, count(*) from std.outpatient_registration "
                        "where org_code in ('SIMA01', 'SIMB01', 'SIMB02') group by org_code")
            assert {org for org, n in cur.fetchall() if n > 0} == {"SIMA01", "SIMB01", "SIMB02"}
            # A registration deleted at the source is kept here as a flagged row. (The demo's own
            # workload deletes one about every 150 transactions, so a short run may have none.)
            reg_id = delete_a_registration_at_sim_b01(settings)
            deadline = time.time() + 90
            while True:
                conn.rollback()
                cur.execute("select deleted from std.outpatient_registration "
                            "where org_code = 'SIMB01' and registration_no = %s", (str(reg_id),))
                row = cur.fetchone()
                if row is not None and row[0]:
                    break
                assert time.time() < deadline, f"registration {reg_id} deleted at SIMB01 is not flagged: {row}"
                time.sleep(1)
            for ds in load_catalogue():
                if ds.is_statistic:
                    continue
                keys = ", ".join(["org_code", *ds.business_key])
                cur.execute(f"select count(*) - count(distinct ({keys})) from std.{ds.name}")
                assert cur.fetchone()[0] == 0, ds.name
    finally:
        conn.close()

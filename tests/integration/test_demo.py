"""The main job (`make demo`) end to end: every captured change is in the warehouse, exactly."""
from __future__ import annotations

import psycopg2
import pytest

from hip.catalogue import load_catalogue
from hip.settings import Settings

pytestmark = pytest.mark.integration


def test_demo_reconciles_with_the_hospitals_and_the_statistics(demo_pipeline: str) -> None:
    lines = demo_pipeline.splitlines()
    assert not [ln for ln in lines if ln.startswith("DIFF")], "\n".join(ln for ln in lines if ln.startswith("DIFF"))
    assert sum(ln.startswith("ok ") for ln in lines) >= 3 * 18  # three hospitals, every mapped dataset
    assert "statistics equal the recomputation" in demo_pipeline


def test_demo_warehouse_has_rows_of_every_hospital_and_flags_deletes(demo_pipeline: str, settings: Settings) -> None:
    conn = psycopg2.connect(settings.warehouse_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select org_code, count(*) from std.outpatient_registration "
                        "where org_code in ('SIMA01', 'SIMB01', 'SIMB02') group by org_code")
            assert {org for org, n in cur.fetchall() if n > 0} == {"SIMA01", "SIMB01", "SIMB02"}
            # Cancelled registrations are deleted at the source: kept here as flagged rows.
            cur.execute("select count(*) from std.outpatient_registration where deleted")
            assert cur.fetchone()[0] > 0
            for ds in load_catalogue():
                if ds.is_statistic:
                    continue
                keys = ", ".join(["org_code", *ds.business_key])
                cur.execute(f"select count(*) - count(distinct ({keys})) from std.{ds.name}")
                assert cur.fetchone()[0] == 0, ds.name
    finally:
        conn.close()

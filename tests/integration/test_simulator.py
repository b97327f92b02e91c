"""Both simulated hospitals on the real databases: create the schema, seed, run a short workload.

Needs the hospital PostgreSQL and MariaDB from ``make up``; a server that does not answer fails
the test (it never skips).
"""
from __future__ import annotations

from datetime import datetime

import pytest

from connectors.simulator.database import connect, create_hospital
from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Workload, execute, next_free_id, seed_transactions

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("vendor,database", [("a", "it_sim_vendor_a"), ("b", "it_sim_vendor_b")])
def test_create_and_run(vendor: str, database: str) -> None:
    profile = PROFILES[vendor]
    create_hospital(profile, database, replace=True)
    conn = connect(profile, database)
    try:
        seeded = execute(conn, profile, seed_transactions(profile))
        assert seeded > 100
        workload = Workload(profile, seed=3, start=datetime(2024, 3, 1, 8), dirty=0.02,
                            id_start=next_free_id(conn, profile))
        done = execute(conn, profile, workload.take(600))
        assert done >= 600
        patients = profile.qualified(profile.specs["patient"].table)
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {patients}")
            count = cur.fetchone()[0]
        assert count > 0
        # A second run continues above the ids already written instead of colliding with them.
        again = Workload(profile, seed=3, start=datetime(2024, 3, 2, 8), id_start=next_free_id(conn, profile))
        assert execute(conn, profile, again.take(200)) >= 200
    finally:
        conn.close()

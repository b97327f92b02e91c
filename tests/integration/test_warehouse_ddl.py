"""The generated DDL against the real warehouse (make up): applies twice, refuses destruction."""
from __future__ import annotations

from typing import Any, Iterator

import psycopg2
import pytest

from hip.catalogue import load_catalogue
from hip.errors import FatalError
from hip.settings import load_settings
from sinks.ddl import apply_statements, ddl_statements, migrate, plan_migration

pytestmark = pytest.mark.integration


@pytest.fixture()
def conn() -> Iterator[Any]:
    # No skip when the warehouse is down: connecting fails the test, as it should.
    c = psycopg2.connect(load_settings().warehouse_dsn, connect_timeout=5)
    try:
        yield c
    finally:
        c.rollback()
        c.close()


def test_ddl_applies_twice(conn: Any) -> None:
    apply_statements(conn, ddl_statements())
    apply_statements(conn, ddl_statements())
    with conn.cursor() as cur:
        cur.execute("select table_schema, table_name, obj_description(format('%I.%I', table_schema, table_name)::regclass)"
                    " from information_schema.tables where table_schema in ('std', 'stat')")
        rows = {(s, t): comment for s, t, comment in cur.fetchall()}
        cur.execute("select nspname from pg_namespace where nspname in ('std', 'stat', 'dq')")
        assert {r[0] for r in cur.fetchall()} == {"std", "stat", "dq"}
    for ds in load_catalogue():
        key = ("stat" if ds.is_statistic else "std", ds.name)
        assert key in rows, key
        assert ds.name_zh in (rows[key] or "")


def test_migrate_is_idempotent(conn: Any) -> None:
    migrate(conn)
    migrate(conn)
    with conn.cursor() as cur:
        plan = plan_migration(cur)
    conn.rollback()
    assert plan.refused == []
    assert not [s for s in plan.statements if s.startswith(("create table", "alter table"))]


def test_migrate_refuses_destructive_changes(conn: Any) -> None:
    migrate(conn)
    for attempt in range(5):
        try:
            with conn.cursor() as cur:
                # Simulate a warehouse that is ahead of the schemas: an extra column and a wider type.
                cur.execute('alter table std.patient_info add column legacy_code text')
                cur.execute('alter table stat.fee_stat alter column amount type numeric(20,2)')
            break
        except psycopg2.errors.DeadlockDetected:
            # A running sink's transaction may hold one of the two tables and wait for the other:
            # PostgreSQL then aborts one side, here this one. Its changes are gone; try again.
            conn.rollback()
    else:
        pytest.fail("the two ALTERs deadlocked with concurrent writers five times")
    with pytest.raises(FatalError) as err:
        migrate(conn)
    message = str(err.value)
    assert "std.patient_info.legacy_code" in message
    assert "stat.fee_stat.amount" in message and "numeric(20,2)" in message
    # Nothing was applied: the simulated changes were rolled back with the refused migration.
    with conn.cursor() as cur:
        cur.execute("select count(*) from information_schema.columns "
                    "where table_schema = 'std' and table_name = 'patient_info' and column_name = 'legacy_code'")
        assert cur.fetchone()[0] == 0

"""``hip warehouse``: the warehouse tables generated from the dataset schemas."""
from __future__ import annotations

import click

from hip.errors import TransientError


@click.group("warehouse")
def warehouse() -> None:
    """The PostgreSQL warehouse: DDL and migration."""


@warehouse.command("ddl")
def ddl() -> None:
    """Print the DDL that creates every std/stat table (idempotent)."""
    from sinks.ddl import ddl_statements

    for statement in ddl_statements():
        click.echo(statement + ";")


@warehouse.command("migrate")
@click.option("--dsn", help="libpq connection string (default: the local stack's warehouse).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def migrate_cmd(dsn: str | None, dry_run: bool) -> None:
    """Create or extend the warehouse tables; refuse destructive changes (exit 1)."""
    import psycopg2

    from hip.settings import load_settings
    from sinks.ddl import migrate, plan_migration

    try:
        conn = psycopg2.connect(dsn or load_settings().warehouse_dsn)
    except psycopg2.OperationalError as exc:
        raise TransientError(f"warehouse unreachable: {exc}".strip()) from exc
    try:
        if dry_run:
            with conn.cursor() as cur:
                plan = plan_migration(cur)
            conn.rollback()
            for s in plan.statements:
                click.echo(s + ";")
            for r in plan.refused:
                click.echo(f"refused: {r}", err=True)
            return
        plan = migrate(conn)
        click.echo(f"warehouse migrated: {len(plan.statements)} statements applied")
    finally:
        conn.close()

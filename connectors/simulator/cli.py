"""``hip simulate``: create simulated hospitals and drive them with a hospital-day workload."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import click
from tqdm import tqdm

from connectors.simulator.database import hospital_exists, check_db_name, connect, create_hospital
from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Transaction, Workload, execute, last_modified, next_free_id, seed_transactions

_VENDOR = click.option("--vendor", type=click.Choice(sorted(PROFILES)), required=True,
                       help="HIS vendor profile: a (pinyin tables, MariaDB) or b (snake case, PostgreSQL).")
_DB = click.option("--db", "database", required=True, help="Database of the simulated hospital.")


@click.group("simulate")
def simulate() -> None:
    """Simulated hospital databases for tests and the demo."""


@simulate.command("create")
@_VENDOR
@_DB
@click.option("--replace", is_flag=True, help="Drop the database first if it exists.")
@click.option("--if-missing", is_flag=True, help="Do nothing if the database exists already.")
def create(vendor: str, database: str, replace: bool, if_missing: bool) -> None:
    """Create a hospital's schema and seed its code tables (departments, staff, drugs, beds)."""
    profile = PROFILES[vendor]
    check_db_name(database)
    if if_missing and not replace and hospital_exists(profile, database):
        click.echo(f"{database} exists; left as it is")
        return
    create_hospital(profile, database, replace=replace)
    conn = connect(profile, database)
    try:
        rows = execute(conn, profile, seed_transactions(profile))
    finally:
        conn.close()
    click.echo(f"created {database} ({profile.name}, {profile.dialect}) with {rows} code-table rows")


def hospital_clock() -> datetime:
    """The simulated hospitals' wall clock: Beijing time, no zone, whole seconds, as an HIS stores it."""
    return datetime.now(timezone(timedelta(hours=8))).replace(tzinfo=None, microsecond=0)


@simulate.command("run")
@_VENDOR
@_DB
@click.option("--changes", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Row changes to make.")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Row changes per second (0: as fast as the database takes them).")
@click.option("--dirty", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of inserted rows spoiled (unknown code, missing value, impossible date).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed; same seed, same workload.")
@click.option("--start", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
              default=None, help="Simulated local start time (default: two days ago in Asia/Shanghai, "
              "the clock never passing now).")
def run(vendor: str, database: str, changes: int, rate: float, dirty: float, seed: int,
        start: datetime | None) -> None:
    """Make hospital activity: inserts, updates and deletes in multi-row transactions."""
    profile = PROFILES[vendor]
    check_db_name(database)
    limit = None
    if start is None:
        # Two days back, never past the real clock: business times stay in the past.
        limit = hospital_clock()
        start = limit - timedelta(days=2)
    conn = connect(profile, database)
    try:
        if limit is not None:
            # Never before an earlier run's last change: a poller's update-time cursor only moves
            # forward, as a real HIS clock does.
            last = last_modified(conn, profile)
            if last is not None and last > start:
                start = min(last, limit)
        workload = Workload(profile, seed=seed, start=start, dirty=dirty, id_start=next_free_id(conn, profile),
                            limit=None if limit is None else hospital_clock)
        with tqdm(total=changes, unit="row", disable=None) as bar:
            def progress(tx: Transaction) -> None:
                bar.update(len(tx.ops))
            done = execute(conn, profile, workload.take(changes), rate=rate, on_commit=progress)
    finally:
        conn.close()
    s = workload.stats
    click.echo(f"{done} row changes in {s.transactions} transactions ({s.inserts} inserts, {s.dirty} spoiled) "
               f"on {database}; simulated clock {start:%Y-%m-%d %H:%M} → {workload.now:%Y-%m-%d %H:%M}")


@simulate.command("grant")
@click.option("--fleet", "fleet_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fleet declaration (default: connectors/fleet/local.yaml).")
def grant(fleet_path: str | None) -> None:
    """Do the hospital DBA's part for the simulated fleet: capture users, grants, publications."""
    from connectors.simulator.dba import grant_fleet

    for line in grant_fleet(fleet_path):
        click.echo(f"granted {line}")

"""``hip stats``: run the statistics worker, recompute the statistics in SQL, compare the two."""
from __future__ import annotations

import datetime as dt
import os
import sys

import click

from streams.stats import core


def _window(since: str | None, as_of: str | None) -> core.Window:
    if as_of:
        os.environ["HIP_STATS_AS_OF"] = as_of
    if since:
        os.environ["HIP_STATS_SINCE"] = since
    # The worker reads the same variables, so one place decides the defaults.
    a = dt.date.fromisoformat(os.environ["HIP_STATS_AS_OF"]) if os.environ.get("HIP_STATS_AS_OF") else None
    from zoneinfo import ZoneInfo
    as_of_date = a or dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    s = os.environ.get("HIP_STATS_SINCE")
    return core.Window(dt.date.fromisoformat(s) if s else as_of_date - dt.timedelta(days=31), as_of_date)


def _connect() -> object:
    import psycopg2

    from hip.settings import load_settings
    return psycopg2.connect(load_settings().warehouse_dsn)


_since = click.option("--since", help="first day of the census window (ISO date; default as-of − 31 days)")
_as_of = click.option("--as-of", "as_of", help="end of the census window, exclusive (ISO date; default today, local)")
_org = click.option("--org", "orgs", multiple=True, help="only these organisations (repeatable)")


@click.group()
def stats() -> None:
    """Incremental statistics (datasets 58, 60-64)."""


@stats.command("run")
@_since
@_as_of
def run(since: str | None, as_of: str | None) -> None:
    """Run the statistics worker (Faust); metrics on the stats metrics port."""
    _window(since, as_of)
    from streams.stats.app import main
    main()


@stats.command("recompute")
@_since
@_as_of
@_org
def recompute_cmd(since: str | None, as_of: str | None, orgs: tuple[str, ...]) -> None:
    """Recompute every statistics cell from the warehouse and print it."""
    from streams.stats.recompute import recompute
    window = _window(since, as_of)
    cells = recompute(_connect(), window, list(orgs) or None)
    for cell in sorted(cells):
        click.echo("/".join(cell) + "  " + ", ".join(f"{k}={v}" for k, v in sorted(cells[cell].items())))
    click.echo(f"{len(cells)} cells (window {window.since} .. {window.as_of})", err=True)


@stats.command("compare")
@_since
@_as_of
@_org
@click.option("--limit", default=50, show_default=True, help="differing cells to print")
def compare_cmd(since: str | None, as_of: str | None, orgs: tuple[str, ...], limit: int) -> None:
    """Compare stat.* in the warehouse with the recomputation; exit 1 on any difference."""
    from streams.stats.recompute import describe, incremental, recompute
    window = _window(since, as_of)
    conn = _connect()
    diffs = core.differences(incremental(conn, list(orgs) or None), recompute(conn, window, list(orgs) or None))
    for line in describe(diffs, limit):
        click.echo(line)
    if diffs:
        click.echo(f"{len(diffs)} cells differ", err=True)
        sys.exit(1)
    click.echo("statistics equal the recomputation", err=True)

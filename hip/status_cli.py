"""``hip status``: the fleet at a glance, worst first; exit 1 when something needs attention.

Reads Prometheus (the exporter's and workers' metrics), so the terminal shows exactly what the
dashboards and alerts see, and the thresholds are the recording rules' (one place to change them).
Meant for cron: quiet exit 0 with ``--quiet`` when all is well.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import click

from hip.errors import TransientError
from hip.observability.backends import prometheus_query
from hip.observability.model import (
    HospitalStatus, Limits, exit_code, format_table, hospital_status, seconds_since_local_midnight,
    sort_worst_first,
)
from hip.settings import load_settings

LOCAL_ZONE = ZoneInfo("Asia/Shanghai")


def _by(series: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in series}


def gather(prometheus_url: str, limits: Limits, *, stale_after: float | None = None,
           recent_window: str = "15m", now: datetime | None = None
           ) -> tuple[list[HospitalStatus], list[str]]:
    """Query Prometheus and build one status line per hospital plus platform-wide problems.

    Freshness thresholds come from the recording rules unless ``stale_after`` overrides them all.
    """
    def q(expr: str) -> list[tuple[dict[str, str], float]]:
        return prometheus_query(prometheus_url, expr)

    now = now or datetime.now(LOCAL_ZONE)
    today = max(60, int(seconds_since_local_midnight(now)))

    if stale_after is None:
        thresholds = {lbl.get("dataset", ""): v for lbl, v in q("hip:freshness_threshold_seconds")}
        default = q("hip:freshness_threshold_seconds:default")
        limits = replace(limits, stale_after_s=default[0][1] if default else limits.stale_after_s,
                         stale_after_by_dataset={**thresholds, **limits.stale_after_by_dataset})
    else:
        limits = replace(limits, stale_after_s=stale_after, stale_after_by_dataset={})

    names = {lbl["org"]: lbl.get("name", "") for lbl, _ in q('hip_hospital_info{enabled="true"}')}
    captures: dict[str, set[str]] = {}
    for lbl, _ in q("hip_hospital_system_info"):
        if lbl["org"] in names:
            captures.setdefault(lbl["org"], set()).add(lbl.get("capture", ""))
    connect: dict[str, list[str]] = {}
    for lbl, _ in q("hip_connector_state == 1 or hip_connector_task_state == 1"):
        if lbl.get("org"):
            connect.setdefault(lbl["org"], []).append(lbl.get("state", ""))
    freshness: dict[str, dict[str, float]] = {}
    for lbl, v in q("hip_freshness_seconds"):
        # std and stat tables of one dataset name cannot both exist; keep the older to be safe.
        per = freshness.setdefault(lbl["org"], {})
        per[lbl["dataset"]] = max(v, per.get(lbl["dataset"], 0.0))
    lag = _by(q("sum by (org) (hip_hospital_consumer_lag_messages)"), "org")
    rejects_today = _by(q(f"sum by (org) (increase(hip_dead_letters_total[{today}s]))"), "org")
    rejects_recent = _by(q(f"sum by (org) (increase(hip_dead_letters_total[{recent_window}]))"), "org")

    orgs = set(names) | set(connect) | set(freshness)
    rows = [hospital_status(
        org, name=names.get(org, ""), captures=captures.get(org, ()),
        connect_states=connect.get(org, ()), freshness=freshness.get(org),
        lag_messages=lag.get(org, 0.0), rejects_today=rejects_today.get(org, 0.0),
        rejects_recent=rejects_recent.get(org, 0.0), limits=limits) for org in orgs if org]

    problems = [f"{lbl.get('job')} down ({lbl.get('instance')})" for lbl, _ in q('up{job=~"hip-.*"} == 0')]
    problems += [f"exporter cannot read {lbl.get('backend')}"
                 for lbl, _ in q('hip_exporter_read_up{backend!="fleet"} == 0')]
    if not q('up{job="hip-exporter"}'):
        problems.append("exporter not scraped")
    return sort_worst_first(rows), problems


@click.command("status")
@click.option("--prometheus", "prometheus_url", default=None,
              help="Prometheus base URL (default: the local stack's).")
@click.option("--max-lag", type=float, default=10_000, show_default=True,
              help="Consumer lag (messages) above which a hospital needs attention.")
@click.option("--stale-after", type=float, default=None,
              help="Override every dataset's freshness threshold, in seconds.")
@click.option("--only-attention", is_flag=True, help="List only hospitals that need attention.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hospital, worst first.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when nothing needs attention (cron).")
def status(prometheus_url: str | None, max_lag: float, stale_after: float | None, only_attention: bool,
           as_json: bool, quiet: bool) -> None:
    """Print the fleet worst first: capture mode, connector, freshness, lag, rejects today.

    Exit 0 when nothing needs attention, 1 when a hospital or the platform does (or Prometheus
    cannot be read).
    """
    url = prometheus_url or load_settings().prometheus_url
    limits = Limits(max_lag_messages=max_lag)
    try:
        rows, problems = gather(url, limits, stale_after=stale_after)
    except TransientError as exc:
        click.echo(f"cannot read the platform's metrics: {exc}", err=True)
        sys.exit(1)
    code = exit_code(rows, problems)
    if quiet and code == 0:
        sys.exit(0)
    shown = [r for r in rows if r.attention] if only_attention else rows
    if as_json:
        for r in shown:
            click.echo(json.dumps({**asdict(r), "severity": r.severity}, ensure_ascii=False))
        for p in problems:
            click.echo(json.dumps({"platform": p}, ensure_ascii=False))
    else:
        click.echo(format_table(shown, problems))
    sys.exit(code)


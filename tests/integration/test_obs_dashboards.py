"""Every panel of every dashboard returns data from the live Prometheus while a workload runs.

Needs the whole pipeline (the ``demo_pipeline`` fixture runs the demo): connectors, normalizer, sink
and statistics workers running, since the panels show their metrics.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_obs_helpers import query, require_stack, wait_for

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards").glob("*.json"))
pytestmark = pytest.mark.integration

# What Grafana substitutes before a query reaches Prometheus.
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def _org() -> str:
    """A hospital captured by a connector and already in the warehouse: every drill-down panel applies."""
    rows = wait_for("a hospital with a connector and warehouse data", lambda: query(
        'count by (org) (hip_connector_state{org!=""}) and on (org) count by (org) (hip_freshness_seconds)'))
    return sorted(r[0]["org"] for r in rows)[0]


def _panels() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in DASHBOARDS:
        data = json.loads(path.read_text(encoding="utf-8"))
        for p in data["panels"]:
            out.append((path.stem, p["title"], [t["expr"] for t in p["targets"]]))
    return out


@pytest.mark.parametrize("dashboard,title,exprs", _panels(), ids=lambda v: v if isinstance(v, str) else "")
def test_panel_returns_data(dashboard: str, title: str, exprs: list[str], demo_pipeline: str) -> None:
    require_stack()
    org = _org() if any("$org" in e for e in exprs) else ""

    def run() -> list[str]:
        found = []
        for expr in exprs:
            for k, v in {**MACROS, "$org": org}.items():
                expr = expr.replace(k, v)
            if query(expr):
                found.append(expr)
        return found
    # A panel with several queries (e.g. WAL and binlog) shows data when any of them has some.
    wait_for(f"data for {dashboard} / {title}", run, timeout_s=60, every_s=5)

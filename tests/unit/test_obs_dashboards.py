"""Grafana dashboards: they load with grafana-foundation-sdk, have the panels the issue asks for,
query only metrics the platform publishes, and match their generator."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from tests.unit.test_obs_prometheus import PROM, _all_metric_names

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
FILES = sorted((GRAFANA / "dashboards").glob("*.json"))

register_default_plugins()


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _exprs(data: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def test_the_four_dashboards_exist() -> None:
    assert {p.stem for p in FILES} == {"fleet", "hospital", "pipeline", "statistics"}


def test_files_match_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, text in mod.render().items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == text, \
            f"{name} differs from build_dashboards.py: run it"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dashboard_loads_with_the_sdk(path: Path) -> None:
    data = _load(path)
    dash = Dashboard.from_json(data)
    assert dash.uid and dash.uid.startswith("hip-") and dash.title
    assert dash.panels and all(isinstance(p, Panel) for p in dash.panels)
    for p in dash.panels:
        assert isinstance(p, Panel)
        assert p.title and p.targets, f"{path.name}: panel without title or query"
        assert p.grid_pos is not None and p.grid_pos.w <= 24
        assert p.datasource is not None and p.datasource.uid == "hip-prometheus"
        for q in p.targets:
            assert type(q).__name__ == "Dataquery" and q.expr, f"{path.name}/{p.title}: not a Prometheus query"
    ids = [p.id_val for p in dash.panels]
    assert len(ids) == len(set(ids))
    # Round trip: the SDK keeps every panel and query.
    again = json.loads(json.dumps(dash.to_json(), default=lambda o: o.to_json()))
    assert len(again["panels"]) == len(data["panels"])


def test_unique_uids() -> None:
    uids = [_load(p)["uid"] for p in FILES]
    assert len(uids) == len(set(uids))


def test_hospital_dashboard_has_an_org_variable_used_by_every_panel() -> None:
    data = _load(GRAFANA / "dashboards" / "hospital.json")
    assert [v["name"] for v in data["templating"]["list"]] == ["org"]
    for p in data["panels"]:
        assert all('org="$org"' in t["expr"] for t in p["targets"]), p["title"]
    titles = " ".join(p["title"].lower() for p in data["panels"])
    for word in ("systems", "connectors", "lag", "dataset", "rejects"):
        assert word in titles


def test_pipeline_and_fleet_cover_the_issue() -> None:
    pipe = " ".join(_exprs(_load(GRAFANA / "dashboards" / "pipeline.json")))
    for metric in ("hip_events_in_total", "hip_records_out_total", "hip_end_to_end_latency_seconds_bucket",
                   "hip_batch_size_records_bucket", "hip_dead_letters_total"):
        assert metric in pipe
    fleet = _load(GRAFANA / "dashboards" / "fleet.json")
    table = next(p for p in fleet["panels"] if p["type"] == "table")
    assert {"id": "sortBy", "options": {"sort": [{"field": "Value #A", "desc": True}]}} in table["transformations"]


def test_queries_use_only_published_metrics_and_recorded_series() -> None:
    recorded = {r["record"] for f in (PROM / "rules").glob("*.yml")
                for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"] for r in g["rules"] if "record" in r}
    known = _all_metric_names() | recorded
    for path in FILES:
        for expr in _exprs(_load(path)):
            for name in re.findall(r"\b(hip_[a-z_]+|hip:[a-z_:0-9]+)", expr):
                assert name in known, f"{path.name}: {name} in {expr}"


def test_provisioning_points_at_the_dashboards_and_the_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "hip.yml").read_text(encoding="utf-8"))
    assert ds["datasources"][0]["uid"] == "hip-prometheus"
    assert ds["datasources"][0]["url"] == "http://127.0.0.1:19090"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hip.yml").read_text(encoding="utf-8"))
    assert prov["providers"][0]["options"]["path"].endswith("deploy/grafana/dashboards")

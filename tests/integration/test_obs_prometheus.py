"""The stack's Prometheus runs our configuration: rules load, every expression evaluates."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.integration.test_obs_helpers import PROM, query, require_stack, wait_for

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
pytestmark = pytest.mark.integration


def _rules() -> list[dict[str, str]]:
    return [r for f in sorted(RULES.glob("*.yml"))
            for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]


def test_prometheus_loaded_every_rule_and_none_errs() -> None:
    require_stack()
    requests.post(f"{PROM}/-/reload", timeout=10).raise_for_status()
    loaded = wait_for("rules loaded", lambda: [
        r for g in requests.get(f"{PROM}/api/v1/rules", timeout=10).json()["data"]["groups"]
        for r in g["rules"] if g["name"].startswith("hip-")] or None)
    names = {r["name"] for r in loaded}
    expected = {r.get("alert") or r["record"] for r in _rules()}
    assert expected <= names
    time.sleep(6)  # one evaluation round (5 s) after the reload
    groups = requests.get(f"{PROM}/api/v1/rules", timeout=10).json()["data"]["groups"]
    errs = [r for g in groups if g["name"].startswith("hip-") for r in g["rules"] if r["health"] == "err"]
    assert not errs, [(r["name"], r.get("lastError")) for r in errs]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rule_expression_evaluates_on_the_live_server(rule: dict[str, str]) -> None:
    require_stack()
    query(rule["expr"])  # raises on any PromQL error


def test_every_process_is_a_target_and_the_exporter_is_up() -> None:
    require_stack()
    targets = requests.get(f"{PROM}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    jobs = {t["labels"]["job"] for t in targets}
    assert {"hip-exporter", "hip-normalizer", "hip-sink", "hip-stats"} <= jobs
    wait_for("exporter scraped up", lambda: query('up{job="hip-exporter"} == 1'))
    for backend in ("kafka", "connect", "warehouse", "fleet"):
        wait_for(f"exporter reading {backend}",
                 lambda b=backend: query(f'hip_exporter_read_up{{backend="{b}"}} == 1'))

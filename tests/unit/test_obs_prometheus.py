"""Prometheus configuration and rules: promtool checks and rule unit tests, naming conventions."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from hip import metrics
from hip.settings import load_settings, render_template

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = "/usr/bin/promtool"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def _rendered(tmp_path: Path) -> Path:
    out = tmp_path / "prometheus.yml"
    out.write_text(render_template((PROM / "prometheus.yml").read_text(encoding="utf-8")), encoding="utf-8")
    return out


def test_config_and_rules_pass_promtool_check(tmp_path: Path) -> None:
    res = _run("check", "config", str(_rendered(tmp_path)))
    assert res.returncode == 0, res.stdout + res.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (PROM / "tests").glob("*.yml"))
    assert tests
    res = _run("test", "rules", *tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_scrape_targets_match_the_ports_file(tmp_path: Path) -> None:
    cfg = yaml.safe_load(_rendered(tmp_path).read_text(encoding="utf-8"))
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in cfg["scrape_configs"]}
    s = load_settings()
    assert targets["hip-exporter"] == [f"127.0.0.1:{s.exporter_metrics_port}"]
    assert targets["hip-normalizer"] == [f"127.0.0.1:{s.normalizer_metrics_port}"]
    assert targets["hip-sink"] == [f"127.0.0.1:{s.sink_metrics_port}"]
    assert targets["hip-stats"] == [f"127.0.0.1:{s.stats_metrics_port}"]
    assert targets["prometheus"] == [f"127.0.0.1:{s.prometheus_port}"]
    assert cfg["global"]["scrape_interval"] == "5s" and cfg["global"]["evaluation_interval"] == "5s"
    assert cfg["rule_files"] == [str(PROM / "rules" / "*.yml")]


def test_every_issue_alert_exists() -> None:
    alerts = {r["alert"] for f in (PROM / "rules").glob("*.yml")
              for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"] for r in g["rules"] if "alert" in r}
    assert {"HipHospitalStale", "HipConnectorFailed", "HipConsumerLagGrowing", "HipDeadLetters",
            "HipReplicationSlotRetainingWal", "HipWorkerDown"} <= alerts


def _all_metric_names() -> set[str]:
    names = {s.name for s in metrics.EXPORTER_METRICS}
    for obj in vars(metrics).values():
        if hasattr(obj, "_name") and hasattr(obj, "_type"):
            base = obj._name
            kind = obj._type
            if kind == "counter":
                names.add(base + "_total")
            elif kind == "histogram":
                names.update({base + "_bucket", base + "_sum", base + "_count"})
            else:
                names.add(base)
    return names


def test_metric_names_follow_the_scheme() -> None:
    for name in _all_metric_names():
        assert name.startswith("hip_"), name
    units = ("_total", "_seconds", "_bytes", "_messages", "_records", "_offset", "_rows", "_number",
             "_up", "_state", "_info", "_active", "_bucket", "_sum", "_count")
    for spec in metrics.EXPORTER_METRICS:
        assert spec.name.endswith(units), spec.name
        # no unbounded labels: no free text, ids or timestamps
        assert not set(spec.labels) & {"message", "error", "key", "id", "ts", "lsn"}, spec.name


def test_rules_only_use_known_metrics() -> None:
    known = _all_metric_names() | {"up", "process_start_time_seconds"}
    recorded: set[str] = set()
    used: set[str] = set()
    for f in (PROM / "rules").glob("*.yml"):
        for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"]:
            for r in g["rules"]:
                if "record" in r:
                    recorded.add(r["record"])
                used.update(re.findall(r"\b(hip_[a-z_]+|hip:[a-z_:0-9]+)", r["expr"]))
    unknown = {u for u in used if u not in known and u not in recorded}
    assert not unknown, unknown

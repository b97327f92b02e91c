"""A connector failed on purpose shows in its metric, fires its alert, and tops ``hip status``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.integration.test_obs_helpers import S, exporter_sample, query, require_stack, wait_for

pytestmark = pytest.mark.integration
ORG, SYSTEM = "ZZOBS01", "HIS"
NAME = f"hip.{ORG}.{SYSTEM}"


@pytest.fixture()
def failing_connector(tmp_path: Path) -> Iterator[str]:
    """A source whose task fails on its first record: a cast of text to int32 with no tolerance.

    Built from Connect's own FileStream source so the test needs no hospital database and can
    never disturb a real one; topic.prefix gives it a hospital identity like the fleet's.
    """
    src = tmp_path / "input.txt"
    src.write_text("not-a-number\n", encoding="utf-8")
    config = {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "tasks.max": "1", "file": str(src), "topic": "hip.obs.failtest",
        "topic.prefix": f"raw.{ORG}.{SYSTEM}",
        "transforms": "fail", "transforms.fail.type": "org.apache.kafka.connect.transforms.Cast$Value",
        "transforms.fail.spec": "int32", "errors.tolerance": "none",
    }
    requests.put(f"{S.connect_url}/connectors/{NAME}/config", json=config, timeout=10).raise_for_status()
    try:
        yield NAME
    finally:
        requests.delete(f"{S.connect_url}/connectors/{NAME}", timeout=10)


def test_failed_connector_metric_alert_and_status(failing_connector: str) -> None:
    require_stack()
    wait_for("task FAILED in Connect", lambda: any(
        t["state"] == "FAILED" for t in requests.get(
            f"{S.connect_url}/connectors/{failing_connector}/status", timeout=5).json().get("tasks", [])))
    wait_for("exporter publishing the failed task", lambda: exporter_sample(
        "hip_connector_task_state", connector=failing_connector, org=ORG, system=SYSTEM, state="FAILED") == 1.0)
    assert exporter_sample("hip_connector_task_state", connector=failing_connector, state="RUNNING") == 0.0
    wait_for("the failed task in Prometheus", lambda: query(
        f'hip_connector_task_state{{connector="{failing_connector}",state="FAILED"}} == 1'))
    firing = wait_for("HipConnectorFailed firing", lambda: query(
        f'ALERTS{{alertname="HipConnectorFailed",connector="{failing_connector}",alertstate="firing"}}'),
        timeout_s=120)
    assert firing[0][0]["org"] == ORG and firing[0][0]["system"] == SYSTEM

    res = subprocess.run([str(Path(sys.executable).parent / "hip"), "status", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    first = rows[0]
    assert first["org"] == ORG and first["connect_state"] == "FAILED" and first["severity"] == 2
    assert "connector failed" in first["attention"]


def test_deleted_connector_leaves_the_metrics(failing_connector: str) -> None:
    require_stack()
    wait_for("exporter publishing the connector", lambda: exporter_sample(
        "hip_connector_state", connector=failing_connector) is not None)
    requests.delete(f"{S.connect_url}/connectors/{failing_connector}", timeout=10).raise_for_status()
    wait_for("connector gone from the exporter", lambda: exporter_sample(
        "hip_connector_state", connector=failing_connector) is None, timeout_s=30)

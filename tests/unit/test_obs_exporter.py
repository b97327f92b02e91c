"""The exporter's collector publishes each backend's last reading, and nothing stale."""
from __future__ import annotations

import time
from typing import Any

from hip import metrics as m
from hip.errors import TransientError
from hip.observability.exporter import Exporter
from hip.settings import load_settings


def _samples(exp: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in exp.collect() for s in fam.samples}


def test_collect_publishes_readings_and_computes_freshness_at_scrape(monkeypatch: Any) -> None:
    exp = Exporter(load_settings())
    now = time.time()
    monkeypatch.setattr(exp, "_read_warehouse", lambda: (
        [(m.X_LAST_SOURCE_TS, ("std", "SIMB01", "outpatient_visit"), now - 120),
         (m.X_ROWS, ("std", "outpatient_visit"), 42.0)], None))
    exp.refresh("warehouse")
    got = _samples(exp)
    fresh = got[("hip_freshness_seconds", (("dataset", "outpatient_visit"), ("org", "SIMB01"), ("schema", "std")))]
    assert 119 <= fresh < 130
    assert got[("hip_warehouse_rows", (("dataset", "outpatient_visit"), ("schema", "std")))] == 42.0
    assert got[("hip_exporter_read_up", (("backend", "warehouse"),))] == 1.0
    assert got[("hip_exporter_read_up", (("backend", "kafka"),))] == 0.0


def test_failed_read_drops_the_backend_samples(monkeypatch: Any) -> None:
    exp = Exporter(load_settings())
    monkeypatch.setattr(exp, "_read_kafka", lambda: (
        [(m.X_CONSUMER_LAG, ("g", "t", "0"), 5.0)], None))
    exp.refresh("kafka")
    assert any(k[0] == "hip_consumer_lag_messages" for k in _samples(exp))

    def boom() -> None:
        raise TransientError("kafka: down")
    monkeypatch.setattr(exp, "_read_kafka", boom)
    exp.refresh("kafka")
    got = _samples(exp)
    assert not any(k[0] == "hip_consumer_lag_messages" for k in got)
    assert got[("hip_exporter_read_up", (("backend", "kafka"),))] == 0.0


def test_connect_reading_becomes_a_state_set(monkeypatch: Any) -> None:
    from hip.observability import backends
    from hip.observability.model import parse_connectors
    from tests.unit.test_obs_model import EXPANDED

    monkeypatch.setattr(backends, "read_connectors", lambda url: parse_connectors(EXPANDED))
    exp = Exporter(load_settings())
    exp.refresh("connect")
    got = _samples(exp)
    key = (("connector", "hip.SIMB01.HIS"), ("org", "SIMB01"), ("state", "FAILED"), ("system", "HIS"), ("task", "1"))
    assert got[("hip_connector_task_state", key)] == 1.0
    states = {dict(k[1])["state"]: v for k, v in got.items()
              if k[0] == "hip_connector_state" and dict(k[1])["org"] == "SIMB01"}
    assert states["RUNNING"] == 1.0 and sum(states.values()) == 1.0 and set(states) == set(m.CONNECT_STATES)

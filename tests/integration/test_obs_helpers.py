"""Shared helpers of the observability integration tests (real stack: make up)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import requests

from hip.observability.backends import prometheus_query
from hip.settings import load_settings

S = load_settings()
PROM = S.prometheus_url
EXPORTER = f"http://127.0.0.1:{S.exporter_metrics_port}/metrics"
T = TypeVar("T")


def query(expr: str) -> list[tuple[dict[str, str], float]]:
    return prometheus_query(PROM, expr)


def wait_for(what: str, fn: Callable[[], T | None], timeout_s: float = 90, every_s: float = 2) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def require_stack() -> None:
    """Fail (never skip) when the stack's Prometheus or exporter is not there."""
    assert requests.get(f"{PROM}/-/ready", timeout=5).status_code == 200, f"Prometheus not ready at {PROM}"
    assert requests.get(EXPORTER, timeout=5).status_code == 200, f"exporter not serving {EXPORTER}"


def exporter_sample(name: str, **labels: str) -> float | None:
    """One sample straight from the exporter's endpoint (no scrape delay)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(EXPORTER, timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None

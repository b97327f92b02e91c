"""The poller's run loop: transient failures, at start too, are retried rather than ending the thread."""
from types import SimpleNamespace

import pytest

from connectors import poll_worker
from connectors.poll_worker import SystemPoller
from hip.errors import TransientError


def _poller(calls: list[str], start_failures: int) -> SystemPoller:
    p = SystemPoller.__new__(SystemPoller)
    p.hospital = SimpleNamespace(org="T0001")
    p.system = "HIS"
    p.spec = SimpleNamespace(poll_interval_s=0)

    def start() -> None:
        calls.append("start")
        if calls.count("start") <= start_failures:
            raise TransientError("watermarks of hip.poll.cursors[0]: Not leader for partition")

    p.start = start  # type: ignore[method-assign]
    p.poll_once = lambda: calls.append("poll") or 0  # type: ignore[method-assign]
    p._connect = lambda: calls.append("connect")  # type: ignore[method-assign]
    return p


def test_a_start_that_fails_transiently_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poll_worker.time, "sleep", lambda s: None)
    calls: list[str] = []
    p = _poller(calls, start_failures=2)
    p.run(stop=lambda: calls.count("poll") >= 2)
    assert calls == ["start", "start", "start", "poll", "poll"]


def test_a_permanent_error_ends_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poll_worker.time, "sleep", lambda s: None)
    calls: list[str] = []
    p = _poller(calls, start_failures=0)

    def broken() -> int:
        raise ValueError("column missing")

    p.poll_once = broken  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        p.run(stop=lambda: False)

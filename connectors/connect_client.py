"""Adapter: the Kafka Connect REST API, with bounded, jittered retries of transient failures only."""
from __future__ import annotations

import random
import time
from typing import Any
from urllib.parse import quote

import requests

from hip.errors import FatalError, TransientError
from hip.metrics import RETRIES

# 409: rebalance in progress; 408/429/502/503/504: overloaded or restarting worker.
RETRIABLE_STATUSES = frozenset({408, 409, 429, 502, 503, 504})


class ConnectError(FatalError):
    """Connect answered with an error that retrying cannot fix."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"Connect {status}: {message}")


def _retriable(status: int, body: str) -> bool:
    # Connect reports a forwarding timeout during a rebalance as a 500 with this text.
    return status in RETRIABLE_STATUSES or (status == 500 and "timed out" in body.lower())


class ConnectClient:
    """Thin client of one Connect cluster; every call is retried on transient errors."""

    def __init__(self, url: str, *, attempts: int = 8, base_delay: float = 0.5, max_delay: float = 10.0,
                 timeout: float = 30.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.session = session or requests.Session()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                resp = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = TransientError(f"Connect unreachable at {self.url}: {exc}")
            else:
                if resp.status_code < 400:
                    return resp.json() if resp.content else None
                body = resp.text
                try:
                    body = resp.json().get("message", body)
                except ValueError:
                    pass
                if not _retriable(resp.status_code, body):
                    raise ConnectError(resp.status_code, body)
                last = TransientError(f"Connect {resp.status_code}: {body}")
            if attempt + 1 < self.attempts:
                RETRIES.labels(stage="connect").inc()
                delay = min(self.max_delay, self.base_delay * 2 ** attempt)
                time.sleep(random.uniform(delay / 2, delay))
        assert last is not None
        raise last

    @staticmethod
    def _n(name: str) -> str:
        return quote(name, safe="")

    def plugins(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/connector-plugins")
        return result

    def connectors(self) -> dict[str, dict[str, Any]]:
        """Every connector with its ``info`` (config) and ``status``, in one call."""
        result: dict[str, dict[str, Any]] = self._request("GET", "/connectors?expand=info&expand=status")
        return result

    def configs(self) -> dict[str, dict[str, str]]:
        return {name: entry["info"]["config"] for name, entry in self.connectors().items()}

    def put_config(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        """Create or update (Connect's PUT is idempotent)."""
        result: dict[str, Any] = self._request("PUT", f"/connectors/{self._n(name)}/config", json=config)
        return result

    def delete(self, name: str) -> None:
        try:
            self._request("DELETE", f"/connectors/{self._n(name)}")
        except ConnectError as exc:
            if exc.status != 404:
                raise

    def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/connectors/{self._n(name)}/status")
        return result

    def restart(self, name: str, *, only_failed: bool = True) -> None:
        flag = "true" if only_failed else "false"
        self._request("POST", f"/connectors/{self._n(name)}/restart?includeTasks=true&onlyFailed={flag}")

    def pause(self, name: str) -> None:
        self._request("PUT", f"/connectors/{self._n(name)}/pause")

    def resume(self, name: str) -> None:
        self._request("PUT", f"/connectors/{self._n(name)}/resume")

    def validate(self, config: dict[str, str]) -> dict[str, Any]:
        """Connect's own check of a config: ``error_count`` and per-setting ``errors``."""
        cls = config["connector.class"].rsplit(".", 1)[-1]
        result: dict[str, Any] = self._request("PUT", f"/connector-plugins/{cls}/config/validate",
                                               json=config)
        return result


def validation_errors(result: dict[str, Any]) -> dict[str, list[str]]:
    """``{setting: [error, …]}`` from a validate answer."""
    return {c["value"]["name"]: c["value"]["errors"] for c in result.get("configs", [])
            if (c.get("value") or {}).get("errors")}

"""Shared fixtures. Integration tests run against the real stack from deploy/ (`make up`).

A missing service is a broken install: the `stack` fixture fails the test, it never skips.
"""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from hip.settings import Settings, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The running stack; fails (not skips) when a service does not answer."""
    from hip.stack_cli import CHECKS

    down = {}
    for name in ("pg-hospital", "pg-warehouse", "mariadb", "kafka", "connect", "registry"):
        try:
            CHECKS[name](settings)
        except Exception as exc:  # noqa: BLE001 - report every failing part at once
            down[name] = f"{type(exc).__name__}: {exc}"
    if down:
        pytest.fail(f"the local stack is not healthy (run `make up`): {down}", pytrace=False)
    return settings


@pytest.fixture
def unique() -> str:
    """A short unique token for names of topics, databases and connectors made by one test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def hospital_pg_admin(stack: Settings) -> Iterator[object]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.hospital_pg_port, dbname="postgres",
                            user="postgres", password=stack.secret("hospital-pg-admin"))
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def mariadb_admin(stack: Settings) -> Iterator[object]:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=stack.hospital_mariadb_port, user="root",
                           password=stack.secret("hospital-mariadb-admin"), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def demo_pipeline(stack: Settings) -> str:
    """The main job, run once per session with a short workload: hospitals, connectors, workers.

    It leaves the pipeline running (as `make demo` does), for the tests that watch a live one.
    """
    import os
    import subprocess

    from hip.settings import ROOT

    env = {**os.environ, "DEMO_CHANGES": os.environ.get("DEMO_CHANGES", "600"),
           "DEMO_RATE": os.environ.get("DEMO_RATE", "40")}
    run = subprocess.run(["bash", "deploy/demo.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=1200)
    if run.returncode != 0:
        pytest.fail(f"the demo failed (exit {run.returncode}):\n{run.stdout[-6000:]}", pytrace=False)
    return run.stdout

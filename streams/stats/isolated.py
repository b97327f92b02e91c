"""The statistics worker on one run's own topics, for benchmarks and tests.

``HIP_STATS_TOPIC_SUFFIX`` gives the run its own ``std.*``, ``stat.*`` and internal topics,
``HIP_STATS_APP_ID`` its own consumer group, changelogs and RocksDB directory, and a fixed census
window keeps the day's rollover out of it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from hip.settings import ROOT
from streams.stats import core


def start_worker(suffix: str, app_id: str, datasets: Sequence[str], partitions: int, window: core.Window,
                 log: Path, module: str = "streams.stats.app", **extra: str | None) -> subprocess.Popen[bytes]:
    """``python -m streams.stats.app`` (or ``module``) on the run's topics; ``extra`` overrides its
    environment (None removes a variable)."""
    env: dict[str, str | None] = {
        **os.environ, "HIP_STATS_TOPIC_SUFFIX": suffix, "HIP_STATS_APP_ID": app_id,
        "HIP_STATS_DATASETS": ",".join(datasets), "HIP_STD_PARTITIONS": str(partitions),
        "HIP_STATS_SINCE": window.since.isoformat(), "HIP_STATS_AS_OF": window.as_of.isoformat(),
        "HIP_STATS_METRICS_PORT": "0", "PYTHONPATH": str(ROOT), **extra}
    return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT,
                            env={k: v for k, v in env.items() if v is not None},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited after ``timeout`` seconds."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.kill()

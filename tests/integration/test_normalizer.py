"""The normalizer worker against the real stack.

The path from simulated hospitals through Debezium and the normalizer to the warehouse is covered
end to end by test_e2e.py and test_demo.py; this file checks what only the worker itself does.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hip.settings import ROOT
from streams.core.mapping import MAPPINGS_DIR

pytestmark = pytest.mark.integration

HIP = str(Path(sys.executable).with_name("hip"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_mapping_is_refused_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, bad)
    text = (bad / "vendor_b.yaml").read_text(encoding="utf-8")
    assert "      name: {trim: name}\n" in text
    (bad / "vendor_b.yaml").write_text(text.replace("      name: {trim: name}\n", "      nmae: {trim: name}\n", 1),
                                       encoding="utf-8")
    line = text.splitlines().index("      name: {trim: name}") + 1
    started = time.monotonic()
    r = subprocess.run([HIP, "normalizer", "run", "--mappings", str(bad), "--metrics-port", str(free_port())],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{bad / 'vendor_b.yaml'}:{line}" in r.stderr, r.stderr
    assert "nmae" in r.stderr
    assert time.monotonic() - started < 60


FAILING_WORKER = """
import sys, uuid
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hip.settings import load_settings
from streams.core.mapping import load_mappings
from streams.normalizer import build_app, run_worker
from streams.normalizer_stage import NormalizerConfig

class Failing:
    def process(self, batch):
        raise RuntimeError("broken processor")

bootstrap = load_settings().bootstrap_servers
tag = uuid.uuid4().hex[:8]
topic = f"it-fatal-{tag}"
admin = AdminClient({"bootstrap.servers": bootstrap})
for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
    fut.result()
producer = Producer({"bootstrap.servers": bootstrap})
producer.produce(topic, key=b"k", value=b"{}")
producer.flush(30)
app, state = build_app(NormalizerConfig(group=f"it-fatal-{tag}"), bootstrap, Failing(), load_mappings(),
                       [topic], discover=False)
code = run_worker(app, state, "warning")
admin.delete_topics([topic])[topic].result()
print("exit", code, type(state.fatal).__name__)
sys.exit(code)
"""


def test_a_failed_batch_stops_the_worker_process() -> None:
    """A fatal batch failure must end the process (for the supervisor to see), not leave it idle."""
    r = subprocess.run([sys.executable, "-c", FAILING_WORKER], capture_output=True, text=True, cwd=ROOT,
                       timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "exit 1 RuntimeError" in r.stdout
    assert "broken processor" in r.stderr

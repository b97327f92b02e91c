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

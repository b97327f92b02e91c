"""What the benchmarks read of processes from /proc."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hip.proc import cpu_seconds, peak_rss_kib, recorded_pid, tree_cpu_seconds, trim_heap

GONE = 2**22 + 12345  # above Linux's pid_max default: never a live process


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_grow_with_work() -> None:
    before = cpu_seconds(os.getpid())
    _burn(0.3)
    assert cpu_seconds(os.getpid()) - before >= 0.2


def test_a_gone_process_reads_zero() -> None:
    assert cpu_seconds(GONE) == 0.0
    assert tree_cpu_seconds(GONE) == 0.0
    assert peak_rss_kib(GONE) == 0


def test_tree_counts_live_and_reaped_children() -> None:
    start = tree_cpu_seconds(os.getpid())
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(5)"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        deadline = time.time() + 10
        while cpu_seconds(child.pid) < 0.4 and time.time() < deadline:
            time.sleep(0.05)
        live = tree_cpu_seconds(os.getpid())
        assert live - start >= 0.35  # the child's CPU, while it runs (read in 10 ms ticks: 0.40 may read 0.3999)
    finally:
        child.kill()
        child.wait()
    assert tree_cpu_seconds(os.getpid()) - start >= 0.4  # and once reaped, in the parent's cutime


def test_peak_rss_of_this_process() -> None:
    assert peak_rss_kib(os.getpid()) > 1024


def test_trim_heap_answers() -> None:
    assert trim_heap() in (True, False)


def test_a_recorded_pid_counts_while_its_process_lives(tmp_path: Path) -> None:
    assert recorded_pid(tmp_path, "normalizer") is None  # no pid file
    (tmp_path / "normalizer.pid").write_text(f"{GONE}\n")
    assert recorded_pid(tmp_path, "normalizer") is None  # a stale one
    (tmp_path / "normalizer.pid").write_text(f"{os.getpid()}\n")
    assert recorded_pid(tmp_path, "normalizer") == os.getpid()


def test_relax_gc_freezes_the_start_and_still_collects_later_cycles() -> None:
    # In a child process: the thresholds and the frozen objects are the whole process's.
    script = """
import gc, weakref
from hip.proc import GC_THRESHOLDS, relax_gc
relax_gc()
assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
gc.collect()
assert gone() is None, "a cycle made after the freeze was not collected"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

"""What the benchmarks read of a process and of this machine, from ``/proc``; and how the workers
hand memory back (``trim_heap``) and collect garbage (``relax_gc``)."""
from __future__ import annotations

import gc
import os
import platform
from pathlib import Path
from typing import Any


def recorded_pid(run_dir: Path, name: str) -> int | None:
    """The pid the stack recorded for ``name`` (``<run_dir>/<name>.pid``, see deploy/lib.sh), while
    that process lives; ``None`` when there is no record or the process is gone."""
    try:
        pid = int((run_dir / f"{name}.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def status_kib(pid: int | str, field: str) -> int:
    """A memory line of ``/proc/<pid>/status`` (``VmHWM``: peak resident, ``VmRSS``: resident), in
    KiB; 0 for a process that is gone or has no such line (a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kib(pid: int | str) -> int:
    return status_kib(pid, "VmHWM")


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (index 0 is field 3), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of a process so far, all its threads (``/proc/<pid>/stat``, fields
    14 and 15); 0.0 for a process that is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | str) -> float:
    """CPU time of a server and its children: its own, what its reaped children used, and what
    its live children used so far (PostgreSQL runs each connection as a child of the postmaster).
    The difference of two readings is what the tree used in between; 0.0 for a process that is gone."""
    root = _stat_fields(pid)
    if root is None:
        return 0.0
    ticks = sum(int(x) for x in root[11:15])  # utime, stime, cutime, cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat.parent.name)
        if fields is not None and fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """CPU model, cores, Python and load average: the line every benchmark table starts with."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}"


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim(0)``).

    After a burst (a catch-up), glibc keeps the memory Python and RocksDB freed: a long-running
    worker's resident size then stays at its high-water mark. False where there is no glibc."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # noqa: B018 - musl and macOS have none
        except (OSError, AttributeError):
            _libc = False
    return bool(_libc and _libc.malloc_trim(0))


_libc: Any = None  # the C library once loaded; False: no malloc_trim here


# Young collections every 20,000 new container objects instead of 700; the middle generation every
# 20 of them, the oldest every 100 (and, as always, only once it grew by a quarter).
GC_THRESHOLDS = (20_000, 20, 100)


def relax_gc() -> None:
    """Collect cyclic garbage less often, and never scan again what the process made at its start.

    A worker makes hundreds of container objects per record (decoded records, measures, Kafka
    messages, asyncio's futures), so with Python's default thresholds the collector ran a young
    collection every few records and scanned the modules, Faust's services and the mappings, which
    live as long as the process, over and over. ``gc.freeze`` takes what exists now out of every
    later scan. Reference counting still frees at once whatever holds no cycle; cycles wait a little
    longer. Measured with ``gc.callbacks`` (see docs/benchmarks.md): the statistics worker spent
    0.74 of its 9.96 CPU-s in the collector, 0.10 s after this. Call it once set-up is done.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

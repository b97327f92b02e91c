"""End-to-end benchmark on the local stack: hospital commit → warehouse commit (``make bench``).

Drives the demo's simulated hospitals (vendor A on MariaDB binlog, vendor B on PostgreSQL logical
replication) through the real connectors, normalizer and sink, and prints one table:

- sustained: source changes as fast as the hospitals take them; events/s from the first source
  commit to the last warehouse commit;
- latency at half load: the same hospitals at half the sustained rate for a fixed time; p50/p99 of
  the sink's end-to-end histogram (source commit → warehouse commit), read from its own metrics;
- catch-up: normalizer and sink stopped while the hospitals make a backlog, then started; time to
  drain it;
- peak memory (VmHWM) of every worker and service, and where the CPU went during the sustained
  run (the simulators and the hospitals' databases included) and during the catch-up (each worker
  and server with its child processes, e.g. PostgreSQL's backends).

With ``--statistics`` the statistics worker runs too. With ``--statistics-cost`` (what ``make
bench`` runs) the demo data is reset (``make demo-reset``) and the pass runs without the statistics
worker, then reset again and run with it: the table shows both side by side and the statistics'
cost of the sustained and catch-up rates, the measure of the statistics issue.

Numbers are printed, not asserted: compare them with the issue's targets yourself.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families

from hip.proc import peak_rss_kib, recorded_pid, tree_cpu_seconds
from hip.settings import ROOT, Settings, load_settings

HIP = str(Path(sys.executable).with_name("hip"))
HOSPITALS = (("a", "sim_a01"), ("b", "sim_b01"))
WORKERS = ("normalizer", "sink")


def metric_families(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def sink_written(s: Settings) -> float:
    fams = metric_families(s.sink_metrics_port)
    return sum(v for labels, v in fams.get("hip_records_out_total", []) if labels.get("stage") == "sink")


def normalizer_in(s: Settings) -> float:
    fams = metric_families(s.normalizer_metrics_port)
    return sum(v for labels, v in fams.get("hip_events_in_total", []) if labels.get("stage") == "normalizer")


def latency_buckets(s: Settings) -> dict[float, float]:
    """Cumulative counts of the end-to-end histogram, summed over datasets, by upper bound."""
    out: dict[float, float] = {}
    for labels, v in metric_families(s.sink_metrics_port).get("hip_end_to_end_latency_seconds_bucket", []):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + v
    return out


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Histogram quantile of the observations between two scrapes (linear within a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_bound, prev_count = bound, count
    return bounds[-2]


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def workload(changes: int, rate: float, seed: int) -> list[subprocess.Popen[bytes]]:
    """One simulator process per hospital; ``rate`` is per hospital (0: as fast as it takes them)."""
    return [subprocess.Popen([HIP, "simulate", "run", "--vendor", v, "--db", db, "--changes", str(changes),
                              "--rate", str(rate), "--seed", str(seed + i)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i, (v, db) in enumerate(HOSPITALS)]


def wait_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"workload failed: {err.decode()[-500:]}")


def wait_idle(s: Settings, quiet: float = 8.0, limit: float = 1800.0) -> float:
    """Wait until the sink has written nothing new for ``quiet`` seconds; return the last write time."""
    last_value, last_change, start = sink_written(s), time.time(), time.time()
    while time.time() - last_change < quiet:
        if time.time() - start > limit:
            raise SystemExit(f"pipeline still writing after {limit:.0f} s")
        time.sleep(0.5)
        value = sink_written(s)
        if value != last_value:
            last_value, last_change = value, time.time()
    return last_change


def pid_of(name: str) -> int | None:
    return recorded_pid(load_settings().var / "run", name)


def peak_rss_mib(name: str) -> str:
    pid = pid_of(name)
    peak = peak_rss_kib(pid) if pid else 0
    return f"{peak / 1024:.0f}" if peak else "-"


SERVERS = ("kafka", "pg-warehouse", "connect", "registry", "exporter", "prometheus")
SOURCES = ("mariadb", "pg-hospital")  # the simulated hospitals' databases


def cpu_by_process(names: tuple[str, ...]) -> dict[str, float]:
    """CPU seconds each named process (with its children) used so far."""
    out = {}
    for name in names:
        pid = pid_of(name)
        out[name] = tree_cpu_seconds(pid) if pid else 0.0
    return out


@dataclass
class Row:
    what: str
    value: str
    target: str


@dataclass
class Run:
    rows: list[Row]
    sustained: float  # changes/s
    catchup: float  # changes/s
    catchup_cpu: float  # µs of CPU a change in the catch-up, every worker and server


SOURCE_SIDE = ("simulators", *SOURCES, "connect")  # the hospitals and their capture


def cores_needed(cpu_us: float, rate: float) -> str:
    """How many cores ``cpu_us`` of CPU a change keeps busy at ``rate`` changes/s (this machine's)."""
    return f"{cpu_us * rate / 1e6:.1f} cores at {rate:,.0f}/s (this machine has {os.cpu_count() or 1})"


def measure(s: Settings, changes: int, half_seconds: int, catchup: int, workers: tuple[str, ...]) -> Run:
    """One pass on the demo hospitals with ``workers`` running: sustained, half load, catch-up."""
    run([HIP, "warehouse", "migrate"])
    for vendor, db in HOSPITALS:
        run([HIP, "simulate", "create", "--vendor", vendor, "--db", db, "--if-missing"])
    run([HIP, "simulate", "grant"])
    run([HIP, "fleet", "apply"])
    others = [w for w in ("stats", "poller", "ingest") if w not in workers]
    run(["bash", "deploy/down.sh", *others])  # left by an earlier run, they would share the CPU
    run(["bash", "deploy/up.sh", *workers])
    # Warm-up, not timed: a table's raw topic appears with its first change, and the normalizer
    # restarts to subscribe to it; after a reset that would fall inside the timed runs.
    wait_all(workload(3000, 0, 11))
    wait_idle(s, quiet=25)
    rows: list[Row] = []

    # 1. sustained
    per = changes // len(HOSPITALS)
    written0, t0 = sink_written(s), time.time()
    cpu0 = cpu_by_process((*workers, *SOURCES, *SERVERS))
    simulators0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wait_all(workload(per, 0, 101))
    simulators1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    source_seconds = time.time() - t0
    t_end = wait_idle(s)
    written = sink_written(s) - written0
    sustained = per * len(HOSPITALS) / (t_end - t0)
    # Where the CPU went while the hospitals made the changes and the pipeline took them: the
    # simulators, the hospitals' databases and capture share the machine with the pipeline.
    used = {k: v - cpu0[k] for k, v in cpu_by_process((*workers, *SOURCES, *SERVERS)).items()}
    used["simulators"] = (simulators1.ru_utime + simulators1.ru_stime
                          - simulators0.ru_utime - simulators0.ru_stime)
    cores = os.cpu_count() or 1
    made = per * len(HOSPITALS)
    all_us = sum(used.values()) / made * 1e6  # CPU a change, every process
    rows += [Row("source changes made", f"{per * len(HOSPITALS):,} in {source_seconds:.1f} s "
                 f"({per * len(HOSPITALS) / source_seconds:,.0f}/s)", ""),
             Row("sustained, source commit → warehouse commit", f"{sustained:,.0f} changes/s "
                 f"({written / (t_end - t0):,.0f} warehouse rows/s)", "≥ 5,000 events/s"),
             Row("sustained CPU seconds (cores × span: what was there)",
                 f"{cores} × {t_end - t0:.1f} = {cores * (t_end - t0):.0f}: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in used.items() if v >= 0.1)
                 + f"; {all_us:.0f} µs a change in all", "")]
    # What the targets ask of the machine at this CPU a change: the sources alone, and everything.
    source_us = sum(v for k, v in used.items() if k in SOURCE_SIDE) / made * 1e6
    rows.append(Row("sustained: cores needed (hospitals and capture; everything)",
                    f"{source_us * 5000 / 1e6:.1f}; " + cores_needed(all_us, 5000), ""))

    # 2. latency at half load
    rate = max(1.0, sustained / 2 / len(HOSPITALS))
    before = latency_buckets(s)
    wait_all(workload(max(1, int(rate * half_seconds)), rate, 202))
    wait_idle(s)
    after = latency_buckets(s)
    rows.append(Row(f"latency at half load ({half_seconds} s)",
                    f"p50 {quantile(0.5, before, after):.2f} s, p99 {quantile(0.99, before, after):.2f} s "
                    f"at {rate * len(HOSPITALS):,.0f}/s", "p99 ≤ 2 s"))

    # 3. catch-up
    for name in workers:
        run(["bash", "-c", f"kill $(cat '{s.var}/run/{name}.pid') && rm -f '{s.var}/run/{name}.pid'"])
    time.sleep(3)
    per = catchup // len(HOSPITALS)
    t0 = time.time()
    wait_all(workload(per, 0, 303))
    backlog_seconds = time.time() - t0
    time.sleep(10)  # let capture finish writing the raw topics: the backlog is what the workers face
    t0 = time.time()
    servers0 = cpu_by_process(SERVERS)
    run(["bash", "deploy/up.sh", *workers])
    t_end = wait_idle(s, quiet=15)
    used = cpu_by_process(workers)  # started at t0: all their CPU is the drain's
    used.update({k: v - servers0[k] for k, v in cpu_by_process(SERVERS).items()})
    drained = sink_written(s)  # the sink restarted: its counter started at zero
    rate_catchup = per * len(HOSPITALS) / (t_end - t0)
    rows += [Row("catch-up backlog made", f"{per * len(HOSPITALS):,} changes in {backlog_seconds:.0f} s", ""),
             Row("catch-up drain (workers start → idle)",
                 f"{t_end - t0:.0f} s, {rate_catchup:,.0f} changes/s ({drained:,.0f} warehouse rows)",
                 "≥ 10,000 events/s"),
             Row("catch-up CPU seconds (cores × drain: what was there)",
                 f"{cores} × {t_end - t0:.0f} = {cores * (t_end - t0):.0f}: "
                 + ", ".join(f"{k} {v:.0f}" for k, v in used.items() if v >= 0.5), "")]
    catchup_cpu = sum(used.values()) / (per * len(HOSPITALS)) * 1e6
    rows.append(Row("catch-up: CPU a change, cores needed", f"{catchup_cpu:.0f} µs; "
                    + cores_needed(catchup_cpu, 10000), ""))

    for name in ("normalizer", "sink", "stats", "poller", "exporter", "connect", "kafka", "registry"):
        rows.append(Row(f"peak memory: {name}", f"{peak_rss_mib(name)} MiB", "< 300 MiB" if name in
                        ("normalizer", "sink", "stats", "poller", "exporter") else ""))
    return Run(rows, sustained, rate_catchup, catchup_cpu)


def print_table(header: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    for line in [header, *lines]:
        click.echo("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())


def reset_demo() -> None:
    click.echo("resetting the demo data (make demo-reset) so that both passes start alike …")
    run(["bash", "deploy/reset-demo.sh"])


@click.command()
@click.option("--changes", default=40_000, show_default=True, help="Source changes for the sustained run.")
@click.option("--half-seconds", default=60, show_default=True, help="Length of the half-load run.")
@click.option("--catchup", default=1_000_000, show_default=True, help="Backlog size for the catch-up run.")
@click.option("--statistics", "mode", flag_value="with", help="Run the statistics worker too.")
@click.option("--statistics-cost", "mode", flag_value="pair",
              help="Two passes, each after a demo reset: without, then with the statistics worker; "
                   "prints both and the statistics' cost.")
def main(changes: int, half_seconds: int, catchup: int, mode: str | None) -> None:
    s = load_settings()
    click.echo("setting up the demo hospitals, connectors and workers …")
    if mode != "pair":
        result = measure(s, changes, half_seconds, catchup, WORKERS + (("stats",) if mode == "with" else ()))
        click.echo("")
        print_table(["measure", "result", "target"], [[r.what, r.value, r.target] for r in result.rows])
        return
    reset_demo()
    alone = measure(s, changes, half_seconds, catchup, WORKERS)
    reset_demo()
    both = measure(s, changes, half_seconds, catchup, WORKERS + ("stats",))
    lines = [[a.what, a.value, b.value, a.target] for a, b in zip(alone.rows, both.rows)]
    for what, x, y in (("sustained", alone.sustained, both.sustained), ("catch-up", alone.catchup, both.catchup)):
        lines.append([f"statistics' cost of the {what} rate", "", f"{(1 - y / x) * 100:.0f}%", "< 20%"])
    # Where the catch-up is bound by the CPU, a cost under 20% needs the statistics' CPU a change
    # (theirs and what they add to the other processes) under a quarter of the rest's.
    lines.append(["statistics' CPU a change in the catch-up: added; under 20% needs at most", "",
                  f"{both.catchup_cpu - alone.catchup_cpu:.0f} µs; {alone.catchup_cpu / 4:.0f} µs", ""])
    click.echo("")
    print_table(["measure", "normalizer + sink", "+ statistics", "target"], lines)
    click.echo("\nThe demo data was reset before each pass; run 'make demo' to start it again.")


if __name__ == "__main__":
    main()

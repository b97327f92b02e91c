"""The statistics worker through Kafka, against the normalizer worker, on the same records.

``python -m streams.stats.bench_worker [--events N] [--vendor a|b]`` prints a table.

The in-process benchmark (``streams.stats.bench``) prices the statistics' arithmetic; this one
prices what the worker really does per standard record: Faust consuming it, the ledger in RocksDB
and its changelog, the summed changes through Kafka, stage 2's cell table and changelog, and the
``stat.*`` records. Steps:

1. the simulator's Debezium events go through the normalizer's ``Processor`` with the registry's
   schema ids, as the normalizer writes them (headers included);
2. the standard records are produced to fresh topics of this run (``std.<dataset>.b<tag>``);
3. ``python -m streams.stats.app`` starts on them (its own app id, topic suffix and a fixed census
   window); the time runs from its first committed offset to the moment every standard record and
   every deltas message it sent are committed (offsets are committed every few seconds: read the rate
   to about ±10% at the default size);
4. with ``--floor``, ``streams.stats.floor`` then reads the same records under its own consumer
   group: Faust consuming them with the worker's settings and acking them, nothing else. The
   worker's CPU above the floor's is the statistics' own work;
5. the run's topics and tables are removed.

The normalizer worker's rate for the same events comes from ``streams.bench_normalizer`` (run it
in the same session: ``make bench`` runs both).
"""
from __future__ import annotations

import argparse
import shutil
import time
import uuid
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from hip.catalogue import load_catalogue
from hip.codec import Codec, FramedEncoder
from hip.proc import cpu_seconds, machine, peak_rss_kib
from hip.settings import load_settings
from hip.topics import delete_until_gone, produce_waiting
from streams.stats import core, isolated
from streams.stats.bench import SIMULATED_WINDOW

PARTITIONS = 6


def standard_messages(vendor: str, events: int, registry: str) -> list[Any]:
    """The normalizer's standard-record messages for ``events`` simulated changes."""
    from streams.bench_normalizer import org_of
    from streams.core.mapping import load_mappings
    from streams.normalizer_events import workload_events
    from streams.normalizer_stage import Processor

    mappings = load_mappings()
    raw = workload_events(vendor, org_of(mappings, vendor), events, dirty=0.02)
    processor = Processor(mappings, FramedEncoder(Codec(registry)), {})
    out = []
    for i in range(0, len(raw), 2000):
        out += [m for m in processor.process(raw[i:i + 2000]).messages if m.topic.startswith("std.")]
    return out


def committed_and_end(bootstrap: str, group: str, topics: list[str]) -> tuple[int, int] | None:
    """Offsets the group committed and the end offsets, summed over ``topics`` (None: not made yet).

    A new client each time: one that asked before the worker created its deltas topic keeps
    the topic unknown until its metadata is refreshed, minutes later."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return done, end
    except KafkaException:  # the worker has not created its deltas topic yet
        return None
    finally:
        consumer.close()


FLOOR = "streams.stats.floor"


class Measured(NamedTuple):
    seconds: float
    cpu: float  # the process's user + system seconds over the same span
    peak_kib: int
    deltas_messages: int | None  # None: the floor sends none


def measure(module: str, suffix: str, app_id: str, datasets: list[str], std: list[str], timeout: float) -> Measured:
    """Start ``module`` on the run's topics and time it from its first commit to its last record."""
    settings = load_settings()
    bootstrap = settings.bootstrap_servers
    floor = module == FLOOR
    log = settings.var / "logs" / f"stats-bench-{app_id}.log"
    worker = isolated.start_worker(suffix, app_id, datasets, PARTITIONS, SIMULATED_WINDOW, log, module=module)
    first = last = cpu_first = cpu_last = 0.0
    peak_kib = st_end = 0
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and worker.poll() is None:
            time.sleep(0.5)
            peak_kib = max(peak_kib, peak_rss_kib(worker.pid))
            std_offsets = committed_and_end(bootstrap, app_id, std)
            st_offsets = (0, 0) if floor else committed_and_end(bootstrap, app_id, [f"stats.deltas{suffix}"])
            if std_offsets is None or st_offsets is None:
                continue
            (std_done, std_end), (st_done, st_end) = std_offsets, st_offsets
            if std_done and not first:
                first, cpu_first = time.time(), cpu_seconds(worker.pid)
            if std_done == std_end and st_done == st_end:
                last, cpu_last = time.time(), cpu_seconds(worker.pid)
                break
        if not last:
            raise SystemExit(f"{module} did not finish in {timeout:.0f} s (exit {worker.poll()}); see {log}")
    finally:
        isolated.stop_worker(worker, 60)
        shutil.rmtree(settings.faust_datadir("stats", app_id), ignore_errors=True)
    return Measured(last - first, cpu_last - cpu_first, peak_kib, None if floor else st_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="simulated row changes")
    parser.add_argument("--vendor", choices=("a", "b"), default="b")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the worker")
    parser.add_argument("--all-topics", action="store_true",
                        help="read every source dataset's topic, as the platform's worker does, not only "
                             "those the events fill (each fetch then lists 66 topics' partitions)")
    parser.add_argument("--floor", action="store_true",
                        help="then run streams.stats.floor on the same records: Faust reading and acking "
                             "them as the worker does, with no work (the CPU any Faust reader pays)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level="WARNING")
    settings = load_settings()
    bootstrap = settings.bootstrap_servers
    tag = f"b{uuid.uuid4().hex[:6]}"
    suffix = f".{tag}"
    messages = standard_messages(args.vendor, args.events, settings.registry_url)
    # The worker's own default (streams.stats.app), or only the topics the events fill.
    datasets = load_catalogue().source_names() if args.all_topics else sorted({m.topic[len("std."):] for m in messages})
    std = [f"std.{d}{suffix}" for d in datasets]
    internal = [f"stats.deltas{suffix}", f"stats.ticks{suffix}", f"dlq.stats{suffix}"]
    stat = [f"stat.{d}{suffix}" for d in core.STAT_DATASETS]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in std + stat]).values():
        fut.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"})
    for m in messages:
        produce_waiting(producer, m.topic + suffix, m.value, m.key, m.headers or None)
    assert producer.flush(60) == 0

    runs = [("statistics worker", "streams.stats.app", f"hip-stats-bench-{tag}")]
    if args.floor:
        runs.append(("floor: Faust reads and acks", FLOOR, f"hip-stats-floor-{tag}"))
    results = []
    try:
        for label, module, app_id in runs:
            results.append((label, measure(module, suffix, app_id, datasets, std, args.timeout)))
    finally:
        # The workers' own topics too: Faust's table changelogs and its assignor's topic.
        prefixes = tuple(f"{app_id}-" for _, _, app_id in runs)
        own = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
        left = delete_until_gone(bootstrap, std + stat + internal + own)
        if left:
            print(f"could not remove {len(left)} topic(s) of the run: {', '.join(left[:5])}")

    n = len(messages)
    print(f"\nstatistics worker through Kafka, {n} standard records of {args.events} simulated "
          f"events of vendor {args.vendor}; machine: {machine()}\n")
    print(f"{'process':<30} {'records':>8} {'deltas msgs':>11} {'seconds':>8} {'records/s':>10} {'CPU s':>6} "
          f"{'CPU µs/record':>13} {'peak memory':>12}")
    for label, m in results:
        deltas = "-" if m.deltas_messages is None else str(m.deltas_messages)
        print(f"{label:<30} {n:>8} {deltas:>11} {m.seconds:>8.1f} {n / m.seconds:>10.0f} {m.cpu:>6.1f} "
              f"{m.cpu / n * 1e6:>13.0f} {m.peak_kib / 1024:>8.0f} MiB")
    print("\nCPU: the process's user + system time over the same span (all its threads); the "
          "rest of the span it waited. On a shared machine CPU µs/record is what the statistics cost "
          "the other stages.")
    if args.floor:
        print("The floor reads the same records with the worker's consumer settings and only acks them: "
              "the worker's CPU above it is the statistics' own work.")
    print("\ncompare records/s with the normalizer worker's events/s (streams.bench_normalizer) "
          "in the same session.")


if __name__ == "__main__":
    main()

"""``hip normalizer``: run the normalizer worker, and re-drive its dead letters after a fix."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from hip.errors import ConfigError, FatalError
from hip.settings import load_settings
from streams.core.mapping import MAPPINGS_DIR, MappingSet, load_mappings
from streams.normalizer_stage import (
    DLQ_TOPIC, NormalizerConfig, Processor, ensure_topics, header_map, list_raw_topics, mapped_datasets,
    source_of_dead_letter)

log = logging.getLogger("hip.normalizer")

_MAPPINGS = click.option("--mappings", "mappings_dir", type=click.Path(path_type=Path, file_okay=False),
                         default=MAPPINGS_DIR, show_default=True,
                         help="Folder of vendor profiles (*.yaml) and hospitals/<org>.yaml.")


def _load(mappings_dir: Path) -> MappingSet:
    if not mappings_dir.is_dir():
        raise ConfigError("mappings folder not found", file=str(mappings_dir), field="--mappings")
    mappings = load_mappings(mappings_dir)
    if not mappings.hospitals:
        raise ConfigError("no hospital is configured (hospitals/<org>.yaml)", file=str(mappings_dir / "hospitals"))
    return mappings


def _codec(registry_url: str, datasets: list[str]) -> Any:
    from hip.codec import Codec

    from hip.codec import FramedEncoder

    encoder = FramedEncoder(Codec(registry_url))
    for ds in datasets:  # registered up front: no HTTP call on the hot path
        encoder.encode_plan(ds)
    return encoder


@click.group("normalizer")
def normalizer() -> None:
    """Raw change events → standard Avro records (std.<dataset>), dead letters and findings."""


@normalizer.command("run")
@_MAPPINGS
@click.option("--group", default=NormalizerConfig.group, show_default=True, help="Kafka consumer group.")
@click.option("--partitions", type=click.IntRange(1, 1000), default=NormalizerConfig.std_partitions,
              show_default=True, help="Partitions of std.* topics created at start (fixed afterwards).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=NormalizerConfig.batch_size,
              show_default=True, help="Events per batch.")
@click.option("--batch-within", type=click.FloatRange(0.001, 60), default=NormalizerConfig.batch_within_s,
              show_default=True, help="Seconds to wait for a batch to fill.")
@click.option("--discover-interval", type=click.FloatRange(0.5, 3600),
              default=NormalizerConfig.discover_interval_s, show_default=True,
              help="Seconds between checks for new raw.* topics.")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port [settings: normalizer port].")
@click.option("--wait-for-topics", type=click.FloatRange(0), default=300.0, show_default=True,
              help="Seconds to wait at start for a first raw.* topic.")
@click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def run(mappings_dir: Path, group: str, partitions: int, batch_size: int, batch_within: float,
        discover_interval: float, metrics_port: int | None, wait_for_topics: float, loglevel: str) -> None:
    """Run the normalizer worker until stopped (exit 2: bad mapping; 1: fatal error).

    The dictionary lookups (departments, staff, drug catalogue) are kept in memory and rebuilt at
    every start from the dictionary tables' raw topics, read from their beginning; keep those
    topics' retention long (or compacted) so a restart finds every dictionary row.
    """
    from hip import metrics
    from streams.normalizer import build_app, prepare_lookups, run_worker

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    mappings = _load(mappings_dir)  # a bad mapping stops everything before anything runs
    settings = load_settings()
    cfg = NormalizerConfig(group=group, std_partitions=partitions, batch_size=batch_size,
                           batch_within_s=batch_within, discover_interval_s=discover_interval)
    datasets = mapped_datasets(mappings)
    codec = _codec(settings.registry_url, datasets)
    created = ensure_topics(settings.bootstrap_servers, datasets, cfg)
    if created:
        log.info("created topics: %s", ", ".join(created))
    metrics.serve(metrics_port or settings.normalizer_metrics_port, "normalizer")
    deadline = time.monotonic() + wait_for_topics
    orgs = tuple(mappings.hospitals)
    topics = list_raw_topics(settings.bootstrap_servers, orgs)
    while not topics and time.monotonic() < deadline:
        time.sleep(min(discover_interval, 5.0))
        topics = list_raw_topics(settings.bootstrap_servers, orgs)
    if not topics:
        raise FatalError(f"no raw.* topic appeared within {wait_for_topics:.0f} s; nothing to consume")
    lookups = prepare_lookups(settings.bootstrap_servers, topics, mappings, cfg.lookups_timeout_s)
    processor = Processor(mappings, codec, lookups)
    app, state = build_app(cfg, settings.bootstrap_servers, processor, mappings, topics)
    # Faust's graceful stop can hang from inside its own timer, and an app cannot start twice in
    # one process: a new raw topic replaces the process with a fresh one (same arguments).
    state.on_restart = lambda: os.execv(sys.executable, [sys.executable, sys.argv[0], *sys.argv[1:]])
    log.info("normalizer: %d hospital(s), %d dataset(s), %d raw topic(s)", len(mappings.hospitals), len(datasets),
             len(topics))
    code = run_worker(app, state, loglevel)
    if state.fatal is not None:
        raise FatalError(f"normalizer stopped: {state.fatal!r}")
    if state.restart:
        # A fresh process: Faust cannot start an app twice in one event loop's life.
        log.info("restarting with %d raw topic(s)", len(state.topics))
        os.execv(sys.executable, [sys.executable, sys.argv[0], *sys.argv[1:]])
    sys.exit(code)


@normalizer.command("redrive")
@_MAPPINGS
@click.option("--group", default="hip-normalizer-redrive", show_default=True,
              help="Consumer group that remembers how far dlq.normalize was re-driven.")
@click.option("--dry-run", is_flag=True, help="Report what would happen; produce and commit nothing.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Re-drive at most this many.")
def redrive(mappings_dir: Path, group: str, dry_run: bool, limit: int | None) -> None:
    """Re-run dead letters through the current mappings (exit 1 if some are still bad).

    Reads dlq.normalize from the group's position to the end seen at start. Fixed records go to
    their std topics; still-bad ones go back to dlq.normalize with their new reason and an
    incremented hip.redrives header. Offsets are committed after the broker acknowledged them.
    """
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    mappings = _load(mappings_dir)
    settings = load_settings()
    bootstrap = settings.bootstrap_servers
    datasets = mapped_datasets(mappings)
    codec = _codec(settings.registry_url, datasets)
    ensure_topics(bootstrap, datasets, NormalizerConfig())
    from streams.normalizer import prepare_lookups

    lookups = prepare_lookups(bootstrap, list_raw_topics(bootstrap, tuple(mappings.hospitals)), mappings,
                              NormalizerConfig.lookups_timeout_s)
    processor = Processor(mappings, codec, lookups)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20})
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    try:
        md = consumer.list_topics(DLQ_TOPIC, timeout=10).topics.get(DLQ_TOPIC)
        if md is None or md.error is not None:
            click.echo(f"{DLQ_TOPIC} does not exist: nothing to re-drive")
            return
        parts = [TopicPartition(DLQ_TOPIC, p) for p in md.partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        ends: dict[int, int] = {}
        assign = []
        total = 0
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            start = committed[tp.partition] if committed[tp.partition] >= 0 else low
            if high > start:
                ends[tp.partition] = high
                assign.append(TopicPartition(DLQ_TOPIC, tp.partition, start))
                total += high - start
        if limit is not None:
            total = min(total, limit)
        fixed: Counter[str] = Counter()
        still: Counter[str] = Counter()
        done = 0
        positions: dict[int, int] = {}
        if assign:
            consumer.assign(assign)
        with tqdm(total=total, unit="msg", disable=None, desc="redrive") as bar:
            while ends and (limit is None or done < limit):
                for m in consumer.consume(500, timeout=1.0):
                    if m.error():
                        if m.error().code() == -191:  # _PARTITION_EOF
                            ends.pop(m.partition(), None)
                            continue
                        raise KafkaException(m.error())
                    p, off = m.partition(), m.offset()
                    if p not in ends or (limit is not None and done >= limit):
                        continue
                    if off >= ends[p]:  # written after the start, e.g. by this re-drive
                        ends.pop(p)
                        continue
                    headers = header_map(m.headers())
                    topic, partition, offset, redrives = source_of_dead_letter(headers)
                    result = processor.process([(m.key(), m.value(), topic, partition, offset)])
                    for out in result.messages:
                        if out.topic == DLQ_TOPIC:
                            out.headers = [(k, v) for k, v in (out.headers or []) if k != "hip.redrives"]
                            out.headers.append(("hip.redrives", str(redrives + 1).encode()))
                            still[dict(out.headers).get("hip.reason", b"?").decode()] += 1
                        elif out.topic.startswith("std."):
                            fixed[out.topic] += 1
                        if not dry_run:
                            producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers,
                                             on_delivery=delivered)
                    positions[p] = off + 1
                    done += 1
                    bar.update(1)
                    if off + 1 >= ends[p]:
                        ends.pop(p)
                if not dry_run and positions:
                    producer.flush(30)
                    if failures:
                        raise FatalError(f"could not produce re-driven messages: {failures[0]}")
                    consumer.commit(offsets=[TopicPartition(DLQ_TOPIC, p, o) for p, o in positions.items()],
                                    asynchronous=False)
        if not dry_run:
            producer.flush(30)
        verb = "would re-drive" if dry_run else "re-drove"
        click.echo(f"{verb} {done} dead letter(s): {sum(fixed.values())} record(s) to std topics, "
                   f"{sum(still.values())} still dead")
        for reason, n in still.most_common():
            click.echo(f"  still dead: {reason} × {n}")
        if still:
            sys.exit(1)
    finally:
        consumer.close()

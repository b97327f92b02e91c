"""Normalizer throughput, three ways in one run, on realistic Debezium events of the simulator.

1. ``core``: the pure path without Kafka (decode → map → validate → encode) over a batch.
2. ``faust``: the real worker (``streams.normalizer``) through Kafka: N raw events pre-produced to
   fresh raw topics, timed from the first consumed event until every event is acked, which
   happens only after all its std / dlq / findings messages were acknowledged by the broker.
   What it writes goes to topics of the run's own (``std.<dataset>.b<tag>``, …), removed after:
   the events carry a real hospital's code, and on ``std.<dataset>`` the warehouse sink would
   take them for that hospital's records.
3. ``naive``: what a first attempt looks like: one message at a time with aiokafka, standard
   library ``json``, the reference ``avro`` library for encoding, one awaited send per output
   and one offset commit per message.

Usage: ``python -m streams.bench_normalizer [--events N] [--naive-events M] [--vendor a|b]``.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import struct
import time
import uuid
from typing import Any

from hip.codec import FramedEncoder
from hip.proc import machine, recorded_pid
from hip.records import std_topic
from hip.settings import load_settings
from hip.topics import delete_until_gone
from streams.core.mapping import load_mappings
from streams.core.normalize import StandardRecord, normalize
from streams.normalizer_events import workload_events
from streams.normalizer_stage import (
    DLQ_TOPIC, FINDINGS_TOPIC, BatchResult, NormalizerConfig, Processor, mapped_datasets, unescape_topic)

VENDORS = {"a": "vendor_a", "b": "vendor_b"}


def org_of(mappings: Any, vendor: str) -> str:
    """A configured hospital of the vendor's profile (the benchmark's events carry its code)."""
    for org, hospital in sorted(mappings.hospitals.items()):
        if hospital.profile == VENDORS[vendor]:
            return str(org)
    raise SystemExit(f"no hospital with profile {VENDORS[vendor]} in streams/mappings/hospitals")


class _LocalCodec:
    """The codec's framing with a fixed schema id: the core measurement needs no registry."""

    def __init__(self) -> None:
        from hip.catalogue import load_catalogue

        self.catalogue = load_catalogue()

    def register(self, dataset: str) -> int:
        return 1


def bench_core(events: list[Any], mappings: Any) -> tuple[float, float]:
    processor = Processor(mappings, FramedEncoder(_LocalCodec()), {})
    processor.process(events[:200])  # warm caches (schemas, topic names, conformance plans)
    processor = Processor(mappings, FramedEncoder(_LocalCodec()), {})
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(events), 2000):
        processor.process(events[i:i + 2000])
    return time.perf_counter() - started, time.process_time() - cpu


def _retopic(events: list[Any], tag: str) -> tuple[list[Any], list[str]]:
    """The same events on fresh raw topics of this run (the org stays, so the mappings apply)."""
    out = []
    for k, v, t, p, o in events:
        parts = t.split(".")
        parts[3] = f"{parts[3]}bench{tag}"
        out.append((k, v, ".".join(parts), p, o))
    return out, sorted({e[2] for e in out})


def _produce_raw(bootstrap: str, events: list[Any], topics: list[str]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from hip.topics import produce_waiting

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        fut.result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for k, v, t, _, _ in events:
        produce_waiting(producer, t, v, k)
    producer.flush(60)


def _output_topics(bootstrap: str, datasets: list[str], suffix: str, partitions: int) -> list[str]:
    """The run's own standard, dead-letter and findings topics (``<topic><suffix>``), created."""
    from confluent_kafka.admin import NewTopic

    from hip.topics import create_missing

    names = [std_topic(d) + suffix for d in datasets] + [DLQ_TOPIC + suffix, FINDINGS_TOPIC + suffix]
    create_missing(bootstrap, [NewTopic(n, partitions, 1) for n in names])
    return names


class _OwnTopics:
    """The processor, its messages sent to the run's own topics (see the module text)."""

    def __init__(self, processor: Processor, suffix: str) -> None:
        self.processor, self.suffix = processor, suffix

    def process(self, batch: list[Any]) -> BatchResult:
        result = self.processor.process(batch)
        for m in result.messages:
            m.topic += self.suffix
        return result


def _drop(bootstrap: str, topics: list[str]) -> None:
    """Remove the run's topics: a running normalizer would take its raw topics for hospital data."""
    left = delete_until_gone(bootstrap, topics)
    if left:
        print(f"could not remove {len(left)} topic(s) of the run: {', '.join(left[:5])}")


def bench_faust(events: list[Any], mappings: Any, cfg: NormalizerConfig) -> tuple[float, float]:
    from hip.codec import Codec
    from streams.normalizer import build_app, run_worker

    settings = load_settings()
    bootstrap = settings.bootstrap_servers
    tag = uuid.uuid4().hex[:6]
    events, topics = _retopic(events, tag)
    _produce_raw(bootstrap, events, topics)
    encoder = FramedEncoder(Codec(settings.registry_url))
    datasets = mapped_datasets(mappings)
    for ds in datasets:
        encoder.encode_plan(ds)
    cfg = NormalizerConfig(**{**cfg.__dict__, "group": f"hip-bench-{tag}"})
    outputs = _output_topics(bootstrap, datasets, f".b{tag}", cfg.std_partitions)
    processor = _OwnTopics(Processor(mappings, encoder, {}), f".b{tag}")
    app, state = build_app(cfg, bootstrap, processor, mappings, topics, discover=False)  # type: ignore[arg-type]
    timing: dict[str, float] = {}

    # A timer on the app's own loop, not a thread: from another thread ``app.loop`` may be a
    # different loop (or raise), and the stop request is then lost with the worker left idle.
    @app.timer(0.05)
    async def watch() -> None:
        if state.events and "first" not in timing:
            timing["first"], timing["cpu_first"] = time.perf_counter(), time.process_time()
        if "last" not in timing and (state.events >= len(events) or state.fatal is not None):
            timing["last"], timing["cpu_last"] = time.perf_counter(), time.process_time()
            state.stop()

    try:
        run_worker(app, state, os.environ.get("HIP_BENCH_LOGLEVEL", "warning"))
    finally:
        _drop(bootstrap, topics + outputs)
    if state.fatal is not None:
        raise RuntimeError(f"worker failed: {state.fatal!r}")
    return timing["last"] - timing["first"], timing["cpu_last"] - timing["cpu_first"]


def bench_naive(events: list[Any], mappings: Any) -> tuple[float, float]:
    """Per message: consume, json, map, avro (reference library), send and wait, commit."""
    import avro.io
    import avro.schema
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from hip.catalogue import load_catalogue
    from hip.conformance import check

    settings = load_settings()
    bootstrap = settings.bootstrap_servers
    tag = uuid.uuid4().hex[:6]
    events, topics = _retopic(events, tag)
    _produce_raw(bootstrap, events, topics)
    suffix = f".b{tag}"
    outputs = _output_topics(bootstrap, mapped_datasets(mappings), suffix, 1)
    catalogue = load_catalogue()
    schemas: dict[str, Any] = {}
    lookups: dict[str, Any] = {}

    def encode(dataset: str, record: dict[str, Any]) -> bytes:
        if dataset not in schemas:
            schemas[dataset] = avro.schema.parse(json.dumps(catalogue[dataset].schema))
        buf = io.BytesIO()
        buf.write(struct.pack(">bI", 0, 1))
        avro.io.DatumWriter(schemas[dataset]).write(_avro_values(record), avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    async def main() -> tuple[float, float]:
        consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=f"hip-naive-{tag}",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        done = 0
        started = cpu = 0.0
        try:
            async for msg in consumer:
                if not started:
                    started, cpu = time.perf_counter(), time.process_time()
                json.loads(msg.value)  # a first attempt parses the envelope itself, then maps
                for out in normalize(msg.key, msg.value, unescape_topic(msg.topic), msg.partition, msg.offset,
                                     mappings, lookups, check=check):
                    if isinstance(out, StandardRecord):
                        try:
                            value = encode(out.dataset, out.record)
                        except Exception:  # noqa: BLE001 - the baseline dead-letters what avro refuses
                            await producer.send_and_wait(DLQ_TOPIC + suffix, msg.value, key=msg.key)
                            continue
                        await producer.send_and_wait(std_topic(out.dataset) + suffix, value, key=out.key)
                    else:
                        await producer.send_and_wait(DLQ_TOPIC + suffix, msg.value, key=msg.key)
                await consumer.commit()
                done += 1
                if done >= len(events):
                    break
        finally:
            await consumer.stop()
            await producer.stop()
        return time.perf_counter() - started, time.process_time() - cpu

    try:
        return asyncio.run(main())
    finally:
        _drop(bootstrap, topics + outputs)


def _avro_values(record: dict[str, Any]) -> dict[str, Any]:
    """The reference library wants datetimes and dates for logical types, not epoch numbers."""
    import datetime as dt

    out = dict(record)
    for name in ("source_ts", "ingest_ts"):
        if isinstance(out.get(name), int):
            out[name] = dt.datetime.fromtimestamp(out[name] / 1000, dt.timezone.utc)
    for k, v in out.items():
        if isinstance(v, int) and k.endswith(("_time", "_ts")) and k not in ("source_ts", "ingest_ts"):
            out[k] = dt.datetime.fromtimestamp(v / 1000, dt.timezone.utc)
        elif isinstance(v, int) and k.endswith("_date"):
            out[k] = dt.date(1970, 1, 1) + dt.timedelta(days=v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="row changes for core and faust")
    parser.add_argument("--naive-events", type=int, default=2000, help="row changes for the naive baseline")
    parser.add_argument("--vendor", choices=sorted(VENDORS), default="b")
    parser.add_argument("--batch-size", type=int, default=NormalizerConfig.batch_size)
    parser.add_argument("--skip-kafka", action="store_true", help="only the core measurement")
    args = parser.parse_args()
    pid = recorded_pid(load_settings().var / "run", "normalizer")
    if pid is not None and not args.skip_kafka:
        # Measured: 7,661 and 7,227 events/s with the demo's worker running, 10,689-11,225 without.
        raise SystemExit(f"the stack's normalizer worker is running (pid {pid}): it subscribes to this "
                         "benchmark's raw topics and would normalize them too, and the worker pass would "
                         "measure two workers sharing the cores. Stop it first: bash deploy/down.sh normalizer "
                         "(make bench does), or run with --skip-kafka for the core alone.")
    import logging

    logging.basicConfig(level="WARNING")
    mappings = load_mappings()
    events = workload_events(args.vendor, org_of(mappings, args.vendor), args.events, dirty=0.02)
    naive_events = events[:args.naive_events]
    rows: list[tuple[str, int, tuple[float, float]]] = []
    rows.append(("core (no Kafka, one process)", len(events), bench_core(events, mappings)))
    if not args.skip_kafka:
        cfg = NormalizerConfig(batch_size=args.batch_size)
        rows.append(("faust worker through Kafka", len(events), bench_faust(events, mappings, cfg)))
        rows.append(("naive (json, avro, per-message send+commit)", len(naive_events),
                     bench_naive(naive_events, mappings)))
    naive_rate = rows[-1][1] / rows[-1][2][0] if not args.skip_kafka else None
    print(f"\nnormalizer throughput, vendor {args.vendor} events; machine: {machine()}\n")
    print(f"{'mode':<46} {'events':>8} {'seconds':>8} {'events/s':>10} {'x naive':>8} {'CPU µs/event':>13}")
    for name, n, (secs, cpu) in rows:
        rate = n / secs
        ratio = f"{rate / naive_rate:.1f}" if naive_rate else "-"
        print(f"{name:<46} {n:>8} {secs:>8.2f} {rate:>10.0f} {ratio:>8} {cpu / n * 1e6:>13.0f}")
    print("\nCPU: the process's user + system time over the same span, all its threads (Faust's consumer "
          "thread, librdkafka's); the rest of the span it waited for the broker.")


if __name__ == "__main__":
    main()

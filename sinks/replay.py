"""Replay of standard topics into the warehouse, for one dataset, optionally one hospital and a
time range.

Safe next to the live sink: partitions are assigned directly (no group membership, no offset
commits, a throw-away group id), and the position-guarded upsert means a replayed old version
never overwrites a newer row. Message timestamps select the offsets (``offsets_for_times``).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from hip import metrics
from hip.errors import TransientError

from sinks.core.deadletter import STAGE
from sinks.core.retry import Backoff
from sinks.worker import BatchWriter, translate_kafka_error

log = logging.getLogger(__name__)


@dataclass
class ReplayPlan:
    """Per partition: first offset to read and the end (exclusive) to stop at."""

    topic: str
    ranges: dict[int, tuple[int, int]]

    @property
    def total(self) -> int:
        return sum(max(0, end - start) for start, end in self.ranges.values())


@dataclass
class ReplayReport:
    read: int = 0
    matched: int = 0
    applied: int = 0
    dead_letters: int = 0
    seconds: float = 0.0


def org_key_prefix(org: str) -> bytes:
    """Prefix of every Kafka key of one hospital (keys are ``["org", …]``, see ``record_key``)."""
    return json.dumps([org], ensure_ascii=False, separators=(",", ":"))[:-1].encode("utf-8") + b","


def _millis(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("replay times need a zone (e.g. 2026-03-01T00:00+08:00)")
    return int(when.timestamp() * 1000)


def plan_replay(consumer: Consumer, topic: str, since: dt.datetime | None, until: dt.datetime | None,
                timeout: float = 10.0) -> ReplayPlan:
    """Turn a time range into offsets per partition (end = high watermark when no ``until``)."""
    meta = consumer.list_topics(topic, timeout=timeout)
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None or not tmeta.partitions:
        raise TransientError(f"topic {topic} not found ({tmeta.error if tmeta else 'no metadata'})")
    partitions = sorted(tmeta.partitions)
    ranges: dict[int, tuple[int, int]] = {}
    marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in partitions}

    def by_time(when: dt.datetime | None, default: Callable[[int], int]) -> dict[int, int]:
        if when is None:
            return {p: default(p) for p in partitions}
        found = consumer.offsets_for_times([TopicPartition(topic, p, _millis(when)) for p in partitions],
                                           timeout=timeout)
        # -1: no message at or after that time, so the range ends at the high watermark.
        return {tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1]) for tp in found}

    starts = by_time(since, lambda p: marks[p][0])
    ends = by_time(until, lambda p: marks[p][1])
    for p in partitions:
        ranges[p] = (max(starts[p], marks[p][0]), min(ends[p], marks[p][1]))
    return ReplayPlan(topic=topic, ranges=ranges)


def replay(bootstrap_servers: str, topic: str, writer: BatchWriter, *, org: str | None = None,
           since: dt.datetime | None = None, until: dt.datetime | None = None, batch_max: int = 5000,
           backoff: Backoff | None = None, progress: Callable[[int], Any] | None = None,
           on_plan: Callable[[ReplayPlan], Any] | None = None) -> ReplayReport:
    """Re-apply a topic range to the warehouse; returns counts. Never commits consumer offsets."""
    backoff = backoff or Backoff(attempts=8)
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"hip-sink-replay-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.max.bytes": 64 * 1024 * 1024,
    })
    prefix = org_key_prefix(org) if org else None
    report = ReplayReport()
    started = time.perf_counter()
    try:
        plan = plan_replay(consumer, topic, since, until)
        if on_plan:
            on_plan(plan)
        todo = {p: r for p, r in plan.ranges.items() if r[1] > r[0]}
        if not todo:
            return report
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in todo.items()])
        while todo:
            messages = consumer.consume(batch_max, 1.0)
            if not messages:
                _finish_passed(consumer, topic, todo)
            batch: list[Message] = []
            for msg in messages:
                if msg.error() is not None:
                    err = translate_kafka_error(msg.error())
                    if not isinstance(err, TransientError):
                        raise err
                    continue
                p = msg.partition()
                if p not in todo:
                    continue
                if msg.offset() >= todo[p][1]:
                    _finish(consumer, topic, p, todo)
                    continue
                report.read += 1
                if progress:
                    progress(1)
                if msg.offset() + 1 >= todo[p][1]:
                    _finish(consumer, topic, p, todo)
                if prefix is not None and not (msg.key() or b"").startswith(prefix):
                    continue
                batch.append(msg)
            if batch:
                report.matched += len(batch)
                outcome = _write_with_retry(writer, batch, backoff)
                report.applied += outcome.applied
                report.dead_letters += outcome.dead_letters
    except KafkaException as exc:
        raise translate_kafka_error(exc) from exc
    finally:
        report.seconds = time.perf_counter() - started
        consumer.close()
    return report


def _finish(consumer: Consumer, topic: str, partition: int, todo: dict[int, tuple[int, int]]) -> None:
    if todo.pop(partition, None) is not None:
        consumer.pause([TopicPartition(topic, partition)])


def _finish_passed(consumer: Consumer, topic: str, todo: dict[int, tuple[int, int]]) -> None:
    # Transaction markers and compacted gaps are never delivered: judge by position instead.
    for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
        if tp.offset >= 0 and tp.offset >= todo[tp.partition][1]:
            _finish(consumer, topic, tp.partition, todo)


def _write_with_retry(writer: BatchWriter, batch: Sequence[Message], backoff: Backoff) -> Any:
    failures = 0
    while True:
        try:
            return writer.write(batch)
        except TransientError as exc:
            failures += 1
            metrics.ERRORS.labels(stage=STAGE, kind="transient").inc()
            if backoff.exhausted(failures):
                raise TransientError(f"replay gave up after {failures} attempts: {exc}") from exc
            metrics.RETRIES.labels(stage=STAGE).inc()
            time.sleep(backoff.delay(failures, exc.retry_after))


def make_producer(bootstrap_servers: str) -> Producer:
    """The dead-letter producer (idempotent, all replicas)."""
    return Producer({"bootstrap.servers": bootstrap_servers, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 20})

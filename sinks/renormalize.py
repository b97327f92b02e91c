"""Re-normalize one hospital's raw topics after a mapping fix.

Reads every ``raw.<org>.*`` topic (from the start, or from a time) with direct assignment and no
offset commits, so the live normalizer is not disturbed, runs each change event through the
normalizer core, and produces the standard records to their ``std.*`` / ``stat.*`` topics, where the
live sink picks them up. The records keep their source position and get a new ingest time: the
sink orders versions by ``(source_position, ingest_ts)``, so the re-derived record replaces the
earlier output of the same change, while a later replay of the old output cannot bring it back.

Dictionary tables (departments, staff …) feed lookups: a first pass reads everything to build the
current dictionary state, the second pass produces.
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from confluent_kafka import Consumer, Producer, TopicPartition

from hip.errors import ConfigError
from sinks.replay import plan_replay

NORMALIZE_DLQ = "dlq.normalize"


@dataclass
class RenormalizeReport:
    topics: int = 0
    events: int = 0
    records: int = 0
    dead_letters: int = 0

    def __str__(self) -> str:
        return (f"{self.topics} raw topics, {self.events} change events, {self.records} standard records, "
                f"{self.dead_letters} dead letters")


def raw_topics(bootstrap_servers: str, org: str) -> list[str]:
    """The hospital's raw change topics (``raw.<org>.<system>.<schema>.<table>``)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"hip-renorm-{uuid.uuid4().hex[:8]}"})
    try:
        names = consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()
    pattern = re.compile(rf"^raw\.{re.escape(org)}\.")
    return sorted(t for t in names if pattern.match(t))


def read_topic(bootstrap_servers: str, topic: str, since: dt.datetime | None) -> Iterator[Any]:
    """Every message of a topic from ``since`` up to its end at the time of the call."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "enable.auto.commit": False,
                         "group.id": f"hip-renorm-{uuid.uuid4().hex[:12]}"})
    try:
        plan = plan_replay(consumer, topic, since, None)
        todo = {p: r for p, r in plan.ranges.items() if r[1] > r[0]}
        if todo:
            consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        while todo:
            messages = consumer.consume(5000, 1.0)
            if not messages:
                for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                    if tp.offset >= todo[tp.partition][1]:
                        todo.pop(tp.partition)
            for msg in messages:
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None or partition not in todo:
                    continue
                end = todo[partition][1]
                if offset >= end:
                    continue
                if offset + 1 >= end:
                    todo.pop(partition)
                yield msg
    finally:
        consumer.close()


def renormalize(bootstrap_servers: str, org: str, *, since: dt.datetime | None = None,
                progress: Callable[[int], Any] | None = None) -> RenormalizeReport:
    """Run the normalizer core over the org's raw topics and produce fresh standard records."""
    from hip.codec import codec_from_settings
    from streams.core.mapping import load_mappings
    from streams.core.normalize import DeadLetter, StandardRecord, normalize

    mappings = load_mappings()
    if org not in mappings.hospitals:
        raise ConfigError(f"no mapping configured for organisation {org}", field="org")
    topics = raw_topics(bootstrap_servers, org)
    if not topics:
        raise ConfigError(f"no raw topics for {org}", field="org")
    codec = codec_from_settings()
    from hip.catalogue import load_catalogue
    catalogue = load_catalogue()
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20})
    report = RenormalizeReport(topics=len(topics))
    lookups: dict[str, Any] = {}
    for topic in topics:  # pass 1: the dictionary state as it is now
        for msg in read_topic(bootstrap_servers, topic, None):
            normalize(msg.key(), msg.value(), topic, msg.partition(), msg.offset(), mappings, lookups)
    for topic in topics:
        for msg in read_topic(bootstrap_servers, topic, since):
            report.events += 1
            for out in normalize(msg.key(), msg.value(), topic, msg.partition(), msg.offset(), mappings, lookups):
                if isinstance(out, StandardRecord):
                    producer.produce(catalogue[out.dataset].topic, key=out.key,
                                     value=codec.encode(out.dataset, out.record))
                    report.records += 1
                elif isinstance(out, DeadLetter):
                    headers = {"hip.stage": "normalize", "hip.reason": out.reason, "hip.error": out.message,
                               "hip.topic": out.topic, "hip.partition": str(out.partition),
                               "hip.offset": str(out.offset), "hip.mapping_id": out.mapping_id or "",
                               "hip.dataset": out.dataset or ""}
                    producer.produce(NORMALIZE_DLQ, key=out.key, value=out.value,
                                     headers=[(k, v.encode()) for k, v in headers.items()])
                    report.dead_letters += 1
                producer.poll(0)
            if progress:
                progress(1)
    remaining = producer.flush(60)
    if remaining:
        from hip.errors import TransientError
        raise TransientError(f"{remaining} records not acknowledged by Kafka; run again")
    return report

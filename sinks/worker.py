"""The sink worker: std.<dataset> and stat.<dataset> topics in, warehouse tables out.

Each ``consume`` batch is decoded, grouped by topic, folded to the newest version per key and
written in ONE database transaction; dead letters are flushed and only then are the batch's
offsets committed (quix-streams' "flush at checkpoint"). A crash anywhere before the offset
commit redelivers the batch, which the position-guarded upsert makes harmless.

Transient failures are retried with jittered backoff; when the attempts are used up, the
batch's partitions are rewound to the first uncommitted offset and paused for a while, and the
worker keeps serving its other partitions. Fatal errors stop the worker with a clear message.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from hip import metrics
from hip.errors import FatalError, PlatformError, RecordError, TransientError
from hip.records import unavailable_fields

from sinks.core.batch import Change, fold
from sinks.core.deadletter import DLQ_TOPIC, STAGE, dead_letter_headers, org_of
from sinks.core.retry import Backoff
from sinks.core.table import TableLike
from sinks.warehouse import Warehouse, WriteResult, translate_error

log = logging.getLogger(__name__)


class Decoder(Protocol):
    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]: ...


TableResolver = Callable[[str], TableLike]


def dataset_of(topic: str) -> str:
    """``std.patient_index`` → ``patient_index`` (also for ``stat.`` topics)."""
    return topic.split(".", 1)[1] if "." in topic else topic


def translate_kafka_error(error: KafkaError | KafkaException) -> PlatformError:
    """Classify a confluent-kafka error: retriable ones are transient, the rest fatal."""
    err = error.args[0] if isinstance(error, KafkaException) and error.args else error
    if isinstance(err, KafkaError):
        if err.fatal():
            return FatalError(f"kafka: {err.str()}")
        if err.retriable() or err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                             KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT,
                                             KafkaError.REQUEST_TIMED_OUT):
            return TransientError(f"kafka: {err.str()}")
        return FatalError(f"kafka: {err.str()}")
    return FatalError(f"kafka: {error}")


@dataclass
class SinkConfig:
    """Tuning and addresses of one sink worker."""

    bootstrap_servers: str
    group_id: str = "hip-sink"
    batch_max: int = 5000
    batch_wait_s: float = 0.2
    dlq_topic: str = DLQ_TOPIC
    backoff: Backoff = field(default_factory=Backoff)
    pause_s: float = 30.0
    lag_interval_s: float = 10.0
    consumer_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    """What one batch did (returned for tests and the replay progress bar)."""

    consumed: int = 0
    applied: int = 0
    written: int = 0
    dead_letters: int = 0
    per_table: dict[str, WriteResult] = field(default_factory=dict)


class BatchWriter:
    """Decode → fold → write one batch of Kafka messages in one transaction; shared by run and replay."""

    def __init__(self, warehouse: Warehouse, decoder: Decoder, tables: TableResolver,
                 producer: Producer, dlq_topic: str = DLQ_TOPIC) -> None:
        self.warehouse = warehouse
        self.decoder = decoder
        self.tables = tables
        self.producer = producer
        self.dlq_topic = dlq_topic
        self._tables: dict[str, TableLike] = {}
        self._latency: dict[str, Any] = {}
        self._newest: dict[tuple[str, str], float] = {}

    def _table(self, dataset: str) -> TableLike:
        table = self._tables.get(dataset)
        if table is None:
            try:
                table = self.tables(dataset)
            except KeyError as exc:
                raise FatalError(f"no warehouse table for dataset {dataset!r}: {exc}") from exc
            self._tables[dataset] = table
        return table

    def write(self, messages: Sequence[Message]) -> BatchOutcome:
        """Write a batch; raises TransientError/FatalError with the transaction rolled back."""
        started = time.perf_counter()
        outcome = BatchOutcome(consumed=len(messages))
        by_topic: dict[str, list[Change]] = defaultdict(list)
        dead: list[tuple[Change, RecordError, Mapping[str, Any] | None]] = []
        for msg in messages:
            value = msg.value()
            change = Change(record={}, topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                            key=msg.key(), value=value)
            if value is None:
                continue  # a compaction tombstone carries no change; deletes arrive as op=d records
            try:
                dataset, record = self.decoder.decode(value)
            except RecordError as exc:
                dead.append((change, exc, None))
                continue
            except Exception as exc:  # the codec wraps its own errors; anything else is a bad record too
                dead.append((change, RecordError("undecodable", f"{type(exc).__name__}: {exc}"), None))
                continue
            if dataset != dataset_of(msg.topic()):
                dead.append((change, RecordError("wrong_topic", f"record of {dataset} on {msg.topic()}"), record))
                continue
            change.record = record
            change.keep = unavailable_fields(msg.headers())
            by_topic[msg.topic()].append(change)

        try:
            for topic, changes in by_topic.items():
                dataset = dataset_of(topic)
                table = self._table(dataset)
                self._check_fields(dataset, table, changes)
                folded = fold(changes, table.primary_key)
                dead.extend((c, e, c.record) for c, e in folded.rejected)
                result = self.warehouse.write(table, folded.winners)
                dead.extend((c, e, c.record) for c, e in result.rejected)
                outcome.per_table[dataset] = result
                outcome.applied += result.applied
                outcome.written += result.submitted - len(result.rejected)
            self.warehouse.commit()
        except BaseException:
            self.warehouse.rollback()
            raise
        committed_at = time.time()
        self._dead_letter(dead)
        outcome.dead_letters = len(dead)
        rejected_ids = {id(c) for c, _, _ in dead}
        self._observe(by_topic, rejected_ids, committed_at)
        metrics.BATCH_SIZE.labels(stage=STAGE).observe(len(messages))
        metrics.BATCH_SECONDS.labels(stage=STAGE).observe(time.perf_counter() - started)
        return outcome

    def _check_fields(self, dataset: str, table: TableLike, changes: Iterable[Change]) -> None:
        known = {c.name for c in table.columns}
        seen: set[frozenset[str]] = set()
        for change in changes:
            keys = frozenset(change.record)
            if keys in seen:
                continue
            seen.add(keys)
            unknown = sorted(keys - known)
            if unknown:
                raise FatalError(f"schema mismatch: records of {dataset} carry fields {unknown} that "
                                 f"{table.schema}.{table.name} lacks; run `hip warehouse migrate`")

    def _dead_letter(self, dead: Sequence[tuple[Change, RecordError, Mapping[str, Any] | None]]) -> None:
        if not dead:
            return
        for change, error, record in dead:
            headers = dead_letter_headers(error, topic=change.topic, partition=change.partition,
                                          offset=change.offset, dataset=dataset_of(change.topic),
                                          record=record)
            try:
                self.producer.produce(self.dlq_topic, key=change.key, value=change.value, headers=headers)
            except BufferError:
                self.producer.flush(10)
                self.producer.produce(self.dlq_topic, key=change.key, value=change.value, headers=headers)
            except KafkaException as exc:
                raise translate_kafka_error(exc) from exc
            metrics.DEAD_LETTERS.labels(stage=STAGE, org=org_of(record), reason=error.reason).inc()
            log.warning("dead-lettered %s[%d]@%d: %s (%s)", change.topic, change.partition,
                        change.offset, error.reason, error)
        remaining = self.producer.flush(30)
        if remaining:
            raise TransientError(f"kafka: {remaining} dead letters not acknowledged by {self.dlq_topic}")

    def _observe(self, by_topic: Mapping[str, list[Change]], rejected: set[int], committed_at: float) -> None:
        for topic, changes in by_topic.items():
            dataset = dataset_of(topic)
            latency = self._latency.get(dataset)
            if latency is None:
                latency = self._latency[dataset] = metrics.END_TO_END_SECONDS.labels(dataset=dataset)
            per_org: dict[str, int] = defaultdict(int)
            newest: dict[str, float] = {}
            for change in changes:
                if id(change) in rejected:
                    continue
                org = str(change.record.get("org_code"))
                per_org[org] += 1
                ts = change.record.get("source_ts")
                if isinstance(ts, dt.datetime):
                    if ts.tzinfo is None:
                        ts = ts.replace(tzinfo=dt.timezone.utc)
                    seconds = ts.timestamp()
                    latency.observe(max(0.0, committed_at - seconds))
                    if seconds > newest.get(org, 0.0):
                        newest[org] = seconds
            for org, count in per_org.items():
                metrics.RECORDS_OUT.labels(stage=STAGE, org=org, dataset=dataset).inc(count)
            for org, seconds in newest.items():
                # A batch of old records (a replay, a late partition) must not make a dataset look stale.
                if seconds > self._newest.get((org, dataset), 0.0):
                    self._newest[(org, dataset)] = seconds
                    metrics.LAST_SOURCE_TS.labels(org=org, dataset=dataset).set(seconds)


class SinkWorker:
    """Consumes topics with a consumer group and writes them through a ``BatchWriter``."""

    def __init__(self, config: SinkConfig, topics: Sequence[str], writer_factory: Callable[[Producer], BatchWriter]) -> None:
        self.config = config
        self.topics = list(topics)
        self.stop_event = threading.Event()
        self.producer = Producer({"bootstrap.servers": config.bootstrap_servers, "acks": "all",
                                  "enable.idempotence": True, "linger.ms": 20})
        self.writer = writer_factory(self.producer)
        consumer_conf: dict[str, Any] = {
            "bootstrap.servers": config.bootstrap_servers,
            "group.id": config.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # A batch may wait out its transient retries; stay in the group meanwhile.
            "max.poll.interval.ms": 600_000,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
        consumer_conf.update(config.consumer_overrides)
        self.consumer = Consumer(consumer_conf)
        self._paused: dict[tuple[str, int], float] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._failures = 0
        self._next_lag = 0.0
        self.batches = 0

    # -- group membership -------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.add((tp.topic, tp.partition))
        log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches are written and committed before the next poll, so nothing is in flight here.
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assigned.discard(key)
            self._paused.pop(key, None)
            try:
                metrics.CONSUMER_LAG.remove(self.config.group_id, tp.topic, str(tp.partition))
            except KeyError:
                pass
        log.info("revoked %s", _describe(partitions))

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until ``stop_event`` is set; raises FatalError on an unrecoverable failure."""
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        metrics.WORKER_UP.labels(stage=STAGE).set(1)
        try:
            while not self.stop_event.is_set():
                self._resume_due()
                messages = self.consumer.consume(self.config.batch_max, self.config.batch_wait_s)
                batch = self._usable(messages)
                if batch:
                    self._process(batch)
                self._report_lag()
        finally:
            metrics.WORKER_UP.labels(stage=STAGE).set(0)
            try:
                self.consumer.close()
            except KafkaException:
                pass
            self.producer.flush(10)
            self.writer.warehouse.close()

    def _usable(self, messages: list[Message]) -> list[Message]:
        batch = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() in (KafkaError._PARTITION_EOF,):
                    continue
                if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                    log.debug("topic not there yet: %s", err.str())
                    continue
                classified = translate_kafka_error(err)
                if isinstance(classified, FatalError):
                    raise classified
                log.warning("kafka: %s", err.str())
                continue
            if (msg.topic(), msg.partition()) in self._paused:
                continue  # fetched before the pause; the rewind redelivers it
            batch.append(msg)
        return batch

    def _process(self, batch: list[Message]) -> None:
        try:
            self.writer.write(batch)
        except TransientError as exc:
            self._failures += 1
            metrics.ERRORS.labels(stage=STAGE, kind="transient").inc()
            if self.config.backoff.exhausted(self._failures):
                self._pause(batch, exc)
                self._failures = 0
            else:
                metrics.RETRIES.labels(stage=STAGE).inc()
                wait = self.config.backoff.delay(self._failures, exc.retry_after)
                log.warning("transient failure (%s), retry %d in %.2fs", exc, self._failures, wait)
                self.stop_event.wait(wait)
                self._rewind(batch)
            return
        except PlatformError as exc:
            metrics.ERRORS.labels(stage=STAGE, kind="fatal").inc()
            if isinstance(exc, FatalError):
                raise
            raise FatalError(str(exc)) from exc
        except KafkaException as exc:
            raise translate_kafka_error(exc) from exc
        except Exception as exc:
            metrics.ERRORS.labels(stage=STAGE, kind="fatal").inc()
            raise translate_error(exc) from exc
        self._failures = 0
        self._commit(batch)
        self.batches += 1

    def _commit(self, batch: list[Message]) -> None:
        ends: dict[tuple[str, int], int] = {}
        for msg in batch:
            key = (msg.topic(), msg.partition())
            ends[key] = max(ends.get(key, -1), msg.offset() + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in the warehouse; whoever owns the partitions now re-applies them harmlessly.
            log.warning("offset commit failed (%s); the batch will be redelivered", exc)

    def _firsts(self, batch: list[Message]) -> list[TopicPartition]:
        firsts: dict[tuple[str, int], int] = {}
        for msg in batch:
            key = (msg.topic(), msg.partition())
            firsts[key] = min(firsts.get(key, msg.offset()), msg.offset())
        return [TopicPartition(t, p, o) for (t, p), o in firsts.items()]

    def _rewind(self, batch: list[Message]) -> None:
        for tp in self._firsts(batch):
            if (tp.topic, tp.partition) in self._assigned:
                try:
                    self.consumer.seek(tp)
                except KafkaException as exc:
                    log.warning("seek %s[%d] failed: %s", tp.topic, tp.partition, exc)

    def _pause(self, batch: list[Message], exc: Exception) -> None:
        tps = [tp for tp in self._firsts(batch) if (tp.topic, tp.partition) in self._assigned]
        if not tps:
            return
        self.consumer.pause(tps)
        self._rewind(batch)
        until = time.monotonic() + self.config.pause_s
        for tp in tps:
            self._paused[(tp.topic, tp.partition)] = until
        log.error("pausing %d partitions for %.0fs after repeated transient failures: %s",
                  len(tps), self.config.pause_s, exc)

    def _resume_due(self) -> None:
        if not self._paused:
            return
        now = time.monotonic()
        due = [k for k, until in self._paused.items() if until <= now]
        if due:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
            for key in due:
                del self._paused[key]
            log.info("resumed %s", due)

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag or not self._assigned:
            return
        self._next_lag = now + self.config.lag_interval_s
        tps = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        try:
            committed = self.consumer.committed(tps, timeout=5)
        except KafkaException as exc:
            log.debug("lag: %s", exc)
            return
        for tp in committed:
            try:
                # Cached: the high watermark the fetcher last saw. Asking the broker for each of
                # hundreds of partitions would stall the consume loop for seconds.
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high < 0:
                continue
            done = tp.offset if tp.offset >= 0 else low
            metrics.CONSUMER_LAG.labels(group=self.config.group_id, topic=tp.topic,
                                        partition=str(tp.partition)).set(max(0, high - done))


def _describe(partitions: Sequence[TopicPartition]) -> str:
    """``12 partitions of 2 topics: std.a[0-5], std.b[0-5]`` (a sink is assigned hundreds)."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    shown = [f"{t}{sorted(p)}" if len(p) < 4 else f"{t}[{min(p)}-{max(p)}]" for t, p in sorted(by_topic.items())]
    more = f", … {len(shown) - 8} more" if len(shown) > 8 else ""
    return f"{len(partitions)} partitions of {len(by_topic)} topics: {', '.join(shown[:8])}{more}"

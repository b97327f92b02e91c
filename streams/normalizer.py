"""The normalizer worker: a Faust agent around :class:`streams.normalizer_stage.Processor`.

Faust lives only here. One agent (``concurrency=1``: higher values can commit past in-flight
messages) reads the raw change topics of every hospital in batches taken straight from its channel
(:mod:`streams.event_batches`: Faust's per-event stream cost a fifth of the worker), hands each
batch to the processor, hands every resulting message to a librdkafka producer (``BatchProducer``:
idempotent, murmur2 partitioner like Faust's own, so keys land where they always did), waits off the
event loop until the broker acknowledged them all, and only then acks the batch's events (faster
than Faust's aiokafka producer: 1,739 → 1,943 events/s back to back, see docs/benchmarks.md). The
next batch is normalized during that wait, and produced after it. An
exception never escapes the agent (Faust would ack the event): a bad record is a dead letter, and
any other failure stops the worker with its events unacked, so they are delivered again after the
restart (at-least-once; the sink is idempotent by source position).

Subscription: an explicit topic list (Faust's topic patterns subscribe to nothing). A timer lists
the broker's topics every ``discover_interval_s``; when new ``raw.*`` topics appear the worker
stops cleanly and ``hip normalizer run`` starts again with the longer list (Faust's in-process
resubscription waits 45 s and, changing a running agent's topics, crashed its fetcher). The delay
from topic creation to consumption is about ``discover_interval_s`` plus a restart and a
consumer-group join (seconds).

Lookups (the captured dictionary tables the mappings read): an in-process dict, rebuilt at start
by reading the dictionary tables' raw topics from the beginning through the core, then kept up to
date by the core as dictionary events pass through the agent. See ``docs`` in the CLI help for the
restart behaviour.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import faust
from confluent_kafka import KafkaError, Message, Producer

from hip import metrics
from hip.errors import TransientError
from hip.proc import relax_gc, trim_heap
from hip.settings import load_settings
from streams import faust_fixes
from streams.event_batches import batches
from streams.core.mapping import MappingSet
from streams.normalizer_stage import (
    NormalizerConfig, Outgoing, Processor, dictionary_topics, list_raw_topics, rebuild_lookups)

log = logging.getLogger("hip.normalizer")


@dataclass
class WorkerState:
    """What the worker shares between its agent, its timer and the CLI."""

    topics: list[str]
    fatal: BaseException | None = None
    restart: bool = False
    on_restart: Callable[[], None] | None = None
    batches: int = 0
    events: int = 0
    subscribed_at: dict[str, float] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the worker as ``kill`` would: its SIGTERM handler runs the whole shutdown.

        ``app.stop()`` leaves the faust Worker alive and idle, and ``Worker.stop()`` from a task
        races the worker's own loop shutdown (the loop closes under the consumer thread, and the
        process never exits); the signal path is the one the worker orders correctly.
        """
        os.kill(os.getpid(), signal.SIGTERM)


class BatchProducer:
    """Produces one batch at a time and waits for the broker off Faust's event loop.

    Delivery reports come only for failed messages (``delivery.report.only.error``): a report per
    message ran Python in librdkafka's thread for every event and held the interpreter lock that
    the next batch's normalizing needed. Success is the flush emptying the queue with no report.
    """

    def __init__(self, bootstrap: str, cfg: NormalizerConfig) -> None:
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "partitioner": "murmur2_random", "linger.ms": int(cfg.producer_linger_s * 1000),
            "batch.size": cfg.producer_max_batch_bytes, "delivery.report.only.error": True,
        })
        self.failed: list[str] = []

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err.str()}")

    async def produce(self, messages: list[Outgoing]) -> None:
        """Hand ``messages`` to librdkafka, in order (the previous batch must be flushed)."""
        loop = asyncio.get_running_loop()
        self.failed = []
        for m in messages:
            while True:
                try:
                    self.producer.produce(m.topic, m.value, m.key, headers=m.headers or None,
                                          on_delivery=self._report)
                    break
                except BufferError:  # the local queue is full: let it drain
                    await loop.run_in_executor(None, self.producer.poll, 0.05)

    async def flush(self) -> None:
        """Return once every produced message is acknowledged, else raise."""
        left = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 60.0)
        if left or self.failed:
            raise TransientError(f"{left} message(s) undelivered, {len(self.failed)} failed: {self.failed[:3]}")


def build_app(cfg: NormalizerConfig, bootstrap: str, processor: Processor, mappings: MappingSet,
              topics: list[str], *, discover: bool = True) -> tuple[faust.App, WorkerState]:
    """A Faust app consuming ``topics`` (and later raw topics) into ``processor``."""
    faust_fixes.install()  # before the app makes its producer and consumer: see streams/faust_fixes.py
    app = faust.App(
        cfg.group,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        Monitor=faust_fixes.QuietMonitor,  # Faust's per-message statistics: see streams/faust_fixes.py
        topic_disable_leader=True,
        store="memory://",
        datadir=str(load_settings().faust_datadir("normalizer", cfg.group)),  # made even with no tables
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=cfg.commit_interval_s,
        broker_max_poll_records=cfg.max_poll_records,
        consumer_max_fetch_size=cfg.max_fetch_bytes,
        stream_buffer_maxsize=cfg.stream_buffer_maxsize,
        producer_linger=cfg.producer_linger_s,
        producer_max_batch_size=cfg.producer_max_batch_bytes,
        producer_acks=-1,
        # A restart to pick up new raw topics rejoins the group; with Faust's default session
        # timeout the group waits a minute for the old member first.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        # A failed batch is left unacked on purpose; waiting for it to be acked would hold the
        # shutdown forever. Its events are delivered again after the restart.
        stream_wait_empty=False,
    )
    state = WorkerState(topics=list(topics))
    now = time.time()
    state.subscribed_at.update({t: now for t in topics})
    # The list object is shared with the iterator clone Faust registers with its conductor, so
    # extending it in place changes what the next resubscription asks for.
    source = app.topic(*topics, schema=faust_fixes.RawSchema(), key_serializer="raw", value_serializer="raw", acks=True)
    subscribed = frozenset(topics)

    out = BatchProducer(bootstrap, cfg)

    async def finish(stream: faust.StreamT, events: list[Any], started: float) -> bool:
        """Wait for the broker to take a batch's messages, then ack its events. False: stopped."""
        try:
            await out.flush()
        except BaseException as exc:  # noqa: BLE001 - never let Faust ack an unprocessed event
            fail(exc, len(events))
            return False
        for e in events:
            # What ``await stream.ack(e)`` does, less its per-event sensor hooks (the apps' monitor,
            # ``faust_fixes.QuietMonitor``, drops them) and a coroutine per event.
            e.ack()
        state.batches += 1
        state.events += len(events)
        metrics.BATCH_SIZE.labels(stage="normalizer").observe(len(events))
        metrics.BATCH_SECONDS.labels(stage="normalizer").observe(time.perf_counter() - started)
        return True

    def fail(exc: BaseException, events: int) -> None:
        state.fatal = exc
        metrics.ERRORS.labels(stage="normalizer", kind="fatal").inc()
        log.error("batch of %d events failed; stopping without acking them", events, exc_info=exc)
        state.stop()

    @app.agent(source, concurrency=1)
    async def normalize(stream: faust.StreamT) -> None:
        # One batch in flight: batch N+1 is normalized while the broker acknowledges batch N, and
        # produced only once N is (so a failure never leaves a later batch's messages behind it).
        flushing: asyncio.Future[bool] | None = None
        async for events in batches(app, stream, cfg.batch_size, cfg.batch_within_s):
            started = time.perf_counter()
            try:
                batch = [(e.message.key, e.message.value, e.message.topic, e.message.partition,
                          e.message.offset) for e in events]
                result = processor.process(batch)
            except BaseException as exc:  # noqa: BLE001 - never let Faust ack an unprocessed event
                fail(exc, len(events))
                return
            if flushing is not None and not await flushing:
                return
            try:
                await out.produce(result.messages)
            except BaseException as exc:  # noqa: BLE001
                fail(exc, len(events))
                return
            flushing = asyncio.ensure_future(finish(stream, events, started))

    if cfg.trim_interval_s:
        @app.timer(cfg.trim_interval_s)
        async def trim() -> None:
            trim_heap()  # glibc keeps what a burst of batches freed, unless asked

    if discover:
        @app.timer(cfg.discover_interval_s)
        async def discover_topics() -> None:
            try:
                await _discover()
            except Exception as exc:  # noqa: BLE001 - a failed check is retried at the next tick
                log.warning("raw topic discovery failed: %r", exc)

        async def _discover() -> None:
            found = await asyncio.get_running_loop().run_in_executor(
                None, list_raw_topics, bootstrap, tuple(mappings.hospitals))
            new = [t for t in found if t not in subscribed]
            if not new:
                return
            # Faust's own resubscription (a changed topic list + conductor flag) crashed its fetcher
            # with "Partition is not assigned" in tests, so the worker stops cleanly instead (acked
            # offsets are committed, the rest is delivered again) and the CLI starts it afresh.
            state.topics = sorted(set(subscribed) | set(new))
            state.restart = True
            log.info("%d new raw topic(s), restarting to subscribe: %s", len(new), ", ".join(new[:10]))
            # Acked offsets are committed first; an unacked batch is simply delivered again.
            await app.consumer.commit()
            if state.on_restart is not None:
                state.on_restart()
            state.stop()

    return app, state


def run_worker(app: faust.App, state: WorkerState, loglevel: str = "info") -> int:
    """Run the app until it stops; exit code 0, or 1 after a fatal batch failure."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    relax_gc()  # set-up done: see hip.proc
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if state.fatal is None and exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    return 1 if state.fatal is not None else 0


def prepare_lookups(bootstrap: str, topics: list[str], mappings: MappingSet, timeout_s: float) -> dict[str, Any]:
    """The lookups state rebuilt from every dictionary topic among ``topics``."""
    lookups: dict[str, Any] = {}
    dicts = dictionary_topics(topics, mappings)
    read = rebuild_lookups(bootstrap, dicts, mappings, lookups, timeout_s)
    log.info("lookups rebuilt from %d dictionary topic(s): %d messages, %d entries", len(dicts), read, len(lookups))
    return lookups

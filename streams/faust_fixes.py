"""Two at-least-once holes and a crash in faust-streaming 0.15 closed, and seven costs cut, for both Faust apps.

``install()`` must run before the app makes its producer and consumer (both workers call it just
before ``faust.App(...)``).

1. A producer buffer whose flush means "everything handed to the buffer reached the producer".
   Faust writes table changes to their changelog through a buffer (``send_soon``) that a background
   task drains, and commits offsets after ``producer.flush()``, which first flushes that buffer. The
   stock ``ProducerBuffer.flush`` can return too early: it waits at most 0.1 s for each message and
   returns on that timeout, pending messages or not; and it only looks at the queue, not at the
   message the background task has already taken and is still handing to the producer. Either way
   an offset can be committed before a changelog write it depends on is on its way, and a crash
   then loses the write for good. ``DurableBuffer`` counts the message in flight and waits until
   nothing is queued or in flight; the producer's own flush, which Faust calls next, then waits for
   the broker.

2. No commit past a message that was never acknowledged. ``Consumer._new_offset`` turns the acked
   offsets of a partition into the offset to commit, and checks that they start where the last
   commit ended with ``min(acked) - committed > 1``; but ``committed`` is already the next offset to
   read, so a single missing message at the head passes. After each assignment messages can be
   missing at the head: the stream drops, without delivering or acking them, the messages fetched
   under the previous generation or while the flow was suspended (``StreamIterator._prepare_event``),
   and the fetcher has moved past them. Seen in the statistics' SIGKILL test: the first record of a
   partition after the restart never reached the agent, the next ones did, and the commit went past
   it. ``_new_offset`` here commits nothing while the head is missing; if it is still missing a few
   seconds later the partition is sought back to the committed offset, so the message is delivered
   again (with the ones after it: at-least-once, which every consumer here tolerates). Offsets that
   retention removed from the log meanwhile are recorded as a gap instead, so the commit moves on.

   A partition never committed needs a head too. Faust's ``perform_seek`` (after each rebalance)
   seeks every partition to its committed offset, so what the stream dropped is read again; one
   with no committed offset yet was left where the fetcher was, past the dropped messages, and with
   no committed offset there was no head to check: the first commit went past them for good. Seen
   in the statistics' exactness test: a worker restarted while a killed one was still a member got
   half the partitions, then all of them a minute later; partitions of the internal topic that had
   never been committed lost the messages sent to them meanwhile, and a total missed an operation.
   ``_perform_seek`` seeks such a partition to the log's first offset (what
   ``auto_offset_reset="earliest"``, both apps' setting, means) and records that offset as the
   committed one, so the head check above covers it as well; at the next seek such a partition is
   still treated as never committed, unless a commit has come since.

   And a tail. A message dropped that way with nothing acked after it (the last one of a partition
   nobody writes to any more) leaves no head to see: the commit simply stays below it, and the
   fetcher, past it, never reads it. Seen in the same test, once: a change sent to a partition of
   ``stats.deltas`` while another member held it was never applied after the worker got the
   partition. After each commit ``_check_tails`` looks for a partition committed below its end
   whose messages were all handed to the streams, with none of them in a stream or acked since;
   if that stays so for a few seconds, it is sought back to the committed offset.

And four costs, not holes:

3. One wait per message instead of four tasks. The fetch loop hands every message to the conductor
   with ``wait_first(callback(message), suspend_flow.wait())``, so that ``stop_flow`` (called when
   the consumer stops, the only place the flow event is set) interrupts a delivery blocked on a full
   stream buffer. ``wait_first`` makes that possible with a task for the delivery, one for the flow
   event and two for the consumer's stopped and crashed events, then cancels three of them: about a
   third of the normalizer worker's event loop when it runs flat out (profiled; the worker went from
   3,800 to 5,800 events/s). ``_wait_first`` awaits the delivery directly in the fetch loop's own
   task, and ``_stop_flow`` interrupts it the way ``asyncio.timeout`` interrupts a block: it cancels
   that task and takes the cancellation back once it has landed. Stopping the fetcher cancels the
   same task, so that path is unchanged. Any other call (a timeout, other waits, a flow already
   stopped) takes the stock path.

4. No per-message bookkeeping nobody reads. Faust's ``Monitor`` sensor counts every message and
   event (by topic, stream and task), times each one and keeps the times in deques, for Faust's web
   statistics page, which neither worker serves (their metrics are Prometheus', ``hip.metrics``).
   ``QuietMonitor`` keeps the monitor's other duties (commits, rebalances, table sizes) and drops
   the hooks called per message, per event and per send. The apps take it as their ``Monitor``
   setting (``faust.App(..., Monitor=QuietMonitor)``).

5. Raw bytes stay raw without a trip through the serializer registry. Every topic both workers read
   carries bytes they decode themselves, and Faust's ``raw`` codec returns them unchanged; but the
   stock decoder still passes each key and value through the registry and its codec chain (about
   6% of the normalizer worker, profiled). ``RawSchema`` makes the event from the message's own
   bytes. The workers' topics take it as their ``schema``.

6. No fetch held back behind a quiet partition. aiokafka keeps one fetch request in flight per
   broker, and leaves out of it the partitions whose fetched messages the worker has not taken yet;
   once they have waited a moment, a request goes out for the other partitions alone. When those
   have nothing new, the broker holds the request up to its ``fetch_max_wait_ms``, which Faust fixes
   at 1.5 s, and the busy partitions, drained meanwhile, cannot be fetched again until it returns.
   The normalizer reading raw topics of unequal sizes stalled for 0.4-1.3 s every second or two:
   9,077 events/s, 5.4 s of an 11 s run waiting for events (``python -m streams.bench_normalizer
   --events 100000``, timed per batch). ``FETCH_MAX_WAIT_MS`` (0.1 s) bounds the stall: 12,832 to
   13,446 events/s in the four runs after (median 11,287 over fourteen; the slower ones timed
   waited for the broker's acknowledgements, see docs/benchmarks.md). An idle worker asks ten
   times a second instead of about once, and each request lists every partition it reads: idle,
   the statistics worker (402 partitions) went from 1.3% to 4.3% of a core and the normalizer from
   0.9% to 1.7%. Under load the wait changes nothing: the broker answers as soon as any partition
   listed has data.

And the crash:

7. Seeks made on the consumer's own thread. Faust runs aiokafka on a thread of its own, and most
   of its calls into it go through that thread (``call_thread``), but ``Consumer.seek`` called
   aiokafka's ``seek`` from the worker's thread. That drops the partition's fetched messages from
   a dict the consumer's thread may be iterating over: the statistics worker crashed with
   ``KeyError`` in aiokafka's ``fetched_records`` the moment fix 2 sought a never-committed
   ``stats.deltas`` partition after a rebalance (the SIGTERM + SIGKILL exactness test, once in a
   CI run). ``_seek`` now hands the seek to the consumer's thread and waits for it, as Faust's own
   ``seek_wait`` and ``seek_to_committed`` do.

And three more costs:

8. The assignment's set built once per assignment. Faust's ``AIOKafkaConsumerThread.assignment``
   converts aiokafka's assignment into a new set of Faust ``TP`` tuples on every call, and its
   ``_commit`` calls it once for every partition it commits: quadratic in the partitions. For the
   statistics worker (402 partitions) that was 3% of its time while it kept up with the
   normalizer (py-spy, 30 s of ``hip simulate run`` into the demo's pipeline). ``_assignment``
   keeps the converted set while aiokafka's own (a frozenset that changes with each assignment) is
   the same object, and returns a copy of it, as the stock method returns a set of its own.

9. Quiet partitions asked less often. Each fetch request lists every partition the worker reads
   and is not holding messages of, and aiokafka encodes the request and decodes the broker's answer
   for each of them in Python, empty or not; the broker, too, reads and answers each. The statistics
   worker reads every source dataset's topic, 66 × 6 partitions, most of them empty; in a catch-up,
   fetching took 30% of its busy CPU (py-spy, docs/benchmarks.md). ``_get_actions_per_node``
   leaves a quiet partition (read to its end at every answer for ``QUIET_AFTER_S``) out of a request
   unless it was last asked ``QUIET_EVERY_S`` ago or more; any other partition is asked as before.
   (An answer without records is not enough: a full response leaves out partitions that have
   records to read.) The cost: the first records of a partition that wakes up wait up to
   ``QUIET_EVERY_S`` longer. So only the statistics worker turns it on (``install(quiet_every_s=
   ...)``): in the normalizer it put the end-to-end p99 at half load over its 2 s target
   (docs/benchmarks.md).

10. A table's RocksDB options kept when the database is opened again. Faust opens each table
   partition's database with ``rocksdict.Rdict(path, options=...)``. When the database exists,
   rocksdict opens its column families with the options stored in it, and the block-based table
   options come back without their Bloom filter: every file written after the first restart had
   none (``filter_size: 0`` in the statistics worker's RocksDB log), so a read of a key not in the
   ledger looked into each file's blocks instead of its filter. ``_open_rocksdb`` gives the default
   column family the table's options explicitly; otherwise it opens the database as Faust does.
   Only the statistics worker has tables.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiokafka.consumer.fetcher as aiokafka_fetcher
import faust.transport.consumer as faust_consumer
import faust.transport.drivers.aiokafka as faust_aiokafka
import faust.stores.rocksdb as faust_rocksdb
import faust.transport.producer as faust_producer
from faust import Schema
from faust.sensors import Monitor
from mode.services import WaitResults

log = logging.getLogger("hip.faust")
_Base: Any = faust_producer.ProducerBuffer


class DurableBuffer(_Base):  # type: ignore[misc, valid-type]
    """``ProducerBuffer`` with a flush that does not return before the buffer is drained."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0

    async def _send_pending(self, fut: Any) -> None:
        # Counted before the first await: between the queue's get and here nothing else runs,
        # so ``size + in_flight`` never misses a message.
        self.in_flight += 1
        try:
            await super()._send_pending(fut)
        finally:
            self.in_flight -= 1

    @property
    def size(self) -> int:
        # The stock property reads ``app.conf.producer_threaded`` (settings access with tracking)
        # for every message the conductor delivers (``wait_until_ebb``); the setting is fixed.
        threaded = self.__dict__.get("_hip_threaded")
        if threaded is None:
            threaded = self.__dict__["_hip_threaded"] = bool(self.app.conf.producer_threaded)
        if threaded:
            return len(self.queue._queue) if self.queue else 0
        return len(self.pending._queue)

    async def flush(self) -> None:
        waited = 0.0
        while self.size or self.in_flight:
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                waited += 1.0
                if waited % 10 == 0:
                    log.warning("producer buffer: %d queued, %d in flight after %.0f s",
                                self.size, self.in_flight, waited)


HEAD_GRACE_S = 5.0
_stock_new_offset = faust_consumer.Consumer._new_offset


def missing_head(committed: int | None, acked: list[int], gaps: Any) -> int:
    """How many offsets between the last commit and the first acked one are neither acked nor known
    gaps (offsets the log does not have, which Faust records as it fetches)."""
    if committed is None or not acked:
        return 0
    head = min(acked)
    if head <= committed:
        return 0
    covered: set[int] = set()
    for iv in gaps.overlap(committed, head) if gaps else ():
        covered.update(range(max(iv.begin, committed), min(iv.end, head)))
    return head - committed - len(covered)


def _new_offset(self: Any, tp: Any) -> int | None:
    committed = self._committed_offset[tp]
    acked = self._acked[tp]
    since = self.__dict__.setdefault("_hip_head_missing_since", {})
    if not missing_head(committed, acked, self._gap[tp]):
        since.pop(tp, None)
        return _stock_new_offset(self, tp)  # type: ignore[no-any-return]
    first = since.setdefault(tp, time.monotonic())
    if time.monotonic() - first >= HEAD_GRACE_S:
        since.pop(tp, None)
        asyncio.ensure_future(_recover_head(self, tp, committed, min(acked)))
    return None


async def _recover_head(consumer: Any, tp: Any, committed: int, head: int) -> None:
    """Read the missing head again, unless retention has removed it from the log meanwhile."""
    earliest = (await consumer.earliest_offsets(tp)).get(tp)
    if earliest is not None and earliest >= head:
        consumer._gap[tp].addi(committed, head)  # gone from the log: nothing to wait for
        log.warning("%s[%d]: offsets %d-%d were removed by retention before being read",
                    tp.topic, tp.partition, committed, head - 1)
        return
    log.warning("%s[%d]: offset %d was never delivered (first acked: %d); reading again from %d",
                tp.topic, tp.partition, committed, head, committed)
    await consumer.seek(tp, committed)


_stock_commit = faust_consumer.Consumer.commit


async def _commit(self: Any, *args: Any, **kwargs: Any) -> bool:
    done = await _stock_commit(self, *args, **kwargs)
    try:
        _check_tails(self)
    except Exception as exc:  # noqa: BLE001 - a check that failed is made again at the next commit
        log.warning("checking the partitions' tails failed: %r", exc)
    return bool(done)


def _stream_partitions(consumer: Any) -> list[Any]:
    """The assigned partitions the streams read and ack (not the tables' changelogs, not Faust's own)."""
    return [tp for tp in consumer.assignment()
            if consumer.app.topics.acks_enabled_for(tp.topic) and not consumer._is_changelog_tp(tp)]


def _check_tails(consumer: Any) -> None:
    """Seek back a partition whose messages past the commit were handed over but none processed."""
    since: dict[Any, tuple[tuple[int, int], float]] = consumer.__dict__.setdefault("_hip_tail_since", {})
    busy: set[Any] | None = None  # partitions with a message in a stream, gathered only when needed
    now = time.monotonic()
    for tp in _stream_partitions(consumer):
        committed, read = consumer._committed_offset.get(tp), consumer._read_offset.get(tp)
        end = consumer.highwater(tp)
        stuck = (committed is not None and read is not None and end is not None
                 and read + 1 >= end > committed and not consumer._acked.get(tp))
        if stuck and busy is None:
            busy = {m.tp for m in list(consumer._unacked_messages)}
        if not stuck or tp in busy:
            since.pop(tp, None)
            continue
        first = since.get(tp)
        if first is None or first[0] != (committed, read):
            since[tp] = ((committed, read), now)
        elif now - first[1] >= HEAD_GRACE_S:
            since.pop(tp, None)
            log.warning("%s[%d]: offsets %d-%d were fetched but never processed; reading again from %d",
                        tp.topic, tp.partition, committed, end - 1, committed)
            asyncio.ensure_future(consumer.seek(tp, committed))


_stock_perform_seek = faust_consumer.Consumer.perform_seek


async def _perform_seek(self: Any) -> None:
    # The starts recorded by an earlier call are not commits: unless a commit has replaced one since,
    # the partition is still never committed, and the stock seek leaves it where it is.
    started: dict[Any, int] = self.__dict__.setdefault("_hip_started", {})
    for tp, start in started.items():
        if self._committed_offset.get(tp) == start:
            self._committed_offset[tp] = None
    started.clear()
    await _stock_perform_seek(self)
    if self.app.conf.consumer_auto_offset_reset != "earliest":
        return
    never = [tp for tp in _stream_partitions(self) if self._committed_offset[tp] is None]
    if not never:
        return
    starts = await self.earliest_offsets(*never)
    for tp in never:
        start = starts.get(tp)
        if start is not None:
            await self.seek(tp, start)
            self._committed_offset[tp] = started[tp] = start


_stock_wait_first = faust_consumer.Consumer.wait_first
_stock_stop_flow = faust_consumer.Consumer.stop_flow


async def _wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    flow_wait = coros[1] if len(coros) == 2 else None
    if (timeout is not None or not asyncio.iscoroutine(flow_wait) or flow_wait.cr_frame is None
            or flow_wait.cr_frame.f_locals.get("self") is not self.suspend_flow
            or self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set()):
        return await _stock_wait_first(self, *coros, timeout=timeout)
    delivery = coros[0]
    flow_wait.close()  # never started: the flow is watched by stop_flow below instead
    task = asyncio.current_task()
    self._hip_delivering = task
    try:
        await delivery
        return WaitResults([delivery], [None], False)
    except asyncio.CancelledError:
        if not self.__dict__.pop("_hip_interrupted", False):
            raise
        task.uncancel()  # type: ignore[union-attr]
        return WaitResults([flow_wait], [None], False)
    finally:
        self._hip_delivering = None


def _stop_flow(self: Any) -> None:
    _stock_stop_flow(self)
    task = self.__dict__.get("_hip_delivering")
    if task is None:
        return
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:  # not on an event loop's thread
        here = None
    if here is task.get_loop():
        _interrupt(self, task)
    else:
        task.get_loop().call_soon_threadsafe(_interrupt, self, task)


def _interrupt(consumer: Any, task: Any) -> None:
    """Cancel the fetch task's blocked delivery (not the task that asked, not a finished one)."""
    if task is consumer.__dict__.get("_hip_delivering") and task is not asyncio.current_task() and not task.done():
        consumer._hip_interrupted = True
        task.cancel()


FETCH_MAX_WAIT_MS = 100
_stock_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's consumer, with fetch requests the broker holds at most ``FETCH_MAX_WAIT_MS`` (fix 6)."""
    consumer = _stock_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when ``start()`` makes the fetcher
    return consumer


def _assignment(self: Any) -> set[Any]:
    """``AIOKafkaConsumerThread.assignment``, converted once per aiokafka assignment (fix 8)."""
    tps = self._ensure_consumer().assignment()
    cached = self.__dict__.get("_hip_assignment")
    if cached is None or cached[0] is not tps:  # held here, so no later set can reuse its id
        cached = self.__dict__["_hip_assignment"] = (tps, frozenset(faust_consumer.ensure_TPset(tps)))
    return set(cached[1])


async def _seek(self: Any, partition: Any, offset: int) -> None:
    """``ThreadDelegateConsumer._seek`` on the consumer's thread (fix 7)."""
    await self._thread.call_thread(self._thread.seek, partition, offset)


QUIET_AFTER_S = 2.0  # a partition found read to its end at every answer for this long is quiet...
QUIET_EVERY_S = 0.0  # ...and asked this often (0: every time, aiokafka's way); set by install()
_clock = time.monotonic
_stock_actions = aiokafka_fetcher.Fetcher._get_actions_per_node
_stock_proc_fetch = aiokafka_fetcher.Fetcher._proc_fetch_request


class _Quiet:
    """Per fetcher: since when each partition has been read to its end, and when it was last asked."""

    def __init__(self) -> None:
        self.empty_since: dict[tuple[str, int], float] = {}
        self.asked: dict[tuple[str, int], float] = {}


def _quiet(fetcher: Any) -> _Quiet:
    state = fetcher.__dict__.get("_hip_quiet")
    if state is None:
        state = fetcher.__dict__["_hip_quiet"] = _Quiet()
    return state


def _get_actions_per_node(self: Any, assignment: Any) -> Any:
    """aiokafka's fetch actions, with quiet partitions left out of most requests (fix 9)."""
    fetch_requests, resets, timeout, invalid_metadata, resume_futures = _stock_actions(self, assignment)
    if not fetch_requests or QUIET_EVERY_S <= 0:
        return fetch_requests, resets, timeout, invalid_metadata, resume_futures
    state, now = _quiet(self), _clock()
    empty_since, asked = state.empty_since, state.asked
    quiet_since, due_since = now - QUIET_AFTER_S, now - QUIET_EVERY_S
    next_due = float("inf")  # when the first partition left out is due
    kept_requests = []
    for node_id, request in fetch_requests:
        topics, left_out = [], False
        for topic, partitions in request.topics:
            kept = []
            for part in partitions:
                tp = (topic, part[0])
                if empty_since.get(tp, now) > quiet_since:
                    kept.append(part)
                    continue
                last = asked.get(tp, -1e18)
                if last <= due_since:
                    asked[tp] = now
                    kept.append(part)
                else:
                    left_out = True
                    next_due = min(next_due, last + QUIET_EVERY_S)
            if kept:
                topics.append((topic, kept))
        if not left_out:
            kept_requests.append((node_id, request))  # every partition asked: aiokafka's request as it is
        elif topics:
            kept_requests.append((node_id, aiokafka_fetcher.FetchRequest(
                request._max_wait_ms, request._min_bytes, request._max_bytes, request._isolation_level,
                topics, rack_id=request._rack_id)))
    return kept_requests, resets, min(timeout, next_due - now), invalid_metadata, resume_futures


async def _proc_fetch_request(self: Any, assignment: Any, node_id: int, request: Any) -> bool:
    """aiokafka's handling of a fetch response, noting which partitions it found read to their end (fix 9)."""
    has_new_data: bool = await _stock_proc_fetch(self, assignment, node_id, request)
    if QUIET_EVERY_S <= 0 or not assignment.active:  # fix 9 off (the normalizer): nothing to note
        return has_new_data
    now, records, empty_since = _clock(), self._records, _quiet(self).empty_since
    for topic, partitions in request.topics:
        for part in partitions:
            tp = (topic, part[0])
            if tp in records:  # the response's records (or its error) wait there to be taken
                empty_since.pop(tp, None)
                continue
            # No records: the partition is read to its end, or the response was full before it.
            state = assignment.state_value(tp)
            if state.highwater is None or not state.has_valid_position or state.position < state.highwater:
                empty_since.pop(tp, None)
            elif tp not in empty_since:
                empty_since[tp] = now
    return has_new_data


def install(*, quiet_every_s: float = 0.0) -> None:
    """Make Faust producers and consumers created from now on use the fixes above.

    ``quiet_every_s``: how often a quiet partition is asked for records (fix 9); 0 turns fix 9 off.
    """
    global QUIET_EVERY_S
    QUIET_EVERY_S = quiet_every_s
    faust_consumer.ThreadDelegateConsumer._seek = _seek  # type: ignore[method-assign]
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    faust_aiokafka.AIOKafkaConsumerThread.assignment = _assignment  # type: ignore[method-assign]
    faust_producer.ProducerBuffer = DurableBuffer
    faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    faust_consumer.Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    faust_consumer.Consumer.commit = _commit  # type: ignore[method-assign]
    faust_consumer.Consumer.wait_first = _wait_first  # type: ignore[method-assign]
    faust_consumer.Consumer.stop_flow = _stop_flow  # type: ignore[method-assign]
    aiokafka_fetcher.Fetcher._get_actions_per_node = _get_actions_per_node  # type: ignore[method-assign]
    aiokafka_fetcher.Fetcher._proc_fetch_request = _proc_fetch_request  # type: ignore[method-assign]
    faust_rocksdb.RocksDBOptions.open = _open_rocksdb  # type: ignore[method-assign]


_stock_open_rocksdb = faust_rocksdb.RocksDBOptions.open


def _open_rocksdb(self: Any, path: Any, *, read_only: bool = False) -> Any:
    """``RocksDBOptions.open`` with the default column family's options given (fix 10 above)."""
    if not self.use_rocksdict:
        return _stock_open_rocksdb(self, path, read_only=read_only)
    rocksdict = faust_rocksdb.rocksdict
    access = rocksdict.AccessType.read_write() if self.ttl is None else rocksdict.AccessType.with_ttl(self.ttl)
    options = self.as_options()
    db = rocksdict.Rdict(str(path), options=options, column_families={"default": options}, access_type=access)
    db.set_read_options(rocksdict.ReadOptions())
    return db


class QuietMonitor(Monitor):  # type: ignore[misc]
    """Faust's monitor without the per-message hooks (fix 4 above)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass


class RawSchema(Schema):  # type: ignore[misc]
    """Keys and values as the message carries them (fix 5 above): what the ``raw`` codec returns."""

    def compile(self, app: Any, **kwargs: Any) -> Any:
        # ``app.create_event`` looks the Event class up in the app's settings for every message,
        # through their attribute-access tracking; it is looked up once here instead.
        event = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        return decode

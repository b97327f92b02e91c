"""The producer buffer's flush waits for queued and in-flight messages (see streams/faust_fixes.py)."""
import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from mode import Service

from streams.faust_fixes import DurableBuffer, QuietMonitor, _stop_flow, _wait_first


def _message(gate: asyncio.Event, sent: list[str], name: str) -> Any:
    async def publish_message(fut: Any, wait: bool = False) -> None:
        await gate.wait()  # the producer's batch is full: handing over blocks
        sent.append(name)

    return SimpleNamespace(message=SimpleNamespace(channel=SimpleNamespace(publish_message=publish_message)))


def test_flush_waits_for_the_message_already_taken_from_the_queue() -> None:
    async def scenario() -> list[str]:
        buf = DurableBuffer()
        buf.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
        await buf.start()
        gate, sent = asyncio.Event(), []
        buf.put(_message(gate, sent, "changelog-1"))
        buf.put(_message(gate, sent, "changelog-2"))
        for _ in range(500):  # until the sender task took the first message and is blocked on it
            if buf.in_flight:
                break
            await asyncio.sleep(0.01)
        assert buf.size == 1 and buf.in_flight == 1
        flushing = asyncio.ensure_future(buf.flush())
        await asyncio.sleep(1.5)  # longer than the stock flush waits before giving up
        assert not flushing.done()
        gate.set()
        await asyncio.wait_for(flushing, 5)
        await buf.stop()
        return sent

    assert asyncio.run(scenario()) == ["changelog-1", "changelog-2"]


def _consumer(committed: int | None, acked: list[int], gaps: Any = (), earliest: int = 0) -> Any:
    from collections import defaultdict

    from intervaltree import IntervalTree

    from faust.types import TP

    tp = TP("std.medical_fee", 0)
    tree = IntervalTree()
    for a, b in gaps:
        tree.addi(a, b)
    seeks: list[tuple[Any, int]] = []

    async def seek(partition: Any, offset: int) -> None:
        seeks.append((partition, offset))

    async def earliest_offsets(*partitions: Any) -> dict[Any, int]:
        return {p: earliest for p in partitions}

    c = SimpleNamespace(earliest_offsets=earliest_offsets, _committed_offset=defaultdict(lambda: None, {tp: committed}),
                        _acked=defaultdict(list, {tp: list(acked)}), _acked_index=defaultdict(set, {tp: set(acked)}),
                        _gap=defaultdict(IntervalTree, {tp: tree}), seek=seek, seeks=seeks, tp=tp)
    return c


def test_a_missing_head_is_counted_unless_the_log_has_a_gap_there() -> None:
    from intervaltree import IntervalTree

    from streams.faust_fixes import missing_head

    assert missing_head(3, [4, 5], IntervalTree()) == 1
    assert missing_head(3, [3, 4], IntervalTree()) == 0
    assert missing_head(None, [7], IntervalTree()) == 0
    gaps = IntervalTree()
    gaps.addi(3, 4)
    assert missing_head(3, [4, 5], gaps) == 0


def test_no_commit_past_a_message_never_acked_and_it_is_read_again(monkeypatch: Any) -> None:
    from streams import faust_fixes

    c = _consumer(committed=3, acked=[4, 5, 6])
    now = [100.0]
    monkeypatch.setattr(faust_fixes.time, "monotonic", lambda: now[0])

    async def scenario() -> list[Any]:
        assert faust_fixes._new_offset(c, c.tp) is None  # the stock code would commit 7
        now[0] += faust_fixes.HEAD_GRACE_S
        assert faust_fixes._new_offset(c, c.tp) is None
        for _ in range(5):
            await asyncio.sleep(0)
        return list(c.seeks)

    assert asyncio.run(scenario()) == [(c.tp, 3)]
    c._acked[c.tp].append(3)  # offset 3 delivered again and acked
    assert faust_fixes._new_offset(c, c.tp) == 7


def test_a_head_removed_by_retention_is_not_waited_for(monkeypatch: Any) -> None:
    from streams import faust_fixes

    c = _consumer(committed=3, acked=[500, 501], earliest=500)
    now = [100.0]
    monkeypatch.setattr(faust_fixes.time, "monotonic", lambda: now[0])

    async def scenario() -> None:
        assert faust_fixes._new_offset(c, c.tp) is None
        now[0] += faust_fixes.HEAD_GRACE_S
        assert faust_fixes._new_offset(c, c.tp) is None
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert c.seeks == [] and faust_fixes._new_offset(c, c.tp) == 502


class _Fetching(Service):
    """The parts of a Faust consumer that ``wait_first`` and ``stop_flow`` use."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()
        self.can_resume_flow = asyncio.Event()
        self.flow_active = True


async def _blocked_delivery(queue: asyncio.Queue, cancelled: list[bool]) -> None:
    try:
        await queue.put("second")  # the stream buffer is full
    except asyncio.CancelledError:
        cancelled.append(True)
        raise


def _blocked_fetch(consumer: _Fetching) -> tuple[Any, asyncio.Queue, list[bool]]:
    """The fetch loop's wait for a delivery into a full stream buffer, the buffer, and whether the
    delivery was cancelled."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    cancelled: list[bool] = []
    wait = _wait_first(consumer, _blocked_delivery(queue, cancelled), consumer.suspend_flow.wait())
    return wait, queue, cancelled


def test_a_delivery_that_does_not_block_runs_in_the_fetch_task_without_new_tasks() -> None:
    async def main() -> None:
        consumer = _Fetching()
        delivered: list[str] = []

        async def deliver() -> None:
            delivered.append("m")

        before = len(asyncio.all_tasks())
        result = await _wait_first(consumer, deliver(), consumer.suspend_flow.wait())
        assert delivered == ["m"] and not result.stopped
        assert len(asyncio.all_tasks()) == before

    asyncio.run(main())


def test_stop_flow_interrupts_a_blocked_delivery_and_the_fetch_loop_goes_on() -> None:
    async def main() -> None:
        consumer = _Fetching()
        wait, queue, cancelled = _blocked_fetch(consumer)

        async def fetch_loop() -> str:
            await wait
            await asyncio.sleep(0.01)  # the interruption was taken back: this await is not cancelled
            return "went on"

        fetcher = asyncio.ensure_future(fetch_loop())
        await asyncio.sleep(0.01)
        _stop_flow(consumer)
        assert consumer.suspend_flow.is_set() and not consumer.flow_active
        assert await fetcher == "went on"
        assert cancelled == [True] and queue.qsize() == 1
        assert fetcher.cancelling() == 0

    asyncio.run(main())


def test_cancelling_the_fetcher_still_cancels_it() -> None:
    async def main() -> None:
        consumer = _Fetching()
        wait, _, cancelled = _blocked_fetch(consumer)
        fetcher = asyncio.ensure_future(wait)
        await asyncio.sleep(0.01)
        fetcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetcher
        assert cancelled == [True]

    asyncio.run(main())


def test_a_stopped_flow_or_a_timeout_takes_the_stock_wait() -> None:
    async def main() -> None:
        consumer = _Fetching()
        consumer.suspend_flow.set()
        delivered: list[str] = []

        async def deliver() -> None:
            delivered.append("m")

        result = await _wait_first(consumer, deliver(), consumer.suspend_flow.wait())
        assert result.done  # the stock wait_first: the flow event won, or both finished
        other = asyncio.Event()
        other.set()
        result = await _wait_first(consumer, other.wait(), timeout=1.0)
        assert result.done and not result.stopped

    asyncio.run(main())


def test_stop_flow_from_another_thread_interrupts_on_the_fetch_loop() -> None:
    import threading

    async def main() -> None:
        consumer = _Fetching()
        wait, _, cancelled = _blocked_fetch(consumer)

        async def fetch_loop() -> str:
            await wait
            return "went on"

        fetcher = asyncio.ensure_future(fetch_loop())
        await asyncio.sleep(0.01)
        caller = threading.Thread(target=_stop_flow, args=(consumer,))
        caller.start()
        caller.join()
        assert await asyncio.wait_for(fetcher, 2) == "went on"
        assert cancelled == [True]

    asyncio.run(main())


def test_the_quiet_monitor_keeps_no_per_message_state_and_is_what_the_apps_use() -> None:
    import faust

    from streams import normalizer

    monitor = QuietMonitor()
    tp, message, stream = SimpleNamespace(topic="t", partition=0), SimpleNamespace(time_in=None), object()
    monitor.on_message_in(tp, 1, message)
    state = monitor.on_stream_event_in(tp, 1, stream, object())
    monitor.on_stream_event_out(tp, 1, stream, object(), state)
    monitor.on_message_out(tp, 1, message)
    monitor.on_send_completed(None, monitor.on_send_initiated(None, "t", None, 1, 1), None)
    assert monitor.messages_received_total == 0 and monitor.events_total == 0 and not monitor.events_runtime
    assert message.time_in is None and not monitor.stream_lookup
    assert monitor.messages_sent == 0 and not monitor.send_latency

    app, _ = normalizer.build_app(normalizer.NormalizerConfig(), "localhost:1", None, None, ["raw.x"],  # type: ignore[arg-type]
                                  discover=False)
    assert isinstance(app, faust.App) and isinstance(app.monitor, QuietMonitor)


def test_the_raw_schema_makes_events_from_the_message_bytes() -> None:
    from streams.faust_fixes import RawSchema

    app = SimpleNamespace(conf=SimpleNamespace(Event=lambda *args: args))  # the app's Event class
    decode = RawSchema(key_serializer="raw", value_serializer="raw").compile(app)
    for key, value in [(b"k", b"\x00\x01v"), (None, b"v"), (b"k", None)]:
        message = SimpleNamespace(key=key, value=value, headers=[("h", b"1")])
        assert asyncio.run(decode(message)) == (app, key, value, [("h", b"1")], message)


def test_after_a_rebalance_a_partition_never_committed_is_read_from_its_start() -> None:
    """Faust seeks the committed partitions back; one never committed gets its first offset as the
    committed one, and is sought there, so the head check covers what the stream dropped."""
    from collections import defaultdict

    from faust.types import TP

    from streams import faust_fixes

    committed, fresh = TP("stats.deltas", 0), TP("stats.deltas", 1)
    changelog, leader = TP("app-stats-cells-changelog", 1), TP("app-__assignor-__leader", 0)
    seeks: list[tuple[Any, int]] = []

    async def stock(self: Any) -> None:
        self._committed_offset[committed] = 40  # what seek_to_committed found

    async def earliest_offsets(*partitions: Any) -> dict[Any, int]:
        return {p: 7 for p in partitions}

    async def seek(partition: Any, offset: int) -> None:
        seeks.append((partition, offset))

    c = SimpleNamespace(
        app=SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
                            topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == "stats.deltas")),
        assignment=lambda: {committed, fresh, changelog, leader}, _committed_offset=defaultdict(lambda: None),
        _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"), earliest_offsets=earliest_offsets, seek=seek)
    original = faust_fixes._stock_perform_seek
    faust_fixes._stock_perform_seek = stock
    try:
        asyncio.run(faust_fixes._perform_seek(c))
    finally:
        faust_fixes._stock_perform_seek = original
    assert seeks == [(fresh, 7)]
    assert c._committed_offset[fresh] == 7 and c._committed_offset[committed] == 40
    assert c._committed_offset[changelog] is None and c._committed_offset[leader] is None

    async def seek_again() -> None:
        faust_fixes._stock_perform_seek = stock
        try:
            await faust_fixes._perform_seek(c)
        finally:
            faust_fixes._stock_perform_seek = original

    # A seek again (the flow stopped, or the next rebalance) with no commit since: sought to the start again.
    asyncio.run(seek_again())
    assert seeks == [(fresh, 7), (fresh, 7)] and c._committed_offset[fresh] == 7
    # After a real commit the partition is the stock seek's, whatever its offset.
    c._committed_offset[fresh] = 12
    asyncio.run(seek_again())
    assert seeks == [(fresh, 7), (fresh, 7)] and c._committed_offset[fresh] == 12
    # The stream dropped offsets 7 and 8; 9 and 10 were acked: nothing is committed past the head.
    c2 = _consumer(committed=7, acked=[9, 10])
    assert faust_fixes._new_offset(c2, c2.tp) is None


def test_install_replaces_perform_seek() -> None:
    import faust.transport.consumer as faust_consumer

    from streams import faust_fixes

    faust_fixes.install()
    assert faust_consumer.Consumer.perform_seek is faust_fixes._perform_seek


def _tails_consumer(committed: int, read: int, end: int, *, busy: bool = False, acked: tuple[int, ...] = ()) -> Any:
    from collections import defaultdict

    from faust.types import TP

    tp, changelog = TP("stats.deltas", 1), TP("app-stats-cells-changelog", 1)
    seeks: list[tuple[Any, int]] = []

    async def seek(partition: Any, offset: int) -> None:
        seeks.append((partition, offset))

    return SimpleNamespace(
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == "stats.deltas")),
        assignment=lambda: {tp, changelog}, _is_changelog_tp=lambda t: t.topic.endswith("-changelog"),
        _committed_offset=defaultdict(lambda: None, {tp: committed, changelog: 0}),
        _read_offset=defaultdict(lambda: None, {tp: read, changelog: 50}), highwater=lambda t: end,
        _unacked_messages=[SimpleNamespace(tp=tp)] if busy else [], _acked=defaultdict(list, {tp: list(acked)}),
        seek=seek, seeks=seeks, tp=tp)


def test_a_tail_handed_over_but_never_processed_is_read_again(monkeypatch: Any) -> None:
    """Offset 7, the partition's last, reached the stream and was dropped: the commit stays at 7 and
    nothing after it is acked, so only its tail shows it."""
    from streams import faust_fixes

    now = [100.0]
    monkeypatch.setattr(faust_fixes.time, "monotonic", lambda: now[0])

    async def scenario(c: Any) -> list[Any]:
        faust_fixes._check_tails(c)
        now[0] += faust_fixes.HEAD_GRACE_S - 1
        faust_fixes._check_tails(c)
        assert c.seeks == []  # not yet: it may still be on its way through a stream
        now[0] += 1
        faust_fixes._check_tails(c)
        for _ in range(5):
            await asyncio.sleep(0)
        return list(c.seeks)

    c = _tails_consumer(committed=7, read=7, end=8)
    assert asyncio.run(scenario(c)) == [(c.tp, 7)]  # the changelog partition is never touched


def test_a_tail_in_a_stream_acked_or_still_being_fetched_is_left_alone(monkeypatch: Any) -> None:
    from streams import faust_fixes

    now = [100.0]
    monkeypatch.setattr(faust_fixes.time, "monotonic", lambda: now[0])
    for c in (_tails_consumer(7, 7, 8, busy=True), _tails_consumer(7, 7, 8, acked=(7,)),
              _tails_consumer(7, 5, 8), _tails_consumer(8, 7, 8)):
        faust_fixes._check_tails(c)
        now[0] += 2 * faust_fixes.HEAD_GRACE_S
        faust_fixes._check_tails(c)
        assert c.seeks == []


def test_a_partition_that_moves_is_not_sought_back(monkeypatch: Any) -> None:
    from streams import faust_fixes

    now = [100.0]
    monkeypatch.setattr(faust_fixes.time, "monotonic", lambda: now[0])
    c = _tails_consumer(committed=7, read=7, end=8)
    faust_fixes._check_tails(c)
    now[0] += faust_fixes.HEAD_GRACE_S
    c._read_offset[c.tp] = 8  # delivered again meanwhile (and a later message arrived)
    c.highwater = lambda t: 9
    faust_fixes._check_tails(c)
    assert c.seeks == []


def test_the_worker_consumer_asks_the_broker_to_hold_a_fetch_briefly() -> None:
    """Faust's fixed 1.5 s fetch wait stalled a busy worker (fix 6 of streams/faust_fixes.py)."""
    from streams import faust_fixes, normalizer

    app, _ = normalizer.build_app(normalizer.NormalizerConfig(), "localhost:1", None, None, ["raw.x"],  # type: ignore[arg-type]
                                  discover=False)

    async def create() -> Any:
        return app.consumer._thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(create())
    assert consumer._fetch_max_wait_ms == faust_fixes.FETCH_MAX_WAIT_MS <= 100


def test_a_seek_runs_on_the_consumer_thread() -> None:
    """aiokafka's seek changes state its own thread iterates over (fix 7 of streams/faust_fixes.py)."""
    import faust.transport.consumer as faust_consumer

    from streams import faust_fixes

    done: list[tuple[str, Any, int]] = []

    def seek(partition: Any, offset: int) -> None:
        done.append(("seek", partition, offset))

    async def call_thread(fun: Any, *args: Any) -> Any:
        done.append(("on the thread", None, 0))
        return fun(*args)

    consumer = SimpleNamespace(_thread=SimpleNamespace(seek=seek, call_thread=call_thread))
    asyncio.run(faust_fixes._seek(consumer, "tp", 7))
    assert done == [("on the thread", None, 0), ("seek", "tp", 7)]
    faust_fixes.install()
    assert faust_consumer.ThreadDelegateConsumer._seek is faust_fixes._seek


def test_the_assignment_is_converted_once_per_aiokafka_assignment() -> None:
    """Faust's commit asked for the whole assignment once per partition (fix 8 of streams/faust_fixes.py)."""
    import faust.transport.drivers.aiokafka as faust_aiokafka
    from aiokafka import TopicPartition
    from faust.types import TP

    from streams import faust_fixes

    first = frozenset({TopicPartition("std.a", 0), TopicPartition("std.a", 1)})
    kafka = SimpleNamespace(tps=first)
    thread = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(assignment=lambda: kafka.tps))
    got = faust_fixes._assignment(thread)
    assert got == {TP("std.a", 0), TP("std.a", 1)} and all(type(tp) is TP for tp in got)
    got.add(TP("std.b", 0))  # the caller's own set: the next call does not see it
    assert faust_fixes._assignment(thread) == {TP("std.a", 0), TP("std.a", 1)}
    assert thread._hip_assignment[0] is first  # type: ignore[attr-defined]
    kafka.tps = frozenset({TopicPartition("std.a", 1)})  # a new assignment
    assert faust_fixes._assignment(thread) == {TP("std.a", 1)}
    kafka.tps = set()  # none: aiokafka returns a new empty set each time
    assert faust_fixes._assignment(thread) == set()
    faust_fixes.install()
    assert faust_aiokafka.AIOKafkaConsumerThread.assignment is faust_fixes._assignment


def test_a_quiet_partition_is_asked_less_often_and_one_with_records_as_before(monkeypatch: Any) -> None:
    """Every fetch listed every partition, empty or not (fix 9 of streams/faust_fixes.py)."""
    import aiokafka.consumer.fetcher as aiokafka_fetcher

    from streams import faust_fixes

    now = [100.0]
    monkeypatch.setattr(faust_fixes, "_clock", lambda: now[0])
    monkeypatch.setattr(faust_fixes, "QUIET_EVERY_S", 0.5)
    positions = {("t", 0): 5, ("t", 1): 0, ("t", 2): 0}

    def stock_actions(self: Any, assignment: Any) -> Any:
        request = aiokafka_fetcher.FetchRequest(100, 1, 1 << 20, 0, [("t", [(p, o, 65536) for (_, p), o in positions.items()])])
        return [(1, request)], {}, 1.0, False, []  # 1.0: the stock timeout

    states = {tp: SimpleNamespace(highwater=None, has_valid_position=True, position=o) for tp, o in positions.items()}
    assignment = SimpleNamespace(active=True, state_value=lambda tp: states[tp])
    fetcher = SimpleNamespace(_records={})
    monkeypatch.setattr(faust_fixes, "_stock_actions", stock_actions)

    def asked() -> tuple[list[int], float]:
        requests, _, timeout, _, _ = faust_fixes._get_actions_per_node(fetcher, assignment)
        return sorted(p for _, r in requests for _, parts in r.topics for p, _, _ in parts), timeout

    def answer(request_parts: list[int], records: set[int], highwater: dict[int, int]) -> None:
        async def stock_proc(self: Any, assignment: Any, node_id: int, request: Any) -> bool:
            for p in records:
                fetcher._records[("t", p)] = "records"
            for p, hw in highwater.items():
                states[("t", p)].highwater = hw
            return bool(records)

        monkeypatch.setattr(faust_fixes, "_stock_proc_fetch", stock_proc)
        request = aiokafka_fetcher.FetchRequest(100, 1, 1 << 20, 0, [("t", [(p, positions[("t", p)], 65536) for p in request_parts])])
        asyncio.run(faust_fixes._proc_fetch_request(fetcher, assignment, 1, request))

    assert asked() == ([0, 1, 2], 1.0)  # nothing known yet: every partition
    # Partition 0 is read to its end; 1 brought records; 2 brought none, with records to read (a full response).
    answer([0, 1, 2], records={1}, highwater={0: 5, 1: 90, 2: 40})
    fetcher._records.clear()  # the worker took partition 1's records
    now[0] = 101.0
    assert asked() == ([0, 1, 2], 1.0)  # read to its end for a second only: not quiet yet
    now[0] = 102.5
    assert asked() == ([0, 1, 2], 1.0)  # quiet now, and not asked for 0.5 s: asked
    now[0] = 102.7
    parts, timeout = asked()
    assert parts == [1, 2] and timeout == pytest.approx(0.3)  # quiet and asked 0.2 s ago: left out
    now[0] = 103.0
    assert asked()[0] == [0, 1, 2]
    answer([0], records={0}, highwater={0: 9})  # partition 0 wakes up: asked every time again
    fetcher._records.clear()
    now[0] = 103.1
    assert asked()[0] == [0, 1, 2]

    del positions[("t", 1)], positions[("t", 2)]  # a request with only a quiet partition not due is not sent
    answer([0], records=set(), highwater={0: 5})
    now[0] = 105.2
    assert asked()[0] == [0]
    now[0] = 105.3
    requests, _, timeout, _, _ = faust_fixes._get_actions_per_node(fetcher, assignment)
    assert requests == [] and timeout == pytest.approx(0.4)
    monkeypatch.setattr(faust_fixes, "QUIET_EVERY_S", 0.0)  # install()'s default: the stock requests
    assert asked()[0] == [0]
    faust_fixes.install()
    assert aiokafka_fetcher.Fetcher._get_actions_per_node is faust_fixes._get_actions_per_node
    assert aiokafka_fetcher.Fetcher._proc_fetch_request is faust_fixes._proc_fetch_request


def test_a_table_database_opened_again_keeps_its_bloom_filter(tmp_path: Any) -> None:
    """Fix 10: rocksdict reopened an existing database with the options stored in it, less the filter."""
    import glob

    from faust.stores.rocksdb import RocksDBOptions

    from streams.faust_fixes import _open_rocksdb

    options = RocksDBOptions(write_buffer_size=1 << 20, block_cache_size=1 << 20, bloom_filter_size=10,
                             use_rocksdict=True)
    path = tmp_path / "t-0.db"
    for value in (b"1", b"2"):  # created, then opened again
        db = _open_rocksdb(options, path)
        db[b"k"] = value
        db.close()
    db = _open_rocksdb(options, path)
    assert db[b"k"] == b"2"
    db.close()
    files = sorted(glob.glob(str(path / "OPTIONS-*")))
    assert len(files) >= 2
    for name in files:
        assert "filter_policy=bloomfilter" in open(name).read(), name

"""The producer buffer's flush waits for queued and in-flight messages (see streams/faust_fixes.py)."""
import asyncio
from types import SimpleNamespace
from typing import Any

from streams.faust_fixes import DurableBuffer


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
        await asyncio.sleep(0.05)  # the sender task took the first message and is blocked on it
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

"""Batches taken straight from an agent's queue keep what Faust's stream did per event (streams/event_batches.py)."""
import asyncio
from types import SimpleNamespace
from typing import Any

from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streams.event_batches import batches

GENERATION = 7


class _Channel:
    def __init__(self, queue: ThrowableQueue) -> None:
        self.queue, self.iterated = queue, False

    def __aiter__(self) -> "_Channel":
        self.iterated = True  # Faust's topic subscribes its iterator clone here
        return self

    async def __anext__(self) -> Any:  # never called: an async iterator to aiter()
        raise StopAsyncIteration


def _app_and_stream() -> tuple[Any, Any, ThrowableQueue]:
    flow = FlowControlEvent(initially_suspended=False)
    queue: ThrowableQueue = ThrowableQueue(maxsize=100, flow_control=flow, clear_on_resume=True)
    consumer = SimpleNamespace(_unacked_messages=set())
    app = SimpleNamespace(consumer=consumer, topics=SimpleNamespace(_acking_topics={"raw.a"}),
                          flow_control=flow, consumer_generation_id=GENERATION)
    return app, SimpleNamespace(channel=_Channel(queue)), queue


class _Message:  # hashable, as Faust's messages are (the consumer keeps a set of them)
    def __init__(self, topic: str, offset: int, generation: int) -> None:
        self.topic, self.offset, self.generation_id, self.tracked = topic, offset, generation, False


def _event(offset: int, topic: str = "raw.a", generation: int = GENERATION) -> Any:
    return SimpleNamespace(message=_Message(topic, offset, generation))


def _put(queue: ThrowableQueue, *events: Any) -> None:
    for e in events:
        queue.put_nowait(e)


def _offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


async def _next_batch(app: Any, stream: Any, size: int, within: float) -> list[Any]:
    """The first batch of a fresh iteration, the iteration closed after it."""
    it = batches(app, stream, size, within)
    try:
        return await asyncio.wait_for(it.__anext__(), 2)
    finally:
        await it.aclose()


def _first(app: Any, stream: Any, size: int, within: float) -> list[Any]:
    return asyncio.run(_next_batch(app, stream, size, within))


def test_takes_what_the_queue_holds_up_to_the_size() -> None:
    app, stream, queue = _app_and_stream()
    _put(queue, *[_event(i) for i in range(5)])
    assert _offsets(_first(app, stream, 3, 0)) == [0, 1, 2]
    assert stream.channel.iterated
    assert _offsets(_first(app, stream, 10, 0)) == [3, 4]


def test_waits_within_the_time_for_more_events() -> None:
    app, stream, queue = _app_and_stream()

    async def scenario() -> list[Any]:
        _put(queue, _event(0))
        asyncio.get_running_loop().call_later(0.05, _put, queue, _event(1))
        return await _next_batch(app, stream, 10, 0.3)

    assert _offsets(asyncio.run(scenario())) == [0, 1]


def test_a_full_batch_does_not_wait() -> None:
    app, stream, queue = _app_and_stream()

    async def scenario() -> float:
        _put(queue, _event(0), _event(1))
        started = asyncio.get_running_loop().time()
        await _next_batch(app, stream, 2, 30)
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(scenario()) < 1


def test_events_of_an_earlier_generation_or_a_suspended_flow_are_dropped_untracked() -> None:
    app, stream, queue = _app_and_stream()
    stale, fresh = _event(0, generation=GENERATION - 1), _event(1)
    _put(queue, stale, fresh)
    assert _offsets(_first(app, stream, 10, 0)) == [1]
    assert not stale.message.tracked and app.consumer._unacked_messages == {fresh.message}

    app.flow_control.suspend()
    paused = _event(2)
    _put(queue, paused, _event(3))
    app.flow_control.resume()  # clears the queue, as a rebalance's resume does
    _put(queue, _event(4))
    assert _offsets(_first(app, stream, 10, 0)) == [4]
    assert not paused.message.tracked


def test_a_suspended_flow_drops_what_was_already_queued() -> None:
    app, stream, queue = _app_and_stream()

    async def scenario() -> list[int]:
        _put(queue, _event(0))
        asyncio.get_running_loop().call_later(0.05, app.flow_control.suspend)
        asyncio.get_running_loop().call_later(0.1, app.flow_control.resume)
        asyncio.get_running_loop().call_later(0.15, _put, queue, _event(1))
        # The first batch ends while the flow is suspended.
        return _offsets(await _next_batch(app, stream, 10, 0.08))

    assert asyncio.run(scenario()) == [1]


def test_only_acking_topics_are_tracked_and_only_once() -> None:
    app, stream, queue = _app_and_stream()
    acked, plain = _event(0), _event(1, topic="raw.other")
    acked.message.tracked = True  # a message delivered again is not tracked twice
    _put(queue, acked, plain, _event(2))
    assert _offsets(_first(app, stream, 10, 0)) == [0, 1, 2]
    assert not plain.message.tracked
    assert len(app.consumer._unacked_messages) == 1  # offset 2 only


def test_an_error_thrown_into_the_channel_reaches_the_agent() -> None:
    app, stream, queue = _app_and_stream()
    queue._throw(RuntimeError("decode failed"))

    try:
        _first(app, stream, 10, 0)
    except RuntimeError as exc:
        assert "decode failed" in str(exc)
    else:
        raise AssertionError("the channel's error was swallowed")


def test_the_actor_s_stop_ends_the_batches() -> None:
    app, stream, queue = _app_and_stream()

    async def scenario() -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        loop = asyncio.get_running_loop()
        # Blocked on an empty queue: Faust's actor.cancel() throws into the channel.
        waiting = asyncio.ensure_future(_collect(batches(app, stream, 10, 0)))
        await asyncio.sleep(0.05)
        queue._throw(StopAsyncIteration())
        blocked = await asyncio.wait_for(waiting, 2)
        # While a batch fills: what was taken is handed over, then the batches end.
        _put(queue, _event(0))
        loop.call_later(0.05, queue._throw, StopAsyncIteration())
        filling = await asyncio.wait_for(_collect(batches(app, stream, 10, 0.3)), 2)
        # Thrown before anything was taken: the queue's error comes first, as for Faust's stream;
        # what it still holds was never tracked, so nobody waits for its ack.
        _put(queue, _event(1))
        queue._throw(StopAsyncIteration())
        before = await asyncio.wait_for(_collect(batches(app, stream, 10, 0)), 2)
        return blocked, filling, before

    assert asyncio.run(scenario()) == ([], [[0]], [])
    assert [m.offset for m in app.consumer._unacked_messages] == [0]


async def _collect(it: Any) -> list[list[int]]:
    return [_offsets(b) async for b in it]

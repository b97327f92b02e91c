"""The producer buffer's flush waits for queued and in-flight messages (see streams/faust_buffer.py)."""
import asyncio
from types import SimpleNamespace
from typing import Any

from streams.faust_buffer import DurableBuffer


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

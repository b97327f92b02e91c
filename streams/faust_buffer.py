"""A producer buffer whose flush means "everything handed to the buffer reached the producer".

Faust writes table changes to their changelog through a buffer (``send_soon``) that a background
task drains, and commits offsets after ``producer.flush()``, which first flushes that buffer. The
stock ``ProducerBuffer.flush`` (faust-streaming 0.15) can return too early in two ways:

- it waits at most 0.1 s for each message and returns on that timeout, pending messages or not;
- it only looks at the queue, not at the message the background task has already taken and is
  still handing to the producer (which can block while the producer's batch is full).

Either way an offset can be committed before a changelog write it depends on is on its way, and a
crash at that moment loses the write for good (the event is not replayed). The statistics worker
caught this in its SIGKILL test: a cell's totals came back from the changelog without an event
whose offset was already committed.

``install()`` swaps in ``DurableBuffer`` for producers created afterwards (call it before the app
makes its producer). Its flush waits until the queue is empty and no message is in flight; the
producer's own flush, which Faust calls next, then waits for the broker.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust.transport.producer as faust_producer

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


def install() -> None:
    """Make Faust producers created from now on use ``DurableBuffer``."""
    faust_producer.ProducerBuffer = DurableBuffer

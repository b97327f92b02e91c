"""An agent's events in batches, taken straight from its channel's queue.

Faust's stream hands an agent one event at a time: the conductor puts each event in the agent
channel's queue, and the stream takes it out with a ``sleep(0)`` (a full turn of the event loop), an
awaited ``get``, a coroutine per processor and, with ``noack_take``, a background task refilling a
buffer. In the normalizer worker that was about 20 µs of CPU an event, a fifth of the whole worker,
on the one thread the worker is bound by (see docs/benchmarks.md). :func:`batches` takes what the
queue holds in one go, and does per event only what the stream did that matters here:

- an event fetched under an earlier generation (before a rebalance) or while the flow was
  suspended is dropped, neither delivered nor acked, exactly as ``StreamIterator._prepare_event``
  does: the partition is read again from its committed offset (``streams/faust_fixes.py``, fix 2);
- an event of an acking topic is tracked as unacked, so the consumer waits for it at shutdown and
  commits only past what was acked.

The per-event sensor hooks are not called (both apps' monitor, ``faust_fixes.QuietMonitor``, drops
them anyway), and nothing is acked: the agent acks each event once its effects are durable.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

POLL_S = 0.002  # while a batch fills: the fetch loop hands over up to a hundred events per turn


async def batches(app: Any, stream: Any, size: int, within: float) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``size`` events, within ``within`` seconds of a batch's first event.

    ``within=0`` yields whatever the queue held once the first event arrived. Iterating subscribes
    the agent's channel, as iterating the stream would; it ends when Faust stops the agent (its
    actor throws ``StopAsyncIteration`` into the channel), after handing over what it had taken.
    """
    queue = aiter(stream.channel).queue
    consumer = app.consumer
    track = consumer._unacked_messages.add
    acking = app.topics._acking_topics
    flow = app.flow_control
    loop = asyncio.get_running_loop()
    ended = False
    while not ended:
        try:
            taken = [await queue.get()]
        except StopAsyncIteration:  # the actor's cancel(): Faust stops the agent this way
            return
        deadline = loop.time() + within
        while True:
            try:
                while len(taken) < size and not queue.empty():
                    taken.append(queue.get_nowait())
            except StopAsyncIteration:
                ended = True  # what was taken is still handed over
                break
            if len(taken) >= size or loop.time() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        generation, active = app.consumer_generation_id, flow.is_active()
        events = []
        for event in taken:
            message = event.message
            if not active or message.generation_id != generation:
                continue  # read again after the rebalance's seek, as Faust's stream leaves it
            if not message.tracked and message.topic in acking:
                message.tracked = True
                track(message)
            events.append(event)
        if events:
            yield events

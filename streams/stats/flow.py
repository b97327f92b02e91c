"""Flow control between the statistics worker's two stages (see :class:`StageTwoLag`)."""
from __future__ import annotations

import logging
from typing import Any

from faust.types import TP

log = logging.getLogger("hip.stats")


class StageTwoLag:
    """Keeps stage 1 from running away from stage 2: flow control, never a question of correctness.

    Both stages read through one consumer, whose fetches are shared among the partitions that have
    data. With a backlog of standard records on a hundred partitions, the statements partitions got
    a twentieth of the deliveries: stage 2 fell further behind with every record (measured: stage 1
    at 1,350 records/s, stage 2 at 230 of the 1,750 statements messages/s it was sent), and the cells
    it emits, and the acks of its events, waited for the whole backlog. So stage 1 checks stage 2's
    lag every ``EVERY`` events and pauses its own partitions (Faust stops fetching them; what it has
    fetched is still delivered) while the lag is above ``high``; stage 2 resumes them once it is
    below a fifth of that. Stage 1 itself never waits, so nothing can block on a full buffer.
    """

    EVERY = 100

    def __init__(self, statements_topic: str, stage_one_topics: frozenset[str], high: int) -> None:
        self.topic = statements_topic
        self.stage_one_topics = stage_one_topics  # never the tables' changelogs: Faust pauses those
        self.high = high
        self.next_offset: dict[int, int] = {}  # statements partition -> the next offset stage 2 folds
        self._tps: dict[int, TP] = {}
        self.paused: set[Any] = set()
        self.pauses = 0
        self.events = 0

    def stage_one_event(self, consumer: Any) -> None:
        self.events += 1
        if self.events % self.EVERY == 0:
            self.check(consumer)

    def stage_two_event(self, consumer: Any, partition: int, offset: int) -> None:
        self.next_offset[partition] = offset + 1
        self.events += 1
        if self.paused and self.events % self.EVERY == 0:
            self.check(consumer)

    def lag(self, consumer: Any) -> int:
        """Statements messages on the broker that stage 2 has not folded (partitions it has read).

        Only those partitions are visited: the consumer's assignment, a set of every standard
        partition built again at each call, was 2% of the worker's time.
        """
        total = 0
        for partition, done in self.next_offset.items():
            tp = self._tps.get(partition)
            if tp is None:
                tp = self._tps[partition] = TP(self.topic, partition)
            end = consumer.highwater(tp)
            if end is not None:
                total += max(0, end - done)
        return total

    def forget(self) -> None:
        """Partitions were revoked: stage 2 may no longer own those it has read."""
        self.next_offset.clear()

    def check(self, consumer: Any) -> None:
        """Pause or resume stage 1's partitions by stage 2's lag.

        Paused the way Faust pauses a partition whose stream buffer is full (``on_buffer_full``):
        no new fetches, but records already fetched are still delivered. ``pause_partitions`` is
        not that: records of a partition paused while Faust iterates a fetched batch are skipped and
        never delivered (the commit then waits for them and ``faust_fixes`` reads them again 5 s
        later). While stage 2 stays behind the pause is applied again at every check, since Faust
        resumes a partition itself when its stream buffer drains.
        """
        lag = self.lag(consumer)
        if lag > self.high:
            own = {tp for tp in consumer.assignment() if tp.topic in self.stage_one_topics}
            for tp in own:
                consumer.on_buffer_full(tp)
            if not self.paused:
                self.pauses += 1
                log.info("stats: stage 2 is %d statements behind; reading standard records paused", lag)
            self.paused = own
        elif self.paused and lag <= self.high // 5:
            for tp in self.paused & set(consumer.assignment()):  # a rebalance may have moved some
                consumer.on_buffer_drop(tp)
            self.paused = set()
            log.info("stats: stage 2 caught up (%d behind); reading standard records resumed", lag)

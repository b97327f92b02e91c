"""Stage 1 of the statistics pauses its partitions while stage 2 is far behind (streams/stats/flow.py)."""
from typing import Any, NamedTuple

from streams.stats.flow import StageTwoLag


class TP(NamedTuple):
    topic: str
    partition: int


class Consumer:
    """What ``StageTwoLag`` uses of Faust's consumer."""

    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.ends: dict[TP, int] = {}
        self.paused: set[TP] = set()

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> Any:
        return self.ends.get(tp)

    def on_buffer_full(self, tp: TP) -> None:
        self.paused.add(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        self.paused.discard(tp)


STD = {TP("std.medical_fee", 0), TP("std.medical_fee", 1), TP("stats.ticks", 0)}
ST = {TP("stats.statements", 0), TP("stats.statements", 1)}
CHANGELOG = {TP("hip-stats-stats-cells-changelog", 0)}


def flow() -> tuple[StageTwoLag, Consumer]:
    consumer = Consumer(STD | ST | CHANGELOG)
    return StageTwoLag("stats.statements", frozenset({"std.medical_fee", "stats.ticks"}), 1000), consumer


def test_lag_counts_what_stage_two_has_not_folded_on_the_partitions_it_has_read() -> None:
    lag, consumer = flow()
    consumer.ends = {TP("stats.statements", 0): 800, TP("stats.statements", 1): 900}
    assert lag.lag(consumer) == 0  # nothing folded yet: nothing known
    lag.stage_two_event(consumer, 0, 99)
    assert lag.lag(consumer) == 700
    lag.stage_two_event(consumer, 1, 899)
    assert lag.lag(consumer) == 700


def test_stage_one_partitions_pause_above_the_limit_and_resume_below_a_fifth() -> None:
    lag, consumer = flow()
    consumer.ends = {TP("stats.statements", 0): 5000}
    lag.stage_two_event(consumer, 0, 1000)  # 3,999 behind
    for _ in range(StageTwoLag.EVERY):
        lag.stage_one_event(consumer)
    assert consumer.paused == STD  # the standard topics and the ticks, never a changelog
    consumer.paused.discard(TP("std.medical_fee", 1))  # Faust resumed one as its buffer drained
    lag.check(consumer)
    assert consumer.paused == STD  # still behind: paused again
    lag.stage_two_event(consumer, 0, 4700)  # 299 behind: still above a fifth of the limit
    lag.check(consumer)
    assert consumer.paused == STD
    lag.stage_two_event(consumer, 0, 4900)
    lag.check(consumer)
    assert consumer.paused == set() and lag.pauses == 1


def test_resuming_after_a_rebalance_touches_only_what_is_still_assigned() -> None:
    lag, consumer = flow()
    consumer.ends = {TP("stats.statements", 0): 5000}
    lag.stage_two_event(consumer, 0, 0)
    lag.check(consumer)
    consumer.assigned = {TP("std.medical_fee", 0)} | ST
    consumer.paused = set()  # Faust forgets its pauses on a rebalance
    lag.stage_two_event(consumer, 0, 4999)
    lag.check(consumer)
    assert consumer.paused == set() and not lag.paused


def test_a_revocation_forgets_the_partitions_stage_two_had_read() -> None:
    lag, consumer = flow()
    consumer.ends = {TP("stats.statements", 0): 5000}
    lag.stage_two_event(consumer, 0, 0)
    assert lag.lag(consumer) == 4999
    lag.forget()  # the partition may now belong to another worker
    assert lag.lag(consumer) == 0

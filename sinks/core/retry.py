"""Bounded retry with full-jitter exponential backoff for transient failures."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; the wait before try n+1 is uniform in [0, min(cap, base·2ⁿ)]."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 10.0

    def delay(self, failures: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (≥ 1)."""
        ceiling = min(self.cap, self.base * (2 ** (failures - 1)))
        wait = (rng or random).uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    def exhausted(self, failures: int) -> bool:
        return failures >= self.attempts

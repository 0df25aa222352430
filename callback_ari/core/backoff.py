"""Reconnect delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay before the n-th consecutive reconnect attempt.

    ``next_delay()`` returns a uniformly random delay in [base/2, min(cap, base * 2**n)], so
    that many instances restarted together do not reconnect in lock step, and the first
    retry after a blip is quick. ``reset()`` after a connection proved healthy.
    """

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return self.rng.uniform(min(self.base / 2, ceiling), ceiling)

    @property
    def attempt(self) -> int:
        return self._attempt

    def reset(self) -> None:
        self._attempt = 0

"""Expected queue wait from a rolling average of how long one call keeps a member busy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def promise_minutes(wait_s: float) -> int:
    """Whole minutes to tell a caller for an estimated ``wait_s``: never less than the estimate.

    A promise is rounded up, to whole minutes up to 10, to 5 minutes up to an hour and to
    15 minutes beyond, so "about 20 minutes" is not heard as a precise 17 and a call that
    comes at the estimate never comes later than what was said. At least 1.
    """
    minutes = max(1, math.ceil(max(0.0, wait_s) / 60))
    if minutes <= 10:
        return minutes
    step = 5 if minutes <= 60 else 15
    return math.ceil(minutes / step) * step


@dataclass(slots=True)
class HandleTimeEstimator:
    """Per-queue exponentially weighted moving average (EWMA) of handle time.

    Handle time of one answered call = its talk time (``AgentComplete TalkTime``) plus the
    wrap-up the member then owes (seconds in which app_queue will not ring them):

        avg_1 = h_1;    avg_n = alpha * h_n + (1 - alpha) * avg_(n-1)

    ``alpha`` = 0.25 is the weight app_queue itself gives a new call in its ``TalkTime``
    and ``Holdtime`` averages, so a seed taken from ``QueueParams TalkTime`` blends in.

    Estimated wait of the caller at ``position`` (1 = next to be answered) when
    ``staffed`` members (logged in, not paused) serve the queue: the caller needs
    ``ceil(position / max(1, staffed))`` rounds of calls to finish, each one average
    handle time long:

        wait(p) = ceil(p / max(1, staffed)) * avg

    With no completed call and no seed there is no estimate: ``None``.
    """

    alpha: float = 0.25
    _avg: dict[str, float] = field(default_factory=dict)
    _samples: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def observe(self, queue: str, talk_s: float, wrapup_s: float = 0.0) -> None:
        """Add one completed call."""
        sample = max(0.0, talk_s) + max(0.0, wrapup_s)
        previous = self._avg.get(queue)
        if previous is None or self._samples.get(queue, 0) == 0:
            self._avg[queue] = sample
        else:
            self._avg[queue] = self.alpha * sample + (1.0 - self.alpha) * previous
        self._samples[queue] = self._samples.get(queue, 0) + 1

    def seed(self, queue: str, handle_s: float) -> None:
        """Start from Asterisk's own average (after a restart) unless calls were observed."""
        if self._samples.get(queue, 0) == 0 and handle_s > 0:
            self._avg[queue] = float(handle_s)

    def average_handle_s(self, queue: str) -> float | None:
        return self._avg.get(queue)

    def samples(self, queue: str) -> int:
        return self._samples.get(queue, 0)

    def estimate_wait_s(self, queue: str, position: int, staffed: int) -> float | None:
        """Seconds the caller at ``position`` should still wait, or None without data."""
        avg = self._avg.get(queue)
        if avg is None:
            return None
        rounds = math.ceil(max(1, position) / max(1, staffed))
        return rounds * avg

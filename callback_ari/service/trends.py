"""Trends: the last hour of each queue, sampled every few seconds into a ring buffer in memory.

What the status page draws as charts: callers holding, live callbacks, the 90th percentile of
the current callers' hold times, and dial attempts ended since the previous sample by outcome.
Nothing is stored: a restart starts the hour again.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callback_ari.clock import Clock
from callback_ari.config.loader import Config
from callback_ari.errors import StoreError
from callback_ari.metrics import Metrics
from callback_ari.models import LIVE_STATES, Outcome
from callback_ari.service.watcher import QueueWatcher
from callback_ari.store.store import CallbackStore

TREND_INTERVAL_S = 10.0
TREND_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class TrendSample:
    """One queue at one moment. ``pending`` is None when Redis did not answer."""

    at_ms: int
    holding: int
    pending: int | None
    hold_p90_s: float | None  # None while nobody holds
    attempts: Mapping[str, int]  # outcome -> attempts ended since the previous sample


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.9 * len(ordered))) - 1]


class Trends:
    """Per-queue ring buffers of ``TrendSample``, one sample every ``interval_s``."""

    def __init__(
        self,
        *,
        config: Config,
        watcher: QueueWatcher,
        metrics: Metrics,
        clock: Clock,
        interval_s: float = TREND_INTERVAL_S,
        window_s: float = TREND_WINDOW_S,
    ) -> None:
        self._config = config
        self._watcher = watcher
        self._metrics = metrics
        self._clock = clock
        self.interval_s = interval_s
        size = max(2, math.ceil(window_s / interval_s))
        self._samples: dict[str, deque[TrendSample]] = {
            name: deque(maxlen=size) for name in config.queues
        }
        self._attempts_seen: dict[tuple[str, str], float] = {}

    def series(self, queue: str) -> list[TrendSample]:
        """The samples of ``queue``, oldest first (empty for an unknown queue)."""
        return list(self._samples.get(queue, ()))

    async def run(self, store: CallbackStore) -> None:
        """Sample until cancelled."""
        while True:
            await self.sample(store)
            await asyncio.sleep(self.interval_s)

    async def sample(self, store: CallbackStore) -> None:
        """Take one sample of every queue now (the loop calls it; tests may too)."""
        now = self._clock.now_ms()
        try:
            counts: Mapping[str, Mapping[str, int]] | None = await store.counts()
        except StoreError:
            counts = None
        for name, ring in self._samples.items():
            holds = [max(0.0, (now - c.join_time_ms) / 1000) for c in self._watcher.callers(name)]
            pending = None
            if counts is not None:
                per_state = counts.get(name, {})
                pending = sum(per_state.get(s.value, 0) for s in LIVE_STATES)
            ring.append(
                TrendSample(
                    at_ms=now,
                    holding=len(holds),
                    pending=pending,
                    hold_p90_s=p90(holds),
                    attempts=self._attempts_since_last(name),
                )
            )

    def _attempts_since_last(self, queue: str) -> dict[str, int]:
        """Attempts ended per outcome since the previous sample, from the metrics counter."""
        ended: dict[str, int] = {}
        registry = self._metrics.registry
        for outcome in Outcome:
            labels = {"queue": queue, "outcome": outcome.value}
            total = registry.get_sample_value("callback_attempts_total", labels) or 0.0
            key = (queue, outcome.value)
            previous = self._attempts_seen.get(key)
            self._attempts_seen[key] = total
            delta = 0 if previous is None else int(total - previous)
            if delta:
                ended[outcome.value] = delta
        return ended

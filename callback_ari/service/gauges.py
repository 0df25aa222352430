"""Gauges: refreshes the Prometheus gauges and keeps what the refresh learns about Redis.

The service reads two things back: whether Redis answered the last count, and how many live
callbacks each queue has (the ``max_pending`` cap on new offers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callback_ari.clock import Clock
from callback_ari.config.loader import Config
from callback_ari.errors import StoreError
from callback_ari.metrics import Metrics
from callback_ari.models import LIVE_STATES
from callback_ari.service.watcher import QueueWatcher
from callback_ari.store.store import CallbackStore

# Also how fast /readyz sees Redis go and come back: a Sentinel failover is a gap of a few seconds.
GAUGE_INTERVAL_S = 1.0


class Gauges:
    """Queue and link gauges, the pending-cap cache and the store's health."""

    def __init__(
        self, *, config: Config, metrics: Metrics, watcher: QueueWatcher, clock: Clock
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._watcher = watcher
        self._clock = clock
        self.store_ok = False
        self._pending_counts: dict[str, int] = {}

    def pending(self, queue: str) -> int:
        """Live callbacks of ``queue`` as of the last refresh."""
        return self._pending_counts.get(queue, 0)

    async def run(
        self,
        store: CallbackStore,
        *,
        in_flight: Callable[[str], int] | None,
    ) -> None:
        """Refresh every few seconds until cancelled."""
        while True:
            await self.refresh(store, in_flight=in_flight)
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def refresh(
        self,
        store: CallbackStore,
        *,
        in_flight: Callable[[str], int] | None,
    ) -> None:
        """One refresh; learns whether Redis answers. (``callback_link_up`` is read at scrape
        time from the links themselves, see ``Metrics.watch_links``.)"""
        metrics = self._metrics
        try:
            counts = await store.counts()
            self.store_ok = True
        except StoreError:
            self.store_ok = False
            return
        for name in self._config.queues:
            per_state = counts.get(name, {})
            self._pending_counts[name] = sum(per_state.get(s.value, 0) for s in LIVE_STATES)
            for state in LIVE_STATES:
                metrics.pending.labels(name, state.value).set(per_state.get(state.value, 0))
            metrics.ready_members.labels(name).set(self._watcher.ready_members(name))
            callers = self._watcher.callers(name)
            metrics.callers_holding.labels(name).set(len(callers))
            oldest = self._watcher.oldest_join_ms(name)
            longest = 0.0 if oldest is None else (self._clock.now_ms() - oldest) / 1000
            metrics.longest_hold.labels(name).set(longest)
            if in_flight is not None:
                metrics.in_flight.labels(name).set(in_flight(name))

"""Today's tiles and the trend charts of the status page, from data the service already keeps.

Today's figures come from the store's audit stream (the same computation as ``report``),
counted from midnight in each queue's time zone and recomputed at most every few seconds;
the trends are the service's in-memory ring buffer (``service.trends``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from callback_ari.clock import Clock
from callback_ari.config.loader import Config
from callback_ari.models import State
from callback_ari.ops.api_schema import TodayView, TrendView
from callback_ari.ops.reports import compute_report, read_audit
from callback_ari.service.trends import TrendSample
from callback_ari.store.store import CallbackStore

TODAY_MAX_AGE_S = 15.0
LOOKBACK_MS = 24 * 3600 * 1000  # a callback requested yesterday still has its wait measured


def midnight_ms(now_ms: int, timezone: str) -> int:
    """The last midnight before ``now_ms`` in ``timezone`` (IANA name), in epoch ms."""
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


class TodayFigures:
    """Today's figures per queue, cached for ``max_age_s`` (the page polls every 2 s)."""

    def __init__(self, config: Config, clock: Clock, max_age_s: float = TODAY_MAX_AGE_S) -> None:
        self._config = config
        self._clock = clock
        self._max_age_ms = int(max_age_s * 1000)
        self._at_ms: int | None = None
        self._figures: dict[str, TodayView] = {}

    async def get(self, store: CallbackStore) -> dict[str, TodayView]:
        """Raises StoreError when the audit stream cannot be read."""
        now = self._clock.now_ms()
        if self._at_ms is not None and now - self._at_ms < self._max_age_ms:
            return self._figures
        starts = {n: midnight_ms(now, q.timezone) for n, q in self._config.queues.items()}
        if not starts:
            return {}
        transitions = await read_audit(store, min(starts.values()) - LOOKBACK_MS)
        figures: dict[str, TodayView] = {}
        for name, since in starts.items():
            report = compute_report([t for t in transitions if t.queue == name], since, now)
            row = report.queues[0] if report.queues else report.overall
            figures[name] = {
                "since": datetime.fromtimestamp(since / 1000, UTC).isoformat(),
                "requested": row.requested,
                "connected": row.finished.get(State.CONNECTED.value, 0),
                "failed": row.finished.get(State.FAILED.value, 0),
                "expired": row.finished.get(State.EXPIRED.value, 0),
                "cancelled": row.finished.get(State.CANCELLED.value, 0),
                "success_rate": row.success_rate,
                "connect_p50_s": row.connect_p50_s,
            }
        self._at_ms, self._figures = now, figures
        return figures


def trend_view(samples: Sequence[TrendSample], interval_s: float) -> TrendView:
    """The ring buffer as parallel arrays, the shape the page's charts draw."""
    outcomes = sorted({o for s in samples for o in s.attempts})
    return {
        "interval_s": interval_s,
        "at_ms": [s.at_ms for s in samples],
        "holding": [s.holding for s in samples],
        "pending": [s.pending for s in samples],
        "hold_p90_s": [None if s.hold_p90_s is None else round(s.hold_p90_s, 1) for s in samples],
        "attempts": {o: [s.attempts.get(o, 0) for s in samples] for o in outcomes},
    }

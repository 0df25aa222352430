"""Prometheus metrics of one service instance: names, labels and the few rules that feed them.

Naming follows Prometheus practice: base units (seconds), ``_total`` on counters, labels
drawn from small fixed sets (queue names come from the config). Every label combination a
dashboard or alert reads is created at zero when the queues are declared, so a rate over a
quiet queue is 0, not "no data". The registry is private (tests make their own) but carries
the standard process and Python collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from callback_ari import __version__
from callback_ari.models import LIVE_STATES, TERMINAL_STATES, Callback, Origin, Outcome, State

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HOLD_BUCKETS = (15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)
# request -> connected spans minutes to hours (max_age defaults to 4 h)
PROMISE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)

LINKS = ("ari", "ami", "redis")
ERROR_AREAS = ("store", "ari", "ami", "agi", "flow")
# How an offer dialogue can end: core.offer's outcomes, a continued one by its ContinueReason
# (a test keeps the two equal); anything else is counted as "other" (labels stay bounded).
OFFER_RESULTS = (
    "stored", "existing", "declined", "silence", "too_many_tries", "store_failed", "error",
    "dialogue_timeout", "abandoned", "closed", "shutdown",
)  # fmt: skip
UNKNOWN_ASTERISK = "unknown"


def offer_result_label(label: str) -> str:
    """The ``result`` label of an offer's end (``OfferResult.label``), or ``other``."""
    return label if label in OFFER_RESULTS else "other"


class _LinkCollector:
    """``callback_link_up`` read from the live links at scrape time, so it is never stale."""

    def __init__(self) -> None:
        self.links: Callable[[], Mapping[str, bool]] | None = None

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "callback_link_up", "1 while a link (ari, ami, redis) is connected", labels=["link"]
        )
        state = dict.fromkeys(LINKS, False) if self.links is None else self.links()
        for link in LINKS:
            family.add_metric([link], 1.0 if state.get(link, False) else 0.0)
        yield family


class Metrics:
    """Every metric the service exports. One instance per service; tests make their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "callback_build_info",
            "Always 1: the service version and the Asterisk version it last saw",
            ["version", "asterisk_version"],
            registry=r,
        )
        self.offers = Counter(
            "callback_offers",
            "Callback offers made to holding callers, by how they reached the offer",
            ["queue", "entry"],
            registry=r,
        )
        self.offer_results = Counter(
            "callback_offer_results",
            "How offer dialogues ended: " + ", ".join(OFFER_RESULTS) + ", other",
            ["queue", "result"],
            registry=r,
        )
        self.requested = Counter(
            "callback_requested",
            "New callbacks stored (a duplicate request for a live callback is not counted)",
            ["queue", "origin"],
            registry=r,
        )
        self.reasons = Counter(
            "callback_reasons",
            "New callbacks by the reason the caller picked (only the queue's configured reasons)",
            ["queue", "reason"],
            registry=r,
        )
        self.finished = Counter(
            "callback_finished",
            "Callbacks reaching a final state: connected, failed, expired or cancelled",
            ["queue", "origin", "state"],
            registry=r,
        )
        self.attempts = Counter(
            "callback_attempts",
            "Callback dial attempts by outcome",
            ["queue", "outcome"],
            registry=r,
        )
        self.request_to_connected = Histogram(
            "callback_request_to_connected_seconds",
            "From the callback request to the customer confirming and joining the queue",
            ["queue"],
            buckets=PROMISE_BUCKETS,
            registry=r,
        )
        self.ready_to_dial = Histogram(
            "callback_ready_to_dial_seconds",
            "From a member becoming ready to the originate request being sent",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.hold_at_offer = Histogram(
            "callback_hold_at_offer_seconds",
            "How long callers had held when offered a callback",
            ["queue"],
            buckets=HOLD_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "callback_pending",
            "Live callbacks per queue and state (pending, retry_wait, dialing)",
            ["queue", "state"],
            registry=r,
        )
        self.in_flight = Gauge(
            "callback_in_flight",
            "Attempts this instance has in progress: ringing, confirming or joining the queue",
            ["queue"],
            registry=r,
        )
        self.ready_members = Gauge(
            "callback_queue_ready_members", "Members ready to take a call", ["queue"], registry=r
        )
        self.callers_holding = Gauge(
            "callback_queue_callers", "Live callers holding in the queue", ["queue"], registry=r
        )
        self.longest_hold = Gauge(
            "callback_queue_longest_hold_seconds",
            "Hold time of the oldest live caller",
            ["queue"],
            registry=r,
        )
        self.reconnects = Counter(
            "callback_reconnects", "Reconnections to Asterisk (ari, ami)", ["link"], registry=r
        )
        self.reserved = Gauge(
            "callback_reserved_members",
            "Members paused by this instance for the callback whose turn it is",
            ["queue"],
            registry=r,
        )
        self.reservations = Counter(
            "callback_reservations",
            "Member reservations by how they ended (joined, failed, deadline, agent_paused, ...)",
            ["queue", "result"],
            registry=r,
        )
        self.preheld = Gauge(
            "callback_preheld_members",
            "Busy members paused by this instance while a due callback waits for a member",
            ["queue"],
            registry=r,
        )
        self.preholds = Counter(
            "callback_preholds",
            "Pre-holds by how they ended (converted, not_needed, not_taken, agent_paused, ...)",
            ["queue", "result"],
            registry=r,
        )
        self._links = _LinkCollector()
        r.register(self._links)
        self.errors = Counter(
            "callback_errors", "Errors by area (" + ", ".join(ERROR_AREAS) + ")", ["area"],
            registry=r,
        )  # fmt: skip
        self.saw_asterisk(UNKNOWN_ASTERISK)
        for area in ERROR_AREAS:
            self.errors.labels(area)
        for link in ("ari", "ami"):
            self.reconnects.labels(link)

    def declare_reasons(self, queue: str, reasons: Iterable[str]) -> None:
        """Create ``callback_reasons_total`` at zero for each configured reason of ``queue``."""
        for reason in reasons:
            self.reasons.labels(queue, reason)

    def declare_queues(self, queues: Iterable[str], entries: Iterable[str]) -> None:
        """Create every series of ``queues`` at zero (a quiet queue reads 0, not no data)."""
        entries = tuple(entries)
        for q in queues:
            for entry in entries:
                self.offers.labels(q, entry)
            for result in OFFER_RESULTS:
                self.offer_results.labels(q, result)
            for origin in Origin:
                self.requested.labels(q, origin.value)
                for state in sorted(TERMINAL_STATES):
                    self.finished.labels(q, origin.value, state.value)
            for outcome in Outcome:
                self.attempts.labels(q, outcome.value)
            for state in sorted(LIVE_STATES):
                self.pending.labels(q, state.value)
            self.in_flight.labels(q)
            self.reserved.labels(q)
            self.preheld.labels(q)
            self.request_to_connected.labels(q)
            self.ready_to_dial.labels(q)
            self.hold_at_offer.labels(q)

    def watch_links(self, links: Callable[[], Mapping[str, bool]]) -> None:
        """Read ``callback_link_up`` from ``links()`` ({"ari": up, ...}) at every scrape."""
        self._links.links = links

    def saw_asterisk(self, version: str) -> None:
        """Record the Asterisk version reported by ``GET /asterisk/info``."""
        self.build_info.clear()
        self.build_info.labels(__version__, version or UNKNOWN_ASTERISK).set(1)

    def offer_ended(self, queue: str, label: str) -> None:
        """Count how an offer dialogue ended, by its exact result (``OfferResult.label``)."""
        self.offer_results.labels(queue, offer_result_label(label)).inc()

    def callback_finished(self, cb: Callback, now_ms: int) -> None:
        """Count a callback that reached a final state (connected also times the promise)."""
        if cb.state.is_live:
            return
        self.finished.labels(cb.queue, cb.origin.value, cb.state.value).inc()
        if cb.state is State.CONNECTED:
            self.request_to_connected.labels(cb.queue).observe(
                max(0.0, (now_ms - cb.created_ms) / 1000)
            )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)

"""Prometheus metrics of one service instance, kept in a private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HOLD_BUCKETS = (15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)


class Metrics:
    """Every metric the service exports. One instance per service; tests make their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.offers = Counter(
            "callback_offers",
            "Callback offers made to holding callers",
            ["queue", "entry"],
            registry=r,
        )
        self.offer_results = Counter(
            "callback_offer_results",
            "How offer dialogues ended (stored, existing, declined, silence, tries, error, hangup)",
            ["queue", "result"],
            registry=r,
        )
        self.stored = Counter(
            "callback_stored", "Callbacks stored", ["queue", "origin"], registry=r
        )
        self.attempts = Counter(
            "callback_attempts",
            "Callback dial attempts by outcome",
            ["queue", "outcome"],
            registry=r,
        )
        self.pending = Gauge(
            "callback_pending", "Callbacks per queue and state", ["queue", "state"], registry=r
        )
        self.in_flight = Gauge(
            "callback_in_flight",
            "Callbacks being dialled, confirmed or connected",
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
        self.dispatch_latency = Histogram(
            "callback_dispatch_latency_seconds",
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
        self.reconnects = Counter(
            "callback_reconnects", "Reconnections to Asterisk and Redis", ["link"], registry=r
        )
        self.connected = Gauge(
            "callback_link_up",
            "1 while a link (ari, ami, redis) is connected",
            ["link"],
            registry=r,
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
        self.errors = Counter(
            "callback_errors", "Errors by area (store, ari, ami, flow)", ["area"], registry=r
        )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)

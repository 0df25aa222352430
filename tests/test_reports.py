"""Report figures from a scripted day of transitions, and from a real store's audit stream."""

from __future__ import annotations

import redis.asyncio as aioredis

from callback_ari.clock import ManualClock
from callback_ari.models import Outcome
from callback_ari.ops import reports
from callback_ari.store.store import CallbackStore

T0 = 1_800_000_000_000
S = 1000


def entry(cb: str, queue: str, at_s: float, frm: str, to: str, outcome: str = "",
          attempt: int = 0, cause: str = "") -> dict[str, str]:  # fmt: skip
    """An audit dict shaped like CallbackStore.audit() returns it."""
    return {
        "id": cb, "queue": queue, "from": frm, "to": to, "outcome": outcome, "cause": cause,
        "attempt": str(attempt), "ts": str(T0 + int(at_s * S)), "event_id": f"{T0}-{cb}",
    }  # fmt: skip


def scripted_day() -> list[dict[str, str]]:
    sup, sal = "support", "sales"
    return [
        # cb7 was requested an hour before the period and connects inside it
        entry("7", sup, -3600, "", "pending"),
        entry("7", sup, 20, "pending", "dialing", attempt=1),
        entry("7", sup, 30, "dialing", "connected", "connected", 1),
        # cb1: busy, retried, connected on attempt 2, 200 s after the request
        entry("1", sup, 0, "", "pending"),
        entry("1", sup, 10, "pending", "dialing", attempt=1),
        entry("1", sup, 40, "dialing", "retry_wait", "busy", 1, "BUSY/17"),
        entry("1", sup, 160, "retry_wait", "pending", attempt=1),
        entry("1", sup, 170, "pending", "dialing", attempt=2),
        entry("1", sup, 200, "dialing", "connected", "connected", 2),
        # cb2: connected first time, 60 s after the request
        entry("2", sup, 5, "", "pending"),
        entry("2", sup, 20, "pending", "dialing", attempt=1),
        entry("2", sup, 65, "dialing", "connected", "connected", 1),
        # cb3: no answer twice, failed
        entry("3", sup, 6, "", "pending"),
        entry("3", sup, 21, "pending", "dialing", attempt=1),
        entry("3", sup, 51, "dialing", "retry_wait", "no_answer", 1),
        entry("3", sup, 171, "retry_wait", "pending", attempt=1),
        entry("3", sup, 172, "pending", "dialing", attempt=2),
        entry("3", sup, 300, "dialing", "failed", "no_answer", 2),
        # cb8: requested, still waiting
        entry("8", sup, 400, "", "pending"),
        # sales: one cancelled, one expired, one connected 101 s after the request
        entry("4", sal, 7, "", "pending"),
        entry("4", sal, 100, "pending", "cancelled", cause="api"),
        entry("5", sal, 8, "", "pending"),
        entry("5", sal, 500, "pending", "expired", cause="max_age"),
        entry("6", sal, 9, "", "pending"),
        entry("6", sal, 50, "pending", "dialing", attempt=1),
        entry("6", sal, 110, "dialing", "connected", "connected", 1),
        # after the period, and a malformed entry: both ignored
        entry("9", sal, 5000, "", "pending"),
        {"id": "", "queue": sal, "ts": "x"},
    ]


def test_report_figures_per_queue_and_overall() -> None:
    transitions = reports.parse_audit(scripted_day())
    report = reports.compute_report(transitions, T0, T0 + 1000 * S)
    by_queue = {q.queue: q for q in report.queues}
    assert list(by_queue) == ["sales", "support"]

    sup = by_queue["support"]
    assert sup.requested == 4  # cb7 was requested before the period
    assert sup.attempts == 6
    assert dict(sup.outcomes) == {"busy": 1, "connected": 3, "no_answer": 2}
    assert dict(sup.finished) == {"connected": 3, "failed": 1}
    assert sup.success_rate == 0.75
    assert sup.attempts_per_success == 1.33  # (2 + 1 + 1) / 3
    assert (sup.connect_p50_s, sup.connect_p90_s) == (200.0, 3630.0)

    sal = by_queue["sales"]
    assert sal.requested == 3
    assert dict(sal.finished) == {"cancelled": 1, "connected": 1, "expired": 1}
    assert sal.success_rate == 0.3333
    assert sal.attempts_per_success == 1.0
    assert (sal.connect_p50_s, sal.connect_p90_s) == (101.0, 101.0)

    total = report.overall
    assert total.requested == 7
    assert total.attempts == 7
    assert total.success_rate == round(4 / 7, 4)
    assert total.attempts_per_success == 1.25
    assert (total.connect_p50_s, total.connect_p90_s) == (101.0, 3630.0)

    text = reports.render_table(report)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "REQUESTED", "ATTEMPTS"]
    assert "75.0%" in text and "all queues" in text
    assert "attempt outcomes: busy 1, connected 4, no_answer 2" in text
    assert report.as_dict()["overall"]["finished"]["connected"] == 4


def test_an_empty_period_has_no_rates() -> None:
    report = reports.compute_report([], T0, T0 + S)
    assert report.queues == ()
    assert report.overall.success_rate is None
    assert report.overall.connect_p50_s is None
    assert "-" in reports.render_table(report)


def test_percentile_is_nearest_rank() -> None:
    assert reports.percentile([], 50) is None
    assert reports.percentile([5.0], 90) == 5.0
    assert reports.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert reports.percentile([float(i) for i in range(1, 11)], 90) == 9.0


async def test_report_from_a_real_store(redis_url: str) -> None:
    clock = ManualClock(T0)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = CallbackStore(redis, prefix="rep", clock=clock)
        a, _ = await store.enqueue(queue="support", number="2025550101", join_time_ms=T0)
        b, _ = await store.enqueue(queue="support", number="2025550102", join_time_ms=T0)
        clock.advance(90)
        for expected, outcome in ((a, Outcome.CONNECTED), (b, Outcome.NO_ANSWER)):
            claimed = await store.claim_next("support", owner="w1", lease_ms=60_000)
            assert claimed is not None and claimed.id == expected.id
            await store.record_outcome(
                claimed.id, "w1", outcome=outcome, cause="", retry_at_ms=None, max_attempts=1
            )
        clock.advance(10)
        report = await reports.load_report(store, T0 - S, clock.now_ms(), page=2)
    finally:
        await redis.aclose()
    assert report.overall.requested == 2
    assert dict(report.overall.finished) == {"connected": 1, "failed": 1}
    assert report.overall.success_rate == 0.5
    assert report.overall.connect_p50_s == 90.0


def test_report_by_reason_and_origin_from_the_created_entries() -> None:
    created = [
        {**entry("1", "support", 0, "", "pending"), "origin": "phone", "reason": "technical"},
        {**entry("2", "support", 1, "", "pending"), "origin": "phone", "reason": "billing"},
        {**entry("3", "support", 2, "", "pending"), "origin": "abandon", "reason": ""},
    ]
    later = [
        entry("1", "support", 10, "pending", "dialing", attempt=1),
        entry("1", "support", 20, "dialing", "connected", outcome="connected", attempt=1),
        entry("3", "support", 30, "pending", "dialing", attempt=1),
        entry("3", "support", 40, "dialing", "connected", outcome="connected", attempt=1),
    ]
    transitions = reports.parse_audit(created + later)
    by_reason = reports.compute_report(transitions, T0, T0 + 60 * S, by="reason")
    rows = {q.queue: q for q in by_reason.queues}
    assert set(rows) == {"technical", "billing", "(none)"}
    assert rows["technical"].requested == 1 and rows["technical"].finished == {"connected": 1}
    assert rows["billing"].finished == {}
    by_origin = reports.compute_report(transitions, T0, T0 + 60 * S, by="origin")
    assert {q.queue: q.requested for q in by_origin.queues} == {"phone": 2, "abandon": 1}
    text = reports.render_table(by_reason, "reason")
    assert text.startswith("REASON") and "technical" in text

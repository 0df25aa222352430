"""Offer and dispatch decisions: who is offered, who is dialled first, how many, and when."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from callback_ari.core import policy
from callback_ari.models import Callback, State

T0 = 1_800_000_000_000  # an arbitrary epoch millisecond


def _offer(**overrides: object) -> bool:
    kw: dict[str, object] = {
        "hold_s": 130.0, "est_wait_s": None, "offer_threshold": 120,
        "offer_on_estimated_wait": 0, "open_now": True, "pending": 0, "max_pending": 200,
        "store_ok": True,
    }  # fmt: skip
    kw.update(overrides)
    return policy.should_offer(**kw)  # type: ignore[arg-type]


# --- should_offer ---------------------------------------------------------------------------


def test_offer_once_hold_reaches_the_threshold() -> None:
    assert not _offer(hold_s=119.9)
    assert _offer(hold_s=120.0)
    assert _offer(hold_s=600.0)


def test_threshold_zero_never_offers_by_hold_time() -> None:
    assert not _offer(offer_threshold=0, hold_s=3600.0)


def test_offer_on_estimated_wait() -> None:
    assert _offer(hold_s=5.0, est_wait_s=400.0, offer_on_estimated_wait=300)
    assert not _offer(hold_s=5.0, est_wait_s=200.0, offer_on_estimated_wait=300)
    assert _offer(hold_s=5.0, est_wait_s=300.0, offer_on_estimated_wait=300)  # "at least"
    assert not _offer(hold_s=5.0, est_wait_s=None, offer_on_estimated_wait=300)  # unknown
    assert not _offer(hold_s=5.0, est_wait_s=9999.0, offer_on_estimated_wait=0)  # off


@pytest.mark.parametrize(
    "closure",
    [{"open_now": False}, {"pending": 200}, {"pending": 250}, {"store_ok": False}],
    ids=["closed", "pending-cap", "over-cap", "store-down"],
)
def test_no_offer_when_closed_full_or_store_down(closure: dict[str, object]) -> None:
    assert not _offer(hold_s=9999.0, **closure)
    assert not _offer(hold_s=math.inf, **closure)  # not even when the caller asks
    assert not _offer(hold_s=5.0, est_wait_s=9999.0, offer_on_estimated_wait=60, **closure)


def test_explicit_request_needs_only_the_gates() -> None:
    assert _offer(hold_s=math.inf, offer_threshold=0, offer_on_estimated_wait=0)
    assert _offer(hold_s=math.inf, pending=199)
    assert policy.offer_open(open_now=True, pending=199, max_pending=200, store_ok=True)
    assert not policy.offer_open(open_now=True, pending=200, max_pending=200, store_ok=True)


# --- fairness -------------------------------------------------------------------------------


def test_callback_goes_only_ahead_of_later_live_callers() -> None:
    oldest_live = T0 + 60_000
    assert policy.callback_is_due_before(T0, 0, oldest_live)
    assert not policy.callback_is_due_before(T0 + 60_000, 0, oldest_live)  # tie: live first
    assert not policy.callback_is_due_before(T0 + 90_000, 0, oldest_live)
    assert policy.callback_is_due_before(T0 + 10**9, 0, None)  # nobody holding


def test_priority_boost_lets_a_callback_overtake_by_that_many_seconds() -> None:
    oldest_live = T0
    assert not policy.callback_is_due_before(T0 + 30_000, 0, oldest_live)
    assert policy.callback_is_due_before(T0 + 30_000, 31, oldest_live)
    assert not policy.callback_is_due_before(T0 + 30_000, 30, oldest_live)


def test_join_before_bound_matches_the_predicate() -> None:
    assert policy.join_before_ms(None, 45) is None
    assert policy.join_before_ms(T0, 0) == T0
    assert policy.join_before_ms(T0, 45) == T0 + 45_000
    bound = policy.join_before_ms(T0, 12.5)
    assert bound is not None
    for join in range(T0 - 1000, T0 + 20_000, 250):
        assert (join < bound) == policy.callback_is_due_before(join, 12.5, T0)


# --- capacity -------------------------------------------------------------------------------


def test_dispatch_slots_never_exceed_ready_members() -> None:
    for ready in range(0, 6):
        for in_flight in range(0, 8):
            slots = policy.dispatch_slots(ready_members=ready, in_flight=in_flight)
            assert 0 <= slots <= ready
            assert slots + in_flight <= max(ready, in_flight)
    assert policy.dispatch_slots(ready_members=3, in_flight=1) == 2
    assert policy.dispatch_slots(ready_members=1, in_flight=4) == 0


# --- retry and expiry -----------------------------------------------------------------------


def test_retry_is_one_interval_after_the_failed_attempt() -> None:
    assert policy.next_attempt_ms(T0, 120, 1) == T0 + 120_000
    assert policy.next_attempt_ms(T0, 120, 2) == T0 + 120_000
    assert policy.next_attempt_ms(T0, 0.5, 1) == T0 + 500
    assert policy.next_attempt_ms(T0, 120, 0) == T0  # never tried: due now


def test_expiry_after_max_age() -> None:
    assert not policy.is_expired(T0, T0 + 14_399_999, 14400)
    assert policy.is_expired(T0, T0 + 14_400_000, 14400)
    assert not policy.is_expired(T0, T0 + 10**12, None)
    assert not policy.is_expired(T0, T0 + 10**12, 0)


# --- plan_dispatch --------------------------------------------------------------------------


@dataclass
class Cand:
    name: str
    join_time_ms: int
    next_attempt_ms: int = 0


def _plan(cands: list[Cand], *, ready: int, in_flight: int = 0, oldest: int | None,
          boost: float = 0, now: int = T0 + 10**6) -> list[str]:  # fmt: skip
    chosen = policy.plan_dispatch(
        ready_members=ready, in_flight=in_flight, oldest_live_join_ms=oldest,
        priority_boost_s=boost, candidates=cands, now_ms=now,
    )  # fmt: skip
    return [c.name for c in chosen]


def test_plan_takes_earliest_join_first_up_to_free_members() -> None:
    cands = [Cand("c", T0 + 3000), Cand("a", T0 + 1000), Cand("b", T0 + 2000)]
    assert _plan(cands, ready=2, oldest=None) == ["a", "b"]
    assert _plan(cands, ready=5, oldest=None) == ["a", "b", "c"]
    assert _plan(cands, ready=3, in_flight=2, oldest=None) == ["a"]
    assert _plan(cands, ready=2, in_flight=2, oldest=None) == []


def test_plan_never_dials_past_an_older_live_caller() -> None:
    cands = [Cand("a", T0 + 1000), Cand("b", T0 + 2000), Cand("c", T0 + 3000)]
    assert _plan(cands, ready=3, oldest=T0 + 2000) == ["a"]
    assert _plan(cands, ready=3, oldest=T0 + 500) == []
    assert _plan(cands, ready=3, oldest=T0 + 500, boost=1) == ["a"]
    assert _plan(cands, ready=3, oldest=T0 + 500, boost=2) == ["a", "b"]


def test_plan_skips_callbacks_waiting_for_their_retry_time() -> None:
    now = T0 + 100_000
    cands = [Cand("a", T0, next_attempt_ms=now + 1), Cand("b", T0 + 10), Cand("c", T0 + 20)]
    assert _plan(cands, ready=1, oldest=None, now=now) == ["b"]
    assert _plan(cands, ready=1, oldest=None, now=now + 1) == ["a"]


def test_plan_accepts_stored_callback_records() -> None:
    def cb(i: str, join: int) -> Callback:
        return Callback(
            id=i, queue="support", number="5551234", caller_name="", source_channel="",
            join_time_ms=join, created_ms=join, state=State.PENDING,
        )  # fmt: skip

    chosen = policy.plan_dispatch(
        ready_members=1, in_flight=0, oldest_live_join_ms=T0 + 5, priority_boost_s=0,
        candidates=[cb("late", T0 + 9), cb("early", T0 + 1)], now_ms=T0,
    )  # fmt: skip
    assert [c.id for c in chosen] == ["early"]

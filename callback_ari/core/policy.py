"""Pure offer and dispatch decisions, shared by the service, the dispatcher and the simulator.

Nothing here does I/O or reads a clock: every input is an argument, times are integer
milliseconds since the epoch (or seconds where the config speaks in seconds), so the same
functions drive the live service and ``callback-ari simulate``.

Virtual-hold fairness
    A callback keeps the join time of the call that asked for it. It is dialled only when that
    join time is earlier than the join time of the oldest live caller still waiting in the
    queue, so nobody who held on is overtaken by someone who hung up and asked to be called.
    Among callbacks, the earliest join time goes first. A per-queue ``priority_boost`` (seconds)
    lets callbacks overtake live callers who joined up to that many seconds before them.

Capacity
    Never more callbacks in flight than ready members: a callback that answers and presses 1
    is continued into the queue and must find an agent, otherwise the customer who was just
    promised a call is put on hold again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol, TypeVar

MS_PER_S = 1000


# --- offering -----------------------------------------------------------------------------


def offer_open(*, open_now: bool, pending: int, max_pending: int, store_ok: bool) -> bool:
    """Whether this queue takes callback requests at all right now.

    Closed outside business hours (or when the queue is disabled), once ``max_pending`` live
    callbacks are waiting, and while the store cannot be reached (a promise we cannot keep).
    """
    return open_now and store_ok and pending < max_pending


def should_offer(
    *,
    hold_s: float,
    est_wait_s: float | None,
    offer_threshold: int,
    offer_on_estimated_wait: int,
    open_now: bool,
    pending: int,
    max_pending: int,
    store_ok: bool,
) -> bool:
    """Whether a caller who has held ``hold_s`` seconds should be offered a callback now.

    Triggers (either is enough): held at least ``offer_threshold`` seconds (0 = never by hold
    time), or the estimated wait is at least ``offer_on_estimated_wait`` seconds (0 = off).
    ``hold_s=math.inf`` means the caller asked explicitly (pressed the queue's exit digit or
    reached the offer app): then only the :func:`offer_open` gates apply.
    """
    if not offer_open(
        open_now=open_now, pending=pending, max_pending=max_pending, store_ok=store_ok
    ):
        return False
    if math.isinf(hold_s):
        return True
    if offer_threshold > 0 and hold_s >= offer_threshold:
        return True
    return (
        offer_on_estimated_wait > 0
        and est_wait_s is not None
        and est_wait_s >= offer_on_estimated_wait
    )


# --- fairness -----------------------------------------------------------------------------


def join_before_ms(oldest_live_join_ms: int | None, priority_boost_s: float) -> int | None:
    """The exclusive join-time bound for claiming a callback; None when nobody is holding.

    A callback may be dialled when ``join_time_ms < bound``: its join time, moved earlier by
    the boost, is earlier than the oldest live caller's.
    """
    if oldest_live_join_ms is None:
        return None
    return oldest_live_join_ms + round(priority_boost_s * MS_PER_S)


def callback_is_due_before(
    join_time_ms: int, priority_boost_s: float, oldest_live_join_ms: int | None
) -> bool:
    """True when a callback that joined at ``join_time_ms`` goes ahead of every live caller."""
    bound = join_before_ms(oldest_live_join_ms, priority_boost_s)
    return bound is None or join_time_ms < bound


# --- capacity -----------------------------------------------------------------------------


def dispatch_slots(*, ready_members: int, in_flight: int) -> int:
    """How many more callbacks may be dialled now: ready members not already spoken for."""
    return max(0, ready_members - in_flight)


# --- retries and age ----------------------------------------------------------------------


def next_attempt_ms(now_ms: int, retry_interval_s: float, attempts: int) -> int:
    """When the next attempt is due after ``attempts`` attempts have been made.

    A fixed interval (what an administrator configures and expects to see): ``retry_interval``
    seconds after the attempt that just failed. Before the first attempt it is due at once.
    """
    if attempts <= 0:
        return now_ms
    return now_ms + round(retry_interval_s * MS_PER_S)


def is_expired(created_ms: int, now_ms: int, max_age_s: float | None) -> bool:
    """True once a callback is ``max_age_s`` seconds old (None or <= 0 = never expires)."""
    if max_age_s is None or max_age_s <= 0:
        return False
    return now_ms - created_ms >= round(max_age_s * MS_PER_S)


# --- one dispatch pass --------------------------------------------------------------------


class Candidate(Protocol):
    """What the planner reads from a callback (``models.Callback`` fits)."""

    @property
    def join_time_ms(self) -> int: ...

    @property
    def next_attempt_ms(self) -> int: ...


C = TypeVar("C", bound=Candidate)


def plan_dispatch(
    *,
    ready_members: int,
    in_flight: int,
    oldest_live_join_ms: int | None,
    priority_boost_s: float,
    candidates: Iterable[C],
    now_ms: int,
) -> list[C]:
    """The callbacks to dial now, earliest join time first.

    ``candidates`` are the queue's live callbacks not being dialled (pending or waiting for a
    retry). A candidate is taken when its retry time has come, it is due before the oldest
    live caller, and a ready member is free for it. This is what the dispatcher does with
    repeated ``claim_next(join_before_ms=...)`` calls against the store.
    """
    slots = dispatch_slots(ready_members=ready_members, in_flight=in_flight)
    if slots == 0:
        return []
    bound = join_before_ms(oldest_live_join_ms, priority_boost_s)
    chosen: list[C] = []
    for cb in sorted(candidates, key=lambda c: c.join_time_ms):
        if bound is not None and cb.join_time_ms >= bound:
            break  # sorted: every later candidate is gated too
        if cb.next_attempt_ms > now_ms:
            continue
        chosen.append(cb)
        if len(chosen) == slots:
            break
    return chosen

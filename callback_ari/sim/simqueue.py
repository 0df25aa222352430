"""A discrete-event model of one Asterisk queue with virtual-hold callbacks (virtual clock).

No asyncio, no Redis, no Asterisk: a heap of timed events and the same ``policy`` functions
the service uses to decide offers, fairness and capacity. Times are float seconds on the
virtual clock; the policy functions get integer milliseconds, as in the service.

The model, and where it simplifies:

- Callers arrive as a Poisson process and wait FIFO. Each has an exponential handle time and
  an exponential patience (it abandons when patience runs out; None = never).
- When a caller's hold reaches the offer threshold, ``policy.should_offer`` decides; a caller
  who accepts (probability ``accept_probability``) leaves the queue and becomes a callback
  that keeps the caller's join time. A caller who declines is not offered again.
- Whenever an agent is free, ``policy.plan_dispatch`` picks the callbacks due before the
  oldest live caller; otherwise the oldest live caller gets the agent.
- A callback attempt reserves a free agent (``dispatch_slots``: never more in flight than
  ready members) for ``answer_delay_s`` when the customer answers and presses 1
  (probability ``answer_probability``) or ``fail_delay_s`` when not; failed attempts are
  retried ``retry_interval_s`` later (``policy.next_attempt_ms``) up to ``max_attempts``.
- ``dialing_mode`` changes what an attempt costs. customer_first (reserved member): the agent
  is held while the customer is rung and presses 1, then ``queue_connect_s`` until app_queue
  rings them for the customer, who waits ``confirm_s + queue_connect_s`` after answering.
  agent_first: the agent is held for ``agent_setup_s`` (answering, the whisper), then while
  the customer is rung and presses 1 (``answer_delay_s``: the dialplan plays the same "press
  1" before the bridge), or ``fail_delay_s + release_s`` when the customer does not answer or
  confirm; the customer waits ``confirm_s`` after answering (the prompt and their key).
- After a call the agent spends ``wrapup_s`` in wrap-up. Arrivals stop after ``hours``; the
  run continues until every caller and callback is finished.
- Each caller's random draws are made at arrival from one stream, so every threshold sees
  the same callers (common random numbers): differences come from the policy, not luck.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import insort
from collections import OrderedDict
from dataclasses import dataclass

from callback_ari.core import policy

_ARRIVAL, _OFFER, _ABANDON, _CALL_DONE, _WRAP_DONE, _ATTEMPT_DONE, _RETRY_DUE = range(7)


@dataclass(frozen=True, slots=True)
class SimParams:
    """One queue's traffic and the callback settings under test."""

    arrivals_per_hour: float
    mean_handle_s: float
    agents: int
    hours: float = 8.0
    wrapup_s: float = 0.0
    mean_patience_s: float | None = None  # None or inf: nobody abandons
    accept_probability: float = 0.6
    answer_probability: float = 0.8  # an attempt is answered and confirmed (pressed 1)
    retry_interval_s: float = 120.0
    max_attempts: int = 3
    answer_delay_s: float = 15.0  # originate -> answered and pressed 1
    fail_delay_s: float = 30.0  # originate -> given up (ring timeout, busy, ...)
    max_pending: int = 200
    max_age_s: float | None = None
    priority_boost_s: float = 0.0
    warmup_hours: float = 0.0  # callers arriving earlier are simulated but not counted
    dialing_mode: str = "customer_first"  # or agent_first
    confirm_s: float = 7.0  # part of answer_delay_s: the "press 1" prompt and the key
    queue_connect_s: float = 1.0  # customer_first: joined at the head -> reserved agent rung
    agent_setup_s: float = 12.0  # agent_first: the agent answers (2 s), the whisper (10 s)
    release_s: float = 1.0  # agent_first: busy/congestion tone before the agent is released

    def __post_init__(self) -> None:
        problems = []
        if self.arrivals_per_hour <= 0:
            problems.append("arrivals_per_hour must be > 0")
        if self.mean_handle_s <= 0:
            problems.append("mean_handle_s must be > 0")
        if self.agents < 1:
            problems.append("agents must be >= 1")
        if self.hours <= 0 or self.warmup_hours < 0 or self.warmup_hours >= self.hours:
            problems.append("need hours > warmup_hours >= 0")
        if self.mean_patience_s is not None and self.mean_patience_s <= 0:
            problems.append("mean_patience_s must be > 0 (or None)")
        for name in ("accept_probability", "answer_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be within [0, 1]")
        if self.max_attempts < 1:
            problems.append("max_attempts must be >= 1")
        if self.dialing_mode not in ("customer_first", "agent_first"):
            problems.append("dialing_mode must be customer_first or agent_first")
        if not 0 <= self.confirm_s <= self.answer_delay_s:
            problems.append("confirm_s must be within [0, answer_delay_s]")
        if min(self.wrapup_s, self.retry_interval_s, self.answer_delay_s, self.fail_delay_s) < 0:
            problems.append("durations must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class SimStats:
    """What one run measured (counted callers only: those arriving after the warm-up)."""

    callers: int
    served_live: int
    abandoned: int
    offers: int
    callbacks_requested: int
    callbacks_connected: int
    callbacks_failed: int
    callbacks_expired: int
    attempts: int
    live_holds_s: tuple[float, ...]  # every live hold: until served, abandoned or accepted
    served_holds_s: tuple[float, ...]  # holds of callers an agent answered live
    request_to_connect_s: tuple[float, ...]  # callback accepted -> customer connected
    agent_idle_pending_s: float  # agent-seconds free while a callback was live
    agent_busy_s: float
    customer_waits_s: tuple[float, ...]  # connected callbacks: answering -> agent
    agent_held_s: float  # agent-seconds held by callback attempts (ringing, whisper, ...)
    elapsed_s: float  # from the end of the warm-up to the last event


class _Caller:
    __slots__ = ("accept_u", "answer_u", "counted", "handle_s", "join_s", "patience_s", "seq")

    def __init__(self, seq: int, join_s: float, rng: random.Random, p: SimParams) -> None:
        self.seq = seq
        self.join_s = join_s
        self.counted = join_s >= p.warmup_hours * 3600
        self.handle_s = rng.expovariate(1.0 / p.mean_handle_s)
        patience = p.mean_patience_s
        self.patience_s = math.inf if patience is None else rng.expovariate(1.0 / patience)
        self.accept_u = rng.random()
        self.answer_u = tuple(rng.random() for _ in range(p.max_attempts))


class _Callback:
    """A callback as the planner sees it (``policy.Candidate``)."""

    __slots__ = ("attempts", "caller", "created_s", "join_time_ms", "next_attempt_ms")

    def __init__(self, caller: _Caller, created_s: float) -> None:
        self.caller = caller
        self.join_time_ms = _ms(caller.join_s)
        self.next_attempt_ms = 0
        self.created_s = created_s
        self.attempts = 0

    def sort_key(self) -> tuple[int, int]:
        return self.join_time_ms, self.caller.seq


def _ms(t: float) -> int:
    return round(t * 1000)


class QueueModel:
    """One run of one queue under one offer threshold (None = callbacks never offered)."""

    def __init__(self, params: SimParams, threshold: int | None, seed: int) -> None:
        self.p = params
        self.threshold = threshold
        self._arrivals = random.Random(f"{seed}/callers")
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._caller_seq = 0
        self.now = 0.0
        self._warmup_s = params.warmup_hours * 3600
        self._horizon_s = params.hours * 3600
        self._live: OrderedDict[int, _Caller] = OrderedDict()
        self._candidates: list[_Callback] = []  # pending or retry_wait, by join time
        self._live_callbacks = 0  # pending + retry_wait + dialing
        self._free = params.agents  # ready members, including those held for an attempt
        self._busy = 0
        self._in_flight = 0
        self._callers = 0
        self._served = 0
        self._abandoned = 0
        self._offers = 0
        self._requested = 0
        self._connected = 0
        self._failed = 0
        self._expired = 0
        self._attempts = 0
        self._holds: list[float] = []
        self._served_holds: list[float] = []
        self._to_connect: list[float] = []
        self._idle_pending = 0.0
        self._busy_time = 0.0
        self._customer_waits: list[float] = []
        self._held = 0.0

    # --- engine -------------------------------------------------------------------------

    def run(self) -> SimStats:
        """Simulate until arrivals have stopped and every caller and callback is finished."""
        self._schedule(self._arrivals.expovariate(self.p.arrivals_per_hour / 3600), _ARRIVAL, None)
        handlers = (
            self._on_arrival,
            self._on_offer,
            self._on_abandon,
            self._on_call_done,
            self._on_wrap_done,
            self._on_attempt_done,
            self._on_retry_due,
        )
        while self._events:
            t, _, kind, obj = heapq.heappop(self._events)
            self._advance(t)
            handlers[kind](obj)
        return SimStats(
            callers=self._callers,
            served_live=self._served,
            abandoned=self._abandoned,
            offers=self._offers,
            callbacks_requested=self._requested,
            callbacks_connected=self._connected,
            callbacks_failed=self._failed,
            callbacks_expired=self._expired,
            attempts=self._attempts,
            live_holds_s=tuple(self._holds),
            served_holds_s=tuple(self._served_holds),
            request_to_connect_s=tuple(self._to_connect),
            agent_idle_pending_s=self._idle_pending,
            agent_busy_s=self._busy_time,
            customer_waits_s=tuple(self._customer_waits),
            agent_held_s=self._held,
            elapsed_s=max(0.0, self.now - self._warmup_s),
        )

    def _schedule(self, at: float, kind: int, obj: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, obj))

    def _advance(self, t: float) -> None:
        start = max(self.now, self._warmup_s)
        if t > start:
            dt = t - start
            self._busy_time += dt * self._busy
            if self._live_callbacks:
                self._idle_pending += dt * self._free
        self.now = t

    # --- events -------------------------------------------------------------------------

    def _on_arrival(self, _: object) -> None:
        self._caller_seq += 1
        caller = _Caller(self._caller_seq, self.now, self._arrivals, self.p)
        nxt = self.now + self._arrivals.expovariate(self.p.arrivals_per_hour / 3600)
        if nxt < self._horizon_s:
            self._schedule(nxt, _ARRIVAL, None)
        self._callers += caller.counted
        self._live[caller.seq] = caller
        if math.isfinite(caller.patience_s):
            self._schedule(self.now + caller.patience_s, _ABANDON, caller)
        if self.threshold is not None and self.threshold > 0:
            self._schedule(self.now + self.threshold, _OFFER, caller)
        self._dispatch()

    def _on_abandon(self, obj: object) -> None:
        caller = obj if isinstance(obj, _Caller) else None
        if caller is None or self._live.pop(caller.seq, None) is None:
            return  # already served or called back
        self._leave_live(caller)
        self._abandoned += caller.counted

    def _on_offer(self, obj: object) -> None:
        assert isinstance(obj, _Caller)
        caller = obj
        if caller.seq not in self._live:
            return
        offered = policy.should_offer(
            hold_s=round(self.now - caller.join_s, 6), est_wait_s=None,
            offer_threshold=self.threshold or 0, offer_on_estimated_wait=0, open_now=True,
            pending=self._live_callbacks, max_pending=self.p.max_pending, store_ok=True,
        )  # fmt: skip
        if not offered:
            return
        self._offers += caller.counted
        if caller.accept_u >= self.p.accept_probability:
            return  # declined: stays in the queue and is not asked again
        del self._live[caller.seq]
        self._leave_live(caller)
        self._requested += caller.counted
        self._live_callbacks += 1
        insort(self._candidates, _Callback(caller, self.now), key=_Callback.sort_key)
        self._dispatch()

    def _on_call_done(self, _: object) -> None:
        self._busy -= 1
        if self.p.wrapup_s > 0:
            self._schedule(self.now + self.p.wrapup_s, _WRAP_DONE, None)
        else:
            self._free += 1
            self._dispatch()

    def _on_wrap_done(self, _: object) -> None:
        self._free += 1
        self._dispatch()

    def _on_attempt_done(self, obj: object) -> None:
        assert isinstance(obj, _Callback)
        cb = obj
        self._in_flight -= 1
        counted = cb.caller.counted
        if cb.caller.answer_u[cb.attempts - 1] < self.p.answer_probability:
            self._live_callbacks -= 1
            self._connected += counted
            if counted:
                self._to_connect.append(self.now - cb.created_s)
                agent_first = self.p.dialing_mode == "agent_first"
                self._customer_waits.append(
                    self.p.confirm_s if agent_first else self.p.confirm_s + self.p.queue_connect_s
                )
            self._start_call(cb.caller)
        elif cb.attempts < self.p.max_attempts:
            cb.next_attempt_ms = policy.next_attempt_ms(
                _ms(self.now), self.p.retry_interval_s, cb.attempts
            )
            insort(self._candidates, cb, key=_Callback.sort_key)
            self._schedule(cb.next_attempt_ms / 1000, _RETRY_DUE, None)
        else:
            self._live_callbacks -= 1
            self._failed += counted
        self._dispatch()

    def _on_retry_due(self, _: object) -> None:
        self._dispatch()

    # --- decisions ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Give every free agent to a due callback or the oldest live caller (policy decides)."""
        while self._free - self._in_flight > 0:
            if self._candidates:
                self._expire()
                oldest = next(iter(self._live.values()), None)
                plan = policy.plan_dispatch(
                    ready_members=self._free, in_flight=self._in_flight,
                    oldest_live_join_ms=None if oldest is None else _ms(oldest.join_s),
                    priority_boost_s=self.p.priority_boost_s, candidates=self._candidates,
                    now_ms=_ms(self.now),
                )  # fmt: skip
                if plan:
                    for cb in plan:
                        self._start_attempt(cb)
                    continue
            if not self._live:
                return
            _, caller = self._live.popitem(last=False)
            self._leave_live(caller)
            if caller.counted:
                self._served += 1
                self._served_holds.append(self.now - caller.join_s)
            self._start_call(caller)

    def _expire(self) -> None:
        now_ms = _ms(self.now)
        keep = []
        for cb in self._candidates:
            if policy.is_expired(_ms(cb.created_s), now_ms, self.p.max_age_s):
                self._live_callbacks -= 1
                self._expired += cb.caller.counted
            else:
                keep.append(cb)
        self._candidates = keep

    def _start_attempt(self, cb: _Callback) -> None:
        self._candidates.remove(cb)
        self._in_flight += 1
        cb.attempts += 1
        self._attempts += cb.caller.counted
        answered = cb.caller.answer_u[cb.attempts - 1] < self.p.answer_probability
        p = self.p
        if p.dialing_mode == "agent_first":
            ring = p.answer_delay_s if answered else p.fail_delay_s + p.release_s
            delay = p.agent_setup_s + ring
        else:
            delay = p.answer_delay_s + p.queue_connect_s if answered else p.fail_delay_s
        if cb.caller.counted:
            self._held += delay
        self._schedule(self.now + delay, _ATTEMPT_DONE, cb)

    def _start_call(self, caller: _Caller) -> None:
        self._free -= 1
        self._busy += 1
        self._schedule(self.now + caller.handle_s, _CALL_DONE, None)

    def _leave_live(self, caller: _Caller) -> None:
        if caller.counted:
            self._holds.append(self.now - caller.join_s)

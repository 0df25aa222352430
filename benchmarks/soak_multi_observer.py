"""Ground truth for the multi-PBX soak, from each real PBX's own AMI (the harness's session).

Every PBX's AMI events (classes call, agent, user, system) are fed in, stamped with the wall
time the harness read them. What is kept, across all PBXs at once:

- channels: callback attempts (Uniqueid ``cb-<id>-a<n>``: the customer's Local channel in
  customer_first, the agent's in agent_first), customer legs (channel name
  ``Local/<number>@customers-...;1``, whoever dialled it), and the harness's inbound callers;
- the queues' state: live callers waiting in Queue() (QueueCallerJoin/Leave), members talking
  (AgentConnect until AgentComplete), callbacks bridged to an agent.

Checks made as events arrive (a PBX restart ends all of that PBX's channels at once):

- one live attempt per callback id, on all PBXs together (``double_originate``);
- one live customer leg per number, on all PBXs together (``number_twice``); a leg dialled
  while the number's other leg is already talking to an agent is ``number_talking`` (the gap
  the README states: the per-number lock ends at AgentConnect);
- capacity, judged ``JUDGE_DELAY_S`` after each attempt starts: members committed in the
  attempt's queue (members talking + live attempts not yet bridged) <= the queue's members.
  A member whose AgentComplete arrives within the delay is counted free (the service acts on
  the device state, which the agent's hang-up sets a moment before app_queue ends the call).
  An excess that live callers connected by app_queue within 1 s of the attempt explain is the
  documented race with app_queue (``capacity_race``), reported on its own row;
- fairness inputs: at each attempt, the oldest live caller waiting in that queue (Queue()
  entry, and first arrival), compared with the callback's stored join time after the run.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TextIO

ATTEMPT = re.compile(r"^cb-(?P<id>\d+)-a(?P<attempt>\d+)$")
CUSTOMER = re.compile(r"^Local/(?P<number>\+?\d+)@customers-[0-9a-f]+;1$")
AGENT = re.compile(r"^Local/(?P<agent>[a-z]+\d+)@soakagents-[0-9a-f]+;1$")
JUDGE_DELAY_S = 1.5
RACE_WINDOW_S = 1.0
JOIN_GRACE_S = 1.0  # callers who joined this shortly before an attempt are not judged
TRACED = frozenset({
    "Newchannel", "AgentConnect", "AgentComplete", "DialEnd", "QueueMemberStatus",
    "QueueCallerJoin", "QueueCallerLeave", "QueueMemberPause",
})  # fmt: skip
TRACE_FIELDS = ("Uniqueid", "Channel", "Queue", "Interface", "Status", "Paused",
                "PausedReason", "DialStatus", "DestUniqueid", "InCall")  # fmt: skip


@dataclass(slots=True)
class Chan:
    pbx: str
    uid: str
    kind: str  # attempt | customer | inbound
    created: float
    number: str = ""
    queue: str = ""
    cb_id: str = ""
    attempt: int = 0
    up: float = 0.0
    pressed: float = 0.0  # the customer's "1" (DTMFEnd on the attempt channel)
    bridged: float = 0.0  # AgentConnect (customer_first) or DialEnd ANSWER (agent_first)
    destroyed: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptSample:
    """The queue as an attempt started, for the fairness check after the run."""

    t: float
    pbx: str
    cb_id: str
    attempt: int
    queue: str
    oldest_entry: float | None  # Queue() entry (wall s) of the oldest live caller waiting
    oldest_origin: float | None  # the same callers' first arrival (harness placement)


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    t: float
    detail: str


@dataclass(slots=True)
class QueueState:
    mode: str
    members: int
    waiting: dict[str, float] = field(default_factory=dict)  # live caller uid -> entry
    talking: dict[str, str] = field(default_factory=dict)  # interface -> caller uid
    live_connects: list[float] = field(default_factory=list)  # AgentConnect of live callers


@dataclass(slots=True)
class _Pending:
    at: float
    queue: str
    uid: str
    talking: dict[str, str]
    in_flight: list[str]


class Observer:
    """Consumes every PBX's AMI events; keeps channels, queues, samples and violations."""

    def __init__(self, queues: dict[str, tuple[str, str, int]],
                 origin_of: dict[str, float]) -> None:  # fmt: skip
        """``queues``: name -> (pbx, mode, members); ``origin_of``: inbound uid -> placed."""
        self.queue_pbx = {q: p for q, (p, _, _) in queues.items()}
        self.queues = {q: QueueState(m, n) for q, (_, m, n) in queues.items()}
        self.cf_queue = {p: q for q, (p, m, _) in queues.items() if m == "customer_first"}
        self._origin_of = origin_of
        self.channels: dict[str, Chan] = {}
        self.live_attempts: defaultdict[str, set[str]] = defaultdict(set)  # cb id -> uids
        self.live_numbers: defaultdict[str, set[str]] = defaultdict(set)  # number -> uids
        self.live_inbound: defaultdict[str, set[str]] = defaultdict(set)  # number -> uids
        self.samples: list[AttemptSample] = []
        self.violations: list[Violation] = []
        self.counts: Counter[str] = Counter()
        self.attempts: dict[str, list[Chan]] = defaultdict(list)  # cb id -> its attempts
        self.waits: dict[str, list[tuple[float, float]]] = defaultdict(list)  # mode -> (w, idle)
        self._pending: list[_Pending] = []
        self.promises: list[tuple[float, str, str]] = []  # (t, uid, queue) RouteResult CALLBACK
        self.trace: TextIO | None = None  # the events the checks use, for a violation's story

    # --- queries ------------------------------------------------------------------------

    def busy(self, number: str) -> bool:
        return bool(self.live_numbers.get(number) or self.live_inbound.get(number))

    def live_calls(self) -> int:
        return sum(1 for c in self.channels.values() if not c.destroyed)

    # --- input --------------------------------------------------------------------------

    def add_inbound(self, pbx: str, uid: str, number: str, queue: str, t: float) -> None:
        self.channels[uid] = Chan(pbx, uid, "inbound", t, number=number, queue=queue)
        self.live_inbound[number].add(uid)

    def pbx_restarted(self, pbx: str, t: float) -> None:
        """A restart ends every call of that PBX; its queues start empty."""
        for ch in list(self.channels.values()):
            if ch.pbx == pbx and not ch.destroyed:
                self._gone(ch, t)
        for name, q in self.queues.items():
            if self.queue_pbx[name] == pbx:
                q.waiting.clear()
                q.talking.clear()

    def on_ami(self, pbx: str, m: dict[str, str], t: float) -> None:
        event = m.get("Event", "")
        uid = m.get("Uniqueid", "")
        if (
            self.trace is not None
            and event in TRACED
            and (event != "Newchannel" or ATTEMPT.match(uid) or CUSTOMER.match(m["Channel"]))
        ):
            fields = {k: m[k] for k in TRACE_FIELDS if m.get(k)}
            self.trace.write(f"{t:.3f} {pbx} {event} {fields}\n")
        if event == "Newchannel":
            self._new_channel(pbx, uid, m.get("Channel", ""), t)
        elif event == "Hangup":
            ch = self.channels.get(uid)
            if ch is not None and not ch.destroyed:
                self._gone(ch, t)
        elif event == "Newstate" and m.get("ChannelState") == "6":
            ch = self.channels.get(uid)
            if ch is not None and not ch.up:
                ch.up = t
        elif event == "DTMFEnd" and m.get("Digit") == "1":
            ch = self.channels.get(uid)
            if ch is not None and ch.kind == "attempt" and not ch.pressed:
                ch.pressed = t
        elif event == "QueueCallerJoin":
            q = self.queues.get(m.get("Queue", ""))
            if q is not None and not ATTEMPT.match(uid):
                q.waiting[uid] = t
        elif event in ("QueueCallerLeave", "QueueCallerAbandon"):
            q = self.queues.get(m.get("Queue", ""))
            if q is not None:
                q.waiting.pop(uid, None)
        elif event == "AgentConnect":
            self._agent_connect(m, uid, t)
        elif event == "AgentComplete":
            q = self.queues.get(m.get("Queue", ""))
            if q is not None:
                q.talking.pop(m.get("Interface", ""), None)
        elif event == "DialEnd" and m.get("DialStatus") == "ANSWER":
            # only agent_first: in customer_first app_queue's own Dial of the member ends
            # with ANSWER too, and AgentConnect is what counts there
            ch = self.channels.get(uid)
            if (
                ch is not None
                and ch.kind == "attempt"
                and not ch.bridged
                and self.queues.get(ch.queue, QueueState("", 0)).mode == "agent_first"
            ):
                ch.bridged = t
                self.counts["agent_first_bridged"] += 1
                leg = self.channels.get(m.get("DestUniqueid", ""))
                answered = leg.up if leg is not None and leg.up else t
                if leg is not None:
                    leg.bridged = t
                self.waits["agent_first"].append((t - answered, t - ch.created))
        elif (
            event == "UserEvent"
            and m.get("UserEvent") == "RouteResult"
            and m.get("QueueStatus") == "CALLBACK"
        ):
            self.promises.append((t, uid, m.get("Queue", "")))
        self.judge(t)

    # --- channels -----------------------------------------------------------------------

    def _new_channel(self, pbx: str, uid: str, name: str, t: float) -> None:
        attempt = ATTEMPT.match(uid)
        customer = CUSTOMER.match(name)
        if attempt is not None:
            agent = AGENT.match(name)
            if agent is not None:
                queue = agent["agent"].rstrip("0123456789")
            else:
                queue = self.cf_queue.get(pbx, "?")
            ch = Chan(pbx, uid, "attempt", t, queue=queue, cb_id=attempt["id"],
                      attempt=int(attempt["attempt"]))  # fmt: skip
            if customer is not None:
                ch.number = customer["number"]
            self.channels[uid] = ch
            self._attempt(ch, t)
        elif customer is not None:
            ch = Chan(pbx, uid, "customer", t, number=customer["number"])
            self.channels[uid] = ch
        else:
            return
        if ch.number:
            self._customer_leg(ch)

    def _attempt(self, ch: Chan, t: float) -> None:
        self.counts["attempts"] += 1
        self.counts[f"attempts_{ch.pbx}"] += 1
        others = self.live_attempts.get(ch.cb_id, set())
        for other in others:
            o = self.channels[other]
            self._violate(
                "double_originate",
                f"callback {ch.cb_id}: {ch.uid} on {ch.pbx} while {other} live on {o.pbx}",
            )
        self.live_attempts[ch.cb_id].add(ch.uid)
        self.attempts[ch.cb_id].append(ch)
        q = self.queues.get(ch.queue)
        if q is None:
            self._violate("unknown_queue", f"{ch.uid} on {ch.pbx}: queue {ch.queue!r}")
            return
        if self.queue_pbx[ch.queue] != ch.pbx:
            self._violate("wrong_pbx", f"{ch.uid}: queue {ch.queue} dialled on {ch.pbx}")
        # an agent_first attempt holds its member until it ends; a customer_first one until
        # app_queue connects it (then the member shows in ``talking``)
        in_flight = [
            u
            for c in self.live_attempts.values()
            for u in c
            if self.channels[u].queue == ch.queue
            and (q.mode == "agent_first" or not self.channels[u].bridged)
        ]
        self._pending.append(_Pending(t, ch.queue, ch.uid, dict(q.talking), in_flight))
        waiting = [(e, u) for u, e in q.waiting.items() if e <= t - JOIN_GRACE_S]
        entry = min((e for e, _ in waiting), default=None)
        origin = min((self._origin_of.get(u, e) for e, u in waiting), default=None)
        self.samples.append(AttemptSample(t, ch.pbx, ch.cb_id, ch.attempt, ch.queue, entry, origin))

    def _customer_leg(self, ch: Chan) -> None:
        for other in self.live_numbers.get(ch.number, set()):
            o = self.channels[other]
            # the per-number lock ends at AgentConnect (README, several PBXs): a customer
            # already talking to an agent is told apart from two calls ringing at once
            check = "number_talking" if o.bridged else "number_twice"
            self._violate(
                check,
                f"...{ch.number[-4:]}: {ch.uid} on {ch.pbx} while {o.uid} live on {o.pbx}"
                + (f" (talking to an agent since {o.bridged:.3f})" if o.bridged else ""),
            )
        if self.live_inbound.get(ch.number):
            self.counts["dialled_while_inbound_up"] += 1
        self.live_numbers[ch.number].add(ch.uid)
        self.counts["customer_legs"] += 1

    def _gone(self, ch: Chan, t: float) -> None:
        ch.destroyed = t
        if ch.kind == "inbound":
            self.live_inbound[ch.number].discard(ch.uid)
            if not self.live_inbound[ch.number]:
                del self.live_inbound[ch.number]
            for q in self.queues.values():
                q.waiting.pop(ch.uid, None)
            return
        if ch.number:
            live = self.live_numbers.get(ch.number)
            if live is not None:
                live.discard(ch.uid)
                if not live:
                    del self.live_numbers[ch.number]
        if ch.kind == "attempt":
            live = self.live_attempts.get(ch.cb_id)
            if live is not None:
                live.discard(ch.uid)
                if not live:
                    del self.live_attempts[ch.cb_id]

    def _agent_connect(self, m: dict[str, str], uid: str, t: float) -> None:
        q = self.queues.get(m.get("Queue", ""))
        if q is None:
            return
        q.talking[m.get("Interface", "")] = uid
        ch = self.channels.get(uid)
        if ch is not None and ch.kind == "attempt":
            if not ch.bridged:
                ch.bridged = t
                self.counts["customer_first_bridged"] += 1
                self.waits["customer_first"].append((t - (ch.up or t), t - ch.created))
                if ch.pressed:
                    self.waits["customer_first_after_1"].append((t - ch.pressed, 0.0))
        else:
            q.live_connects.append(t)
            del q.live_connects[:-50]
            self.counts["live_connects"] += 1

    # --- capacity -----------------------------------------------------------------------

    def judge(self, now: float) -> None:
        """Judge capacity for the attempts that started ``JUDGE_DELAY_S`` ago or more."""
        while self._pending and self._pending[0].at <= now - JUDGE_DELAY_S:
            p = self._pending.pop(0)
            q = self.queues[p.queue]
            still = {i: u for i, u in p.talking.items() if q.talking.get(i) == u}
            committed = len(still) + len(p.in_flight)
            excess = committed - q.members
            self.counts["capacity_samples"] += 1
            if excess <= 0:
                continue
            steals = sum(1 for c in q.live_connects if abs(c - p.at) <= RACE_WINDOW_S)
            check = "capacity_race" if excess <= steals else "capacity"
            self._violate(
                check,
                f"{p.queue}: attempt {p.uid} at {p.at:.3f}: {len(p.in_flight)} attempts in "
                f"flight + {len(still)} members talking > {q.members} members "
                f"({steals} live callers connected within {RACE_WINDOW_S:.0f} s)",
            )

    def harness_error(self, detail: str) -> None:
        self._violate("harness_error", detail)

    def finish(self) -> None:
        self.judge(time.time() + 3600)

    def _violate(self, check: str, detail: str) -> None:
        self.violations.append(Violation(check, time.time(), detail))

"""Watches the fake PBX from the inside: channel lifetimes, originates, Stasis stays, prompts.

Hooks (read-only, synchronous, so every sample is taken at the very moment it describes):

- ``poll`` runs as a predicate of ``SimAsterisk.wait_for``: the fake calls it after every ARI
  event, AMI event and REST request (``Pbx.notify``). It reads the new ARI requests (originates)
  and the new Stasis event log records (StasisStart/End, PlaybackStarted).
- ``on_ami`` is an AMI listener (``Pbx.ami_listeners``): AgentConnect and Hangup.

Nothing here acts on the PBX; reactions (key presses, agent hang-ups) go through callbacks that
only schedule work for later.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from soak_settings import SoakSettings

from callback_ari.sim.simpbx.members import Member
from callback_ari.sim.simpbx.sim import SimAsterisk

CB_CHANNEL = re.compile(r"^cb-(?P<id>[A-Za-z0-9-]+?)-a(?P<attempt>\d+)$")
# A live caller who joined Queue() less than this before an originate may not have reached
# the service over AMI when it claimed the callback: such callers do not count for fairness,
# and members they took in that time count as taken "first" by app_queue (the steal race).
RACE_GRACE_S = 1.0
# QueueStatus reports a member's LastCall in whole seconds: a watcher that missed the
# AgentComplete (AMI down, or a fresh process) ends the wrap-up up to 1 s early. Capacity
# excesses explained by that, within this long after an AMI reconnect, are a known issue.
LASTCALL_WINDOW_S = 10.0

PromptHook = Callable[[str, str], None]  # (channel id, media uri)
ConnectHook = Callable[[str, str], None]  # (queue, caller channel id)


@dataclass(slots=True)
class Chan:
    """A channel the soak cares about: an inbound caller or a callback attempt."""

    id: str
    kind: str  # "inbound" | "callback"
    number: str
    queue: str
    created: float
    cb_id: str = ""
    attempt: int = 0
    app: str = ""
    epoch: int = 0  # which start of that app's service process originated it
    bridged: bool = False  # an agent answered it (AgentConnect)
    talking: bool = False  # between AgentConnect and AgentComplete
    destroyed: float | None = None


@dataclass(frozen=True, slots=True)
class OriginateSample:
    """The fake's state at the moment one callback originate was accepted."""

    t: float
    cb_id: str
    attempt: int
    queue: str
    app: str
    oldest_entry_ms: int | None  # Queue() entry time of the oldest waiting live caller
    oldest_origin_ms: int | None  # CB_JOIN (first arrival) of the same set of callers
    in_flight: int  # live callback channels of the queue not yet bridged, this one included
    ready: int  # members app_queue would ring now
    steals: int  # live callers app_queue connected since the oldest in-flight originate
    foreign: int  # calls of another instance / a killed process: in flight, or took a member


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    t: float
    detail: str


class Observer:
    """Ground truth about calls, kept from hooks into the fake."""

    def __init__(
        self,
        sim: SimAsterisk,
        settings: SoakSettings,
        *,
        apps: tuple[str, ...],
        queue_of: Callable[[str], str | None],
        on_prompt: PromptHook,
        on_agent_connect: ConnectHook,
    ) -> None:
        self.sim = sim
        self.settings = settings
        self.apps = frozenset(apps)
        self._queue_of = queue_of
        self._on_prompt = on_prompt
        self._on_agent_connect = on_agent_connect
        self.channels: dict[str, Chan] = {}
        self.live_by_number: defaultdict[str, set[str]] = defaultdict(set)
        self.in_flight: defaultdict[str, dict[str, Chan]] = defaultdict(dict)
        self.cb_live: defaultdict[str, set[str]] = defaultdict(set)
        # queue -> (when, app, epoch) of each AgentConnect not of a callback in flight: app ""
        # for live callers, else the callback's service (its member was taken meanwhile)
        self.grabs: defaultdict[str, deque[tuple[float, str, int]]] = defaultdict(
            lambda: deque(maxlen=10_000)
        )
        self.stasis_in: dict[str, tuple[float, str]] = {}
        self.stasis_max = 0.0
        self.samples: list[OriginateSample] = []
        self.violations: list[Violation] = []
        self.counts: Counter[str] = Counter()
        self.bridged_callbacks: set[str] = set()
        self.epochs: Counter[str] = Counter()  # app -> service starts so far
        self.resyncs: deque[float] = deque(maxlen=100)  # AMI reconnects we caused
        self._req_idx = 0
        self._seq = 0
        self._busy = False

    # --- queries for the load generator and the drain ----------------------------------

    def busy(self, number: str) -> bool:
        """Is anybody on the phone with this number (inbound or being called back)?"""
        return bool(self.live_by_number.get(number))

    def has_live_callback(self, number: str) -> bool:
        ids = self.live_by_number.get(number, ())
        return any(self.channels[c].kind == "callback" for c in ids if c in self.channels)

    def live(self, kind: str) -> int:
        return sum(
            1 for ids in self.live_by_number.values() for c in ids if self.channels[c].kind == kind
        )

    def add_inbound(self, channel_id: str, number: str, queue: str) -> None:
        ch = Chan(channel_id, "inbound", number, queue, time.time())
        self.channels[channel_id] = ch
        self.live_by_number[number].add(channel_id)
        self.counts["inbound_calls"] += 1

    def new_epoch(self, app: str) -> None:
        """A service process for ``app`` (re)started: its predecessor's calls are orphans."""
        self.epochs[app] += 1
        self.note_resync()

    def note_resync(self) -> None:
        """The service's AMI session was (re)established: it resynchronised with QueueStatus."""
        self.resyncs.append(time.time())

    # --- hooks -------------------------------------------------------------------------

    def poll(self) -> bool:
        """``wait_for`` predicate: consume what is new. Never true (runs until cancelled)."""
        if self._busy:
            return False
        self._busy = True
        try:
            self._read_stasis()
            self._read_requests()
        finally:
            self._busy = False
        return False

    def on_ami(self, name: str, fields: list[tuple[str, str]]) -> None:
        if name == "AgentConnect":
            values = dict(fields)
            self._agent_connect(values.get("Queue", ""), values.get("Uniqueid", ""))
        elif name == "AgentComplete":
            uid = next((v for k, v in fields if k == "Uniqueid"), "")
            ch = self.channels.get(uid)
            if ch is not None:
                ch.talking = False
        elif name == "Hangup":
            uid = next((v for k, v in fields if k == "Uniqueid"), "")
            self._gone(uid, time.time())

    def compact(self) -> None:
        """Drop the fake's logs the soak has consumed (keeps a long run's memory flat)."""
        self.poll()
        del self.sim.ari.requests[: self._req_idx]
        self._req_idx = 0
        self.sim.pbx.ami_log.clear()
        self.sim.ami.actions.clear()

    def finish(self) -> None:
        """End of run: channels still in Stasis longer than the bound are violations."""
        self.poll()
        now = time.time()
        for channel_id, (since, kind) in list(self.stasis_in.items()):
            stay = now - since
            self.stasis_max = max(self.stasis_max, stay)
            if stay > self.settings.stasis_bound_s:
                self._violate("stasis", f"{kind} channel {channel_id} still in Stasis {stay:.1f} s")

    # --- ARI requests: originates ------------------------------------------------------

    def _read_requests(self) -> None:
        requests = self.sim.ari.requests
        while self._req_idx < len(requests):
            r = requests[self._req_idx]
            self._req_idx += 1
            path = r.path
            if r.method == "DELETE" and r.status == 204 and path.count("/") == 3:
                self._hung_up(path.rsplit("/", 1)[-1])
            if r.status == 409:
                self.counts["ari_409"] += 1
            if r.method != "POST" or r.status != 200:
                continue
            if path == "/ari/channels" or (
                path.startswith("/ari/channels/")
                and path.count("/") == 3
                and not path.endswith("/create")
            ):
                channel_id = r.query.get("channelId") or path.rsplit("/", 1)[-1]
                self._originated(channel_id, r.query, r.at)

    def _hung_up(self, channel_id: str) -> None:
        """The service hung a channel up (DELETE): never one that is talking to an agent."""
        ch = self.channels.get(channel_id)
        if ch is not None and ch.talking:
            self._violate(
                "cut_call",
                f"{ch.kind} channel {channel_id} ({ch.queue}) hung up by the service while "
                "talking to an agent",
            )

    def _originated(self, channel_id: str, query: dict[str, str], at: float) -> None:
        m = CB_CHANNEL.match(channel_id)
        if m is None:
            self.counts["foreign_originates"] += 1
            return
        cb_id, attempt = m["id"], int(m["attempt"])
        number = re.sub(r"\D", "", query.get("endpoint", "").split("@", 1)[0])
        queue = self._queue_of(number) or "?"
        app = query.get("app", "")
        self.counts["originates"] += 1
        self.counts[f"originates_{app}"] += 1
        for other in self.cb_live.get(cb_id, ()):
            self._violate("double_originate", f"callback {cb_id}: {channel_id} while {other} live")
        for other in self.live_by_number.get(number, ()):
            peer = self.channels[other]
            if peer.kind == "callback" and peer.cb_id != cb_id:
                self._violate(
                    "number_twice",
                    f"{number[-4:]}: callback {cb_id} ({channel_id}) while callback "
                    f"{peer.cb_id} ({other}) live",
                )
        if any(self.channels[c].kind == "inbound" for c in self.live_by_number.get(number, ())):
            self.counts["dialled_while_caller_on_line"] += 1
        ch = Chan(channel_id, "callback", number, queue, at, cb_id, attempt, app, self.epochs[app])
        self.channels[channel_id] = ch
        gone = channel_id not in self.sim.pbx.channels
        if gone:  # already failed (invalid number): it never held a member
            ch.destroyed = at
            self.counts["originates_dead_on_arrival"] += 1
        else:
            self.live_by_number[number].add(channel_id)
            self.cb_live[cb_id].add(channel_id)
            self.in_flight[queue][channel_id] = ch
        self._sample(ch, at)

    def _sample(self, ch: Chan, at: float) -> None:
        q = self.sim.queues.get(ch.queue)
        if q is None:
            self.counts["originates_unknown_queue"] += 1
            return
        entry_ms: int | None = None
        origin_ms: int | None = None
        for e in q.entries:
            caller = e.ch
            if caller.id.startswith("cb-") or not caller.alive or e.joined > at - RACE_GRACE_S:
                continue
            joined = int(e.joined * 1000)
            text = caller.variables.get("CB_JOIN", "")
            first = int(text) if text.isdigit() else joined
            entry_ms = joined if entry_ms is None else min(entry_ms, joined)
            origin_ms = first if origin_ms is None else min(origin_ms, first)
        # a member the service paused for this callback's reservation counts as its member
        ready = sum(1 for m in q.members if m.ready() or _reserved(m))
        flying = list(self.in_flight[ch.queue].values())  # this one too, unless already gone
        earliest = min((c.created for c in flying), default=at)
        recent = [g for g in self.grabs[ch.queue] if g[0] >= earliest - RACE_GRACE_S]
        steals = sum(1 for _, app, _ in recent if not app)
        others = sum(1 for _, app, epoch in recent if app and (app, epoch) != (ch.app, ch.epoch))
        foreign = others + sum(1 for c in flying if (c.app, c.epoch) != (ch.app, ch.epoch))
        sample = OriginateSample(
            at,
            ch.cb_id,
            ch.attempt,
            ch.queue,
            ch.app,
            entry_ms,
            origin_ms,
            len(flying),
            ready,
            steals,
            foreign,
        )
        self.samples.append(sample)
        excess = sample.in_flight - sample.ready - sample.steals
        if excess <= 0:
            return
        check = "capacity_cross" if foreign else "capacity"
        if check == "capacity" and any(at - t <= LASTCALL_WINDOW_S for t in self.resyncs):
            ending = sum(
                1
                for m in q.members
                if (m.free() or _held_for_callback(m))
                and not m.ready()
                and m.wrapup_until - at <= 1.0
            )
            if excess <= ending:
                check = "capacity_lastcall"
        self._violate(
            check,
            f"{ch.queue}: originate {ch.id} by {ch.app} at {at:.3f}: {sample.in_flight} in "
            f"flight ({foreign} not this process's) > {sample.ready} ready + {sample.steals} "
            "taken by live callers",
        )

    # --- ARI events: Stasis stays and prompts ------------------------------------------

    def _read_stasis(self) -> None:
        log = self.sim.pbx.stasis.log
        if not log or log[-1].seq <= self._seq:
            return
        start = self._seq - log[0].seq + 1
        if start < 0:
            self.counts["observer_missed_events"] += -start
            start = 0
        for record in log[start:]:
            if record.app in self.apps:
                self._event(record.event)
        self._seq = log[-1].seq

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "PlaybackStarted":
            playback = event.get("playback", {})
            target = str(playback.get("target_uri", ""))
            if target.startswith("channel:"):
                self._on_prompt(target[8:], str(playback.get("media_uri", "")))
            return
        channel_id = str(event.get("channel", {}).get("id", ""))
        if kind == "StasisStart":
            args = event.get("args") or [""]
            self.stasis_in[channel_id] = (time.time(), str(args[0]))
            self.counts[f"stasis_{args[0]}"] += 1
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            self._leave_stasis(channel_id, time.time())

    def _leave_stasis(self, channel_id: str, now: float) -> None:
        entered = self.stasis_in.pop(channel_id, None)
        if entered is None:
            return
        since, kind = entered
        stay = now - since
        self.stasis_max = max(self.stasis_max, stay)
        if stay > self.settings.stasis_bound_s:
            self._violate("stasis", f"{kind} channel {channel_id} stayed {stay:.1f} s in Stasis")

    # --- AMI ---------------------------------------------------------------------------

    def _agent_connect(self, queue: str, caller_id: str) -> None:
        ch = self.channels.get(caller_id)
        now = time.time()
        if ch is not None and ch.kind == "callback":
            ch.bridged = ch.talking = True
            self.in_flight[ch.queue].pop(ch.id, None)
            self.bridged_callbacks.add(ch.cb_id)
            self.counts["callback_agent_connects"] += 1
            self.grabs[queue].append((now, ch.app, ch.epoch))
        else:
            if ch is not None:
                ch.bridged = ch.talking = True
                self.counts["inbound_agent_connects"] += 1
            self.grabs[queue].append((now, "", 0))
        self._on_agent_connect(queue, caller_id)

    def _gone(self, channel_id: str, now: float) -> None:
        self._leave_stasis(channel_id, now)
        ch = self.channels.get(channel_id)
        if ch is None or ch.destroyed is not None:
            return
        ch.destroyed = now
        self.live_by_number[ch.number].discard(channel_id)
        if not self.live_by_number[ch.number]:
            del self.live_by_number[ch.number]
        if ch.kind == "callback":
            self.in_flight[ch.queue].pop(channel_id, None)
            live = self.cb_live.get(ch.cb_id)
            if live is not None:
                live.discard(channel_id)
                if not live:
                    del self.cb_live[ch.cb_id]

    def _violate(self, check: str, detail: str) -> None:
        self.violations.append(Violation(check, time.time(), detail))


def _held_for_callback(m: Member) -> bool:
    """Paused by a callback-ari reservation (reason ``<app>:<id>``), idle apart from that."""
    if not (m.paused and m.paused_reason.startswith("callback-ari")):
        return False
    return m.devstate in ("NOT_INUSE", "UNKNOWN") and not m.in_call


def _reserved(m: Member) -> bool:
    """Held for a callback and out of wrap-up: the member that callback will get."""
    return _held_for_callback(m) and time.time() >= m.wrapup_until

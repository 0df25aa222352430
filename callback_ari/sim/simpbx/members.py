"""Queue and member state of the emulated app_queue, and the AMI field blocks describing them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from callback_ari.sim.simpbx.model import Bridge, Channel

DEVSTATE_CODE = {
    "UNKNOWN": 0,
    "NOT_INUSE": 1,
    "INUSE": 2,
    "BUSY": 3,
    "INVALID": 4,
    "UNAVAILABLE": 5,
    "RINGING": 6,
    "RINGINUSE": 7,
    "ONHOLD": 8,
}
STARTED = int(time.time()) - 4192  # LoginTime of static members: when "Asterisk" started


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """A static member as queues.conf declares it: ``member => interface,penalty,name,state``."""

    interface: str
    name: str = ""
    state_interface: str = ""
    penalty: int = 0
    state: str = "NOT_INUSE"

    @classmethod
    def of(cls, spec: str | MemberSpec) -> MemberSpec:
        """``"agent1"`` means ``Local/agent1@agents/n`` named agent1 with ``Custom:agent1``."""
        if isinstance(spec, MemberSpec):
            return spec
        if "/" in spec:
            return cls(interface=spec, name=spec, state_interface=spec)
        return cls(f"Local/{spec}@agents/n", spec, f"Custom:{spec}")


@dataclass(eq=False)
class Member:
    """A queue member and its counters."""

    interface: str
    name: str
    state_interface: str
    penalty: int
    devstate: str
    paused: bool = False
    paused_reason: str = ""
    last_pause: int = 0
    calls_taken: int = 0
    last_call: int = 0
    in_call: bool = False
    wrapup_until: float = 0.0

    @property
    def status(self) -> int:
        """AMI Status code of the member's device state."""
        return DEVSTATE_CODE.get(self.devstate, 0)

    @property
    def exten_context(self) -> tuple[str, str]:
        """``Local/agent1@agents/n`` -> (agent1, agents)."""
        target = self.interface.split("/", 1)[-1].split("/", 1)[0]
        exten, _, context = target.partition("@")
        return exten, context or "default"

    def free(self) -> bool:
        """Could take a call apart from wrap-up (device idle, not paused, not talking)."""
        return self.devstate in ("NOT_INUSE", "UNKNOWN") and not self.paused and not self.in_call

    def ready(self) -> bool:
        """free() and out of wrap-up: app_queue would ring it now."""
        return self.free() and time.time() >= self.wrapup_until

    def logged(self) -> bool:
        """Logged in (device neither unavailable nor invalid)."""
        return self.devstate not in ("UNAVAILABLE", "INVALID")


@dataclass(eq=False)
class Entry:
    """A caller inside Queue(): waiting, or bridged to a member."""

    ch: Channel
    queue: str
    prio: int
    joined: float
    original_position: int = 0
    position: int = 0
    result: asyncio.Future[str | tuple[str, str, str]] | None = None
    withdraw_info: str | None = None
    member: Member | None = None
    legs: tuple[Channel, Channel] | None = None
    bridge: Bridge | None = None
    connected_at: float = 0.0
    option_c: bool = False


@dataclass(eq=False)
class QueueState:
    """One queue: members, callers waiting (in order) and statistics."""

    name: str
    members: list[Member]
    wrapup: float = 0.0
    handle_time: float | None = None
    timeout: int | None = None  # CB_WAIT seconds before the timeout offer; None = no timeout
    exit_digit: str | None = "1"
    context: str = "callback-exit"
    strategy: str = "rrmemory"
    entries: list[Entry] = field(default_factory=list)
    talking: list[Entry] = field(default_factory=list)
    completed: int = 0
    abandoned: int = 0
    hold_total: float = 0.0
    talk_total: float = 0.0

    def avail(self) -> bool:
        """Queue:<name>_avail is NOT_INUSE when some member could take a call."""
        return any(m.devstate in ("NOT_INUSE", "UNKNOWN") and not m.paused for m in self.members)

    def renumber(self) -> None:
        """Positions 1..n in queue order."""
        for i, e in enumerate(self.entries, start=1):
            e.position = i

    def count(self, option: str) -> int | None:
        """QUEUE_MEMBER(queue, option)."""
        if option == "count":
            return len(self.members)
        if option == "logged":
            return sum(m.logged() for m in self.members)
        if option == "free":
            return sum(m.free() for m in self.members)
        if option == "ready":
            return sum(m.ready() for m in self.members)
        if option == "paused":
            return sum(m.paused for m in self.members)
        return None

    def holdtime(self) -> int:
        """Average hold time of answered calls, whole seconds."""
        return int(self.hold_total / self.completed) if self.completed else 0

    def talktime(self) -> int:
        """Average talk time of completed calls, whole seconds."""
        return int(self.talk_total / self.completed) if self.completed else 0


def member_fields(q: QueueState, m: Member, *, ringinuse: bool) -> list[tuple[str, str]]:
    """QueueMemberStatus / QueueMemberPause body (``Ringinuse`` only in events)."""
    fields = [
        ("Queue", q.name),
        ("MemberName", m.name),
        ("Interface", m.interface),
        ("StateInterface", m.state_interface),
        ("Membership", "static"),
        ("Penalty", str(m.penalty)),
        ("CallsTaken", str(m.calls_taken)),
        ("LastCall", str(m.last_call)),
        ("LastPause", str(m.last_pause)),
        ("LoginTime", str(STARTED)),
        ("InCall", "1" if m.in_call else "0"),
        ("Status", str(m.status)),
        ("Paused", "1" if m.paused else "0"),
        ("PausedReason", m.paused_reason),
    ]
    if ringinuse:
        fields.append(("Ringinuse", "0"))
    fields.append(("Wrapuptime", "0"))
    return fields


def queue_member_item(q: QueueState, m: Member) -> list[tuple[str, str]]:
    """One QueueMember item of QueueStatus."""
    fields = member_fields(q, m, ringinuse=False)
    fields[1] = ("Name", m.name)
    fields[2] = ("Location", m.interface)
    return fields


def queue_params_item(q: QueueState) -> list[tuple[str, str]]:
    """The QueueParams item of QueueStatus."""
    total = q.completed + q.abandoned
    perf = 100.0 if q.completed else 0.0
    perf2 = 100.0 * q.completed / total if total else 0.0
    return [
        ("Queue", q.name),
        ("Max", "0"),
        ("Strategy", q.strategy),
        ("Calls", str(len(q.entries))),
        ("Holdtime", str(q.holdtime())),
        ("TalkTime", str(q.talktime())),
        ("Completed", str(q.completed)),
        ("Abandoned", str(q.abandoned)),
        ("ServiceLevel", "0"),
        ("ServicelevelPerf", f"{perf:.1f}"),
        ("ServicelevelPerf2", f"{perf2:.1f}"),
        ("Weight", "0"),
    ]

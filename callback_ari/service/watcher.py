"""Live model of Asterisk queues (callers, members, readiness) kept from AMI, without polling."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import structlog

from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.clock import Clock
from callback_ari.core.estimator import HandleTimeEstimator
from callback_ari.core.queue_model import DeviceStatus, QueueCaller, QueueMember

__all__ = ["CallerListener", "DeviceStatus", "QueueCaller", "QueueMember", "QueueWatcher"]

log = structlog.get_logger(__name__)

_MAX_TIMER_SLEEP_S = 60.0
_FIRST_JOINS_KEPT = 20_000  # callers remembered for a return after an offer (~2 MB)
_L = TypeVar("_L")


CallerListener = Callable[[str, QueueCaller], None]
# fn(queue, caller, hold_s): the caller left Queue() by QueueCallerAbandon after hold_s seconds
AbandonListener = Callable[[str, QueueCaller, float], None]


@dataclass(slots=True)
class _QueueState:
    callers: dict[str, QueueCaller]  # by Uniqueid
    members: dict[str, QueueMember]  # by Interface
    ready: frozenset[str] = frozenset()
    free: frozenset[str] = frozenset()  # ready but for a pause


def _int(msg: AmiMessage, key: str, default: int = 0) -> int:
    try:
        return int(msg.get(key) or default)
    except ValueError:
        return default


def _flag(msg: AmiMessage, key: str) -> bool:
    return (msg.get(key) or "").strip().lower() in ("1", "true", "yes", "on")


class QueueWatcher:
    """The live state of the watched queues, fed AMI events by ``apply``.

    Fed the QueueStatus reply after every AMI login (``load_snapshot``, which replaces
    the state of the queues it covers) and then every AMI event (``apply``), it answers
    hold times, ready-member counts and wait estimates from memory, and calls
    ``on_member_ready`` listeners the moment a member becomes ready, including when a
    wrap-up ends (Asterisk announces nothing then): ``run()`` owns that timer; without
    it, call ``tick()`` at ``next_wrapup_end_ms()``.

    ``shared_lastcall`` mirrors queues.conf: a call answered in one queue starts the
    member's wrap-up in every queue. A call in progress makes the member busy in all
    watched queues regardless (the agent is on the phone).
    """

    def __init__(
        self,
        queues: Iterable[str],
        clock: Clock,
        *,
        wrapup_s: Mapping[str, int] | None = None,
        estimator: HandleTimeEstimator | None = None,
        shared_lastcall: bool = True,
        unknown_is_ready: bool = False,
    ) -> None:
        self._clock = clock
        self._states = {q: _QueueState({}, {}) for q in queues}
        self._wrapup = {q: int((wrapup_s or {}).get(q, 0)) for q in self._states}
        self.estimator = estimator if estimator is not None else HandleTimeEstimator()
        self._shared_lastcall = shared_lastcall
        self._unknown_is_ready = unknown_is_ready
        self._on_ready: list[Callable[[str], None]] = []
        self._on_free: list[Callable[[str], None]] = []
        self._on_join: list[CallerListener] = []
        self._on_leave: list[CallerListener] = []
        self._on_abandon: list[AbandonListener] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {q: [] for q in self._states}
        self._wakeup = asyncio.Event()
        # (queue, uniqueid) -> first join ms: a caller who declined an offer goes back to
        # Queue() "at the same position, same CB_JOIN" (README); app_queue's QueueCallerJoin
        # and Wait start over, so the first join is kept here (bounded: oldest dropped first)
        self._first_join: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._handlers: dict[str, Callable[[str, AmiMessage, int], None]] = {
            "queuecallerjoin": self._caller_join,
            "queuecallerleave": self._caller_leave,
            "queuecallerabandon": self._caller_leave,
            "queuememberadded": self._member_update,
            "queuememberstatus": self._member_update,
            "queuememberpause": self._member_update,
            "queuememberpenalty": self._member_update,
            "queuememberringinuse": self._member_update,
            "queuememberremoved": self._member_removed,
            "agentconnect": self._agent_connect,
            "agentcomplete": self._agent_complete,
        }

    # --- listeners --------------------------------------------------------------------

    def set_wrapup(self, wrapup_s: Mapping[str, int]) -> None:
        """New configured wrap-up times (SIGHUP reload) for the queues this watcher knows."""
        for queue, seconds in wrapup_s.items():
            if queue in self._wrapup:
                self._wrapup[queue] = int(seconds)

    def on_member_ready(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """``fn(queue)`` whenever a member of ``queue`` turns ready; returns an unsubscriber."""
        return _subscribe(self._on_ready, fn)

    def on_member_free(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """``fn(queue)`` whenever a member of ``queue`` frees up, paused or not (device free,
        no call, wrap-up over); returns an unsubscriber."""
        return _subscribe(self._on_free, fn)

    def on_caller_join(self, fn: CallerListener) -> Callable[[], None]:
        """``fn(queue, caller)`` when a caller joins (or is found by a resync)."""
        return _subscribe(self._on_join, fn)

    def on_caller_leave(self, fn: CallerListener) -> Callable[[], None]:
        """``fn(queue, caller)`` on QueueCallerLeave or QueueCallerAbandon, whichever is first."""
        return _subscribe(self._on_leave, fn)

    def on_caller_abandon(self, fn: AbandonListener) -> Callable[[], None]:
        """``fn(queue, caller, hold_s)`` on QueueCallerAbandon, before the leave listeners.

        Asterisk 22 also sends it for a caller taken out by QueueWithdrawCaller: listeners
        that care (the abandon follow-up) must tell those apart themselves.
        """
        return _subscribe(self._on_abandon, fn)

    # --- queries ----------------------------------------------------------------------

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(self._states)

    def callers(self, queue: str) -> list[QueueCaller]:
        """Callers in queue order (position 1 first)."""
        return sorted(self._state(queue).callers.values(), key=lambda c: c.position)

    def members(self, queue: str) -> list[QueueMember]:
        return list(self._state(queue).members.values())

    def oldest_join_ms(self, queue: str) -> int | None:
        """Join time of the longest-waiting live caller, or None when nobody waits."""
        callers = self._state(queue).callers.values()
        return min((c.join_time_ms for c in callers), default=None)

    def hold_time_s(self, queue: str, channel_or_uniqueid: str) -> float | None:
        for caller in self._state(queue).callers.values():
            if channel_or_uniqueid in (caller.channel, caller.uniqueid):
                return caller.hold_s(self._clock.now_ms())
        return None

    def ready_members(self, queue: str) -> int:
        return len(self.ready_interfaces(queue))

    def ready_interfaces(self, queue: str) -> frozenset[str]:
        """Interfaces of the members of ``queue`` ready now (app_queue's rules, not in a call)."""
        return self._ready_set(self._state(queue), self._clock.now_ms(), self._busy())

    def free_interfaces(self, queue: str) -> frozenset[str]:
        """Interfaces of the members of ``queue`` that would be ready now but for a pause."""
        return self._free_set(self._state(queue), self._clock.now_ms(), self._busy())

    def member(self, queue: str, interface: str) -> QueueMember | None:
        return self._state(queue).members.get(interface)

    def staffed_members(self, queue: str) -> int:
        """Members logged in and not paused: the ones who will answer this queue."""
        return sum(1 for m in self._state(queue).members.values() if m.logged_in and not m.paused)

    def estimated_wait_s(self, queue: str, position: int) -> float | None:
        """See HandleTimeEstimator; None until a call was completed or Asterisk gave a seed."""
        return self.estimator.estimate_wait_s(queue, position, self.staffed_members(queue))

    def next_wrapup_end_ms(self) -> int | None:
        """The earliest wrap-up still running, i.e. when ``tick()`` may find a new ready member."""
        now = self._clock.now_ms()
        ends = (
            end
            for state in self._states.values()
            for m in state.members.values()
            if (end := m.wrapup_end_ms) is not None and end > now
        )
        return min(ends, default=None)

    async def wait_ready(self, queue: str) -> None:
        """Return once ``queue`` has a ready member (at once if it has one now)."""
        if self.ready_members(queue) > 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters[queue]
        waiters.append(future)
        try:
            await future
        finally:
            if future in waiters:
                waiters.remove(future)

    # --- input ------------------------------------------------------------------------

    def apply(self, msg: AmiMessage) -> None:
        """Update the model from one AMI event; events for other queues are ignored."""
        if msg.kind != "event":
            return
        name = msg.name.lower()
        handler = self._handlers.get(name)
        queue = msg.get("Queue")
        if handler is None or queue is None or queue not in self._states:
            return
        id_field = "Uniqueid" if name.startswith("queuecaller") else "Interface"
        if not msg.get(id_field):  # keying it by '' would invent a phantom caller or member
            log.warning("watcher.event_without_id", ami_event=msg.name, missing=id_field)
            return
        now = self._clock.now_ms()
        handler(queue, msg, now)
        self._wakeup.set()
        self._evaluate(now)

    def load_snapshot(
        self, msgs: Iterable[AmiMessage], queues: Iterable[str] | None = None
    ) -> None:
        """Replace the state of ``queues`` (default: all watched) with a QueueStatus reply.

        Listeners hear the difference: callers gone while we were away leave, new ones
        join, and members found ready that were not before fire ``on_member_ready``.
        """
        now = self._clock.now_ms()
        covered = set(self._states) if queues is None else set(queues) & set(self._states)
        fresh = {q: _QueueState({}, {}) for q in covered}
        for msg in msgs:
            queue = msg.get("Queue")
            if queue not in fresh:
                continue
            assert queue is not None
            old, new = self._states[queue], fresh[queue]
            if msg.name == "QueueParams":
                self._seed_from_params(queue, msg)
            elif msg.name == "QueueMember":
                member = self._member_from(queue, msg, old.members.get(msg.get("Location") or ""))
                new.members[member.interface] = member
            elif msg.name == "QueueEntry":
                caller = self._caller_from(queue, msg, now - 1000 * _int(msg, "Wait"))
                known = old.callers.get(caller.uniqueid)
                if known is not None:  # keep the millisecond join time we saw
                    caller = dataclasses.replace(caller, join_time_ms=known.join_time_ms)
                caller = self._keep_first_join(caller)
                new.callers[caller.uniqueid] = caller
        for queue, new in fresh.items():
            old = self._states[queue]
            new.ready, new.free = old.ready, old.free
            self._states[queue] = new
            for uid in old.callers.keys() - new.callers.keys():
                self._notify(self._on_leave, old.callers[uid])
            for uid in new.callers.keys() - old.callers.keys():
                self._notify(self._on_join, new.callers[uid])
            log.info(
                "watcher.resynced", queue=queue, callers=len(new.callers), members=len(new.members)
            )
        self._wakeup.set()
        self._evaluate(now)

    def tick(self, now_ms: int | None = None) -> None:
        """Re-check readiness (wrap-ups that ended) and fire ``on_member_ready`` if due."""
        self._evaluate(self._clock.now_ms() if now_ms is None else now_ms)

    async def run(self) -> None:
        """Own the wrap-up timer: fire ``on_member_ready`` when a wrap-up ends; until cancelled."""
        while True:
            self._wakeup.clear()
            self.tick()
            deadline = self.next_wrapup_end_ms()
            if deadline is None:
                await self._wakeup.wait()
                continue
            delay = min(_MAX_TIMER_SLEEP_S, max(0.0, (deadline - self._clock.now_ms()) / 1000))
            async with asyncio.TaskGroup() as tg:
                sleeper = tg.create_task(self._clock.sleep(delay))
                waker = tg.create_task(self._wakeup.wait())
                await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                waker.cancel()

    # --- event handlers ---------------------------------------------------------------

    def _caller_join(self, queue: str, msg: AmiMessage, now: int) -> None:
        state = self._state(queue)
        caller = self._keep_first_join(self._caller_from(queue, msg, now))
        state.callers.pop(caller.uniqueid, None)
        for uid, other in state.callers.items():  # a priority caller is inserted ahead
            if other.position >= caller.position:
                state.callers[uid] = dataclasses.replace(other, position=other.position + 1)
        state.callers[caller.uniqueid] = caller
        log.debug(
            "watcher.caller_join", queue=queue, channel=caller.channel, position=caller.position
        )
        self._notify(self._on_join, caller)

    def _keep_first_join(self, caller: QueueCaller) -> QueueCaller:
        """The caller's first join in this queue, if they were here before (back after an
        offer); else remember this one."""
        key = (caller.queue, caller.uniqueid)
        first = self._first_join.get(key)
        if first is None:
            self._first_join[key] = caller.join_time_ms
            if len(self._first_join) > _FIRST_JOINS_KEPT:
                self._first_join.popitem(last=False)
            return caller
        if first < caller.join_time_ms:
            return dataclasses.replace(caller, join_time_ms=first)
        return caller

    def _caller_leave(self, queue: str, msg: AmiMessage, now: int) -> None:
        state = self._state(queue)
        uid = msg.get("Uniqueid") or ""
        caller = state.callers.pop(uid, None)
        if caller is None:
            channel = msg.get("Channel")
            uid = next((u for u, c in state.callers.items() if c.channel == channel), "")
            caller = state.callers.pop(uid, None)
        if msg.name.lower() == "queuecallerabandon":
            hold_s = float(_int(msg, "HoldTime", -1))
            if caller is None:  # joined before we watched: Asterisk says how long it held
                caller = self._caller_from(queue, msg, now - 1000 * max(0, int(hold_s)))
                self._notify_abandon(caller, hold_s if hold_s >= 0 else 0.0)
                return
            self._notify_abandon(caller, hold_s if hold_s >= 0 else caller.hold_s(now))
        if caller is None:
            return  # QueueCallerLeave after QueueCallerAbandon, or a caller from before us
        for other_uid, other in state.callers.items():
            if other.position > caller.position:
                state.callers[other_uid] = dataclasses.replace(other, position=other.position - 1)
        log.debug("watcher.caller_leave", queue=queue, channel=caller.channel, ami_event=msg.name)
        self._notify(self._on_leave, caller)

    def _member_update(self, queue: str, msg: AmiMessage, now: int) -> None:
        state = self._state(queue)
        interface = msg.get("Interface") or ""
        state.members[interface] = self._member_from(queue, msg, state.members.get(interface))

    def _member_removed(self, queue: str, msg: AmiMessage, now: int) -> None:
        self._state(queue).members.pop(msg.get("Interface") or "", None)

    def _agent_connect(self, queue: str, msg: AmiMessage, now: int) -> None:
        self._update_interface(msg.get("Interface") or "", queue, in_call=True)

    def _agent_complete(self, queue: str, msg: AmiMessage, now: int) -> None:
        interface = msg.get("Interface") or ""
        self._update_interface(interface, queue, in_call=False, last_call_ms=now)
        member = self._state(queue).members.get(interface)
        wrapup = member.wrapup_s if member is not None else self._wrapup[queue]
        self.estimator.observe(queue, _int(msg, "TalkTime"), wrapup)

    # --- internals --------------------------------------------------------------------

    def _state(self, queue: str) -> _QueueState:
        try:
            return self._states[queue]
        except KeyError:
            raise KeyError(f"queue {queue!r} is not watched") from None

    def _busy(self) -> set[str]:
        """Interfaces in a call from any watched queue: on the phone, so ready in none."""
        return {i for s in self._states.values() for i, m in s.members.items() if m.in_call}

    def _ready_set(self, state: _QueueState, now: int, busy: set[str]) -> frozenset[str]:
        return frozenset(
            interface
            for interface, m in state.members.items()
            if interface not in busy and m.is_ready(now, unknown_is_ready=self._unknown_is_ready)
        )

    def _free_set(self, state: _QueueState, now: int, busy: set[str]) -> frozenset[str]:
        return frozenset(
            interface
            for interface, m in state.members.items()
            if interface not in busy and m.is_free(now, unknown_is_ready=self._unknown_is_ready)
        )

    def _update_interface(
        self, interface: str, queue: str, *, in_call: bool, last_call_ms: int | None = None
    ) -> None:
        """The call's own queue gets ``in_call``; with shared_lastcall every queue its end."""
        for name, state in self._states.items():
            member = state.members.get(interface)
            if member is None:
                continue
            if name == queue:
                member = dataclasses.replace(member, in_call=in_call)
            if last_call_ms is not None and (name == queue or self._shared_lastcall):
                member = dataclasses.replace(member, last_call_ms=last_call_ms)
            state.members[interface] = member

    def _caller_from(self, queue: str, msg: AmiMessage, join_time_ms: int) -> QueueCaller:
        return QueueCaller(
            queue=queue,
            channel=msg.get("Channel") or "",
            uniqueid=msg.get("Uniqueid") or msg.get("Channel") or "",
            caller_number=msg.get("CallerIDNum") or "",
            caller_name=msg.get("CallerIDName") or "",
            position=_int(msg, "Position", 1),
            join_time_ms=join_time_ms,
        )

    def _member_from(self, queue: str, msg: AmiMessage, old: QueueMember | None) -> QueueMember:
        """From a QueueMember list item (Name, Location) or a QueueMember* event (MemberName,
        Interface). LastCall has whole seconds; AgentComplete gave us milliseconds: keep them."""
        last_call_ms = max(_int(msg, "LastCall") * 1000, old.last_call_ms if old else 0)
        own_wrapup = _int(msg, "Wrapuptime")
        paused = _flag(msg, "Paused") if "Paused" in msg else bool(old and old.paused)
        reason = msg.get("PausedReason") if "PausedReason" in msg else None
        if reason is None:
            reason = old.paused_reason if old else ""
        return QueueMember(
            queue=queue,
            interface=msg.get("Interface") or msg.get("Location") or "",
            name=msg.get("MemberName") or msg.get("Name") or (old.name if old else ""),
            state_interface=msg.get("StateInterface") or (old.state_interface if old else ""),
            status=_int(msg, "Status", old.status if old else DeviceStatus.UNKNOWN),
            paused=paused,
            in_call=_flag(msg, "InCall") if "InCall" in msg else bool(old and old.in_call),
            last_call_ms=last_call_ms,
            wrapup_s=own_wrapup if own_wrapup > 0 else self._wrapup[queue],
            paused_reason=reason if paused else "",
        )

    def _seed_from_params(self, queue: str, msg: AmiMessage) -> None:
        if "Wrapuptime" in msg:  # not sent by Asterisk 22; honoured if a version adds it
            self._wrapup[queue] = _int(msg, "Wrapuptime")
        talk = _int(msg, "TalkTime")
        if _int(msg, "Completed") > 0 and talk > 0:
            self.estimator.seed(queue, talk + self._wrapup[queue])

    def _evaluate(self, now: int) -> None:
        busy = self._busy()
        for queue, state in self._states.items():
            free = self._free_set(state, now, busy)
            freed, state.free = free - state.free, free
            if freed:
                for fn in list(self._on_free):
                    try:
                        fn(queue)
                    except Exception:
                        log.exception("watcher.listener_error", listener="member_free")
            ready = self._ready_set(state, now, busy)
            gained, state.ready = ready - state.ready, ready
            if not gained:
                continue
            log.info("watcher.member_ready", queue=queue, interfaces=sorted(gained))
            for future in self._waiters[queue]:
                if not future.done():
                    future.set_result(None)
            for fn in list(self._on_ready):
                try:
                    fn(queue)
                except Exception:
                    log.exception("watcher.listener_error", listener="member_ready")

    def _notify_abandon(self, caller: QueueCaller, hold_s: float) -> None:
        for fn in list(self._on_abandon):
            try:
                fn(caller.queue, caller, hold_s)
            except Exception:
                log.exception("watcher.listener_error", queue=caller.queue, listener="abandon")

    def _notify(self, listeners: list[CallerListener], caller: QueueCaller) -> None:
        for fn in list(listeners):
            try:
                fn(caller.queue, caller)
            except Exception:
                log.exception("watcher.listener_error", queue=caller.queue)


def _subscribe(listeners: list[_L], fn: _L) -> Callable[[], None]:
    listeners.append(fn)

    def unsubscribe() -> None:
        if fn in listeners:
            listeners.remove(fn)

    return unsubscribe

"""Emulated app_queue: callers join, wait, time out, exit by digit, are withdrawn or connected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from callback_ari.sim.simpbx.members import (
    Entry,
    Member,
    MemberSpec,
    QueueState,
    member_fields,
)
from callback_ari.sim.simpbx.model import Bridge, CallerId, Channel
from callback_ari.sim.simpbx.pbx import Pbx, QueueResult


class AmiRefusal(Exception):
    """An AMI action the queue refuses; the message is what Asterisk answers."""


class Queues:
    """Every queue of the fake and the callers inside them."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.queues: dict[str, QueueState] = {}

    # --- configuration ---------------------------------------------------------------------

    def add_queue(
        self,
        name: str,
        members: Sequence[str | MemberSpec] = (),
        *,
        wrapup: float = 0.0,
        handle_time: float | None = None,
        timeout: int | None = None,
        exit_digit: str | None = "1",
    ) -> QueueState:
        """Define a queue with static members."""
        specs = [MemberSpec.of(m) for m in members]
        q = QueueState(
            name,
            [
                Member(
                    s.interface,
                    s.name or s.interface,
                    s.state_interface or s.interface,
                    s.penalty,
                    s.state,
                )
                for s in specs
            ],
            wrapup=wrapup,
            handle_time=handle_time,
            timeout=timeout,
            exit_digit=exit_digit,
        )
        self.queues[name] = q
        return q

    def get(self, name: str) -> QueueState | None:
        """A queue by name."""
        return self.queues.get(name)

    def queue_member(self, queue: str, option: str) -> str:
        """QUEUE_MEMBER(queue,option) as a string; unknown queue gives 0 (not an error)."""
        q = self.queues.get(queue)
        if q is None:
            return "0"
        value = q.count(option)
        return "0" if value is None else str(value)

    # --- device state and pause --------------------------------------------------------------

    def _avail_event(self, q: QueueState, before: bool) -> None:
        after = q.avail()
        if after != before:
            state = "NOT_INUSE" if after else "INUSE"
            self._devstate_event(f"Queue:{q.name}_avail", state)

    def _devstate_event(self, device: str, state: str) -> None:
        self.pbx.ami("DeviceStateChange", "call,all", [("Device", device), ("State", state)])
        self.pbx.stasis.emit_global(
            "DeviceStateChanged", {"device_state": {"name": device, "state": state}}
        )

    def set_devstate(self, device: str, state: str) -> None:
        """``devstate change Custom:agent1 NOT_INUSE``: members using it follow."""
        self._devstate_event(device, state)
        for q in self.queues.values():
            for m in q.members:
                if device in (m.state_interface, m.interface):
                    before = q.avail()
                    m.devstate = state
                    self.pbx.ami(
                        "QueueMemberStatus", "agent,all", member_fields(q, m, ringinuse=True)
                    )
                    self._avail_event(q, before)
        for q in self.queues.values():
            self._try_connect(q)

    def pause(
        self, interface: str, paused: bool, queue: str | None = None, reason: str = ""
    ) -> str:
        """AMI QueuePause; returns the success message or raises AmiRefusal."""
        found = False
        for q in self.queues.values():
            if queue and q.name != queue:
                continue
            for m in q.members:
                if m.interface != interface:
                    continue
                found = True
                before = q.avail()
                m.paused = paused
                m.paused_reason = reason if paused else ""
                if paused:
                    m.last_pause = int(time.time())
                state = "INUSE" if paused else "NOT_INUSE"
                self._devstate_event(f"Queue:{q.name}_pause_{m.interface}", state)
                self._avail_event(q, before)
                self.pbx.ami("QueueMemberPause", "agent,all", member_fields(q, m, ringinuse=True))
        if not found:
            raise AmiRefusal("Interface not found")
        for q in self.queues.values():
            self._try_connect(q)
        return "Interface paused successfully" if paused else "Interface unpaused successfully"

    # --- Queue() -------------------------------------------------------------------------------

    def _caller_event(self, name: str, e: Entry, extra: list[tuple[str, str]]) -> None:
        fields = [*self.pbx.ami_channel_fields(e.ch), ("Queue", e.queue), *extra]
        self.pbx.ami(name, "agent,all", fields)

    def _insert(self, q: QueueState, e: Entry, position: int) -> None:
        # app_queue join_queue(): ahead of lower priorities; at the requested position if allowed
        index = len(q.entries)
        for i, cur in enumerate(q.entries):
            if e.prio > cur.prio or (position and e.prio >= cur.prio and position <= i + 1):
                index = i
                break
        q.entries.insert(index, e)
        q.renumber()

    async def run_queue(self, ch: Channel, args: list[str]) -> QueueResult:
        """Queue(name,options,,,timeout,,,,position) for the dialplan; returns QUEUESTATUS."""
        args = args + [""] * (9 - len(args))
        q = self.queues.get(args[0])
        if q is None:
            self.pbx.set_var(ch, "QUEUESTATUS", "UNKNOWN")
            return "UNKNOWN"
        timeout = int(args[4]) if args[4].strip().isdigit() else 0
        position = int(args[8]) if args[8].strip().isdigit() else 0
        prio_text = ch.variables.get("QUEUE_PRIO", "0")
        prio = int(prio_text) if prio_text.lstrip("-").isdigit() else 0
        for var in (
            "ANSWEREDTIME",
            "ANSWEREDTIME_MS",
            "DIALEDTIME",
            "DIALEDTIME_MS",
            "QUEUEWAIT",
            "QUEUEWAIT_MS",
        ):
            self.pbx.set_var(ch, var, "")
        e = Entry(ch, q.name, prio, time.time(), option_c="c" in args[1])
        e.result = asyncio.get_running_loop().create_future()
        self._insert(q, e, position)
        e.original_position = e.position
        ch.in_queue = q.name
        if len(q.entries) == 1:
            self._devstate_event(f"Queue:{q.name}", "RINGING")
        self._caller_event(
            "QueueCallerJoin", e, [("Position", str(e.position)), ("Count", str(len(q.entries)))]
        )
        self._try_connect(q)
        try:
            if timeout > 0:
                try:
                    async with asyncio.timeout(self.pbx.seconds(timeout)):
                        return await asyncio.shield(e.result)
                except TimeoutError:
                    if e in q.entries:
                        self._leave(q, e, "timeout")
                        return "TIMEOUT"
            return await e.result
        finally:
            if ch.in_queue == q.name and e in q.entries and not ch.alive:
                self._leave(q, e, "abandon")

    def _times(self, e: Entry) -> list[tuple[str, str]]:
        wait = self.pbx.elapsed(e.joined)
        dialed = self.pbx.elapsed(e.ch.created)
        return [
            ("QUEUEWAIT", str(int(wait))),
            ("QUEUEWAIT_MS", str(int(wait * 1000))),
            ("DIALEDTIME", str(int(dialed))),
            ("DIALEDTIME_MS", str(int(dialed * 1000))),
            ("ANSWEREDTIME", "0"),
            ("ANSWEREDTIME_MS", "0"),
        ]

    def _leave(self, q: QueueState, e: Entry, how: str, result: QueueResult | None = None) -> None:
        """The caller leaves while waiting: timeout, withdraw, digit or abandon (hang-up)."""
        ch = e.ch
        if how in ("timeout", "withdraw", "abandon"):
            times = self._times(e)
            if how == "timeout":
                times = [("ABANDONED", "TRUE"), *times]
            else:
                times = [*times, ("ABANDONED", "TRUE")]
            for name, value in times:
                self.pbx.set_var(ch, name, value)
            q.abandoned += 1
            hold = str(int(self.pbx.elapsed(e.joined)))
            self._caller_event(
                "QueueCallerAbandon",
                e,
                [
                    ("Position", str(e.position)),
                    ("OriginalPosition", str(e.original_position)),
                    ("HoldTime", hold),
                ],
            )
            if how == "withdraw":
                self.pbx.set_var(ch, "QUEUE_WITHDRAW_INFO", e.withdraw_info or "")
        position = e.position
        q.entries.remove(e)
        q.renumber()
        ch.in_queue = None
        if not q.entries:
            self._devstate_event(f"Queue:{q.name}", "NOT_INUSE")
        self._caller_event(
            "QueueCallerLeave", e, [("Position", str(position)), ("Count", str(len(q.entries)))]
        )
        if ch.alive:
            self.pbx.set_var(ch, "QUEUEPOSITION", str(position))
            if how in ("timeout", "withdraw"):
                self.pbx.set_var(ch, "QUEUESTATUS", how.upper())
        if e.result is not None and not e.result.done():
            e.result.set_result(how.upper() if result is None else result)

    def withdraw(self, queue: str, caller: str, info: str) -> None:
        """AMI QueueWithdrawCaller: the caller leaves ~0.5 s later with QUEUESTATUS=WITHDRAW."""
        q = self.queues.get(queue)
        entry = None if q is None else next((e for e in q.entries if e.ch.name == caller), None)
        if q is None or entry is None:
            raise AmiRefusal("Unable to request withdraw from queue: No such caller")
        if entry.withdraw_info is not None:
            raise AmiRefusal("Unable to request withdraw from queue: Already requested")
        entry.withdraw_info = info
        self.pbx.spawn(self._withdraw_later(q, entry))

    async def _withdraw_later(self, q: QueueState, e: Entry) -> None:
        await self.pbx.sleep(0.5)
        if e in q.entries and e.ch.alive:
            self._leave(q, e, "withdraw")

    def on_digit(self, ch: Channel, digit: str) -> None:
        """A key pressed while waiting: the exit digit leaves for the queue's context."""
        q = self.queues.get(ch.in_queue or "")
        e = None if q is None else next((x for x in q.entries if x.ch is ch), None)
        if q is None or e is None or q.exit_digit is None or digit not in q.exit_digit:
            return
        if self.pbx.dialplan.exists(q.context, digit):
            self._leave(q, e, "digit", ("goto", q.context, digit))

    def on_hangup(self, ch: Channel) -> None:
        """The caller's channel is hanging up: abandon, or end the call with reason caller."""
        q = self.queues.get(ch.in_queue or "")
        if q is None:
            ch.in_queue = None
            return
        waiting = next((e for e in q.entries if e.ch is ch), None)
        if waiting is not None:
            self._leave(q, waiting, "abandon")
            return
        talking = next((e for e in q.talking if e.ch is ch), None)
        if talking is not None:
            self._finish(q, talking, "caller")
        ch.in_queue = None

    # --- connecting to members -------------------------------------------------------------------

    def _try_connect(self, q: QueueState) -> None:
        for e in list(q.entries):
            member = next((m for m in q.members if m.ready()), None)
            if member is None:
                return
            if e.ch.alive:
                self._connect(q, e, member)

    def _connect(self, q: QueueState, e: Entry, m: Member) -> None:
        pbx, ch = self.pbx, e.ch
        exten, context = m.exten_context
        a1, a2 = pbx.local_pair(
            exten, context, ch.caller, app1=("AppQueue", "(Outgoing Line)"), linkedid=ch.linkedid
        )
        a1.connected = CallerId()
        m.in_call = True
        pbx.set_var(a1, "DIALEDPEERNUMBER", f"{exten}@{context}/n")
        pbx.set_var(a2, "DIALEDPEERNUMBER", f"{exten}@{context}/n")
        pbx.dial_event(a1, "", m.interface, caller=ch)
        a1.connected, a1.exten = ch.caller, ch.exten  # app_queue copies the caller's exten
        self.pbx.ami(
            "AgentCalled",
            "agent,all",
            [
                *pbx.ami_channel_fields(ch),
                *pbx.ami_channel_fields(a1, "Dest"),
                ("Queue", q.name),
                ("Interface", m.interface),
                ("MemberName", m.name),
            ],
        )
        a2.app_name, a2.app_data, a2.priority = "Echo", "", 2
        pbx.set_state(a2, "Up")
        pbx.set_state(a1, "Up")
        pbx.dial_event(a1, "ANSWER", m.interface, caller=ch)
        position = e.position
        q.entries.remove(e)
        q.renumber()
        if not q.entries:
            self._devstate_event(f"Queue:{q.name}", "NOT_INUSE")
        self._caller_event(
            "QueueCallerLeave", e, [("Position", str(position)), ("Count", str(len(q.entries)))]
        )
        hold = pbx.elapsed(e.joined)
        pbx.set_var(ch, "QUEUEPOSITION", str(position))
        pbx.set_var(ch, "QUEUEWAIT", str(int(hold)))
        pbx.set_var(ch, "QUEUEWAIT_MS", str(int(hold * 1000)))
        bridge = Bridge(channels=[a1.id, ch.id])
        pbx.bridges[bridge.id] = bridge
        pbx.set_var(a1, "BRIDGEPEER", ch.name)
        pbx.set_var(ch, "BRIDGEPEER", a1.name)
        e.member, e.legs, e.bridge = m, (a1, a2), bridge
        a1.agent_for = a2.agent_for = ch
        if mark := ch.variables.get("CB_MARK"):  # the kit's [callback-whisper] on the member
            pbx.globals[f"CB_REACHED_{mark}"] = ch.variables.get("CB_MARK_STAMP", "")
        e.connected_at = time.time()
        q.hold_total += hold
        q.talking.append(e)
        self.pbx.ami(
            "AgentConnect",
            "agent,all",
            [
                *pbx.ami_channel_fields(ch),
                *pbx.ami_channel_fields(a1, "Dest"),
                ("Queue", q.name),
                ("Interface", m.interface),
                ("MemberName", m.name),
                ("HoldTime", str(int(hold))),
                ("RingTime", "0"),
            ],
        )
        if q.handle_time is not None:
            pbx.spawn(self._agent_hangs_up(q, e, q.handle_time))

    async def _agent_hangs_up(self, q: QueueState, e: Entry, after: float) -> None:
        await self.pbx.sleep(after)
        if e in q.talking:
            self._finish(q, e, "agent")
            if e.result is not None and not e.result.done():
                e.result.set_result("CONTINUE" if e.option_c else "HANGUP")

    def on_agent_hangup(self, leg: Channel) -> None:
        """A member's leg hangs up: ;2 (the agent) ends the call with reason agent."""
        caller, leg.agent_for = leg.agent_for, None
        q = self.queues.get(caller.in_queue or "") if caller is not None else None
        e = None if q is None else next((x for x in q.talking if x.ch is caller), None)
        if q is None or e is None:
            return
        self._finish(q, e, "agent" if leg.half == 2 else "caller")
        if e.result is not None and not e.result.done():
            e.result.set_result("CONTINUE" if e.option_c else "HANGUP")

    def agent_hangup(self, channel_id: str) -> bool:
        """Test hook: the agent talking to this caller hangs up now."""
        for q in self.queues.values():
            for e in list(q.talking):
                if e.ch.id == channel_id:
                    self._finish(q, e, "agent")
                    if e.result is not None and not e.result.done():
                        e.result.set_result("CONTINUE" if e.option_c else "HANGUP")
                    return True
        return False

    def _finish(self, q: QueueState, e: Entry, reason: str) -> None:
        pbx, ch, m = self.pbx, e.ch, e.member
        assert m is not None and e.legs is not None
        q.talking.remove(e)
        a1, a2 = e.legs
        talk = pbx.elapsed(e.connected_at)
        pbx.ami(
            "AgentComplete",
            "agent,all",
            [
                *pbx.ami_channel_fields(ch),
                *pbx.ami_channel_fields(a1, "Dest"),
                ("Queue", q.name),
                ("Interface", m.interface),
                ("MemberName", m.name),
                ("HoldTime", str(int(e.connected_at - e.joined))),
                ("TalkTime", str(int(talk))),
                ("Reason", reason),
            ],
        )
        pbx.set_var(ch, "BRIDGEPEER", "")
        dialed = pbx.elapsed(ch.created)
        for name, value in (
            ("ANSWEREDTIME", str(int(talk))),
            ("ANSWEREDTIME_MS", str(int(talk * 1000))),
            ("DIALEDTIME", str(int(dialed))),
            ("DIALEDTIME_MS", str(int(dialed * 1000))),
        ):
            pbx.set_var(ch, name, value)
        m.in_call = False
        m.calls_taken += 1
        m.last_call = int(time.time())
        m.wrapup_until = time.time() + pbx.seconds(q.wrapup)
        q.completed += 1
        q.talk_total += talk
        if e.bridge is not None:
            pbx.bridges.pop(e.bridge.id, None)
        ch.in_queue = None
        a1.agent_for = a2.agent_for = None
        for leg in (a2, a1) if reason == "agent" else (a1,):
            if leg.alive:
                pbx.hangup(leg, 16, soft=False)
        if q.wrapup > 0:
            pbx.spawn(self._after_wrapup(q))
        else:
            self._try_connect(q)

    async def _after_wrapup(self, q: QueueState) -> None:
        await self.pbx.sleep(q.wrapup)
        self._try_connect(q)
        self.pbx.notify()

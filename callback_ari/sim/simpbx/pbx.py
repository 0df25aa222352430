"""Core state of the fake Asterisk: channels, Local pairs, Stasis entry/exit and hang-ups.

The dialplan, media and queue parts build on this core and reach one another through it. The
core knows them only by the protocols below, so no part's module is imported here: ``attach``
hands the running parts to the core once they exist (``SimAsterisk`` does it).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import structlog

from callback_ari.sim.simpbx.extensions import Contexts, Extension
from callback_ari.sim.simpbx.members import QueueState
from callback_ari.sim.simpbx.model import (
    CAUSE_TEXT,
    STATE_CODE,
    Bridge,
    CallerId,
    Channel,
    Playback,
)
from callback_ari.sim.simpbx.stasis import Stasis

log = structlog.get_logger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
AmiListener = Callable[[str, list[tuple[str, str]]], None]
QueueResult = str | tuple[str, str, str]  # QUEUESTATUS, or ("goto", context, exten)


class BehaviourRules(Protocol):
    """What a dialled number does (answer, busy, ...): ``customers.Behaviours``."""

    def resolve(self, number: str) -> str: ...


class DialplanPart(Protocol):
    """The emulated dialplan (``dialplan.Dialplan``) as the core and the other parts use it."""

    @property
    def contexts(self) -> Contexts: ...
    @property
    def behaviours(self) -> BehaviourRules: ...
    async def run(self, ch: Channel, context: str, exten: str, priority: int) -> None: ...
    def read(self, ch: Channel | None, name: str) -> str | None: ...
    def find(self, context: str, exten: str, ch: Channel | None = None) -> Extension | None: ...
    def exists(self, context: str, exten: str, ch: Channel | None = None) -> bool: ...
    def expand(self, ch: Channel | None, text: str) -> str: ...
    def assign(self, ch: Channel, name: str, value: str) -> None: ...


class MediaPart(Protocol):
    """Playbacks and DTMF (``media.Media``) as the core and the other parts use them."""

    def play(
        self, ch: Channel, media: list[str], playback_id: str | None, lang: str
    ) -> Playback: ...
    def get(self, playback_id: str) -> Playback: ...
    def stop(self, playback_id: str) -> None: ...
    def fail_playbacks(self, ch: Channel) -> None: ...
    def record(
        self, ch: Channel, name: str, fmt: str, max_s: int, terminate_on: str, if_exists: str
    ) -> Any: ...
    def dtmf_received(self, ch: Channel, digit: str, duration_ms: int) -> None: ...
    def send_dtmf(
        self,
        ch: Channel,
        digits: str,
        *,
        before_ms: int = ...,
        between_ms: int = ...,
        duration_ms: int = ...,
    ) -> None: ...


class QueuesPart(Protocol):
    """app_queue (``queues.Queues``) as the core and the other parts use it."""

    @property
    def queues(self) -> dict[str, QueueState]: ...
    async def run_queue(self, ch: Channel, args: list[str]) -> QueueResult: ...
    def queue_member(self, queue: str, option: str) -> str: ...
    def set_devstate(self, device: str, state: str) -> None: ...
    def pause(
        self, interface: str, paused: bool, queue: str | None = None, reason: str = ""
    ) -> str: ...
    def withdraw(self, queue: str, caller: str, info: str) -> None: ...
    def on_digit(self, ch: Channel, digit: str) -> None: ...
    def on_hangup(self, ch: Channel) -> None: ...
    def on_agent_hangup(self, leg: Channel) -> None: ...


class AriFailure(Exception):
    """A REST request Asterisk would refuse: status, reason phrase and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def not_found() -> AriFailure:
    """The usual 404 for a channel id."""
    return AriFailure(404, "Not Found", "Channel not found")


class Pbx:
    """Channels and what happens to them; the ARI/AMI servers are thin views of this."""

    def __init__(self, *, time_scale: float, spawn: Spawn) -> None:
        self.time_scale = time_scale
        self.spawn = spawn
        self.stasis = Stasis(self.notify)
        self.channels: dict[str, Channel] = {}
        self.playbacks: dict[str, Playback] = {}
        self.bridges: dict[str, Bridge] = {}
        self.stored_recordings: dict[str, str] = {}  # name -> format (ARI stored recordings)
        # False: astspooldir/recording is missing, as on a fresh Debian install; Asterisk 22
        # then answers 500 to listing and to recording
        self.recording_dir = True
        self.globals: dict[str, str] = {}
        self.ami_listeners: list[AmiListener] = []
        self.ami_log: list[tuple[str, list[tuple[str, str]]]] = []
        self._parts: tuple[DialplanPart, MediaPart, QueuesPart] | None = None
        self._uid_seq = 100
        self._local_seq = 0x30
        self._teardowns: deque[Channel] = deque()
        self._draining = False
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def attach(self, *, dialplan: DialplanPart, media: MediaPart, queues: QueuesPart) -> None:
        """Hand the core its parts, once: they are built on the core, so they come after it."""
        if self._parts is not None:
            raise RuntimeError("the PBX parts are attached already")
        self._parts = (dialplan, media, queues)

    def _attached(self) -> tuple[DialplanPart, MediaPart, QueuesPart]:
        if self._parts is None:
            raise RuntimeError("no dialplan, media or queues attached to the PBX yet")
        return self._parts

    @property
    def dialplan(self) -> DialplanPart:
        """The emulated dialplan."""
        return self._attached()[0]

    @property
    def media(self) -> MediaPart:
        """Playbacks and DTMF."""
        return self._attached()[1]

    @property
    def queues(self) -> QueuesPart:
        """app_queue."""
        return self._attached()[2]

    # --- time, ids, waiting ------------------------------------------------------------

    def seconds(self, s: float) -> float:
        """Real seconds for a PBX duration under time_scale."""
        return s * self.time_scale

    def elapsed(self, since: float) -> float:
        """PBX seconds since a wall-clock moment (scaled back)."""
        return (time.time() - since) / self.time_scale

    async def sleep(self, s: float) -> None:
        """Sleep a PBX duration."""
        await asyncio.sleep(self.seconds(s))

    def new_uniqueid(self) -> str:
        """``<epoch>.<seq>`` like Asterisk."""
        self._uid_seq += 1
        return f"{int(time.time())}.{self._uid_seq}"

    def new_suffix(self) -> str:
        """The global 8-hex-digit channel name counter."""
        self._local_seq += 1
        return f"{self._local_seq:08x}"

    def notify(self) -> None:
        """Something changed: wake waiters whose condition now holds."""
        for pred, fut in list(self._waiters):
            if not fut.done() and pred():
                fut.set_result(None)

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        """Wait until pred() is true (checked after every event and state change)."""
        if pred():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            await fut
        finally:
            self._waiters.remove(entry)

    # --- AMI ---------------------------------------------------------------------------

    def ami(self, name: str, privilege: str, fields: list[tuple[str, str]]) -> None:
        """Publish one AMI event to every logged-in connection."""
        full = [("Privilege", privilege), *fields]
        self.ami_log.append((name, full))
        for listener in list(self.ami_listeners):
            listener(name, full)
        self.notify()

    @staticmethod
    def ami_channel_fields(ch: Channel, prefix: str = "") -> list[tuple[str, str]]:
        """The standard channel block of AMI events (``Dest`` prefix for the other party)."""
        conn = ch.connected or ch.caller
        return [
            (f"{prefix}Channel", ch.name),
            (f"{prefix}ChannelState", str(STATE_CODE.get(ch.state, 0))),
            (f"{prefix}ChannelStateDesc", ch.state),
            (f"{prefix}CallerIDNum", ch.caller.number or "<unknown>"),
            (f"{prefix}CallerIDName", ch.caller.name or "<unknown>"),
            (f"{prefix}ConnectedLineNum", conn.number or "<unknown>"),
            (f"{prefix}ConnectedLineName", conn.name or "<unknown>"),
            (f"{prefix}Language", ch.language),
            (f"{prefix}AccountCode", ""),
            (f"{prefix}Context", ch.context),
            (f"{prefix}Exten", ch.exten),
            (f"{prefix}Priority", str(ch.priority)),
            (f"{prefix}Uniqueid", ch.id),
            (f"{prefix}Linkedid", ch.linkedid or ch.id),
        ]

    # --- ARI events --------------------------------------------------------------------

    def emit(self, kind: str, ch: Channel, body: dict[str, Any] | None = None, **kw: Any) -> None:
        """A channel event with the channel snapshot as it is now."""
        self.stasis.emit(kind, [ch], {**(body or {}), "channel": ch.to_json()}, **kw)

    def set_var(self, ch: Channel, name: str, value: str) -> None:
        """Set a channel variable and publish ChannelVarset."""
        ch.variables[name] = value
        self.emit("ChannelVarset", ch, pre={"variable": name, "value": value})

    def set_state(self, ch: Channel, state: str) -> None:
        """Change the channel state and publish ChannelStateChange."""
        if ch.state != state:
            ch.state = state
            self.emit("ChannelStateChange", ch)

    def dial_event(
        self, peer: Channel, status: str, dialstring: str, caller: Channel | None = None
    ) -> None:
        """Dial event; routed to subscribers of the peer and of the caller."""
        body: dict[str, Any] = {"dialstatus": status, "forward": "", "dialstring": dialstring}
        channels = [peer]
        if caller is not None:
            body["caller"] = caller.to_json()
            channels.append(caller)
        body["peer"] = peer.to_json()
        self.stasis.emit("Dial", channels, body)

    # --- channel creation ----------------------------------------------------------------

    def _check_ids(self, *ids: str | None) -> None:
        for cid in ids:
            if cid and cid in self.channels:
                raise AriFailure(409, "Conflict", "Channel with given unique ID already exists")

    def add_channel(self, ch: Channel) -> Channel:
        """Register a channel (visible in GET /channels)."""
        self.channels[ch.id] = ch
        return ch

    def local_pair(
        self,
        exten: str,
        context: str,
        caller: CallerId,
        *,
        id1: str | None = None,
        id2: str | None = None,
        app1: tuple[str, str] = ("AppDial2", "(Outgoing Line)"),
        linkedid: str | None = None,
    ) -> tuple[Channel, Channel]:
        """A Local/<exten>@<context> pair: ;1 Down (the dialling side), ;2 Ring (runs dialplan)."""
        self._check_ids(id1, id2)
        uid1 = id1 or self.new_uniqueid()
        uid2 = id2 or self.new_uniqueid()
        base = f"Local/{exten}@{context}-{self.new_suffix()}"
        ch1 = Channel(uid1, base + ";1", "Down", caller, context, exten, 1, app1[0], app1[1])
        ch2 = Channel(uid2, base + ";2", "Ring", caller, context, exten, 1)
        ch1.half, ch2.half = 1, 2
        ch1.dial_app = app1
        ch2.has_pbx = True
        ch1.peer, ch2.peer = ch2, ch1
        ch1.linkedid = ch2.linkedid = linkedid or uid1
        self.add_channel(ch1)
        self.add_channel(ch2)
        return ch1, ch2

    # --- Stasis --------------------------------------------------------------------------

    def enter_stasis(self, ch: Channel, app: str, args: list[str], from_dialplan: bool) -> bool:
        """Stasis(app,args): StasisStart if the app has a socket, else STASISSTATUS=FAILED."""
        ch.app_name = "Stasis"
        ch.app_data = ",".join([app, *args])
        self.set_var(ch, "STASISSTATUS", "")
        if not self.stasis.active(app):
            self.set_var(ch, "STASISSTATUS", "FAILED")
            return False
        self.stasis.subscribe(app, ch)
        ch.stasis_app = app
        ch.stasis_from_dialplan = from_dialplan
        ch.entered_app = True
        ch.stasis_done = asyncio.get_running_loop().create_future()
        self.stasis.emit(
            "StasisStart", [ch], {"args": list(args), "channel": ch.to_json()}, only_app=app
        )
        return True

    def _leave_stasis(self, ch: Channel) -> None:
        app = ch.stasis_app
        if app is None:
            return
        ch.stasis_app = None
        if ch.stasis_from_dialplan:
            self.stasis.emit("StasisEnd", [ch], {"channel": ch.to_json()}, only_app=app)
            self.stasis.unsubscribe(app, ch)
            self.set_var(ch, "STASISSTATUS", "SUCCESS")
        else:
            self.stasis.emit("StasisEnd", [ch], {"channel": ch.to_json()}, only_app=app)
            if ch.alive and ch.dial_app is not None:
                ch.app_name, ch.app_data = ch.dial_app
        if ch.stasis_done is not None and not ch.stasis_done.done():
            ch.stasis_done.set_result(None)

    def control(self, channel_id: str) -> Channel:
        """A channel in Stasis (res/ari find_control): 404 unknown, 409 not in Stasis."""
        ch = self.channels.get(channel_id)
        if ch is None or not ch.alive:
            raise not_found()
        if ch.stasis_app is None:
            raise AriFailure(409, "Conflict", "Channel not in Stasis application")
        return ch

    def control_up(self, channel_id: str) -> Channel:
        """control() plus the 412 for channels still Down/Ringing."""
        ch = self.control(channel_id)
        if ch.state in ("Down", "Rsrvd", "Ringing"):
            raise AriFailure(412, "Precondition Failed", "Channel in invalid state")
        return ch

    def continue_in_dialplan(
        self, ch: Channel, context: str | None, exten: str | None, priority: int | None
    ) -> None:
        """POST /continue: leave Stasis and run the dialplan from the target."""
        if not context:
            ctx, ext = ch.context, exten or ch.exten
            prio = priority or (ch.priority + 1 if not exten else 1)
        else:
            ctx, ext, prio = context, exten or "s", priority or 1
        from_dialplan = ch.stasis_from_dialplan
        ch.continue_to = (ctx, ext, prio)
        self._leave_stasis(ch)
        if not from_dialplan:
            self.start_dialplan(ch, ctx, ext, prio)

    def start_dialplan(self, ch: Channel, context: str, exten: str, priority: int) -> None:
        """Run the emulated dialplan on the channel in a task of its own."""
        self.spawn(self.dialplan.run(ch, context, exten, priority))

    # --- answering / dial outcome --------------------------------------------------------

    def answer(self, ch: Channel) -> None:
        """Answer(): the channel goes Up; for a Local ;2 the dialling ;1 is answered too."""
        self.set_state(ch, "Up")
        peer = ch.peer
        if ch.half == 2 and peer is not None and peer.alive and peer.state != "Up":
            self.set_state(peer, "Up")
            self.dial_event(peer, "ANSWER", f"{peer.exten}@{peer.context}/n")
            self.dial_answered(peer)

    def dial_answered(self, ch1: Channel) -> None:
        """The originated ;1 was answered: it enters its app (or the dialplan given)."""
        if ch1.originate_app is not None:
            if not self.enter_stasis(ch1, ch1.originate_app, ch1.app_args, from_dialplan=False):
                self.destroy(ch1)
        elif ch1.continue_to is not None:
            ctx, ext, prio = ch1.continue_to
            ch1.continue_to = None
            self.start_dialplan(ch1, ctx, ext, prio)

    def dial_failed(self, ch2: Channel, status: str, cause: int) -> None:
        """Busy()/Congestion() on a Local ;2: the dialling ;1 sees the status and is destroyed."""
        ch2.hangupcause = ch2.hangupcause or cause
        peer = ch2.peer
        if peer is not None and peer.alive and peer.state != "Up":
            self.dial_event(peer, status, f"{peer.exten}@{peer.context}/n")
            self.destroy(peer)

    # --- hang-up -------------------------------------------------------------------------

    def hangup(self, ch: Channel, cause: int, soft: bool) -> None:
        """Request a hang-up (ARI DELETE: soft 32; a caller hanging up: cause 16)."""
        self._request_hangup(ch, cause, soft)
        self._drain()

    def pbx_end(self, ch: Channel) -> None:
        """The channel's dialplan ended (Hangup() or fell off the end): soft hang-up 16."""
        if not ch.alive:
            return
        ch.hangupcause = ch.hangupcause or 16
        ch.hangup_requested = True
        self.emit("ChannelHangupRequest", ch, pre={"cause": 16, "soft": True})
        ch.has_pbx = False  # the pbx-end request is this one
        self._teardowns.append(ch)
        self._drain()

    def destroy(self, ch: Channel, propagate: bool = True) -> None:
        """Destroy a channel directly (failed dial ;1, invalid extension)."""
        self._destroy(ch, propagate)
        self._drain()

    def _request_hangup(self, ch: Channel, cause: int, soft: bool) -> None:
        if not ch.alive:
            return
        ch.hangup_requested = True
        if soft:
            ch.hangupcause = ch.hangupcause or 16
            pre: dict[str, Any] = {"cause": cause, "soft": True}
        else:
            if cause and not ch.hangupcause:
                ch.hangupcause = cause
            pre = {"cause": cause}
        self.emit("ChannelHangupRequest", ch, pre=pre)
        self._teardowns.append(ch)

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._teardowns:
                self._teardown(self._teardowns.popleft())
        finally:
            self._draining = False
        self.notify()

    def _teardown(self, ch: Channel) -> None:
        if ch.destroyed:
            return
        self.media.fail_playbacks(ch)
        self._leave_stasis(ch)
        if ch.in_queue is not None:
            self.queues.on_hangup(ch)
        if ch.agent_for is not None:
            self.queues.on_agent_hangup(ch)
        if ch.originate_app is not None and ch.entered_app:
            self.set_var(ch, "STASISSTATUS", "SUCCESS")
        current = asyncio.current_task()
        if ch.runner is not None and ch.runner is not current:
            ch.runner.cancel()
        if ch.has_pbx:
            self.emit("ChannelHangupRequest", ch, pre={"cause": 16, "soft": True})
        self._destroy(ch, True)

    def _destroy(self, ch: Channel, propagate: bool) -> None:
        if ch.destroyed:
            return
        ch.destroyed = True
        ch.hangup_requested = True
        self.media.fail_playbacks(ch)
        if ch.in_queue is not None:
            self.queues.on_hangup(ch)
        peer = ch.peer
        if propagate and peer is not None and peer.alive:
            self._request_hangup(peer, ch.hangupcause, soft=False)
        if ch.dial_app is not None:
            ch.app_name, ch.app_data = ch.dial_app
        else:
            ch.app_name = ch.app_data = ""
        cause = ch.hangupcause
        self.emit(
            "ChannelDestroyed", ch, {"cause": cause, "cause_txt": CAUSE_TEXT.get(cause, "Unknown")}
        )
        self.ami(
            "Hangup",
            "call,all",
            [
                *self.ami_channel_fields(ch),
                ("Cause", str(cause)),
                ("Cause-txt", CAUSE_TEXT.get(cause, "Unknown")),
            ],
        )
        self.channels.pop(ch.id, None)
        self.stasis.forget_channel(ch)
        current = asyncio.current_task()
        if ch.runner is not None and ch.runner is not current:
            ch.runner.cancel()
        if ch.stasis_done is not None and not ch.stasis_done.done():
            ch.stasis_done.set_result(None)

    # --- variables -------------------------------------------------------------------------

    def get_channel(self, channel_id: str) -> Channel:
        """Any live channel, or 404."""
        ch = self.channels.get(channel_id)
        if ch is None or ch.destroyed:
            raise not_found()
        return ch

    def read_variable(self, ch: Channel | None, name: str) -> str | None:
        """A channel variable, a global, or a dialplan function (QUEUE_MEMBER, CALLERID ...)."""
        return self.dialplan.read(ch, name)

    def channel_vars(self, ch: Channel) -> Mapping[str, str]:
        """The channel's variables (read-only view)."""
        return ch.variables

"""SimAsterisk: the fake Asterisk 22 (ARI + AMI on real sockets) and its control API for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from callback_ari.sim.simpbx.ami_server import ActionRecord, AmiServer
from callback_ari.sim.simpbx.ari_server import AriServer, RequestRecord, WsSink
from callback_ari.sim.simpbx.dialplan import Dialplan
from callback_ari.sim.simpbx.media import Media
from callback_ari.sim.simpbx.members import MemberSpec, QueueState
from callback_ari.sim.simpbx.model import CallerId, Channel
from callback_ari.sim.simpbx.pbx import Pbx
from callback_ari.sim.simpbx.queues import Queues

log = structlog.get_logger(__name__)


class SimAsterisk:
    """A wire-level Asterisk 22 for tests, the demo and benchmarks.

    ``async with SimAsterisk(time_scale=0.01) as sim:`` then point the service at
    ``sim.ari_url`` (cbuser/cbpass) and ``127.0.0.1:sim.ami_port`` (cbami/cbpass).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ari_port: int = 0,
        ami_port: int = 0,
        ari_user: str = "cbuser",
        ari_password: str = "cbpass",
        ami_user: str = "cbami",
        ami_secret: str = "cbpass",
        app: str = "callback-ari",
        time_scale: float = 1.0,
        incoming_context: str = "from-trunk",
        dialplan: str | None = None,
    ) -> None:
        self.host = host
        self._want_ari_port = ari_port
        self._want_ami_port = ami_port
        self.ari_user, self.ari_password = ari_user, ari_password
        self.ami_user, self.ami_secret = ami_user, ami_secret
        self.pbx = Pbx(time_scale=time_scale, spawn=self._spawn)
        self.dialplan = Dialplan(self.pbx, app=app, incoming_context=incoming_context)
        self.queues = Queues(self.pbx)
        self.pbx.attach(dialplan=self.dialplan, media=Media(self.pbx), queues=self.queues)
        self._extra_dialplan = dialplan
        self.ari = AriServer(self.pbx, username=ari_user, password=ari_password)
        self.ami = AmiServer(self.pbx, username=ami_user, secret=ami_secret)
        self.ari_port = 0
        self.ami_port = 0
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ami_server: asyncio.Server | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def ari_url(self) -> str:
        """HTTP base URL without /ari (the client appends it)."""
        return f"http://{self.host}:{self.ari_port}"

    async def start(self) -> None:
        """Listen on ARI and AMI ports (0 = any free port, see ari_port/ami_port after)."""
        started = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise(started))
        await started.wait()
        if self._extra_dialplan:
            self.dialplan.load(self._extra_dialplan)
        self._runner = web.AppRunner(self.ari.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen_ari(self._want_ari_port)
        await self._listen_ami(self._want_ami_port)
        log.info("simpbx.started", ari_port=self.ari_port, ami_port=self.ami_port)

    async def stop(self) -> None:
        """Close sockets, cancel every call task, stop listening."""
        self.ami.drop_connections()
        self.ari.drop_sockets(clean=True)
        if self._ami_server is not None:
            self._ami_server.close()
            self._ami_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._stopping.set()
        if self._supervisor is not None:
            await self._supervisor
            self._supervisor = None

    async def __aenter__(self) -> SimAsterisk:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _supervise(self, started: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            started.set()
            await self._stopping.wait()
            for task in list(self._tasks):
                task.cancel()
        self._tg = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._tg is None:
            coro.close()
            raise RuntimeError("SimAsterisk is not running")
        task = self._tg.create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("simpbx.task_failed")

    async def _listen_ari(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        if self.ari_port == 0 and isinstance(server, asyncio.Server):
            self.ari_port = int(server.sockets[0].getsockname()[1])

    async def _listen_ami(self, port: int) -> None:
        self._ami_server = await asyncio.start_server(
            self.ami.handle, self.host, port, reuse_address=True
        )
        self.ami_port = int(self._ami_server.sockets[0].getsockname()[1])

    # --- fault injection -----------------------------------------------------------------------

    def drop_ari_sockets(self, clean: bool = False) -> int:
        """Close every /ari/events socket (clean: close frame 1000; else TCP abort)."""
        return self.ari.drop_sockets(clean)

    def drop_ami_connections(self) -> int:
        """Abort every AMI connection."""
        return self.ami.drop_connections()

    def freeze_ami(self, frozen: bool = True) -> None:
        """Half-open AMI: sockets stay up but nothing is answered or sent while frozen."""
        self.ami.frozen = frozen

    def hold_originates(self, hold: bool = True) -> None:
        """Hold every originate request before Asterisk has made its channel (until False):
        a request in flight while something else looks at the PBX."""
        if hold:
            self.ari.originates_open.clear()
        else:
            self.ari.originates_open.set()

    def send_ari_raw(self, text: str, app: str = "callback-ari") -> bool:
        """Send one text frame verbatim on the app's events socket; False if none is open."""
        sink = self.pbx.stasis.apps[app].sink if app in self.pbx.stasis.apps else None
        if not isinstance(sink, WsSink):
            return False
        sink.send_raw(text)
        return True

    def send_ami_raw(self, data: bytes) -> int:
        """Write bytes verbatim to every logged-in AMI session; returns how many."""
        return self.ami.send_raw(data)

    async def refuse_connections(self, refuse: bool = True) -> None:
        """Stop (or resume) listening on the ARI and AMI ports; existing sessions are kept."""
        if refuse:
            if self._site is not None:
                await self._site.stop()
                self._site = None
            if self._ami_server is not None:
                self._ami_server.close()
                self._ami_server = None
        else:
            if self._site is None:
                await self._listen_ari(self.ari_port)
            if self._ami_server is None:
                await self._listen_ami(self.ami_port)

    # --- scenario control ------------------------------------------------------------------------

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
        """A queue with static members plus the dialplan kit's contexts for it."""
        q = self.queues.add_queue(
            name,
            members,
            wrapup=wrapup,
            handle_time=handle_time,
            timeout=timeout,
            exit_digit=exit_digit,
        )
        self.dialplan.add_queue_kit(name, timeout, exit_digit)
        if self._extra_dialplan:
            self.dialplan.load(self._extra_dialplan)  # the caller's own dialplan wins
        return q

    def set_devstate(self, device: str, state: str) -> None:
        """``devstate change Custom:agent1 NOT_INUSE``."""
        self.queues.set_devstate(device, state)

    def pause(
        self, interface: str, paused: bool = True, *, queue: str | None = None, reason: str = ""
    ) -> None:
        """QueuePause of a member interface (``Local/agent1@agents/n``)."""
        self.queues.pause(interface, paused, queue, reason)

    def caller_joins(
        self, queue: str, number: str, name: str = "", *, trunk: str = "trunk"
    ) -> Channel:
        """An inbound call from number: Answer, then Queue() through the dialplan kit."""
        ch = Channel(
            self.pbx.new_uniqueid(),
            f"PJSIP/{trunk}-{self.pbx.new_suffix()}",
            "Ring",
            CallerId(name, number),
            self.dialplan.incoming_context,
            queue,
        )
        ch.has_pbx = True
        ch.linkedid = ch.id
        self.pbx.add_channel(ch)
        self.pbx.start_dialplan(ch, self.dialplan.incoming_context, queue, 1)
        return ch

    def _channel(self, channel_id: str) -> Channel:
        ch = self.pbx.channels.get(channel_id)
        if ch is None:
            raise KeyError(f"no channel {channel_id}")
        return ch

    def press_digit(self, channel_id: str, digit: str) -> None:
        """The person on this channel presses a key (ChannelDtmfReceived; exits Queue())."""
        self.pbx.media.dtmf_received(self._channel(channel_id), digit, 100)

    def send_dtmf(self, channel_id: str, digits: str) -> None:
        """The person on this channel keys digits, one every 200 ms (scaled)."""

        async def keys() -> None:
            for digit in digits:
                await self.pbx.sleep(0.2)
                ch = self.pbx.channels.get(channel_id)
                if ch is None:
                    return
                self.pbx.media.dtmf_received(ch, digit, 100)

        self._spawn(keys())

    def hangup(self, channel_id: str, cause: int = 16) -> None:
        """The person on this channel hangs up (hard hang-up with a Q.850 cause)."""
        self.pbx.hangup(self._channel(channel_id), cause, soft=False)

    def agent_hangup(self, caller_channel_id: str) -> bool:
        """The agent talking to this caller hangs up now."""
        return self.queues.agent_hangup(caller_channel_id)

    def set_number_behaviour(self, number: str, behaviour: str | Sequence[str]) -> None:
        """What a dialled number does: answer, busy, no_answer, congestion, machine,
        answer_hangup, invalid; a sequence is consumed one per call (the last one sticks)."""
        self.dialplan.behaviours.set(number, behaviour)

    # --- observation -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every ARI REST request (method, path, query without api_key, body, status)."""
        return self.ari.requests

    @property
    def originates(self) -> list[RequestRecord]:
        """The POST /channels requests."""
        return [
            r
            for r in self.ari.requests
            if r.method == "POST"
            and r.path.startswith("/ari/channels")
            and r.path.count("/") <= 3
            and not r.path.endswith("/create")
        ]

    @property
    def ami_actions(self) -> list[ActionRecord]:
        """Every AMI action received."""
        return self.ami.actions

    def events(
        self, *, app: str | None = None, kind: str | None = None, since: int = 0
    ) -> list[dict[str, Any]]:
        """ARI events produced (delivered or not), optionally for one app and type."""
        return [
            r.event
            for r in self.pbx.stasis.log
            if r.seq > since
            and (app is None or r.app == app)
            and (kind is None or r.event["type"] == kind)
        ]

    def mark(self) -> int:
        """A position in the event log, for ``since=``."""
        return self.pbx.stasis.log[-1].seq if self.pbx.stasis.log else 0

    def channels(self) -> list[Channel]:
        """Live channels."""
        return [c for c in self.pbx.channels.values() if not c.destroyed]

    def queue_callers(self, queue: str) -> list[Channel]:
        """Channels waiting in the queue, in position order."""
        q = self.queues.get(queue)
        return [] if q is None else [e.ch for e in q.entries]

    def app_connected(self, app: str = "callback-ari") -> bool:
        """Has the app an events socket right now?"""
        return self.pbx.stasis.active(app)

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - test helper; the limit is part of its API
    ) -> None:
        """Wait until predicate() holds (re-checked on every event or state change);
        TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self.pbx.wait_for(predicate)

    async def wait_event(
        self,
        kind: str,
        *,
        app: str | None = None,
        channel_id: str | None = None,
        since: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The first ARI event of that type after ``since`` (for the app / channel given)."""
        found: list[dict[str, Any]] = []

        def match() -> bool:
            for record in self.pbx.stasis.log:
                if record.seq <= since or record.event["type"] != kind:
                    continue
                if app is not None and record.app != app:
                    continue
                ev = record.event
                chan = ev.get("channel") or ev.get("peer") or {}
                target = ev.get("playback", {}).get("target_uri", "")
                if (
                    channel_id is not None
                    and chan.get("id") != channel_id
                    and target != f"channel:{channel_id}"
                ):
                    continue
                found.append(ev)
                return True
            return False

        await self.wait_for(match, timeout)
        return found[0]

    async def wait_ami_event(
        self,
        name: str,
        *,
        since: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109
        **fields: str,
    ) -> dict[str, str]:
        """The first AMI event named so (at index >= since of pbx.ami_log) whose fields match."""
        found: list[dict[str, str]] = []

        def match() -> bool:
            for event_name, event_fields in self.pbx.ami_log[since:]:
                values = dict(event_fields)
                if event_name == name and all(values.get(k) == v for k, v in fields.items()):
                    found.append(values)
                    return True
            return False

        await self.wait_for(match, timeout)
        return found[0]

"""The fake's AMI: a TCP server speaking Asterisk Manager 11 for queue actions and events."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from callback_ari.sim.simpbx.customers import start_local
from callback_ari.sim.simpbx.extensions import pattern_match
from callback_ari.sim.simpbx.members import queue_member_item, queue_params_item
from callback_ari.sim.simpbx.model import CallerId
from callback_ari.sim.simpbx.pbx import AriFailure, Pbx
from callback_ari.sim.simpbx.queues import AmiRefusal

log = structlog.get_logger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
Fields = list[tuple[str, str]]


def encode(fields: Fields) -> bytes:
    """One AMI message: ``Key: value`` lines, CRLF, then an empty line."""
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode() + b"\r\n"


def parse_messages(buffer: bytearray) -> list[dict[str, str]]:
    """Take complete messages (ending in an empty line) off the buffer; keys lower-cased."""
    messages: list[dict[str, str]] = []
    while True:
        text = buffer.decode(errors="replace")
        end, sep = text.find("\r\n\r\n"), 4
        lf = text.find("\n\n")
        if end < 0 or (0 <= lf < end):
            end, sep = lf, 2
        if end < 0:
            return messages
        block, rest = text[:end], text[end + sep :]
        buffer[:] = rest.encode()
        msg: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            if key.strip():
                msg.setdefault(key.strip().lower(), value.strip())
        if msg:
            messages.append(msg)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One AMI action as the fake received it."""

    action: str
    fields: dict[str, str]
    at: float = field(default_factory=time.time)


@dataclass(eq=False)
class AmiConnection:
    """One manager session."""

    writer: asyncio.StreamWriter
    authed: bool = False
    events: bool = True
    username: str = ""
    session_tv: str = ""
    # security events Asterisk queues for this session: they go out after its next response
    queued: list[Fields] = field(default_factory=list)

    def security_fields(self, severity: str) -> Fields:
        """The head of a security event about this session (res/res_security_log style)."""
        local = self.writer.get_extra_info("sockname") or ("127.0.0.1", 0)
        remote = self.writer.get_extra_info("peername") or ("127.0.0.1", 0)
        return [
            ("Privilege", "security,all"),
            ("EventTV", _event_tv()),
            ("Severity", severity),
            ("Service", "AMI"),
            ("EventVersion", "1"),
            ("SessionID", f"0x{id(self):x}"),
            ("LocalAddress", f"IPV4/TCP/{local[0]}/{local[1]}"),
            ("RemoteAddress", f"IPV4/TCP/{remote[0]}/{remote[1]}"),
        ]

    def write(self, fields: Fields) -> None:
        """Send a message unless the transport is closing."""
        if not self.writer.is_closing():
            self.writer.write(encode(fields))


def _event_tv() -> str:
    """Security events' time stamps: ``2026-12-06T07:48:39.070+0000``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}+0000"


class AmiServer:
    """Serves AMI sessions; queue events come from the Pbx's AMI listeners."""

    def __init__(self, pbx: Pbx, *, username: str, secret: str) -> None:
        self.pbx = pbx
        self.username = username
        self.secret = secret
        self.connections: list[AmiConnection] = []
        self.actions: list[ActionRecord] = []
        self.frozen = False
        # events an action causes are sent after its response, as Asterisk does
        self._deferred: list[tuple[str, Fields]] | None = None
        pbx.ami_listeners.append(self._broadcast)

    def _broadcast(self, name: str, fields: Fields) -> None:
        if self.frozen:
            return
        if self._deferred is not None:
            self._deferred.append((name, fields))
            return
        for conn in list(self.connections):
            if conn.authed and conn.events:
                conn.write([("Event", name), *fields])

    def send_raw(self, data: bytes) -> int:
        """Write bytes as they are to every logged-in session (fault injection: garbage)."""
        sessions = [c for c in self.connections if c.authed and not c.writer.is_closing()]
        for conn in sessions:
            conn.writer.write(data)
        return len(sessions)

    def drop_connections(self) -> int:
        """Abort every session's TCP connection."""
        count = len(self.connections)
        for conn in list(self.connections):
            conn.writer.transport.abort()
        return count

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: banner, then actions until Logoff or EOF."""
        conn = AmiConnection(writer)
        self.connections.append(conn)
        writer.write(BANNER)
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if self.frozen:
                    continue  # half-open: nothing is read or answered
                buffer += data
                for msg in parse_messages(buffer):
                    if not await self._action(conn, msg):
                        return
        except ConnectionError:
            return
        finally:
            self.connections.remove(conn)
            writer.close()

    async def _action(self, conn: AmiConnection, msg: dict[str, str]) -> bool:
        name = msg.get("action", "")
        self.actions.append(ActionRecord(name, dict(msg)))
        self.pbx.notify()
        aid = [("ActionID", msg["actionid"])] if "actionid" in msg else []
        lname = name.lower()
        if lname == "login":
            return await self._login(conn, msg, aid)
        if not conn.authed:
            conn.write([("Response", "Error"), *aid, ("Message", "Permission denied")])
            return True
        if lname == "logoff":
            conn.write([("Response", "Goodbye"), *aid, ("Message", "Thanks for all the fish.")])
            await conn.writer.drain()
            return False
        handler = {
            "ping": self._ping,
            "events": self._events,
            "queuestatus": self._queue_status,
            "queuesummary": self._queue_summary,
            "queuewithdrawcaller": self._withdraw,
            "queuepause": self._pause,
            "getvar": self._getvar,
            "setvar": self._setvar,
            "showdialplan": self._show_dialplan,
            "hangup": self._hangup,
            "originate": self._originate,
        }.get(lname)
        queued, conn.queued = conn.queued, []
        if handler is None:
            message = (
                f"Invalid/unknown command: {name}. "
                "Use Action: ListCommands to show available commands."
            )
            conn.write([("Response", "Error"), *aid, ("Message", message)])
            # Asterisk raises RequestBadFormat at once but delivers it after the session's
            # next response (recorded so in 2 of 3 runs; once right after this one)
            conn.queued.append(
                [
                    ("Event", "RequestBadFormat"),
                    *conn.security_fields("Error"),
                    ("RequestType", f"Action: {name}"),
                    ("SessionTV", conn.session_tv),
                    ("AccountID", conn.username),
                ]
            )
            self._flush(conn, queued)
            return True
        self._deferred = []
        try:
            handler(conn, msg, aid)
        finally:
            deferred, self._deferred = self._deferred, None
            self._flush(conn, queued)
            for event_name, fields in deferred:
                self._broadcast(event_name, fields)
        return True

    def _flush(self, conn: AmiConnection, queued: list[Fields]) -> None:
        for fields in queued:
            for other in self.connections:
                if other.authed and other.events:
                    other.write(fields)

    async def _login(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> bool:
        if (msg.get("username"), msg.get("secret")) != (self.username, self.secret):
            await self.pbx.sleep(1.0)
            conn.write([("Response", "Error"), *aid, ("Message", "Authentication failed")])
            await conn.writer.drain()
            return False
        conn.authed = True
        conn.username = msg.get("username", "")
        conn.events = msg.get("events", "on").lower() not in ("off", "no", "false")
        conn.write([("Response", "Success"), *aid, ("Message", "Authentication accepted")])
        if conn.events:
            conn.write(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", "4192"),
                    ("LastReload", "4192"),
                    ("Status", "Fully Booted"),
                ]
            )
        conn.session_tv = _event_tv()
        head = conn.security_fields("Informational")
        success = [
            ("Event", "SuccessfulAuth"),
            *head[:5],
            ("AccountID", conn.username),
            *head[5:],
            ("UsingPassword", "0"),
            ("SessionTV", conn.session_tv),
        ]
        # security events go to every session that reads them, this one included
        self._flush(conn, [success])
        return True

    def _ping(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        stamp = f"{time.time():.6f}"
        conn.write([("Response", "Success"), *aid, ("Ping", "Pong"), ("Timestamp", stamp)])

    def _events(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        mask = msg.get("eventmask", "on").lower()
        conn.events = mask not in ("off", "none", "no", "false")
        conn.write([("Response", "Success"), *aid, ("Events", "On" if conn.events else "Off")])

    def _list(
        self, conn: AmiConnection, aid: Fields, what: str, items: list[Fields], done: str
    ) -> None:
        conn.write(
            [
                ("Response", "Success"),
                *aid,
                ("EventList", "start"),
                ("Message", f"{what} will follow"),
            ]
        )
        for item in items:
            conn.write([*item, *aid])
        conn.write(
            [("Event", done), *aid, ("EventList", "Complete"), ("ListItems", str(len(items)))]
        )

    def _queue_status(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        items: list[Fields] = []
        member_filter = msg.get("member", "")
        for q in self.pbx.queues.queues.values():
            if msg.get("queue") and msg["queue"] != q.name:
                continue
            items.append([("Event", "QueueParams"), *queue_params_item(q)])
            for m in q.members:
                if not member_filter or member_filter == m.interface:
                    items.append([("Event", "QueueMember"), *queue_member_item(q, m)])
            for e in q.entries:
                caller, conn_line = e.ch.caller, e.ch.connected or e.ch.caller
                items.append(
                    [
                        ("Event", "QueueEntry"),
                        ("Queue", q.name),
                        ("Position", str(e.position)),
                        ("Channel", e.ch.name),
                        ("Uniqueid", e.ch.id),
                        ("CallerIDNum", caller.number or "unknown"),
                        ("CallerIDName", caller.name or "unknown"),
                        ("ConnectedLineNum", conn_line.number or "unknown"),
                        ("ConnectedLineName", conn_line.name or "unknown"),
                        ("Wait", str(int(self.pbx.elapsed(e.joined)))),
                        ("Priority", str(e.prio)),
                    ]
                )
        self._list(conn, aid, "Queue status", items, "QueueStatusComplete")

    def _queue_summary(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        items: list[Fields] = []
        for q in self.pbx.queues.queues.values():
            if msg.get("queue") and msg["queue"] != q.name:
                continue
            longest = max((self.pbx.elapsed(e.joined) for e in q.entries), default=0.0)
            items.append(
                [
                    ("Event", "QueueSummary"),
                    ("Queue", q.name),
                    ("LoggedIn", str(q.count("logged"))),
                    ("Available", str(q.count("ready"))),
                    ("Callers", str(len(q.entries))),
                    ("HoldTime", str(q.holdtime())),
                    ("TalkTime", str(q.talktime())),
                    ("LongestHoldTime", str(int(longest))),
                ]
            )
        self._list(conn, aid, "Queue summary", items, "QueueSummaryComplete")

    def _refusable(self, conn: AmiConnection, aid: Fields, action: object) -> None:
        try:
            message = action() if callable(action) else str(action)
        except AmiRefusal as exc:
            conn.write([("Response", "Error"), *aid, ("Message", str(exc))])
            return
        conn.write([("Response", "Success"), *aid, ("Message", str(message))])

    def _withdraw(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        queues = self.pbx.queues

        def act() -> str:
            queues.withdraw(
                msg.get("queue", ""), msg.get("caller", ""), msg.get("withdrawinfo", "")
            )
            return "Withdraw requested successfully"

        self._refusable(conn, aid, act)

    def _pause(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        if not msg.get("interface") or not msg.get("paused"):
            conn.write(
                [
                    ("Response", "Error"),
                    *aid,
                    ("Message", "Need 'Interface' and 'Paused' parameters."),
                ]
            )
            return
        paused = msg["paused"].lower() in ("true", "yes", "1", "on")
        queues = self.pbx.queues
        self._refusable(
            conn,
            aid,
            lambda: queues.pause(
                msg["interface"], paused, msg.get("queue") or None, msg.get("reason", "")
            ),
        )

    def _getvar(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        variable = msg.get("variable", "")
        channel = None
        if msg.get("channel"):
            channel = next(
                (c for c in self.pbx.channels.values() if c.name == msg["channel"]), None
            )
            if channel is None:
                conn.write([("Response", "Error"), *aid, ("Message", "No such channel")])
                return
        value = self.pbx.dialplan.expand(channel, "${" + variable + "}")
        conn.write([("Response", "Success"), *aid, ("Variable", variable), ("Value", value)])

    def _setvar(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        name, value = msg.get("variable", ""), msg.get("value", "")
        channel = next(
            (c for c in self.pbx.channels.values() if c.name == msg.get("channel")), None
        )
        if channel is None:
            self.pbx.globals[name] = value
        else:
            self.pbx.dialplan.assign(channel, name, value)
        conn.write([("Response", "Success"), *aid, ("Message", "Variable Set")])

    def _hangup(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        channel = next(
            (c for c in self.pbx.channels.values() if c.name == msg.get("channel")), None
        )
        if channel is None:
            conn.write([("Response", "Error"), *aid, ("Message", "No such channel")])
            return
        conn.write([("Response", "Success"), *aid, ("Message", "Channel Hungup")])
        cause = msg.get("cause", "")
        channel.hangupcause = int(cause) if cause.isdigit() else channel.hangupcause
        self.pbx.hangup(channel, 32, soft=True)

    def _originate(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        """Originate of a Local channel (the ;2 runs the dialplan; ;1 runs Application)."""
        tech, _, resource = msg.get("channel", "").partition("/")
        exten, _, context = resource.split("/", 1)[0].partition("@")
        if tech != "Local" or not exten:
            conn.write([("Response", "Error"), *aid, ("Message", "Originate failed")])
            return
        try:
            ch1, ch2 = self.pbx.local_pair(
                exten,
                context or "default",
                CallerId.parse(msg.get("callerid")),
                id1=msg.get("channelid"),
                id2=msg.get("otherchannelid"),
            )
        except AriFailure as exc:
            conn.write([("Response", "Error"), *aid, ("Message", exc.message)])
            return
        if "application" not in msg and msg.get("exten"):
            ch1.continue_to = (
                msg.get("context", "default"),
                msg["exten"],
                int(msg.get("priority", "1")),
            )
        conn.write([("Response", "Success"), *aid, ("Message", "Originate successfully queued")])
        timeout = int(msg.get("timeout", "30000") or 30000) // 1000
        self.pbx.spawn(start_local(self.pbx, ch1, ch2, timeout, resource))

    def _show_dialplan(self, conn: AmiConnection, msg: dict[str, str], aid: Fields) -> None:
        wanted = msg.get("context")
        contexts = self.pbx.dialplan.contexts
        if wanted and wanted not in contexts:
            conn.write([("Response", "Error"), *aid, ("Message", f"Did not find context {wanted}")])
            return
        exten_wanted = msg.get("extension")
        items: list[Fields] = []
        exten_count = 0
        names = [wanted] if wanted else sorted(contexts)
        for ctx in names:
            for ext in contexts[ctx].values():
                if exten_wanted and not pattern_match(ext.name, exten_wanted):
                    continue
                exten_count += 1
                for step in ext.steps.values():
                    item: Fields = [
                        ("Event", "ListDialplan"),
                        ("Context", ctx),
                        ("Extension", ext.name),
                    ]
                    if step.label:
                        item.append(("ExtensionLabel", step.label))
                    item += [
                        ("Priority", str(step.priority)),
                        ("Application", step.app),
                        ("AppData", step.data),
                        ("Registrar", "pbx_config"),
                    ]
                    items.append(item)
        if exten_wanted and not exten_count:
            where = f"@{wanted}" if wanted else " in any context"
            message = f"Did not find extension {exten_wanted}{where}"  # as pbx.c words it
            conn.write([("Response", "Error"), *aid, ("Message", message)])
            return
        conn.write(
            [
                ("Response", "Success"),
                *aid,
                ("EventList", "start"),
                ("Message", "DialPlan list will follow"),
            ]
        )
        for item in items:
            conn.write([*item, *aid])
        conn.write(
            [
                ("Event", "ShowDialPlanComplete"),
                *aid,
                ("EventList", "Complete"),
                ("ListItems", str(len(items))),
                ("ListExtensions", str(exten_count)),
                ("ListPriorities", str(len(items))),
                ("ListContexts", str(len(names))),
            ]
        )

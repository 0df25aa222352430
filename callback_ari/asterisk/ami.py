"""Asyncio AMI client: login, correlated actions and lists, events, keepalive, reconnect."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog

from callback_ari.asterisk.ami_protocol import (
    AmiMessage,
    AmiParser,
    FieldValue,
    encode_action,
    reply_role,
)
from callback_ari.core.backoff import Backoff
from callback_ari.errors import (
    AmiActionError,
    AmiAuthError,
    AmiError,
    AmiTimeout,
    AmiUnavailable,
)

log = structlog.get_logger(__name__)

EventHandler = Callable[[AmiMessage], None]
ConnectHook = Callable[[], Awaitable[None]]

_READ_CHUNK = 65536


@dataclass(slots=True)
class _Pending:
    """An action waiting for its answer; list actions also collect their item events."""

    action: str
    action_id: str
    future: asyncio.Future[list[AmiMessage]]
    complete_event: str | None
    items: list[AmiMessage] = field(default_factory=list)


class _Connection:
    """One TCP session: its stream, its in-flight actions and why it ended."""

    def __init__(self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.number = number
        self.reader = reader
        self.writer = writer
        self.pending: dict[str, _Pending] = {}
        self.closed = asyncio.Event()
        self.error: AmiError | None = None
        self.write_lock = asyncio.Lock()
        self._seq = 0

    def next_action_id(self) -> str:
        self._seq += 1
        return f"cbari-{self.number}-{self._seq}"

    def close(self, error: AmiError) -> None:
        """Mark the session dead, fail every in-flight action, drop the socket. Idempotent."""
        if self.closed.is_set():
            return
        self.error = error
        self.closed.set()
        pending, self.pending = self.pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(
                    AmiUnavailable(f"{item.action}: AMI connection lost ({error})")
                )
        self.writer.close()


class AmiClient:
    """A long-lived AMI session that reconnects by itself.

    ``run(on_event, on_connect)`` owns the connection: it logs in with ``Events: on``, calls
    ``on_connect()`` after every successful login (resync there, e.g. with ``queue_status``),
    hands every unsolicited event to ``on_event`` and sends a ``Ping`` every
    ``ping_interval`` seconds; no answer within ``ping_timeout`` means the connection is
    half-open and is dropped. After a drop it reconnects with ``backoff``. Actions in flight
    when the connection drops fail with ``AmiUnavailable`` and are never re-sent: whether
    they took effect is unknown, and only the caller can decide whether repeating is safe.
    Refused credentials end ``run`` with ``AmiAuthError`` instead of retrying forever.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
        action_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ssl: _ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self._ssl = ssl
        self._backoff = backoff if backoff is not None else Backoff()
        self._conn: _Connection | None = None  # logged in
        self._current: _Connection | None = None  # open, maybe not logged in yet
        self._connections = 0
        self._running = False
        self._stop = asyncio.Event()
        self._oneshot: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.banner: str | None = None

    def __repr__(self) -> str:  # never shows the secret
        return f"AmiClient({self.host}:{self.port}, user={self.username!r})"

    @property
    def connected(self) -> bool:
        """Logged in and the connection not known to be dead."""
        return self._conn is not None and not self._conn.closed.is_set()

    # --- connection lifecycle ---------------------------------------------------------

    async def run(self, on_event: EventHandler, on_connect: ConnectHook) -> None:
        """Keep a logged-in session until ``aclose()`` or cancellation; AmiAuthError ends it."""
        if self._running:
            raise RuntimeError("AmiClient.run() is already running")
        self._running = True
        try:
            while not self._stop.is_set():
                error = await self._session(on_event, on_connect)
                if isinstance(error, AmiAuthError):
                    log.error("ami.auth_failed", host=self.host, port=self.port, user=self.username)
                    raise error
                if self._stop.is_set():
                    break
                log.warning("ami.disconnected", host=self.host, port=self.port, reason=str(error))
                delay = self._backoff.next_delay()
                self.reconnects += 1
                log.info("ami.reconnecting", delay_s=round(delay, 3), attempt=self._backoff.attempt)
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                except TimeoutError:
                    pass
        finally:
            self._running = False

    async def connect_once(self) -> None:
        """Connect and log in once, with no reconnects (one-shot tools); end with ``aclose()``.

        Raises AmiAuthError or AmiUnavailable as ``run()`` would have logged them.
        """
        if self._running:
            raise RuntimeError("AmiClient is already running")
        self._running = True
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_connect() -> None:
            if not ready.done():
                ready.set_result(None)

        async def session() -> None:
            error = await self._session(_ignore_event, on_connect)
            if not ready.done():
                ready.set_exception(error)

        self._oneshot = asyncio.create_task(session(), name="ami-connect-once")
        logged_in = False
        try:
            await ready
            logged_in = True
        finally:
            if not logged_in:  # refused, unreachable or cancelled: leave nothing running
                await self.aclose()

    async def aclose(self) -> None:
        """Log off and stop: ``run()`` returns instead of reconnecting. Idempotent."""
        self._stop.set()
        conn = self._current
        if conn is not None and not conn.closed.is_set():
            if self._conn is conn:
                try:
                    async with asyncio.timeout(1.0):
                        await self._request("Logoff", None, {}, conn)
                except (AmiError, TimeoutError) as exc:
                    log.debug("ami.logoff_failed", error=str(exc))
            conn.close(AmiUnavailable("AMI client closed"))
        task, self._oneshot = self._oneshot, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # not `await task`: that would raise its CancelledError
            if not task.cancelled() and (failure := task.exception()) is not None:
                log.warning("ami.session_error", error=repr(failure))
            self._running = False

    async def _session(self, on_event: EventHandler, on_connect: ConnectHook) -> AmiError:
        """One connection from connect to drop; returns why it ended."""
        try:
            conn = await self._open()
        except AmiUnavailable as exc:
            return exc
        self._current = conn
        if self._stop.is_set():
            conn.close(AmiUnavailable("AMI client closed"))
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._read_loop(conn, on_event))]
                try:
                    await self._login(conn)
                except AmiError as exc:
                    conn.close(exc)
                else:
                    self._conn = conn
                    log.info("ami.connected", host=self.host, port=self.port, session=conn.number)
                    tasks.append(tg.create_task(self._keepalive(conn)))
                    tasks.append(tg.create_task(self._after_connect(conn, on_connect)))
                    await conn.closed.wait()
                for task in tasks:
                    task.cancel()
        finally:
            if self._conn is conn:
                self._conn = None
            if self._current is conn:
                self._current = None
            conn.close(AmiUnavailable("AMI client stopped"))
            await _wait_closed(conn.writer)
        return conn.error if conn.error is not None else AmiUnavailable("AMI connection ended")

    async def _open(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self._ssl, limit=_READ_CHUNK
                )
        except OSError as exc:  # includes TimeoutError, ConnectionRefusedError, ssl.SSLError
            raise AmiUnavailable(
                f"cannot connect to AMI at {self.host}:{self.port}: {exc}"
            ) from exc
        self._connections += 1
        return _Connection(self._connections, reader, writer)

    async def _login(self, conn: _Connection) -> None:
        fields = {"Username": self.username, "Secret": self._secret, "Events": "on"}
        try:
            await self._request("Login", None, fields, conn)
        except AmiActionError as exc:
            # Asterisk answers a wrong user or secret after ~1 s, then closes the socket.
            raise AmiAuthError(
                f"AMI login as {self.username!r} at {self.host}:{self.port} refused: {exc.message}"
            ) from None

    async def _after_connect(self, conn: _Connection, on_connect: ConnectHook) -> None:
        try:
            await on_connect()
        except AmiError as exc:
            if not conn.closed.is_set():
                log.warning("ami.on_connect_failed", error=str(exc))
                conn.close(AmiUnavailable(f"resync after login failed: {exc}"))
        except Exception:
            # The service's resync failed: its view is stale, so start over on a new session.
            log.exception("ami.on_connect_error")
            conn.close(AmiUnavailable("on_connect handler raised"))
        else:
            self._backoff.reset()  # logged in and resynced: the session proved healthy

    async def _keepalive(self, conn: _Connection) -> None:
        """Detect half-open connections: a Ping that gets no answer ends the session."""
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                async with asyncio.timeout(self.ping_timeout):
                    await self._request("Ping", None, {}, conn)
            except (TimeoutError, AmiTimeout):
                log.warning("ami.ping_timeout", timeout_s=self.ping_timeout, session=conn.number)
                conn.close(AmiTimeout(f"no answer to keepalive Ping in {self.ping_timeout}s"))
                return
            except AmiUnavailable:
                return
            except AmiActionError as exc:
                log.warning("ami.ping_error", error=exc.message)

    async def _read_loop(self, conn: _Connection, on_event: EventHandler) -> None:
        parser = AmiParser()
        try:
            while True:
                data = await conn.reader.read(_READ_CHUNK)
                if not data:
                    conn.close(AmiUnavailable("AMI connection closed by the server"))
                    return
                for msg in parser.feed(data):
                    self._dispatch(conn, msg, on_event)
        except OSError as exc:
            conn.close(AmiUnavailable(f"AMI read failed: {exc}"))
        except Exception as exc:
            log.exception("ami.reader_error")
            conn.close(AmiUnavailable(f"AMI reader failed: {exc!r}"))

    def _dispatch(self, conn: _Connection, msg: AmiMessage, on_event: EventHandler) -> None:
        if msg.kind == "banner":
            self.banner = msg.banner
            log.debug("ami.banner", banner=msg.banner)
            return
        action_id = msg.action_id
        pending = conn.pending.get(action_id) if action_id is not None else None
        role = reply_role(msg, pending.complete_event) if pending is not None else None
        if pending is None or role is None:
            if msg.kind == "response":
                log.debug("ami.unmatched_response", action_id=action_id, response=msg.name)
            elif msg.kind == "event":
                try:
                    on_event(msg)
                except Exception:
                    log.exception("ami.handler_error", ami_event=msg.name)
            return
        if role == "list_item":
            pending.items.append(msg)
        elif role != "list_start":
            del conn.pending[pending.action_id]
            if pending.future.done():
                return  # its requester was cancelled (shutting down): nobody waits for it
            if role == "failed":
                message = msg.get("Message", "") or ""
                pending.future.set_exception(AmiActionError(pending.action, message))
            else:
                pending.future.set_result(
                    [msg] if role == "answer" else pending.items if role == "list_end" else []
                )

    # --- actions ----------------------------------------------------------------------

    async def _request(
        self,
        name: str,
        complete_event: str | None,
        fields: Mapping[str, FieldValue | None],
        conn: _Connection | None = None,
    ) -> list[AmiMessage]:
        if conn is None:
            conn = self._conn
        if conn is None or conn.closed.is_set():
            raise AmiUnavailable(f"{name}: not connected to AMI")
        action_id = conn.next_action_id()
        data = encode_action(name, action_id, fields)
        future: asyncio.Future[list[AmiMessage]] = asyncio.get_running_loop().create_future()
        conn.pending[action_id] = _Pending(name, action_id, future, complete_event)
        try:
            try:
                async with conn.write_lock:
                    conn.writer.write(data)
                    await conn.writer.drain()
            except OSError as exc:
                conn.pending.pop(action_id, None)
                future.cancel()
                conn.close(AmiUnavailable(f"AMI write failed: {exc}"))
                raise AmiUnavailable(f"{name}: AMI write failed: {exc}") from exc
            log.debug("ami.action", action=name, action_id=action_id)
            try:
                async with asyncio.timeout(self.action_timeout):
                    return await future
            except TimeoutError as exc:
                raise AmiTimeout(f"{name}: no answer in {self.action_timeout}s") from exc
        finally:
            conn.pending.pop(action_id, None)

    async def action(self, name: str, **fields: FieldValue | None) -> AmiMessage:
        """Send one action, return its ``Response: Success`` message.

        Raises AmiActionError on ``Response: Error``, AmiUnavailable when not connected or
        the connection drops first, AmiTimeout after ``action_timeout`` seconds.
        """
        return (await self._request(name, None, fields))[0]

    async def list_action(
        self, name: str, complete_event: str, **fields: FieldValue | None
    ) -> list[AmiMessage]:
        """Send a list action and return its item events, without the final ``*Complete``."""
        return await self._request(name, complete_event, fields)

    async def queue_status(
        self, queue: str | None = None, member: str | None = None
    ) -> list[AmiMessage]:
        """QueueParams, QueueMember and QueueEntry items (all queues when ``queue`` is None)."""
        return await self.list_action(
            "QueueStatus", "QueueStatusComplete", Queue=queue, Member=member
        )

    async def queue_summary(self, queue: str | None = None) -> list[AmiMessage]:
        """One QueueSummary item per queue (LoggedIn, Available, Callers, HoldTime, ...)."""
        return await self.list_action("QueueSummary", "QueueSummaryComplete", Queue=queue)

    async def queue_withdraw_caller(self, queue: str, caller: str, withdraw_info: str = "") -> None:
        """Ask app_queue to release ``caller`` (a channel name); it leaves ~0.5 s later.

        An unknown caller raises AmiActionError ("...: No such caller").
        """
        await self.action(
            "QueueWithdrawCaller", Queue=queue, Caller=caller, WithdrawInfo=withdraw_info or None
        )

    async def getvar(self, variable: str, channel: str | None = None) -> str | None:
        """A channel variable, or a dialplan function such as ``QUEUE_MEMBER(q,ready)``."""
        response = await self.action("Getvar", Variable=variable, Channel=channel)
        return response.get("Value")

    async def queue_pause(
        self, interface: str, paused: bool, *, queue: str | None = None, reason: str | None = None
    ) -> None:
        """Pause or unpause a member, in one queue or (``queue=None``) in all of them."""
        await self.action(
            "QueuePause", Interface=interface, Paused=paused, Queue=queue, Reason=reason
        )

    async def ping(self) -> None:
        await self.action("Ping")

    async def show_dialplan(
        self, context: str | None = None, extension: str | None = None
    ) -> list[AmiMessage]:
        """ListDialplan items; a missing context raises AmiActionError "Did not find context"."""
        return await self.list_action(
            "ShowDialPlan", "ShowDialPlanComplete", Context=context, Extension=extension
        )


def _ignore_event(msg: AmiMessage) -> None:
    """One-shot sessions use actions only."""


async def _wait_closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except OSError:  # includes TimeoutError and a reset peer
        pass

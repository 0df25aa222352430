"""The ARI event WebSocket: connect, decode frames, dispatch, and reconnect with backoff forever."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog

from callback_ari.asterisk.ari_events import ApplicationReplacedEvent, AriEvent, decode, reject
from callback_ari.core.backoff import Backoff
from callback_ari.errors import (
    ApplicationReplaced,
    AriAuthError,
    AriBadRequest,
    AriConflict,
    AriError,
    AriHTTPError,
    AriNotFound,
    AriPreconditionFailed,
    AriUnavailable,
    AriUnprocessable,
)

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES: Final = 1 << 20
"""Text frames longer than this are skipped (Asterisk's largest events are a few KiB)."""

HARD_LIMIT_FACTOR: Final = 8
"""Frames beyond ``HARD_LIMIT_FACTOR * max_message_bytes`` are a protocol error: reconnect."""

EventHandler = Callable[[AriEvent], None]
ConnectHandler = Callable[[], Awaitable[None]]

_BY_STATUS: Final[dict[int, type[AriHTTPError]]] = {
    400: AriBadRequest,
    401: AriAuthError,
    403: AriAuthError,
    404: AriNotFound,
    409: AriConflict,
    412: AriPreconditionFailed,
    422: AriUnprocessable,
}


def status_error(status: int, message: str, method: str, path: str) -> AriHTTPError:
    """The project error for an ARI error status (shared by REST and the WebSocket upgrade)."""
    return _BY_STATUS.get(status, AriHTTPError)(status, message, method, path)


def decode_frame(data: str) -> AriEvent | None:
    """One text frame -> event; None (logged as ``ari.bad_event``) if it is not a usable event."""
    try:
        obj = json.loads(data)
    except ValueError:
        reject("invalid_json", data)
        return None
    if type(obj) is not dict:
        reject("not_an_object", data)
        return None
    return decode(obj)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Where and how to hold the event socket; ``url`` never carries credentials."""

    url: str
    app: str
    verify_tls: bool = True
    connect_timeout: float = 10.0
    heartbeat: float = 20.0
    close_timeout: float = 2.0
    stable_after: float = 10.0
    max_message_bytes: int = MAX_MESSAGE_BYTES


class EventStream:
    """Keeps ``/ari/events?app=<app>`` open, feeding decoded events to one handler.

    Asterisk does not queue events for a missing socket (they are simply lost), so every
    successful (re)connect is followed by ``on_connect()``, where the owner resynchronises.
    Frames that arrive while ``on_connect()`` runs are dispatched after it returns, in order.
    """

    def __init__(
        self,
        settings: StreamSettings,
        session: Callable[[], aiohttp.ClientSession],
        backoff: Backoff,
    ) -> None:
        self._settings = settings
        self._session = session
        self._backoff = backoff
        self._running = False
        self.connected = False
        self.reconnects = 0

    async def run(self, on_event: EventHandler, on_connect: ConnectHandler) -> None:
        """Run until cancelled; raises ApplicationReplaced if another socket takes the app."""
        if self._running:
            raise RuntimeError("run_events() is already running for this client")
        self._running = True
        try:
            await self._loop(on_event, on_connect)
        finally:
            self._running = False
            self.connected = False

    async def _loop(self, on_event: EventHandler, on_connect: ConnectHandler) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        ever_connected = False
        while True:
            try:
                ws = await self._connect()
            except AriAuthError as exc:
                log.error("ari.auth_failed", app=s.app, status=exc.status, hint="check [ari] "
                          "username/password against ari.conf")  # fmt: skip
                await self._pause()
                continue
            except AriError as exc:
                log.warning("ari.connect_failed", app=s.app, error=str(exc))
                await self._pause()
                continue
            if ever_connected:
                self.reconnects += 1
            ever_connected = True
            self.connected = True
            since = loop.time()
            log.info("ari.connected", app=s.app, reconnects=self.reconnects)
            try:
                await self._resync(on_connect)
                await self._pump(ws, on_event)
            except (aiohttp.ClientError, OSError) as exc:  # receive() reports most as ERROR
                log.warning("ari.ws_error", app=s.app, error=str(exc))
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await ws.close()
            if loop.time() - since >= s.stable_after:
                self._backoff.reset()
            up_s = round(loop.time() - since, 3)
            error = str(ws.exception() or "")
            log.warning("ari.disconnected", app=s.app, code=ws.close_code, error=error, up_s=up_s)
            await self._pause()

    async def _pause(self) -> None:
        delay = self._backoff.next_delay()
        log.info("ari.reconnect_wait", app=self._settings.app, delay_s=round(delay, 3))
        await asyncio.sleep(delay)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        s = self._settings
        try:
            async with asyncio.timeout(s.connect_timeout):
                return await self._session().ws_connect(
                    s.url,
                    params={"app": s.app, "subscribeAll": "false"},
                    protocols=("ari",),
                    heartbeat=s.heartbeat,
                    max_msg_size=s.max_message_bytes * HARD_LIMIT_FACTOR,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=s.close_timeout),
                    ssl=s.verify_tls,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise status_error(exc.status, exc.message, "GET", "/ari/events") from exc
        except TimeoutError as exc:
            raise AriUnavailable(f"websocket: no answer within {s.connect_timeout:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AriUnavailable(f"websocket: {exc}") from exc

    async def _resync(self, on_connect: ConnectHandler) -> None:
        try:
            await on_connect()
        except Exception:
            # The owner's resync failing must not cost us the socket: events still matter.
            log.exception("ari.on_connect_error", app=self._settings.app)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse, on_event: EventHandler) -> None:
        limit = self._settings.max_message_bytes
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is text:
                data: str = msg.data
                if len(data) > limit:
                    reject("oversized", data, size=len(data))
                    continue
                event = decode_frame(data)
                if event is None:
                    continue
                if type(event) is ApplicationReplacedEvent:
                    self._replaced()
                try:
                    on_event(event)
                except Exception:
                    log.exception("ari.handler_error", event_type=event.type,
                                  channel_id=event.channel_id)  # fmt: skip
            elif kind is binary:
                reject("binary", msg.data)
            elif kind is aiohttp.WSMsgType.ERROR:
                log.warning("ari.ws_error", app=self._settings.app, error=str(msg.data))
                return
            else:  # CLOSE, CLOSING, CLOSED (PING/PONG are answered by aiohttp itself)
                return

    def _replaced(self) -> None:
        app = self._settings.app
        log.error(
            "ari.application_replaced",
            app=app,
            hint="another client opened a websocket for this Stasis app; Asterisk now sends "
            "it every event and this instance none. Stop the other instance or give each "
            "its own [general] app name.",
        )
        raise ApplicationReplaced(f"Stasis app {app!r} was taken over by another websocket")

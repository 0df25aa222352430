"""The fake's HTTP side: ARI REST under /ari with Asterisk's headers, and /ari/events."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from callback_ari.sim.simpbx.ari_handlers import REASONS, Handlers, Reply
from callback_ari.sim.simpbx.model import VERSION
from callback_ari.sim.simpbx.pbx import AriFailure, Pbx
from callback_ari.sim.simpbx.spec import Match, RouteTable, SpecError

log = structlog.get_logger(__name__)

REALM = "Asterisk REST Interface"
ORIGINATES = frozenset({"originate", "originateWithId"})  # POST /channels, /channels/{id}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One REST request as the fake saw it (for assertions in tests)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    at: float = field(default_factory=time.time)


class AsteriskResponse(web.Response):
    """aiohttp drops Content-Length on 204; Asterisk sends ``Content-Length: 0``."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if self.status == 204:
            self.headers["Content-Length"] = "0"


class AsteriskWebSocket(web.WebSocketResponse):
    """Asterisk's 101 carries only Upgrade, ``Connection: Upgrade``, Sec-WebSocket-Accept and
    Sec-WebSocket-Protocol; aiohttp would add Date and its own Server and lower-case Upgrade."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in ("Date", "Server"):
            self.headers.pop(name, None)
        self.headers["Connection"] = "Upgrade"


def _response(reply: Reply, extra: dict[str, str] | None = None) -> web.Response:
    headers = {
        "Server": f"Asterisk/{VERSION}",
        "Date": formatdate(usegmt=True),
        "Cache-Control": "no-cache, no-store",
    }
    headers.update(extra or {})
    if reply.location:
        headers["Location"] = reply.location
    reason = reply.reason or REASONS.get(reply.status, "Unknown")
    if reply.body is None:
        return AsteriskResponse(status=reply.status, reason=reason, headers=headers)
    headers["Content-type"] = "application/json"
    body = json.dumps(reply.body, separators=(",", ":")).encode()
    return AsteriskResponse(status=reply.status, reason=reason, body=body, headers=headers)


def _error(status: int, reason: str, message: str) -> Reply:
    return Reply(status, {"message": message}, reason=reason)


class WsSink:
    """One /ari/events socket: an outgoing queue drained by the connection's writer."""

    def __init__(self, request: web.Request) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | str | None] = asyncio.Queue()
        self.request = request
        self.silenced = False
        self.close_clean: bool | None = None

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event; after ApplicationReplaced the socket stays open but silent."""
        if self.silenced:
            return
        self.queue.put_nowait(event)
        if event.get("type") == "ApplicationReplaced":
            self.silenced = True

    def send_raw(self, text: str) -> None:
        """Queue one text frame exactly as given (fault injection: malformed JSON...)."""
        if not self.silenced:
            self.queue.put_nowait(text)

    def close(self, clean: bool) -> None:
        """Close with a close frame, or abort the TCP connection."""
        self.close_clean = clean
        if clean:
            self.queue.put_nowait(None)
        elif self.request.transport is not None:
            self.request.transport.abort()


class AriServer:
    """aiohttp application serving ARI REST and events for one Pbx."""

    def __init__(self, pbx: Pbx, *, username: str, password: str) -> None:
        self.pbx = pbx
        self.username = username
        self.password = password
        self.routes = RouteTable.load()
        self.handlers = Handlers(pbx)
        self.requests: list[RequestRecord] = []
        # cleared: originates wait before Asterisk has made the channel (hold_originates)
        self.originates_open = asyncio.Event()
        self.originates_open.set()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def _authorized(self, request: web.Request, params: dict[str, Any]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return (user, password) == (self.username, self.password)
        api_key = params.get("api_key")
        if isinstance(api_key, str) and ":" in api_key:
            user, _, password = api_key.partition(":")
            return (user, password) == (self.username, self.password)
        return False

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], Any]:
        params: dict[str, Any] = dict(request.query)
        body: Any = None
        if request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                raw = await request.read()
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise AriFailure(400, "Bad Request", "Error parsing request body") from None
                    if isinstance(body, dict):
                        for key, value in body.items():
                            if key == "variables":
                                params[key] = value
                            elif isinstance(value, str | int | float | bool):
                                params[key] = (
                                    str(value).lower() if isinstance(value, bool) else str(value)
                                )
            elif ctype == "application/x-www-form-urlencoded":
                form = await request.post()
                body = {k: str(v) for k, v in form.items()}
                params.update(body)
        return params, body

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/ari/") and path != "/ari":
            return web.Response(status=404, text="Not Found")
        try:
            params, body = await self._params(request)
        except AriFailure as exc:
            return _response(_error(exc.status, exc.reason, exc.message))
        sub = request.rel_url.raw_path[4:] or "/"  # still encoded: RouteTable decodes segments
        if not self._authorized(request, params):
            reply = _error(401, "Unauthorized", "Authentication required")
            self._log(request, body, reply.status)
            return _response(reply, {"WWW-Authenticate": f'Basic realm="{REALM}"'})
        matched = self.routes.match(request.method, sub)
        if isinstance(matched, SpecError):
            self._log(request, body, matched.status)
            extra = {"Allow": ",".join(matched.allow)} if matched.allow else None
            return _response(_error(matched.status, matched.reason, matched.message), extra)
        params.pop("api_key", None)
        invalid = RouteTable.validate(matched.operation, params)
        if invalid is not None:
            self._log(request, body, invalid.status)
            return _response(_error(invalid.status, invalid.reason, invalid.message))
        if matched.route.template == "/events":
            return await self._websocket(request, params)
        if matched.operation.nickname in ORIGINATES:
            await self.originates_open.wait()
        reply = self._dispatch(matched, params)
        self._log(request, body, reply.status)
        return _response(reply)

    def _dispatch(self, matched: Match, params: dict[str, Any]) -> Reply:
        handler = self.handlers.table.get((matched.route.template, matched.operation.method))
        if handler is None:
            return _error(501, "Not Implemented", "Method not implemented")
        try:
            return handler(matched.path_vars, params)
        except AriFailure as exc:
            return _error(exc.status, exc.reason, exc.message)

    def _log(self, request: web.Request, body: Any, status: int) -> None:
        query = {k: v for k, v in request.query.items() if k != "api_key"}
        self.requests.append(RequestRecord(request.method, request.path, query, body, status))
        self.pbx.notify()

    async def _websocket(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        apps = [a for a in str(params["app"]).split(",") if a]
        subscribe_all = str(params.get("subscribeAll", "")).lower() in ("true", "yes", "1")
        ws = AsteriskWebSocket(protocols=("ari",), autoping=True)
        await ws.prepare(request)
        self._log(request, None, 101)
        sink = WsSink(request)
        self.pbx.stasis.connect(apps, sink, subscribe_all)
        log.info("simpbx.ws_connected", apps=apps)
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._writer(ws, sink))
                async for msg in ws:
                    if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                        break
                writer.cancel()
        finally:
            self.pbx.stasis.disconnect(sink)
            self.pbx.notify()
            log.info("simpbx.ws_closed", apps=apps)
        return ws

    async def _writer(self, ws: web.WebSocketResponse, sink: WsSink) -> None:
        while True:
            event = await sink.queue.get()
            if event is None:
                await ws.close(code=1000)
                return
            text = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
            try:
                await ws.send_str(text)
            except ConnectionError:
                return

    def drop_sockets(self, clean: bool) -> int:
        """Close every events socket; returns how many."""
        sinks = self.pbx.stasis.sinks()
        for sink in sinks:
            sink.close(clean)
            self.pbx.stasis.disconnect(sink)
        return len(sinks)

"""The HTTP side for the people running it: health, metrics, the callbacks API and the status page.

Routes (``[http] bind`` defaults to 127.0.0.1; put a TLS proxy in front to expose it):

- ``GET /healthz``  liveness, no auth: ``{"status": "ok"}``.
- ``GET /readyz``   readiness, no auth: 200 when every link is up, else 503 with ``down``.
- ``GET /metrics``  Prometheus text format, no auth so Prometheus can scrape it without a
  token; it carries counts and queue names only, never numbers or ids.
- ``/api/v1/...``   JSON, ``Authorization: Bearer <[http] token>`` required (401 otherwise).
- ``GET /``         the status page (static HTML + JS). It asks for the token, keeps it in
  sessionStorage and sends it as a Bearer header, so it never appears in a URL or a log.

With an empty ``[http] token`` the API and the status page are off (404 with a message);
health, readiness and metrics still answer. Every error is ``{"error": {"code", "message",
"field"?, "reason"?}}`` with a stable ``code``.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.exceptions
import structlog
from aiohttp import web

from callback_ari.clock import Clock
from callback_ari.config.loader import Config, QueueConfig
from callback_ari.core.phone import NumberPolicy, validate_number
from callback_ari.errors import (
    CallbackNotFound,
    CorruptRecord,
    InvalidTransition,
    NumberRejected,
    StoreError,
)
from callback_ari.masking import mask
from callback_ari.metrics import Metrics
from callback_ari.models import LIVE_STATES, Origin
from callback_ari.ops import api_schema as schema
from callback_ari.ops.api_schema import (
    ApiProblem,
    PreHoldView,
    ReservationView,
    StatusDoc,
    WatcherView,
    callback_view,
    watcher_view_of,
)
from callback_ari.ops.status import build_status
from callback_ari.service.intake import store_request
from callback_ari.store.store import ID_RE, CallbackStore

__all__ = [
    "PreHoldView",
    "ReservationView",
    "StatusDoc",
    "WatcherView",
    "build_status",
    "create_app",
    "serve",
    "watcher_view_of",
]

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 5.0
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "status.js": "application/javascript",
    "status.css": "text/css",
}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # scraped often: debug level
_LONG_DIGITS = re.compile(r"\d{7,}")  # could be a phone number: masked in logs
_NUMBER_MESSAGES = {
    "empty": "the number is empty",
    "invalid_chars": "the number may only contain digits, spaces, - . ( ) and a leading +",
    "invalid": "not a valid phone number",
    "emergency": "emergency numbers are never called back",
    "premium": "premium-rate and shared-cost numbers are never called back",
    "international": "international numbers are not allowed for this queue",
    "denied": "this number is blocked for this queue",
    "not_allowed": "this number is not in the queue's allowed numbers",
}

Readiness = Callable[[], dict[str, bool]]


def create_app(
    *,
    store: CallbackStore,
    config: Config,
    metrics: Metrics,
    readiness: Readiness,
    status: Callable[[], Awaitable[Any]],
    clock: Clock,
    on_stored: Callable[[str], None] | None = None,
) -> web.Application:
    """The aiohttp application; run it with ``serve`` (or a TestServer in tests).

    ``on_stored(queue)`` is called when a request stored or cancelled a callback: the queue's
    dispatcher looks again (dials the new one, releases members pre-held for the cancelled one).
    """
    api = _Api(store, config, metrics, readiness, status, clock, on_stored)
    app = web.Application(
        client_max_size=schema.MAX_BODY_BYTES,
        middlewares=[_access_log, _errors, api.auth],
    )
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/metrics", api.metrics_text)
    app.router.add_get("/", api.page)
    for name in STATIC_FILES:
        app.router.add_get(f"/static/{name}", api.static_file)
    app.router.add_get("/api/v1/status", api.status)
    app.router.add_get("/api/v1/callbacks", api.list_callbacks)
    app.router.add_post("/api/v1/callbacks", api.create_callback)
    app.router.add_get("/api/v1/callbacks/{id}", api.get_callback)
    app.router.add_delete("/api/v1/callbacks/{id}", api.cancel_callback)
    app.router.add_post("/api/v1/callbacks/{id}/cancel", api.cancel_callback)
    # numbers go in the body, never the URL (access logs, proxies)
    app.router.add_get("/api/v1/queues/{queue}/dnc", api.dnc_list)
    app.router.add_post("/api/v1/queues/{queue}/dnc", api.dnc_add)
    app.router.add_post("/api/v1/queues/{queue}/dnc/remove", api.dnc_remove)
    app.on_response_prepare.append(_security_headers)
    app[_API] = api
    return app


def reconfigure(app: web.Application, config: Config) -> None:
    """Use ``config``'s queue settings for requests from now on (SIGHUP reload).

    The token and the listener are fixed at start-up; the reload reports them as needing a
    restart.
    """
    app[_API].reconfigure(config)


async def serve(
    app: web.Application, host: str, port: int, *, listening: asyncio.Event | None = None
) -> None:
    """Serve ``app`` on host:port until cancelled; always closes the listener.

    ``listening`` (optional) is set once the socket accepts connections.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("http.listening", host=host, port=port)
        if listening is not None:
            listening.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        log.info("http.stopped", host=host, port=port)


# --- middlewares ---------------------------------------------------------------------


@web.middleware
async def _access_log(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One ``http.request`` event per request: no query string, header or raw number."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        fields: dict[str, Any] = {
            "method": request.method,
            "path": _loggable_path(request),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        callback_id = request.match_info.get("id")
        if callback_id is not None and ID_RE.match(callback_id):
            fields["callback_id"] = _scrub(callback_id)
        if request.path in QUIET_PATHS and status < 400:
            log.debug("http.request", **fields)
        else:
            log.info("http.request", **fields)


def _loggable_path(request: web.Request) -> str:
    """The route pattern when one matched; else the path with long digit runs masked."""
    info = request.match_info.route.resource
    if info is not None and request.match_info.http_exception is None:
        return info.canonical
    return _scrub(request.path[:200])


def _scrub(text: str) -> str:
    return _LONG_DIGITS.sub(lambda m: mask(m.group(0)), text)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a JSON error with a stable code; nothing leaks a traceback."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            return await handler(request)
    except ApiProblem as exc:
        return _problem(exc)
    except web.HTTPException as exc:
        return _problem(_from_http(exc))
    except (StoreError, redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        if isinstance(exc, CorruptRecord):
            log.error("http.corrupt_record", path=request.path, error=str(exc))
            return _problem(ApiProblem(500, "internal", "a stored record is corrupt"))
        log.warning("http.store_unavailable", path=request.path, error=type(exc).__name__)
        return _problem(ApiProblem(503, "store_unavailable", "the callback store is unavailable"))
    except Exception:
        log.exception("http.internal_error", method=request.method, path=_loggable_path(request))
        return _problem(ApiProblem(500, "internal", "internal error"))


def _from_http(exc: web.HTTPException) -> ApiProblem:
    if exc.status == 413:
        limit = f"{schema.MAX_BODY_BYTES} bytes"
        return ApiProblem(413, "payload_too_large", f"request body exceeds {limit}")
    if exc.status == 404:
        return ApiProblem(404, "not_found", "no such resource")
    if exc.status == 405:
        return ApiProblem(405, "method_not_allowed", "method not allowed on this resource")
    if exc.status >= 500:
        return ApiProblem(500, "internal", "internal error")
    return ApiProblem(exc.status, "bad_request", exc.reason or "bad request")


def _problem(problem: ApiProblem) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="callback-ari"'
    return web.json_response(problem.body(), status=problem.status, headers=headers)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = PAGE_CSP


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


# --- handlers ------------------------------------------------------------------------


class _Api:
    """Route handlers bound to the service's store, config and live views."""

    def __init__(
        self,
        store: CallbackStore,
        config: Config,
        metrics: Metrics,
        readiness: Readiness,
        status: Callable[[], Awaitable[Any]],
        clock: Clock,
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self._on_stored = on_stored
        self._store = store
        self._config = config
        self._metrics = metrics
        self._readiness = readiness
        self._status = status
        self._clock = clock
        self._token = config.http.token.encode("utf-8")
        self._page = (STATIC_DIR / "status.html").read_bytes()
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}

    @web.middleware
    async def auth(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Bearer token on /api/ (off while no token is configured).

        The status page itself (``/``, ``/static/``) holds no data: without a token it shows
        the health view from /readyz, and numbers and names only with a token.
        """
        path = request.path
        if not (path.startswith("/api/") or path == "/api"):
            return await handler(request)
        if not self._token:
            raise ApiProblem(
                404,
                "not_found",
                "the HTTP API and the status page's figures are off: set 'token' in the [http] "
                "section",
            )
        if not self._authorized(request):
            raise ApiProblem(401, "unauthorized", "missing or wrong bearer token")
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = credentials.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token)

    def reconfigure(self, config: Config) -> None:
        self._config = config

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = {name: bool(up) for name, up in self._readiness().items()}
        down = sorted(name for name, up in checks.items() if not up)
        if down:
            return _json({"status": "unavailable", "down": down, "checks": checks}, 503)
        return _json({"status": "ok", "checks": checks})

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        return web.Response(
            body=self._static[name],
            content_type=STATIC_FILES[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def status(self, request: web.Request) -> web.Response:
        return _json(await self._status())

    async def list_callbacks(self, request: web.Request) -> web.Response:
        query = schema.parse_list(request.query, self._config)
        page = await self._store.list(
            queue=query.queue,
            state=query.state,
            limit=query.limit + 1,  # one more than asked tells whether a next page exists
            cursor=query.cursor,
        )
        more = len(page) > query.limit
        items = page[: query.limit]
        next_cursor = str(query.cursor + query.limit) if more else None
        return _json({"callbacks": [callback_view(cb) for cb in items], "next_cursor": next_cursor})

    async def get_callback(self, request: web.Request) -> web.Response:
        cb_id = schema.check_callback_id(request.match_info["id"])
        try:
            cb = await self._store.get(cb_id)
        except CallbackNotFound as exc:
            raise ApiProblem(404, "not_found", "no such callback") from exc
        return _json({"callback": callback_view(cb)})

    async def create_callback(self, request: web.Request) -> web.Response:
        doc = await _read_json(request, required=True)
        now = self._clock.now_ms()
        req = schema.parse_create(doc, self._config, now)
        q = req.queue
        try:
            number = validate_number(req.number, NumberPolicy.from_queue(q))
        except NumberRejected as exc:
            message = _NUMBER_MESSAGES.get(exc.reason, "this number cannot be called back")
            raise ApiProblem(
                422, "number_rejected", message, field="number", reason=exc.reason
            ) from exc
        existing = await self._store.find_live(q.name, number)
        if existing is None and await self._live_count(q.name) >= q.max_pending:
            raise ApiProblem(
                409, "conflict", "too many callbacks are pending for this queue", reason="full"
            )
        # the same path as the phone dialogue: validation again, dedupe, metrics, log
        cb, created = await store_request(
            self._store,
            self._metrics,
            q,
            number=number,
            caller_name=req.name,
            source_channel="",
            join_time_ms=req.requested_ms or now,
            origin=Origin.WEB,
            # No inbound call of theirs is up: nothing to wait for, so no grace (a member who
            # is ready now takes it at once); a requested time still holds.
            next_attempt_ms=req.requested_ms or 0,
        )
        body = {"created": created, "callback": callback_view(cb)}
        response = _json(body, 201 if created else 200)
        if created:
            response.headers["Location"] = f"/api/v1/callbacks/{cb.id}"
            if self._on_stored is not None:
                self._on_stored(q.name)
        return response

    async def _live_count(self, queue: str) -> int:
        per_state = (await self._store.counts()).get(queue, {})
        return sum(per_state.get(s, 0) for s in LIVE_STATES)

    async def cancel_callback(self, request: web.Request) -> web.Response:
        cb_id = schema.check_callback_id(request.match_info["id"])
        doc = await _read_json(request, required=False)
        reason = schema.parse_cancel(doc)
        try:
            cb = await self._store.get(cb_id)
            if cb.state.is_terminal:
                raise ApiProblem(
                    409, "conflict", f"the callback is already {cb.state.value}", reason="terminal"
                )
            cb = await self._store.cancel(cb_id, reason=reason)
        except CallbackNotFound as exc:
            raise ApiProblem(404, "not_found", "no such callback") from exc
        except InvalidTransition as exc:
            raise ApiProblem(
                409, "conflict", "the callback can no longer be cancelled", reason="terminal"
            ) from exc
        self._metrics.callback_finished(cb, self._clock.now_ms())
        log.info("callback.cancelled", callback_id=cb.id, queue=cb.queue, via="api")
        if self._on_stored is not None:
            self._on_stored(cb.queue)
        return _json({"callback": callback_view(cb)})

    # --- the do-not-call list of a queue (abandon follow-ups skip these numbers) ----------

    def _dnc_queue(self, request: web.Request) -> QueueConfig:
        q = self._config.queues.get(request.match_info["queue"])
        if q is None:
            raise ApiProblem(404, "not_found", "no such queue")
        return q

    async def _dnc_number(self, request: web.Request, q: QueueConfig) -> str:
        doc = await _read_json(request, required=True)
        raw = doc.get("number") if isinstance(doc, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise ApiProblem(
                422, "validation_failed", "a 'number' string is required", field="number"
            )
        try:
            return validate_number(raw, NumberPolicy.from_queue(q))
        except NumberRejected as exc:
            raise ApiProblem(
                422, "number_rejected", "not a number this queue could call", field="number",
                reason=exc.reason,
            ) from exc  # fmt: skip

    async def dnc_list(self, request: web.Request) -> web.Response:
        q = self._dnc_queue(request)
        return _json({"queue": q.name, "numbers": await self._store.dnc_list(q.name)})

    async def dnc_add(self, request: web.Request) -> web.Response:
        q = self._dnc_queue(request)
        number = await self._dnc_number(request, q)
        added = await self._store.dnc_add(q.name, number)
        log.info("dnc.added", queue=q.name, number=mask(number), via="api")
        return _json({"queue": q.name, "number": number, "added": added}, 201 if added else 200)

    async def dnc_remove(self, request: web.Request) -> web.Response:
        q = self._dnc_queue(request)
        number = await self._dnc_number(request, q)
        if not await self._store.dnc_remove(q.name, number):
            raise ApiProblem(404, "not_found", "the number is not on this queue's list")
        log.info("dnc.removed", queue=q.name, number=mask(number), via="api")
        return _json({"queue": q.name, "number": number, "removed": True})


async def _read_json(request: web.Request, *, required: bool) -> object | None:
    """The JSON body (None if absent and optional); 413 / 415 / 400 as JSON errors."""
    if not request.body_exists:
        if required:
            raise ApiProblem(400, "invalid_json", "a JSON body is required")
        return None
    if request.content_type != "application/json":
        raise ApiProblem(415, "unsupported_media_type", "send Content-Type: application/json")
    body = await request.read()
    if not body.strip() and not required:
        return None
    return schema.decode_json(body)


_API = web.AppKey("callback_ari.api", _Api)

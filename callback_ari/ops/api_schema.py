"""HTTP API wire shapes: request validation (untrusted JSON in), response views, status document."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired, Protocol, TypedDict

from callback_ari.clock import Clock
from callback_ari.config.loader import Config, QueueConfig
from callback_ari.core.hours import BusinessHours
from callback_ari.errors import CallbackAriError
from callback_ari.masking import mask
from callback_ari.models import Callback, State
from callback_ari.store.store import ID_RE

MAX_BODY_BYTES = 16 * 1024
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_NAME_CHARS = 80
MAX_NUMBER_CHARS = 64
MAX_REASON_CHARS = 200
PAST_GRACE_MS = 60_000  # a requested_at this close to now counts as "now" (clock skew, typing)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ApiProblem(CallbackAriError):
    """A request the API refuses; rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.reason = reason
        super().__init__(f"{status} {code}: {message}")

    def body(self) -> dict[str, Any]:
        """The JSON error document."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.reason is not None:
            error["reason"] = self.reason
        return {"error": error}


def invalid(field: str | None, message: str, reason: str | None = None) -> ApiProblem:
    """A 422 validation_failed problem about one field."""
    return ApiProblem(422, "validation_failed", message, field=field, reason=reason)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated web callback request (the number is still raw: phone.py decides on it)."""

    queue: QueueConfig
    number: str
    name: str
    requested_ms: int | None  # None = as soon as possible


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Validated filters and page of ``GET /api/v1/callbacks``."""

    queue: str | None
    state: State | None
    limit: int
    cursor: int


def decode_json(body: bytes) -> object:
    """Strict JSON: UTF-8 only, no NaN/Infinity, bounded nesting; else invalid_json."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiProblem(400, "invalid_json", "request body is not UTF-8") from exc
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiProblem(400, "invalid_json", "request body is not valid JSON") from exc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _object(doc: object) -> Mapping[str, object]:
    if not isinstance(doc, dict):
        raise invalid(None, "request body must be a JSON object")
    return doc


def _reject_unknown(doc: Mapping[str, object], allowed: frozenset[str]) -> None:
    for key in doc:
        if key not in allowed:
            raise invalid(str(key)[:64], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _text(doc: Mapping[str, object], key: str, *, max_chars: int, required: bool) -> str:
    value = doc.get(key)
    if value is None:
        if required:
            raise invalid(key, "is required")
        return ""
    if not isinstance(value, str):
        raise invalid(key, "must be a string")
    if len(value) > max_chars:
        raise invalid(key, f"must be at most {max_chars} characters")
    if _CONTROL.search(value):
        raise invalid(key, "must not contain control characters")
    return value.strip()


_CREATE_FIELDS = frozenset({"queue", "number", "name", "requested_at"})


def parse_create(doc: object, config: Config, now_ms: int) -> CreateRequest:
    """Check a ``POST /api/v1/callbacks`` body; raise ApiProblem for the first problem."""
    body = _object(doc)
    _reject_unknown(body, _CREATE_FIELDS)
    queue_name = _text(body, "queue", max_chars=128, required=True)
    number = _text(body, "number", max_chars=MAX_NUMBER_CHARS, required=True)
    name = _text(body, "name", max_chars=MAX_NAME_CHARS, required=False)
    q = config.queues.get(queue_name)
    if q is None:
        # Each instance serves the queues of its own PBX (README: several PBXs and instances).
        served = ", ".join(sorted(config.queues)) or "none"
        raise invalid(
            "queue",
            f"no such queue on this instance (it serves: {served}); send the request to an "
            "instance of the PBX that hosts the queue",
            "unknown_queue",
        )
    if not q.enabled:
        raise invalid("queue", "callbacks are switched off for this queue", "queue_disabled")
    if not number:
        raise ApiProblem(422, "number_rejected", "number is empty", field="number", reason="empty")
    requested = body.get("requested_at")
    requested_ms = None if requested is None else _requested_ms(requested, q, now_ms)
    return CreateRequest(queue=q, number=number, name=name, requested_ms=requested_ms)


def _requested_ms(value: object, q: QueueConfig, now_ms: int) -> int | None:
    """A scheduled time: ISO-8601 with an offset, in business hours, not past, within max_age."""
    field = "requested_at"
    if not isinstance(value, str) or len(value) > 64:
        raise invalid(field, "must be an ISO-8601 time string")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise invalid(field, "must be an ISO-8601 time like 2030-01-31T14:30:00+01:00") from exc
    if when.tzinfo is None or when.utcoffset() is None:
        raise invalid(field, "must include a UTC offset (e.g. Z or +01:00)", "no_timezone")
    try:
        ms = int(when.timestamp() * 1000)
    except (OverflowError, ValueError, OSError) as exc:
        raise invalid(field, "is out of range") from exc
    if ms < now_ms - PAST_GRACE_MS:
        raise invalid(field, "is in the past", "in_the_past")
    if ms > now_ms + q.max_age * 1000:
        raise invalid(field, f"is more than {q.max_age} s ahead (max_age)", "too_far_ahead")
    hours = BusinessHours.parse(q.hours, q.timezone)
    if not hours.is_open(ms):
        raise invalid(field, "is outside the queue's business hours", "outside_business_hours")
    return None if ms <= now_ms else ms


_CANCEL_FIELDS = frozenset({"reason"})


def parse_cancel(doc: object | None) -> str:
    """The optional ``{"reason": "..."}`` of a cancel request; defaults to "api"."""
    if doc is None:
        return "api"
    body = _object(doc)
    _reject_unknown(body, _CANCEL_FIELDS)
    return _text(body, "reason", max_chars=MAX_REASON_CHARS, required=False) or "api"


_LIST_PARAMS = frozenset({"queue", "state", "limit", "cursor"})


def parse_list(query: Mapping[str, str], config: Config) -> ListQuery:
    """Check the query string of ``GET /api/v1/callbacks``."""
    _reject_unknown(query, _LIST_PARAMS)
    queue = query.get("queue") or None
    if queue is not None and queue not in config.queues:
        raise invalid("queue", "no such queue", "unknown_queue")
    state_text = query.get("state") or None
    state: State | None = None
    if state_text is not None:
        try:
            state = State(state_text)
        except ValueError as exc:
            allowed = ", ".join(s.value for s in State)
            raise invalid("state", f"must be one of {allowed}") from exc
    limit = _int_param(query, "limit", DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"must be between 1 and {MAX_LIMIT}")
    cursor = _int_param(query, "cursor", 0)
    if cursor < 0:
        raise invalid("cursor", "is not a cursor this API returned")
    return ListQuery(queue=queue, state=state, limit=limit, cursor=cursor)


def _int_param(query: Mapping[str, str], key: str, default: int) -> int:
    text = query.get(key)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise invalid(key, "must be a non-negative integer")
    return int(text)


def check_callback_id(value: str) -> str:
    """A path's callback id, or 404 when it cannot be one of ours."""
    if not ID_RE.match(value):
        raise ApiProblem(404, "not_found", "no such callback")
    return value


# --- responses -------------------------------------------------------------------------


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC time ("2030-01-31T14:30:00.000Z")."""
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def callback_view(cb: Callback) -> dict[str, Any]:
    """A callback as the API shows it: the number masked unless masking is switched off."""
    return {
        "id": cb.id,
        "queue": cb.queue,
        "number": mask(cb.number),
        "name": cb.caller_name,
        "state": cb.state.value,
        "attempts": cb.attempts,
        "last_outcome": cb.last_outcome or None,
        "last_cause": cb.last_cause or None,
        "origin": cb.origin.value,
        "reason": cb.reason,
        "priority": cb.priority,
        "created_at": iso_ms(cb.created_ms),
        "join_time": iso_ms(cb.join_time_ms),
        "next_attempt_at": iso_ms(cb.next_attempt_ms) if cb.next_attempt_ms else None,
        "updated_at": iso_ms(cb.updated_ms) if cb.updated_ms else None,
    }


# --- the status document (GET /api/v1/status) -------------------------------------------


class CallerView(TypedDict):
    """A caller holding in the queue (from the AMI watcher)."""

    channel: str
    caller: str  # masked
    position: int
    hold_s: float


class PendingView(TypedDict):
    """A live callback (pending, dialing or retry_wait)."""

    id: str
    number: str  # masked
    state: str
    attempts: int
    next_attempt_at: str | None  # ISO-8601 UTC; None = as soon as a member is ready
    origin: str  # phone, agi, web, abandon
    reason: str  # the caller's pick from the reason menu ("" = none)


class OutcomeView(TypedDict):
    """How a recently finished callback ended."""

    id: str
    outcome: str  # its final state: connected, failed, expired or cancelled
    detail: str  # last attempt outcome (no_answer, busy, ...) or the cancel/expiry reason
    at: str  # ISO-8601 UTC


class ReservationView(TypedDict):
    """A member paused for the callback whose turn it is."""

    member: str  # the member's interface
    callback_id: str
    held_s: float
    deadline_s: float  # seconds left before it is released whatever happens


class TodayView(TypedDict):
    """Today's figures of one queue: since midnight in the queue's time zone (audit stream)."""

    since: str  # ISO-8601: that midnight
    requested: int
    connected: int
    failed: int
    expired: int
    cancelled: int
    success_rate: float | None  # connected / finished; None while nothing finished
    connect_p50_s: float | None  # median request -> connected


class TrendView(TypedDict):
    """The last hour of one queue, one entry per sample (``service.trends``)."""

    interval_s: float
    at_ms: list[int]
    holding: list[int]
    pending: list[int | None]
    hold_p90_s: list[float | None]
    attempts: dict[str, list[int]]  # outcome -> attempts ended in each interval


class QueueStatusView(TypedDict):
    name: str
    ready_members: int
    callers: list[CallerView]
    pending: list[PendingView]
    in_flight: int
    reserved: list[ReservationView]
    last_outcomes: list[OutcomeView]
    today: NotRequired[TodayView]
    trend: NotRequired[TrendView]


class LinksView(TypedDict):
    ari: bool
    ami: bool
    redis: bool


class StatusDoc(TypedDict):
    """What ``GET /api/v1/status`` returns and the status page renders."""

    generated_at: str  # ISO-8601 UTC
    instance: str
    links: LinksView
    queues: list[QueueStatusView]


class WatcherView(TypedDict):
    """Live queue data the service supplies per queue to ``status_doc``."""

    ready_members: int
    callers: list[CallerView]  # ``caller`` may be raw: status_doc masks it


PENDING_SHOWN = 50
OUTCOMES_SHOWN = 10


@dataclass(frozen=True, slots=True)
class QueueRecords:
    """What the store holds for one queue's status: live and recently finished callbacks."""

    pending: Sequence[Callback]  # dialing first, then retry_wait, then pending
    finished: Sequence[Callback]  # the tail of each terminal state, in any order


def status_doc(
    config: Config,
    now_ms: int,
    records: Mapping[str, QueueRecords],
    *,
    watcher_view: Callable[[str], WatcherView | Mapping[str, Any]],
    in_flight: Callable[[str], int],
    links: Mapping[str, bool],
    reservations: Callable[[str], list[ReservationView]] | None = None,
) -> StatusDoc:
    """The status document from live queue data and what the store holds (no I/O)."""
    queues: list[QueueStatusView] = []
    for name in config.queues:
        live = watcher_view(name)
        callers: list[CallerView] = [
            {
                "channel": str(c.get("channel", "")),
                "caller": mask(str(c.get("caller") or "")),
                "position": int(c.get("position", 0)),
                "hold_s": round(float(c.get("hold_s", 0.0)), 1),
            }
            for c in live.get("callers", [])
        ]
        held = records.get(name, QueueRecords((), ()))
        pending: list[PendingView] = [
            {
                "id": cb.id,
                "number": mask(cb.number),
                "state": cb.state.value,
                "attempts": cb.attempts,
                "next_attempt_at": (
                    iso_ms(cb.next_attempt_ms) if cb.next_attempt_ms > now_ms else None
                ),
                "origin": cb.origin.value,
                "reason": cb.reason,
            }
            for cb in held.pending
        ]
        queues.append(
            {
                "name": name,
                "ready_members": int(live.get("ready_members", 0)),
                "callers": callers,
                "pending": pending[:PENDING_SHOWN],
                "in_flight": in_flight(name),
                "reserved": reservations(name) if reservations is not None else [],
                "last_outcomes": last_outcomes(held.finished),
            }
        )
    return {
        "generated_at": iso_ms(now_ms),
        "instance": config.general.instance_id,
        "links": {
            "ari": bool(links.get("ari")),
            "ami": bool(links.get("ami")),
            "redis": bool(links.get("redis")),
        },
        "queues": queues,
    }


def last_outcomes(finished: Sequence[Callback]) -> list[OutcomeView]:
    """The most recently finished callbacks, newest first."""
    newest = sorted(finished, key=lambda cb: cb.updated_ms, reverse=True)
    return [
        {
            "id": cb.id,
            "outcome": cb.state.value,
            "detail": cb.last_outcome or cb.last_cause,
            "at": iso_ms(cb.updated_ms),
        }
        for cb in newest[:OUTCOMES_SHOWN]
    ]


class _Watcher(Protocol):
    def callers(self, queue: str) -> Sequence[Any]: ...
    def ready_members(self, queue: str) -> int: ...


def watcher_view_of(watcher: _Watcher, clock: Clock) -> Callable[[str], WatcherView]:
    """Adapt a ``QueueWatcher`` to ``status_doc``'s ``watcher_view`` argument."""

    def view(queue: str) -> WatcherView:
        now = clock.now_ms()
        callers: list[CallerView] = [
            {
                "channel": c.channel,
                "caller": mask(c.caller_number),
                "position": c.position,
                "hold_s": max(0.0, (now - c.join_time_ms) / 1000),
            }
            for c in watcher.callers(queue)
        ]
        return {"ready_members": watcher.ready_members(queue), "callers": callers}

    return view

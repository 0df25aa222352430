"""Reports over the store's audit stream: outcomes, success rate, attempts, time to connect."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from callback_ari.models import TERMINAL_STATES, Outcome, State

OVERALL = "*"  # the key of the all-queues row
DEFAULT_LOOKBACK_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Transition:
    """One audit entry: a callback changed state; ``outcome`` is set when an attempt ended."""

    at_ms: int
    callback_id: str
    queue: str
    from_state: str  # "" when the callback was created
    to_state: str
    outcome: str  # the attempt's Outcome value, "" if this entry ends no attempt
    cause: str  # dial cause, or the reason of a cancel / expiry
    attempt: int
    origin: str = ""  # on a "created" entry: where the request came from
    reason: str = ""  # on a "created" entry: the caller's reason ("" = none)
    recording: str = ""  # on a "recording" entry: the caller's recorded message (no move)

    @property
    def event(self) -> str:
        """ "created" for a new callback, "recording" when its message was kept on it, else
        the state it moved to."""
        if not self.from_state:
            return "created"
        return "recording" if self.recording else self.to_state

    def as_dict(self) -> dict[str, Any]:
        return {
            "at_ms": self.at_ms,
            "callback_id": self.callback_id,
            "queue": self.queue,
            "from": self.from_state,
            "to": self.to_state,
            "outcome": self.outcome,
            "cause": self.cause,
            "attempt": self.attempt,
            **({"recording": self.recording} if self.recording else {}),
        }


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def parse_audit(entries: Iterable[Mapping[str, Any]]) -> list[Transition]:
    """``CallbackStore.audit`` dicts (id queue from to outcome cause attempt ts) -> transitions.

    Oldest first. Entries without a callback id or time are skipped: a report must survive
    odd records rather than refuse to run.
    """
    out: list[Transition] = []
    for e in entries:
        cb_id = str(e.get("id") or "")
        at_ms = _int(e.get("ts"))
        if not cb_id or at_ms <= 0:
            continue
        out.append(
            Transition(
                at_ms=at_ms,
                callback_id=cb_id,
                queue=str(e.get("queue") or ""),
                from_state=str(e.get("from") or ""),
                to_state=str(e.get("to") or ""),
                outcome=str(e.get("outcome") or ""),
                cause=str(e.get("cause") or ""),
                attempt=_int(e.get("attempt")),
                origin=str(e.get("origin") or ""),
                reason=str(e.get("reason") or ""),
                recording=str(e.get("recording") or ""),
            )
        )
    out.sort(key=lambda t: t.at_ms)
    return out


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueReport:
    """Figures for one queue (or all queues) over the report's period."""

    queue: str
    requested: int  # callbacks created in the period
    attempts: int  # dial attempts that ended in the period
    outcomes: Mapping[str, int]  # attempt outcome -> count (connected, busy, no_answer, ...)
    finished: Mapping[str, int]  # terminal state reached -> count (connected, failed, ...)
    success_rate: float | None  # connected / callbacks that reached a terminal state
    attempts_per_success: float | None  # dial attempts it took the connected ones, on average
    connect_p50_s: float | None  # request -> connected, median
    connect_p90_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "requested": self.requested,
            "attempts": self.attempts,
            "outcomes": dict(self.outcomes),
            "finished": dict(self.finished),
            "success_rate": self.success_rate,
            "attempts_per_success": self.attempts_per_success,
            "connect_p50_s": self.connect_p50_s,
            "connect_p90_s": self.connect_p90_s,
        }


@dataclass(frozen=True, slots=True)
class Report:
    since_ms: int
    until_ms: int
    queues: tuple[QueueReport, ...]  # per queue, sorted by name
    overall: QueueReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "queues": [q.as_dict() for q in self.queues],
            "overall": self.overall.as_dict(),
        }


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _Tally:
    requested: int = 0
    attempts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)
    success_attempts: int = 0
    connect_s: list[float] = field(default_factory=list)

    def freeze(self, queue: str) -> QueueReport:
        terminal = sum(self.finished.values())
        connected = self.finished.get(State.CONNECTED.value, 0)
        return QueueReport(
            queue=queue,
            requested=self.requested,
            attempts=self.attempts,
            outcomes=dict(sorted(self.outcomes.items())),
            finished=dict(sorted(self.finished.items())),
            success_rate=round(connected / terminal, 4) if terminal else None,
            attempts_per_success=(
                round(self.success_attempts / connected, 2) if connected else None
            ),
            connect_p50_s=_round(percentile(self.connect_s, 50)),
            connect_p90_s=_round(percentile(self.connect_s, 90)),
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
_OUTCOMES = frozenset(o.value for o in Outcome)


GROUPINGS = ("queue", "reason", "origin")
NO_VALUE = "(none)"  # the row of callbacks without a reason (or created before the audit)


def compute_report(
    transitions: Sequence[Transition], since_ms: int, until_ms: int, *, by: str = "queue"
) -> Report:
    """Pure: the report over transitions whose time lies in [since_ms, until_ms].

    ``by`` picks the rows: queue, or the reason / origin the callback was created with
    (known from its "created" audit entry).
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
    tallies: dict[str, _Tally] = {}
    created: dict[str, int] = {}
    group_of: dict[str, str] = {}
    for t in transitions:
        if t.event == "created" and by != "queue":
            group_of.setdefault(t.callback_id, getattr(t, by) or NO_VALUE)
    for t in sorted(transitions, key=lambda t: t.at_ms):
        if t.event == "created":
            created.setdefault(t.callback_id, t.at_ms)
        if not since_ms <= t.at_ms <= until_ms:
            continue  # earlier entries only tell when a callback was requested
        key = t.queue if by == "queue" else group_of.get(t.callback_id, NO_VALUE)
        tally = tallies.setdefault(key, _Tally())
        if t.event == "created":
            tally.requested += 1
        if t.outcome in _OUTCOMES:
            tally.attempts += 1
            tally.outcomes[t.outcome] = tally.outcomes.get(t.outcome, 0) + 1
        if t.to_state in _TERMINAL and t.from_state != t.to_state:
            tally.finished[t.to_state] = tally.finished.get(t.to_state, 0) + 1
            if t.to_state == State.CONNECTED.value:
                tally.success_attempts += max(t.attempt, 1)
                start = created.get(t.callback_id)
                if start is not None and start <= t.at_ms:
                    tally.connect_s.append((t.at_ms - start) / 1000)
    per_queue = tuple(tallies[name].freeze(name) for name in sorted(tallies))
    return Report(since_ms, until_ms, per_queue, _merge(tallies.values()).freeze(OVERALL))


def _merge(tallies: Iterable[_Tally]) -> _Tally:
    total = _Tally()
    for t in tallies:
        total.requested += t.requested
        total.attempts += t.attempts
        total.success_attempts += t.success_attempts
        total.connect_s.extend(t.connect_s)
        for k, v in t.outcomes.items():
            total.outcomes[k] = total.outcomes.get(k, 0) + v
        for k, v in t.finished.items():
            total.finished[k] = total.finished.get(k, 0) + v
    return total


class _AuditSource(Protocol):
    async def audit(
        self, since_ms: int | None = None, count: int = 1000, *, after_id: str | None = None
    ) -> list[dict[str, str]]: ...


async def read_audit(store: _AuditSource, since_ms: int, *, page: int = 1000) -> list[Transition]:
    """Every audit entry from ``since_ms`` on, read page by page."""
    rows = await store.audit(since_ms, page)
    entries = list(rows)
    while len(rows) == page:
        rows = await store.audit(None, page, after_id=rows[-1]["event_id"])
        entries.extend(rows)
    return parse_audit(entries)


async def load_report(
    store: _AuditSource,
    since_ms: int,
    until_ms: int,
    *,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
    page: int = 1000,
    by: str = "queue",
) -> Report:
    """Read the audit stream and compute the report over [since_ms, until_ms].

    Entries from ``lookback_ms`` before the period are read too, so that a callback requested
    just before the period still has its request-to-connect time measured.
    """
    transitions = await read_audit(store, since_ms - lookback_ms, page=page)
    return compute_report(transitions, since_ms, until_ms, by=by)


def render_table(report: Report, by: str = "queue") -> str:
    """The report as aligned text for a terminal."""
    rows: list[list[str]] = []
    for q in (*report.queues, report.overall):
        rows.append(
            [
                ("all queues" if by == "queue" else "all") if q.queue == OVERALL else q.queue,
                str(q.requested),
                str(q.attempts),
                str(q.finished.get("connected", 0)),
                str(q.finished.get("failed", 0)),
                str(q.finished.get("expired", 0)),
                str(q.finished.get("cancelled", 0)),
                "-" if q.success_rate is None else f"{q.success_rate * 100:.1f}%",
                "-" if q.attempts_per_success is None else f"{q.attempts_per_success:.2f}",
                _secs(q.connect_p50_s),
                _secs(q.connect_p90_s),
            ]
        )
    headers = [by.upper(), "REQUESTED", "ATTEMPTS", "CONNECTED", "FAILED", "EXPIRED", "CANCELLED",
               "SUCCESS", "ATT/SUCCESS", "P50 CONNECT", "P90 CONNECT"]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))).rstrip()
             for r in (headers, *rows)]  # fmt: skip
    outcome_names = sorted(report.overall.outcomes)
    if outcome_names:
        detail = ", ".join(f"{k} {report.overall.outcomes[k]}" for k in outcome_names)
        lines.append("")
        lines.append(f"attempt outcomes: {detail}")
    return "\n".join(lines) + "\n"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.1f}m"

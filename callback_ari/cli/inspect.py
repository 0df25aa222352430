"""Operator subcommands that read Redis directly (list, show, cancel, stats, report).

They work while the service is down. Tables on a terminal, ``--json`` for scripts; numbers are
masked unless ``--unmasked``. Exit codes: 0 ok, 1 no such callback / cannot cancel, 2 usage or
config problem, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import redis.exceptions

from callback_ari.clock import SystemClock
from callback_ari.config.loader import Config, load_config
from callback_ari.config.schema import redact_url
from callback_ari.errors import (
    CallbackNotFound,
    ConfigError,
    ExitCode,
    InvalidTransition,
    StoreError,
    StoreUnavailable,
)
from callback_ari.masking import mask
from callback_ari.models import Callback, State
from callback_ari.ops import reports
from callback_ari.store.store import CallbackStore, connect_redis

REDIS_TIMEOUT_S = 10.0
_SINCE = re.compile(r"^\s*(\d{1,6})\s*([mhd])\s*$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}

InspectHandler = Callable[[argparse.Namespace, Config], int]


@dataclass(frozen=True, slots=True)
class InspectCommand:
    """One subcommand: its name, help line, arguments and ``handler(args, config) -> exit``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: InspectHandler


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the inspect subcommands; each sets ``args.inspect_handler(args, config)``."""
    for command in COMMANDS:
        parser = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(parser)
        parser.set_defaults(inspect_handler=command.handler)


def with_config(handler: InspectHandler) -> Callable[[argparse.Namespace], int]:
    """Adapt a handler to ``cli.register``'s ``handler(args)``: loads ``args.config`` first."""

    def run(args: argparse.Namespace) -> int:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return ExitCode.USAGE
        return handler(args, config)

    return run


def parse_since(text: str) -> int:
    """ "30m", "24h", "7d" -> milliseconds (argparse type: bad input is a usage error)."""
    match = _SINCE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 24h or 7d, got {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


# --- plumbing ------------------------------------------------------------------------


@asynccontextmanager
async def _open_store(config: Config) -> AsyncIterator[CallbackStore]:
    cfg = config.redis
    client = connect_redis(cfg.url, sentinel_master=cfg.sentinel_master, sentinels=cfg.sentinels)
    try:
        store = CallbackStore(
            client,
            prefix=config.redis.prefix,
            clock=SystemClock(),
            audit_maxlen=config.redis.audit_maxlen,
        )
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await store.ping()
        yield store
    finally:
        await client.aclose()


def run_on_store(
    config: Config, work: Callable[[CallbackStore], Awaitable[int]], err: TextIO | None = None
) -> int:
    """Run ``work`` against the store; Redis trouble is one line on stderr and exit 3."""

    async def main() -> int:
        async with _open_store(config) as store, asyncio.timeout(REDIS_TIMEOUT_S * 3):
            return await work(store)

    try:
        return asyncio.run(main())
    except (StoreUnavailable, redis.exceptions.ConnectionError, OSError, TimeoutError) as exc:
        reason = _reason(exc)
        where = _redis_where(config)
        print(f"callback-ari: cannot reach Redis at {where}: {reason}", file=err or sys.stderr)
        return ExitCode.REDIS
    except (StoreError, redis.exceptions.RedisError) as exc:
        print(f"callback-ari: Redis error: {_reason(exc)}", file=err or sys.stderr)
        return ExitCode.REDIS


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = "timed out"
    return redact_url(text) if "://" in text else text


def _redis_where(config: Config) -> str:
    if config.redis.sentinel_master:
        return f"sentinel master {config.redis.sentinel_master!r}"
    try:
        return redact_url(config.redis.url)
    except ValueError:
        return "the configured URL"


def _time(ms: int, local: bool = False) -> str:
    """Epoch ms as a time: UTC (``Z``) by default, this machine's local time with ``local``."""
    if not ms:
        return "-"
    if local:
        return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# Fields that only mean something while a callback is live: a final record drops them.
_LIVE_ONLY = ("next_attempt_ms", "lease_owner", "lease_expires_ms")
# ``show``'s labels for the time fields (the JSON keeps the *_ms numbers).
_TIME_LABELS = {
    "join_time_ms": "joined",
    "created_ms": "created",
    "next_attempt_ms": "next_attempt",
    "updated_ms": "updated",
    "lease_expires_ms": "lease_expires",
}


def _number(cb: Callback, unmasked: bool) -> str:
    return cb.number if unmasked else mask(cb.number)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)]) + "\n"


def _record(cb: Callback, unmasked: bool) -> dict[str, Any]:
    """The record as ``list --json`` and ``show`` print it; live-only fields are None once
    the callback is final (a stale lease or next attempt would mislead)."""
    record: dict[str, Any] = {
        "id": cb.id,
        "queue": cb.queue,
        "number": _number(cb, unmasked),
        "name": cb.caller_name,
        "state": cb.state.value,
        "attempts": cb.attempts,
        "last_outcome": cb.last_outcome,
        "last_cause": cb.last_cause,
        "origin": cb.origin.value,
        "reason": cb.reason,
        "priority": cb.priority,
        "join_time_ms": cb.join_time_ms,
        "created_ms": cb.created_ms,
        "next_attempt_ms": cb.next_attempt_ms,
        "updated_ms": cb.updated_ms,
        "lease_owner": cb.lease_owner,
        "lease_expires_ms": cb.lease_expires_ms,
        "source_channel": cb.source_channel,
    }
    if cb.state.is_terminal:
        record.update(dict.fromkeys(_LIVE_ONLY))
    return record


def _out(args: argparse.Namespace) -> TextIO:
    return sys.stdout


def print_json(args: argparse.Namespace, doc: object) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False), file=_out(args))


# --- list ----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parser.add_argument(
        "--unmasked", action="store_true", help="show phone numbers in full (default masked)"
    )


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", "-q", help="only this queue")
    parser.add_argument(
        "--state", "-s", choices=[s.value for s in State], help="only callbacks in this state"
    )
    parser.add_argument(
        "--limit", "-n", type=_positive, default=50, help="at most N callbacks (default 50)"
    )
    _common(parser)
    _local(parser)


def _local(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local", action="store_true", help="times in this machine's local time (default UTC)"
    )


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 100000, got {text!r}")
    return int(text)


def list_handler(args: argparse.Namespace, config: Config) -> int:
    """``list``: callbacks, newest state first as the store returns them."""

    async def work(store: CallbackStore) -> int:
        state = State(args.state) if args.state else None
        counts = await store.counts()
        if args.queue and args.queue not in config.queues and args.queue not in counts:
            known = ", ".join(sorted(set(config.queues) | set(counts))) or "none"
            print(f"callback-ari: warning: no queue {args.queue!r} in the configuration or in "
                  f"Redis (known: {known})", file=sys.stderr)  # fmt: skip
        total = sum(
            n
            for queue, per_state in counts.items()
            if not args.queue or queue == args.queue
            for name, n in per_state.items()
            if state is None or name == state.value
        )
        items = await store.list(queue=args.queue, state=state, limit=args.limit, cursor=0)
        shown = f"{len(items)} of {total} shown (--limit {args.limit})"
        if args.json:
            print_json(args, [_record(cb, args.unmasked) for cb in items])
            if len(items) < total:
                print(shown, file=sys.stderr)
            return ExitCode.OK
        headers = ("ID", "QUEUE", "NUMBER", "NAME", "STATE", "ATTEMPTS", "LAST OUTCOME", "JOINED",
                   "NEXT ATTEMPT")  # fmt: skip
        rows = [
            (cb.id, cb.queue, _number(cb, args.unmasked), cb.caller_name or "-", cb.state.value,
             cb.attempts, cb.last_outcome or "-", _time(cb.join_time_ms, args.local),
             _time(cb.next_attempt_ms, args.local) if cb.state.is_live else "-")
            for cb in items
        ]  # fmt: skip
        out = _out(args)
        if rows:
            out.write(table(headers, rows))
            if len(items) < total:
                print(shown, file=out)
        else:
            print("no callbacks", file=out)
        return ExitCode.OK

    return run_on_store(config, work)


# --- show / cancel -------------------------------------------------------------------


def _id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="callback id (see `list`)")
    _common(parser)


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _id_arguments(parser)
    _local(parser)


def show_handler(args: argparse.Namespace, config: Config) -> int:
    """``show ID``: every field of one callback and its recorded transitions."""

    async def work(store: CallbackStore) -> int:
        try:
            cb = await store.get(args.id)
        except CallbackNotFound:
            print(f"callback-ari: no callback with id {args.id!r}", file=sys.stderr)
            return ExitCode.FAILED
        transitions = await reports.read_audit(store, cb.created_ms)
        history = [t for t in transitions if t.callback_id == cb.id]
        record = _record(cb, args.unmasked)
        if args.json:
            record["history"] = [t.as_dict() for t in history]
            print_json(args, record)
            return ExitCode.OK
        out = _out(args)
        shown = {
            _TIME_LABELS.get(key, key): _time(value, args.local) if key in _TIME_LABELS else value
            for key, value in record.items()
            if not (cb.state.is_terminal and key in _LIVE_ONLY)
        }
        width = max(len(k) for k in shown)
        for key, value in shown.items():
            print(f"{key.ljust(width)}  {value if value not in ('', None) else '-'}", file=out)
        if history:
            print("\nhistory", file=out)
            rows = [(_time(t.at_ms, args.local), t.event, t.to_state or "-", t.outcome or "-",
                     t.attempt) for t in history]  # fmt: skip
            out.write(table(("AT", "EVENT", "STATE", "OUTCOME", "ATTEMPT"), rows))
        return ExitCode.OK

    return run_on_store(config, work)


def cancel_handler(args: argparse.Namespace, config: Config) -> int:
    """``cancel ID``: cancel a live callback (exit 1 if unknown or already finished)."""

    async def work(store: CallbackStore) -> int:
        try:
            cb = await store.get(args.id)
            if cb.state.is_terminal:
                print(
                    f"callback-ari: callback {cb.id} is already {cb.state.value}", file=sys.stderr
                )
                return ExitCode.FAILED
            cb = await store.cancel(args.id, reason="cli")
        except CallbackNotFound:
            print(f"callback-ari: no callback with id {args.id!r}", file=sys.stderr)
            return ExitCode.FAILED
        except InvalidTransition as exc:
            print(f"callback-ari: cannot cancel {args.id}: {exc}", file=sys.stderr)
            return ExitCode.FAILED
        if args.json:
            print_json(args, _record(cb, args.unmasked))
        else:
            print(f"cancelled {cb.id} ({cb.queue}, {_number(cb, args.unmasked)})", file=_out(args))
        return ExitCode.OK

    return run_on_store(config, work)


# --- stats / report ------------------------------------------------------------------


def _json_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def stats_handler(args: argparse.Namespace, config: Config) -> int:
    """``stats``: how many callbacks each queue has in each state."""

    async def work(store: CallbackStore) -> int:
        counts = await store.counts()
        names = list(config.queues) + sorted(set(counts) - set(config.queues))
        doc = {n: {s.value: counts.get(n, {}).get(s.value, 0) for s in State} for n in names}
        if args.json:
            print_json(args, doc)
            return ExitCode.OK
        headers = ("QUEUE", *(s.value.upper() for s in State), "TOTAL")
        rows = [(n, *per.values(), sum(per.values())) for n, per in doc.items()]
        _out(args).write(table(headers, rows))
        return ExitCode.OK

    return run_on_store(config, work)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=parse_since,
        default=parse_since("24h"),
        metavar="DURATION",
        help="look back this far: 30m, 24h, 7d (default 24h)",
    )
    parser.add_argument(
        "--by",
        choices=reports.GROUPINGS,
        default="queue",
        help="one row per queue (default), per reason the callers gave, or per origin",
    )
    _json_only(parser)


def report_handler(args: argparse.Namespace, config: Config) -> int:
    """``report``: outcomes, success rate, attempts per success, time to connect."""

    async def work(store: CallbackStore) -> int:
        now = SystemClock().now_ms()
        report = await reports.load_report(store, now - int(args.since), now, by=args.by)
        if args.json:
            print_json(args, report.as_dict())
        else:
            _out(args).write(reports.render_table(report, args.by))
        return ExitCode.OK

    return run_on_store(config, work)


COMMANDS: tuple[InspectCommand, ...] = (
    InspectCommand("list", "list stored callbacks (reads Redis directly)", _list_arguments,
                   list_handler),
    InspectCommand("show", "show one callback and its history", _show_arguments, show_handler),
    InspectCommand("cancel", "cancel a pending callback", _id_arguments, cancel_handler),
    InspectCommand("stats", "callbacks per queue and state", _json_only, stats_handler),
    InspectCommand("report", "outcomes and success rates over a period", _report_arguments,
                   report_handler),
)  # fmt: skip

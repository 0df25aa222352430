"""The durable callback store in Redis: atomic, idempotent transitions plus an audit stream.

The key schema (every key, index, hash field and state name) is ``store/keys.py``; the Lua
scripts get the same names from the header it generates.
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast

import redis.exceptions
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from callback_ari.clock import Clock, SystemClock
from callback_ari.errors import (
    CallbackNotFound,
    CorruptRecord,
    InvalidTransition,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from callback_ari.models import TERMINAL_STATES, Callback, Origin, Outcome, State
from callback_ari.store import keys
from callback_ari.store import scripts as store_scripts
from callback_ari.store.scripts import as_text, decode_record

log = structlog.get_logger(__name__)

T = TypeVar("T")

ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
DEFAULT_TERMINAL_TTL_S = 30 * 86400
_STATE_ORDER = tuple(State)
_TERMINAL_ORDER = tuple(s for s in State if s in TERMINAL_STATES)


def connect_redis(url: str, *, sentinel_master: str = "", sentinels: tuple[str, ...] = ()) -> Redis:
    """A client for ``redis://`` / ``rediss://`` URLs (ACL user and password in the URL).

    With ``sentinel_master`` the URL supplies credentials, db and TLS for the master, and
    ``sentinels`` ("host:port" each; default: the URL's host, port 26379) find it.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries=2),
    }
    try:
        if not sentinel_master:
            # A blocking pool: a burst of callers waits for a connection instead of failing.
            pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=5, **common)
            return Redis.from_pool(pool)
        kwargs: dict[str, Any] = dict(parse_url(url))
        host = str(kwargs.pop("host", "127.0.0.1"))
        kwargs.pop("port", None)
        if kwargs.pop("connection_class", None) is not None:
            kwargs["ssl"] = True  # parse_url only sets a class for rediss://
        hosts = [_host_port(s) for s in sentinels] or [(host, 26379)]
        # Called through Any: Sentinel() is untyped before redis 8 and typed from 8 on,
        # so an ignore comment here would be reported as unused on one of the two.
        sentinel: Sentinel = cast(Any, Sentinel)(hosts, **common, **kwargs)
        client: Redis = sentinel.master_for(sentinel_master, redis_class=Redis)
        return client
    except ValueError as exc:
        # The URL may hold a password: never repeat it.
        raise StoreError(f"invalid Redis URL or sentinel address: {type(exc).__name__}") from exc


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.strip().rpartition(":")
    if not host:
        return spec.strip(), 26379
    return host.strip("[]"), int(port)


class CallbackStore:
    """Callbacks in Redis. Every change is one Lua script: atomic, idempotent, audited."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "cbari",
        *,
        clock: Clock | None = None,
        audit_maxlen: int = 100_000,
        terminal_ttl_s: int = DEFAULT_TERMINAL_TTL_S,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"bad store prefix {prefix!r}")
        self._r = redis
        self._p = prefix if "{" in prefix else f"{{{prefix}}}"
        self._keys = keys.KeySchema(self._p)
        self._clock: Clock = clock or SystemClock()
        self._audit_maxlen = max(0, audit_maxlen)
        self._ttl_ms = max(0, terminal_ttl_s) * 1000
        # A new callback is a promise only once this many replicas hold it (0: the master's
        # word is enough). WAIT's own timeout is the socket edge: Redis ends the wait itself.
        self._min_replicas = max(0, min_replicas)
        self._replica_timeout_ms = max(1, replica_timeout_ms)
        reg = redis.register_script
        self._enqueue = reg(store_scripts.ENQUEUE)
        self._claim = reg(store_scripts.CLAIM)
        self._record = reg(store_scripts.RECORD)
        self._cancel = reg(store_scripts.CANCEL)
        self._expire = reg(store_scripts.EXPIRE)
        self._reclaim = reg(store_scripts.RECLAIM)
        self._renew = reg(store_scripts.RENEW)
        self._find = reg(store_scripts.FIND_LIVE)
        self._list = reg(store_scripts.LIST)
        self._counts = reg(store_scripts.COUNTS)
        self._release = reg(store_scripts.RELEASE)
        self._set_recording = reg(store_scripts.SET_RECORDING)
        self._swap = reg(store_scripts.SWAP_IF)

    @property
    def namespace(self) -> str:
        """The key prefix actually used, hash tag included (e.g. ``{cbari}``)."""
        return self._p

    def key(self, *parts: str) -> str:
        """A key of the schema in this namespace, e.g. ``key("cb", "17")`` (ValueError if not)."""
        return self._keys.key(*parts)

    # --- plumbing ----------------------------------------------------------------------

    async def _guard(self, op: str, aw: Awaitable[T]) -> T:
        """Translate redis-py errors at the edge, and never lose a cancellation.

        redis-py wraps socket writes in ``asyncio.wait_for``, which on Python 3.11 can swallow
        a cancellation that lands mid-write and return normally; a service asked to stop would
        then run on. If the task was cancelled during the call, the cancellation is re-raised.
        """
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            result = await aw
        except (redis.exceptions.RedisError, OSError) as exc:
            # Swallowed cancellation and a library error at once (a Sentinel failover makes
            # that likely): the cancellation wins, or a caller catching StoreError loops on.
            if task is not None and task.cancelling() > cancelling:
                raise asyncio.CancelledError() from exc
            raise self._translate(op, exc) from exc
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError()
        return result

    def _translate(self, op: str, exc: Exception) -> StoreError:
        """Our error for a redis-py (or socket) error."""
        if isinstance(
            exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError
        ):
            return StoreUnavailable(f"redis unavailable during {op}: {type(exc).__name__}")
        if isinstance(exc, redis.exceptions.ReadOnlyError | redis.exceptions.NoPermissionError):
            return StoreUnavailable(f"redis refused {op}: {exc}")
        if isinstance(exc, redis.exceptions.ResponseError) and "WRONGTYPE" in str(exc):
            return CorruptRecord(self._p, f"{op}: {exc}")
        return StoreError(f"redis error during {op}: {exc}")

    async def _run(self, op: str, script: Any, now_ms: int | None, *args: object) -> Any:
        now = self._clock.now_ms() if now_ms is None else int(now_ms)
        argv = [self._p, now, self._audit_maxlen, self._ttl_ms, *args]
        return await self._guard(op, script(keys=[self.key("queues")], args=argv))

    def _report(self, op: str, reports: Sequence[object]) -> None:
        items = [as_text(x) for x in reports]
        for key, reason in zip(items[::2], items[1::2], strict=True):
            log.warning("store.corrupt_record", op=op, key=key, reason=reason)

    def _record_from(self, op: str, reply: Sequence[Any]) -> Callback:
        """The record of an ``ok/new/old/same`` reply; raise for ``nf/bad/corrupt``."""
        status = as_text(reply[0])
        if status == "nf":
            raise CallbackNotFound(as_text(reply[1]))
        if status == "bad":
            raise InvalidTransition(f"{op} {as_text(reply[1])}: {as_text(reply[2])}")
        if status == "corrupt":
            self._report(op, reply[1:3])
            raise CorruptRecord(as_text(reply[1]), as_text(reply[2]))
        if len(reply) > 3:
            self._report(op, reply[3])
        cb_id = as_text(reply[1])
        return decode_record(self.key("cb", cb_id), cb_id, as_text(reply[2]))

    # --- writes ------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        await self._guard("ping", self._r.ping())

    async def enqueue(
        self,
        *,
        queue: str,
        number: str,
        caller_name: str = "",
        source_channel: str = "",
        join_time_ms: int,
        origin: Origin = Origin.PHONE,
        priority: int = 0,
        callback_id: str | None = None,
        next_attempt_ms: int = 0,
        position: int = 0,
        reason: str = "",
        now_ms: int | None = None,
    ) -> tuple[Callback, bool]:
        """Store a pending callback; (existing, False) if (queue, number) already has a live one.

        ``callback_id`` makes the call idempotent on a chosen id; ``next_attempt_ms`` in the
        future keeps it pending but not claimable until then; ``priority`` is seconds of boost.
        """
        _check_queue(queue)
        if not number:
            raise ValueError("number must not be empty")
        if callback_id is not None and not ID_RE.match(callback_id):
            raise ValueError(f"callback id must match {ID_RE.pattern}")
        args = (
            queue, number, caller_name, source_channel, int(join_time_ms), Origin(origin).value,
            int(priority), int(position), callback_id or "", int(next_attempt_ms), reason,
        )  # fmt: skip
        if not self._min_replicas:
            reply = await self._run("enqueue", self._enqueue, now_ms, *args)
            cb = self._record_from("enqueue", reply)
            return cb, as_text(reply[0]) == "new"
        reply, confirmed = await self._enqueue_replicated(now_ms, args)
        cb = self._record_from("enqueue", reply)
        created = as_text(reply[0]) == "new"
        if confirmed < self._min_replicas:
            if created:
                await self._withdraw_unconfirmed(cb.id)
            raise NotReplicated(self._min_replicas, confirmed)
        return cb, created

    async def _enqueue_replicated(
        self, now_ms: int | None, args: tuple[object, ...]
    ) -> tuple[Any, int]:
        """The enqueue script and ``WAIT`` on one connection (WAIT covers that client's writes)."""
        now = self._clock.now_ms() if now_ms is None else int(now_ms)
        argv = [self._p, now, self._audit_maxlen, self._ttl_ms, *args]
        async with self._r.pipeline(transaction=False) as pipe:  # reset even when cancelled
            await self._enqueue(keys=[self.key("queues")], args=cast(Any, argv), client=pipe)
            pipe.execute_command("WAIT", self._min_replicas, self._replica_timeout_ms)
            reply, confirmed = await self._guard("enqueue", pipe.execute())
        return reply, int(confirmed)

    async def _withdraw_unconfirmed(self, cb_id: str) -> None:
        """No promise was made: cancel the record so it is never dialled (if Redis lets us).

        If the master is already gone the cancel fails too; the write then lives or dies with
        the master, and a replica promoted without it never saw it.
        """
        try:
            await self.cancel(cb_id, "not_replicated")
        except StoreError as exc:
            log.warning("store.unconfirmed_left", callback_id=cb_id, error=str(exc))

    async def claim_next(
        self,
        queue: str,
        *,
        owner: str,
        lease_ms: int,
        join_before_ms: int | None = None,
        max_dialing: int | None = None,
        now_ms: int | None = None,
    ) -> Callback | None:
        """Take the due callback that is first in line (smallest join time minus boost).

        Due retry_wait callbacks become pending first. With ``join_before_ms`` the first in line
        is taken only if its join time is earlier (the fairness gate against live callers).
        With ``max_dialing`` nothing is taken while that many callbacks of the queue are already
        dialing, counted across every instance sharing this Redis (capacity).
        The record comes back dialing, attempts + 1, leased to ``owner`` for ``lease_ms``.
        """
        if not owner or lease_ms <= 0:
            raise ValueError("claim_next needs an owner and a positive lease")
        gate = "" if join_before_ms is None else int(join_before_ms)
        cap = "" if max_dialing is None else max(0, int(max_dialing))
        reply = await self._run(
            "claim", self._claim, now_ms, queue, owner, int(lease_ms), gate, cap
        )
        if as_text(reply[0]) in ("none", "gated", "full"):
            self._report("claim", reply[3])
            return None
        if as_text(reply[0]) == "corrupt":  # a foreign key where an index belongs: skip the queue
            self._report("claim", reply[1:3])
            return None
        return self._record_from("claim", reply)

    async def release(self, cb_id: str, due_ms: int, *, now_ms: int | None = None) -> bool:
        """Bring a held-back pending callback's first attempt forward to ``due_ms``.

        Stored from a call, a callback waits in the schedule until its caller's line is down;
        this is how the service says when that happened (plus the queue's grace). It never
        makes an attempt later; False when nothing changed (already due, dialled, gone).
        """
        moved = await self._run("release", self._release, now_ms, cb_id, int(due_ms))
        return bool(moved)

    async def set_recording(self, cb_id: str, name: str, *, now_ms: int | None = None) -> bool:
        """Keep the name of the caller's recorded message on the callback (audited as
        ``recording``); False if there is no such callback. Idempotent."""
        return bool(await self._run("set_recording", self._set_recording, now_ms, cb_id, name))

    async def renew_lease(
        self, cb_id: str, owner: str, lease_ms: int, *, now_ms: int | None = None
    ) -> bool:
        """Extend a dialing callback's lease; False if ``owner`` no longer holds it."""
        ok = await self._run("renew", self._renew, now_ms, cb_id, owner, int(lease_ms))
        return bool(ok)

    async def record_outcome(
        self,
        cb_id: str,
        owner: str,
        *,
        outcome: Outcome,
        cause: str = "",
        retry_at_ms: int | None,
        max_attempts: int,
        attempt: int | None = None,
        now_ms: int | None = None,
    ) -> Callback:
        """End the current attempt: connected; retry_wait at ``retry_at_ms`` while attempts <
        ``max_attempts``; otherwise (or with ``retry_at_ms`` None) failed.

        Only the lease owner may record, and only for the current attempt (``attempt``, when
        given); repeating the same call returns the record unchanged.
        """
        reply = await self._run(
            "record_outcome", self._record, now_ms, cb_id, owner, Outcome(outcome).value, cause,
            "" if retry_at_ms is None else int(retry_at_ms), int(max_attempts),
            "" if attempt is None else int(attempt),
        )  # fmt: skip
        return self._record_from("record_outcome", reply)

    async def cancel(self, cb_id: str, reason: str = "", *, now_ms: int | None = None) -> Callback:
        """Cancel a live callback (idempotent); the reason goes to the audit trail."""
        reply = await self._run("cancel", self._cancel, now_ms, cb_id, reason)
        return self._record_from("cancel", reply)

    async def expire_older_than(
        self, queue: str, cutoff_ms: int, *, now_ms: int | None = None
    ) -> builtins.list[str]:
        """Expire pending/retry_wait callbacks created before ``cutoff_ms``; returns their ids.

        Dialing ones are left to finish their attempt (a later call expires them).
        """
        reply = await self._run("expire", self._expire, now_ms, queue, int(cutoff_ms))
        if as_text(reply[0]) == "corrupt":
            self._report("expire", reply[1:3])
            return []
        self._report("expire", reply[3])
        return [as_text(x) for x in reply[2]]

    async def reclaim_expired_leases(self, now_ms: int | None = None) -> builtins.list[str]:
        """Return dialing callbacks whose lease expired (a crashed worker) to pending.

        The attempt they used stays counted; the next claim makes the next attempt.
        """
        reply = await self._run("reclaim", self._reclaim, now_ms)
        self._report("reclaim", reply[3])
        return [as_text(x) for x in reply[2]]

    # --- reads -------------------------------------------------------------------------

    async def get(self, cb_id: str) -> Callback:
        """One callback by id: CallbackNotFound, or CorruptRecord if its key is off-schema."""
        key = self.key("cb", cb_id)
        fields = await self._guard("get", cast(Awaitable[dict[Any, Any]], self._r.hgetall(key)))
        if not fields:
            raise CallbackNotFound(cb_id)
        return decode_record(key, cb_id, fields)

    async def find_live(self, queue: str, number: str) -> Callback | None:
        """The live (pending, retry_wait or dialing) callback for (queue, number), if any."""
        reply = await self._run("find_live", self._find, None, queue, number)
        if as_text(reply[0]) == "none":
            return None
        return self._record_from("find_live", reply)

    async def list(
        self,
        queue: str | None = None,
        state: State | None = None,
        limit: int = 100,
        cursor: int = 0,
    ) -> builtins.list[Callback]:
        """A page of callbacks (next page: ``cursor + limit``; the end is an empty page).

        Order: queue name, then state (pending, dialing, retry_wait, terminal ones), then the
        index order (pending: dialling order; terminal: oldest update first). Corrupt or stale
        entries are logged as ``store.corrupt_record`` and skipped.
        """
        if queue is None:
            raw = await self._guard("list", self._r.smembers(self.key("queues")))
            queues = sorted(as_text(q) for q in raw)
        else:
            queues = [queue]
        states = _STATE_ORDER if state is None else (State(state),)
        segments = [(q, s, self.key("q", q, part)) for q in queues for s in states
                    for part in keys.STATE_INDEXES[s]]  # fmt: skip
        if not segments or limit <= 0:
            return []
        indexes = [k for _, _, k in segments]
        reply = await self._run("list", self._list, None, max(0, cursor), limit, *indexes)
        self._report("list", reply[1])
        items = reply[0]
        out: builtins.list[Callback] = []
        wanted = set(states)
        for raw_id, rec in zip(items[::2], items[1::2], strict=True):
            cb_id = as_text(raw_id)
            key = self.key("cb", cb_id)
            rec = as_text(rec)
            if rec.startswith("!"):
                log.warning("store.corrupt_record", op="list", key=key, reason=rec[1:])
                continue
            if not rec:
                continue  # a terminal record whose TTL ran out before its index entry
            try:
                cb = decode_record(key, cb_id, rec)
            except CorruptRecord as exc:
                log.warning("store.corrupt_record", op="list", key=key, reason=exc.reason)
                continue
            if cb.state not in wanted or (queue is not None and cb.queue != queue):
                log.warning("store.corrupt_record", op="list", key=key, reason="stale index")
                continue
            out.append(cb)
        return out

    async def counts(self, *, now_ms: int | None = None) -> dict[str, dict[str, int]]:
        """queue -> state -> number of callbacks (terminal ones within the record TTL)."""
        reply = await self._run("counts", self._counts, now_ms)
        self._report("counts", reply[1])
        out: dict[str, dict[str, int]] = {}
        for row in reply[0]:
            q = as_text(row[0])
            column = dict(zip(keys.COUNT_INDEXES, (int(x) for x in row[1:]), strict=True))
            out[q] = {
                s.value: sum(column[part] for part in keys.STATE_INDEXES[s])
                for s in (State.PENDING, State.DIALING, State.RETRY_WAIT, *_TERMINAL_ORDER)
            }
        return out

    # --- the per-queue do-not-call list (abandon follow-ups never call these) -------------

    async def dnc_add(self, queue: str, number: str) -> bool:
        """Put ``number`` (its dial form) on ``queue``'s do-not-call list; False if already on."""
        _check_queue(queue)
        added = await self._guard("dnc_add", self._r.sadd(self.key("q", queue, "dnc"), number))
        return bool(added)

    async def dnc_remove(self, queue: str, number: str) -> bool:
        """Take ``number`` off the list; False if it was not on it."""
        _check_queue(queue)
        gone = await self._guard("dnc_remove", self._r.srem(self.key("q", queue, "dnc"), number))
        return bool(gone)

    async def dnc_has(self, queue: str, number: str) -> bool:
        _check_queue(queue)
        found = await self._guard(
            "dnc_has", cast(Awaitable[int], self._r.sismember(self.key("q", queue, "dnc"), number))
        )
        return bool(found)

    async def dnc_list(self, queue: str) -> builtins.list[str]:
        """The numbers on ``queue``'s do-not-call list, sorted."""
        _check_queue(queue)
        raw = await self._guard("dnc_list", self._r.smembers(self.key("q", queue, "dnc")))
        return sorted(as_text(n) for n in raw)

    async def next_due_ms(self, queue: str) -> int | None:
        """When the earliest retry (or scheduled pending callback) of ``queue`` falls due."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrange(self.key("q", queue, "retry"), 0, 0, withscores=True)
        pipe.zrange(self.key("q", queue, "sched"), 0, 0, withscores=True)
        replies = await self._guard("next_due_ms", pipe.execute())
        firsts = [int(r[0][1]) for r in replies if r]
        return min(firsts) if firsts else None

    async def audit(
        self, since_ms: int | None = None, count: int = 1000, *, after_id: str | None = None
    ) -> builtins.list[dict[str, str]]:
        """Audit entries (oldest first) from ``since_ms`` or after the entry ``after_id``.

        Each dict has id, queue, from, to, outcome, cause, attempt, ts and ``event_id`` (the
        stream id, for paging with ``after_id``).
        """
        start = f"({after_id}" if after_id else "-" if since_ms is None else str(int(since_ms))
        rows = await self._guard(
            "audit", self._r.xrange(self.key("audit"), min=start, max="+", count=count)
        )
        out: builtins.list[dict[str, str]] = []
        for entry_id, fields in rows or []:
            item = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
            item["event_id"] = as_text(entry_id)
            out.append(item)
        return out

    async def first_due(self, queue: str, *, now_ms: int | None = None) -> tuple[str, int] | None:
        """(id, join_time_ms) of the callback ``claim_next`` would take now, or None; read-only.

        A hint for the reservation fast path: it may be stale by the time anything claims.
        """
        now = self._clock.now_ms() if now_ms is None else int(now_ms)
        pipe = self._r.pipeline(transaction=False)
        pipe.zrange(self.key("q", queue, "ready"), 0, 0)
        for part in ("retry", "sched"):
            pipe.zrangebyscore(self.key("q", queue, part), "-inf", now, start=0, num=1)
        replies = await self._guard("first_due", pipe.execute())
        ids = [as_text(i) for reply in replies for i in reply]
        best: tuple[int, str, int] | None = None
        for cb_id in dict.fromkeys(ids):
            j, pr = await self._guard("first_due", self._r.hmget(self.key("cb", cb_id), "j", "pr"))
            if j is None:
                continue
            join = int(as_text(j))
            order = join - int(as_text(pr or b"0")) * 1000
            if best is None or order < best[0]:
                best = (order, cb_id, join)
        return None if best is None else (best[1], best[2])

    # --- member reservations (keys.MEMBER_KEYS) ---------------------------------------------

    async def lock_member(self, queue: str, interface: str, value: str, ttl_ms: int) -> bool:
        """Take member ``interface`` of ``queue`` for ``value`` unless anyone holds it."""
        key = self.key("q", queue, "res", interface)
        ok = await self._guard("lock_member", self._r.set(key, value, nx=True, px=int(ttl_ms)))
        return bool(ok)

    async def swap_member_lock(
        self, queue: str, interface: str, old: str, new: str | None, ttl_ms: int = 0
    ) -> bool:
        """Replace (``new``) or delete (``new`` None) the lock only while it still says ``old``."""
        key = self.key("q", queue, "res", interface)
        reply = await self._guard(
            "swap_member_lock",
            self._swap(keys=[key], args=[old, "" if new is None else new, int(ttl_ms)]),
        )
        return bool(reply)

    async def member_lock(self, queue: str, interface: str) -> str | None:
        """The lock's value, or None when nobody reserves the member."""
        raw = await self._guard("member_lock", self._r.get(self.key("q", queue, "res", interface)))
        return None if raw is None else as_text(raw)

    async def member_locks(self, queue: str, interfaces: Sequence[str]) -> Sequence[str | None]:
        """``member_lock`` of each of ``interfaces``, in one round trip (MGET)."""
        if not interfaces:
            return []
        keys = [self.key("q", queue, "res", i) for i in interfaces]
        raw = await self._guard("member_locks", self._r.mget(keys))
        return [None if r is None else as_text(r) for r in raw]


def _check_queue(queue: str) -> None:
    if not queue or any(c.isspace() or c in "{}" for c in queue):
        raise ValueError(f"bad queue name {queue!r}")

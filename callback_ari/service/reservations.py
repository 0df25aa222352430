"""Member reservations: hold a ready queue member for the callback whose turn it is.

app_queue hands a member who frees up to the live caller at the head of the queue within a
second, while the customer of the callback whose turn it was is still being rung. So the
dispatcher reserves the member first: it pauses it in that queue with AMI ``QueuePause`` and the
reason ``<app>:<callback id>``, and the attempt releases it (unpause) once the confirmed
customer has joined the queue at the head with ``QUEUE_PRIO`` -- app_queue then rings that
member for the head, the customer -- or as soon as the attempt fails.

Rules, each a line below:

* Two instances never reserve the same member: a Redis key per member (``lock_member``) is
  taken before the pause, with the reservation's deadline as its TTL.
* A reservation ends at its deadline whatever happens to the attempt (``run``).
* An agent's own pause wins: if the member is paused with another reason (or removed) during
  a reservation, the reservation is dropped and the member is never unpaused by us.
* If app_queue rang the member for another caller before our pause landed (the race is one
  AMI round trip), the reservation is released at once: it no longer holds anything.
* Crashes: ``sweep`` (after every QueueStatus snapshot: start-up, reconnect, resync) unpauses
  any member paused with our reason whose reservation no live attempt of any instance holds.
* A member pre-held while busy (``prehold.py``) becomes a reservation when it frees up: ``take``
  hands it out before any ready member, already paused, so app_queue never had it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.clock import Clock, SystemClock
from callback_ari.errors import AmiError, CallbackNotFound, StoreError
from callback_ari.metrics import Metrics
from callback_ari.models import State
from callback_ari.service.prehold import HOLD, PreHolds
from callback_ari.service.watcher import QueueWatcher
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

CLAIM_LOCK_MS = 10_000  # a member locked while the dispatcher claims a callback for it
CHECK_INTERVAL_S = 1.0  # how often deadlines are checked


@dataclass(slots=True)
class Reservation:
    """One member held for one callback attempt."""

    queue: str
    interface: str
    callback_id: str
    channel_id: str  # the attempt's customer channel: app_queue may ring the member for it
    reason: str
    lock: str  # the Redis lock's value
    deadline: float  # time.monotonic()
    started: float = field(default_factory=time.monotonic)
    ended: str = ""  # why it ended; "" while held

    @property
    def held(self) -> bool:
        return not self.ended


@dataclass(slots=True)
class _Taking:
    """A member this instance is pausing before (or while) it claims a callback for it."""

    reason: str
    lock: str  # the Redis lock's value while claiming: "<owner>|~<n>", unique per take
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    locked: bool = False  # we hold the member's Redis lock
    ok: bool = False  # the QueuePause succeeded
    lost: bool = False  # app_queue rang it for someone else meanwhile


class ReservationBook:
    """The member reservations of this instance, and the cleaner of everybody's leftovers.

    Speed matters: app_queue rings a member that frees up for the head of the queue about 10 ms
    later (measured on Asterisk 22). So when a member turns ready while a callback is first in
    line, ``prepause`` sends the QueuePause from the AMI event handler itself, before any
    Redis round trip; ``take`` then locks that member in Redis for the claim.
    """

    def __init__(
        self,
        *,
        store: CallbackStore,
        watcher: QueueWatcher,
        ami: Callable[[], AmiClient | None],
        owner: str,
        app: str,
        metrics: Metrics,
        clock: Clock | None = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._store = store
        self._watcher = watcher
        self._ami = ami
        self._owner = owner
        self.prefix = f"{app}:"
        self._metrics = metrics
        self._held: dict[tuple[str, str], Reservation] = {}
        self._taking: dict[tuple[str, str], _Taking] = {}
        self._takes = 0
        self._drop_locks: list[Reservation] = []
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.preholds = PreHolds(
            store=store, watcher=watcher, ami=ami, owner=owner, prefix=self.prefix,
            metrics=metrics, clock=self._clock,
        )  # fmt: skip

    # --- queries ----------------------------------------------------------------------

    def held(self, queue: str | None = None) -> list[Reservation]:
        return [r for r in self._held.values() if queue is None or r.queue == queue]

    def free_interfaces(self, queue: str) -> list[str]:
        """Members of ``queue`` a claim may take: being paused by us first, then pre-held ones
        that freed up, then ready ones."""
        taking = [i for (q, i), t in self._taking.items() if q == queue and not t.lost]
        busy = {i for (q, i) in (*self._held, *self._taking) if q == queue}
        preheld = {h.interface for h in self.preholds.held(queue)}
        freed = [i for i in self.preholds.free(queue) if i not in busy]
        ready = self._watcher.ready_interfaces(queue) - busy - preheld
        return sorted(taking) + freed + sorted(ready)

    # --- taking and releasing -----------------------------------------------------------

    def prepause(self, queue: str, interface: str, callback_id: str) -> None:
        """Pause ``interface`` now, from the event handler: a callback is first in line."""
        key = (queue, interface)
        if self._tg is None or key in self._held or key in self._taking:
            return
        if self.preholds.holds(queue, interface):
            return  # paused already: ``take`` converts it
        taking = _Taking(self.prefix + callback_id, self._claim_lock())
        self._taking[key] = taking
        self._tg.create_task(self._pause(queue, interface, taking), name=f"pause:{interface}")

    async def _pause(self, queue: str, interface: str, taking: _Taking) -> None:
        """Lock the member in Redis, then pause it: we only ever pause members we locked."""
        ami = self._ami()
        try:
            if not await self._store.lock_member(queue, interface, taking.lock, CLAIM_LOCK_MS):
                return  # another instance is taking it
            taking.locked = True
            if ami is None:
                raise AmiError("AMI is not connected")
            await ami.queue_pause(interface, True, queue=queue, reason=taking.reason)
            taking.ok = True
        except (AmiError, StoreError) as exc:
            log.warning("reservation.pause_failed", queue=queue, member=interface, error=str(exc))
        finally:
            taking.paused.set()

    async def take(self, queue: str) -> str | None:
        """Lock (Redis) a member of ``queue`` for a claim; None when none is free.

        A member ``prepause`` is pausing comes first (its pause is awaited); a member that has
        been ready for a while is only locked, and paused by ``hold`` once a callback was
        claimed, so a pass that finds nothing to claim does not flap the member's pause.
        A member another instance locked is left alone: it is theirs. A pre-held member that
        freed up is handed over paused and locked (``PreHolds.convert``).
        """
        for interface in self.free_interfaces(queue):
            key = (queue, interface)
            if key not in self._taking and (hold := self.preholds.convert(queue, interface)):
                converted = self._taking[key] = _Taking(
                    self.preholds.reason, hold.lock, locked=True, ok=True
                )
                converted.paused.set()
                return interface
            taking = self._taking.get(key)
            if taking is not None:  # prepaused: its task locks and pauses
                await taking.paused.wait()
                if not taking.locked:
                    self._taking.pop(key, None)  # another instance's: theirs to undo
                    continue
                if taking.ok and not taking.lost:
                    return interface
                await self.unlock(queue, interface)
                continue
            lock = self._claim_lock()
            if await self._store.lock_member(queue, interface, lock, CLAIM_LOCK_MS) or (
                await self._break_stale_lock(queue, interface)
                and await self._store.lock_member(queue, interface, lock, CLAIM_LOCK_MS)
            ):
                taking = self._taking[key] = _Taking("", lock, locked=True)
                taking.paused.set()
                return interface
        return None

    async def _give_back(self, queue: str, interface: str, taking: _Taking) -> None:
        """A member rung for someone else while we took it: unpause and unlock it."""
        await taking.paused.wait()
        if self._taking.get((queue, interface)) is taking:
            await self.unlock(queue, interface)

    async def _break_stale_lock(self, queue: str, interface: str) -> bool:
        """Delete the member's lock if no running attempt owns it (a crashed instance's)."""
        held = await self._store.member_lock(queue, interface)
        if held is None or await self._lock_is_live(held):
            return False
        log.warning("reservation.stale_lock", queue=queue, member=interface, lock=held)
        return await self._store.swap_member_lock(queue, interface, held, None)

    async def unlock(self, queue: str, interface: str) -> None:
        """Give back a member ``take`` returned when there was nothing to claim."""
        taking = self._taking.pop((queue, interface), None)
        if taking is None:
            return  # given back already
        if taking.ok:
            await self._unpause(queue, interface)
        if taking.locked:
            await self._unlock_quietly(queue, interface, (taking.lock,))

    async def hold(
        self, queue: str, interface: str, callback_id: str, channel_id: str, seconds: float
    ) -> Reservation | None:
        """Turn the taken ``interface`` into a reservation for ``callback_id``."""
        key = (queue, interface)
        taking = self._taking.pop(key, None)
        res = Reservation(
            queue=queue,
            interface=interface,
            callback_id=callback_id,
            channel_id=channel_id,
            reason=self.prefix + callback_id,
            lock=f"{self._owner}|{callback_id}",
            deadline=time.monotonic() + seconds,
        )
        self._held[key] = res  # before any await: a sweep must never see it as stale
        ami = self._ami()
        try:
            await self._store.swap_member_lock(
                queue, interface, taking.lock if taking else "", res.lock, int(seconds * 1000)
            )
            if taking is None or not taking.ok or taking.reason != res.reason:
                if ami is None:
                    raise AmiError("AMI is not connected")
                await ami.queue_pause(interface, True, queue=queue, reason=res.reason)
        except (AmiError, StoreError) as exc:
            log.warning(
                "reservation.failed", queue=queue, member=interface, callback_id=callback_id,
                error=str(exc),
            )  # fmt: skip
            self._held.pop(key, None)
            self._metrics.reservations.labels(queue, "failed").inc()
            await self._unpause(queue, interface)
            locks = (taking.lock, res.lock) if taking else (res.lock,)
            await self._unlock_quietly(queue, interface, locks)
            return None
        log.info(
            "reservation.held", queue=queue, member=interface, callback_id=callback_id,
            deadline_s=round(seconds, 1),
        )  # fmt: skip
        self._metrics.reserved.labels(queue).set(len(self.held(queue)))
        return res

    async def release(self, res: Reservation, why: str) -> None:
        """End ``res``: unpause the member unless someone else paused it since. Idempotent."""
        if not res.held:
            return
        self._end(res, why)
        await self._unpause(res.queue, res.interface)
        await self._unlock_quietly(res.queue, res.interface, (res.lock,))

    async def _unpause(self, queue: str, interface: str) -> None:
        """Unpause unless the agent (or a supervisor) paused it for their own reason, or it is
        gone. A member not yet seen paused may be our pause whose event is still on its way."""
        member = self._watcher.member(queue, interface)
        # any reason with our prefix is a reservation (ours, or one that overwrote ours)
        theirs = (
            member is not None
            and member.paused
            and not member.paused_reason.startswith(self.prefix)
        )
        ami = self._ami()
        if member is None or theirs or ami is None:
            return
        try:
            await ami.queue_pause(interface, False, queue=queue)
        except AmiError as exc:
            log.warning("reservation.unpause_failed", member=interface, error=str(exc))

    def _end(self, res: Reservation, why: str) -> None:
        res.ended = why
        if self._held.get((res.queue, res.interface)) is res:
            del self._held[(res.queue, res.interface)]
        log.info(
            "reservation.released", queue=res.queue, member=res.interface,
            callback_id=res.callback_id, why=why,
            held_ms=int((time.monotonic() - res.started) * 1000),
        )  # fmt: skip
        self._metrics.reservations.labels(res.queue, why).inc()
        self._metrics.reserved.labels(res.queue).set(len(self.held(res.queue)))

    # --- what Asterisk tells us ----------------------------------------------------------

    def apply(self, msg: AmiMessage) -> list[Reservation]:
        """React to an AMI event; returns reservations the caller must ``release`` (unpause).

        Reservations the agent took over (own pause, logged out) end here without unpausing.
        """
        queue = msg.get("Queue") or ""
        interface = msg.get("Interface") or ""
        name = msg.name.lower()
        if self.preholds.apply(msg):
            self._wake.set()  # its lock is deleted by the deadline loop
        taking = self._taking.get((queue, interface))
        if taking is not None and not taking.lost and name in ("agentcalled", "agentconnect"):
            taking.lost = True  # rung for a live caller before our pause: nothing to hold
            log.info("reservation.too_late", queue=queue, member=interface)
            self._metrics.reservations.labels(queue, "too_late").inc()
            if self._tg is not None:
                self._tg.create_task(self._give_back(queue, interface, taking))
        res = self._held.get((queue, interface))
        if res is None:
            return []
        if name == "queuememberremoved":
            self._drop(res, "logged_out")
        elif name == "queuememberpause":
            paused = (msg.get("Paused") or "") in ("1", "true", "yes")
            reason = msg.get("PausedReason") or ""
            if paused and reason == self.preholds.reason:
                pass  # the pre-hold's own pause, seen late: this reservation re-paused it
            elif paused and reason != res.reason:
                self._drop(res, "agent_paused")
            elif not paused:
                self._drop(res, "unpaused_by_other")
        elif name in ("agentcalled", "agentconnect") and msg.get("Uniqueid") != res.channel_id:
            return [res]  # app_queue gave the member to another caller before our pause
        return []

    def _drop(self, res: Reservation, why: str) -> None:
        self._end(res, why)
        self._drop_locks.append(res)
        self._wake.set()

    # --- deadlines and leftovers ------------------------------------------------------

    async def run(self) -> None:
        """Release reservations past their deadline and unlock dropped ones; until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self._deadlines()
        finally:
            self._tg = None
            # shutting down: a pre-hold waits for no one any more (the AMI link outlives us)
            await asyncio.shield(self.preholds.release_all("shutdown"))

    async def _deadlines(self) -> None:
        while True:
            try:
                async with asyncio.timeout(CHECK_INTERVAL_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            dropped, self._drop_locks = self._drop_locks, []
            for res in dropped:
                await self._unlock_quietly(res.queue, res.interface, (res.lock,))
            await self.preholds.housekeep()
            now = time.monotonic()
            for res in [r for r in self._held.values() if r.deadline <= now]:
                log.warning("reservation.deadline", queue=res.queue, member=res.interface,
                            callback_id=res.callback_id)  # fmt: skip
                await self.release(res, "deadline")

    async def sweep(self, queues: Iterable[str]) -> int:
        """Unpause members paused with our reason whose reservation no live attempt holds.

        A reservation is live if this instance holds it, or if another instance's Redis lock
        for that member names the same callback and that instance still holds the callback's
        lease (``_lock_is_live``). Returns how many members were released.
        """
        ami = self._ami()
        if ami is None:
            return 0
        cleared = 0
        for queue in queues:
            for member in self._watcher.members(queue):
                if not (member.paused and member.paused_reason.startswith(self.prefix)):
                    continue
                key = (queue, member.interface)
                if key in self._held or key in self._taking or self.preholds.holds(*key):
                    continue
                callback_id = member.paused_reason[len(self.prefix) :]
                try:
                    lock = await self._store.member_lock(queue, member.interface)
                except StoreError as exc:
                    log.warning("reservation.sweep_failed", error=str(exc))
                    return cleared
                locked_for = (lock or "").partition("|")[2]
                # a pre-hold (reason <app>:hold) is live while its holder's lock is, or the
                # reservation it is being turned into
                ours = locked_for == callback_id or callback_id == HOLD
                if lock is not None and ours and await self._lock_is_live(lock):
                    continue  # another instance's live reservation or pre-hold
                try:
                    await ami.queue_pause(member.interface, False, queue=queue)
                except AmiError as exc:
                    log.warning("reservation.unpause_failed", member=member.interface,
                                error=str(exc))  # fmt: skip
                    continue
                if lock is not None:
                    await self._unlock_quietly(queue, member.interface, (lock,))
                cleared += 1
                log.warning(
                    "reservation.stale_cleared", queue=queue, member=member.interface,
                    callback_id=callback_id,
                )  # fmt: skip
                self._metrics.reservations.labels(queue, "stale_cleared").inc()
        return cleared

    # --- internals --------------------------------------------------------------------

    async def _lock_is_live(self, lock: str) -> bool:
        """Whether a member lock still belongs to a running attempt of some instance.

        Ours are live only while held in memory (a lock of ours we do not know is from before
        a restart). Another instance's claim lock (``owner|~n``) is live until its short TTL;
        its reservation (``owner|<callback id>``) while that owner holds the callback's lease.
        """
        owner, _, rest = lock.partition("|")
        if owner == self._owner:
            return (
                any(r.lock == lock for r in self._held.values())
                or any(t.lock == lock for t in self._taking.values())
                or self.preholds.owns(lock)
            )
        if rest.startswith("~") or not rest:
            return True
        try:
            cb = await self._store.get(rest)
        except (CallbackNotFound, StoreError):
            return False
        now = self._clock.now_ms()
        return cb.state is State.DIALING and cb.lease_owner == owner and cb.lease_expires_ms > now

    def _claim_lock(self) -> str:
        self._takes += 1
        return f"{self._owner}|~{self._takes}"

    async def _unlock_quietly(self, queue: str, interface: str, values: Iterable[str]) -> None:
        """Delete the member's lock if it holds one of ``values``; it expires anyway."""
        for value in values:
            try:
                if await self._store.swap_member_lock(queue, interface, value, None):
                    return
            except StoreError as exc:
                log.warning("reservation.unlock_failed", member=interface, error=str(exc))
                return

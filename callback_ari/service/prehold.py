"""Pre-holds: pause busy members while a callback waits, so app_queue cannot ring them first.

A reservation (``reservations.py``) pauses a member once it is ready; app_queue rings a member
that frees up for the live caller at the head about 10 ms after the device says so (or when
its wrap-up ends, which AMI does not announce at all), so a pause sent after the event can lose.
A pre-hold takes the race away: while a due callback of the queue has no member, the dispatcher
pauses the queue's *busy* members (on a call, ringing, in wrap-up) in that queue with the reason
``<app>:hold``. app_queue never rings a paused member, so when one of them frees up the
dispatcher turns its pre-hold into the callback's reservation (``ReservationBook.take``) and
dials the customer. The other pre-holds are released (unpaused) the moment no due callback
lacks a member any more: they are still busy, so a live caller has lost nothing.

Rules, each a line below:

* Only members nobody paused are pre-held; a pre-hold whose pause changes under it (the agent
  pauses with their own reason, unpauses, logs out) is dropped and never unpaused by us.
* Two instances never pause the same member: the member's Redis lock (``lock_member``, value
  ``<owner>|~hold<n>``) is taken before the pause and refreshed while the pre-hold lasts, so it
  expires ``HOLD_LOCK_MS`` after a crash.
* Pre-holds end on shutdown, when the queue closes or is disabled, when no due callback needs
  a member, and, after a crash, by the reservation sweep (the reason starts with ``<app>:``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import structlog

from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.clock import Clock
from callback_ari.errors import AmiError, StoreError
from callback_ari.metrics import Metrics
from callback_ari.service.watcher import QueueWatcher
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

HOLD = "hold"  # the reason is "<app>:hold"
HOLD_LOCK_MS = 15_000  # a crashed instance's pre-hold lock is gone this long after its last refresh
REFRESH_S = 5.0  # how often a live pre-hold's lock is refreshed
RETRY_AFTER_FAILURE_S = 30.0  # a member whose pause failed is not tried again before this


@dataclass(slots=True)
class PreHold:
    """One busy member paused while a callback waits for a member."""

    queue: str
    interface: str
    lock: str  # the member's Redis lock value
    started: float = field(default_factory=time.monotonic)
    paused: bool = False  # our QueuePause was accepted
    ended: str = ""  # why it ended; "" while held
    theirs: str = ""  # agent_paused: the reason they paused with


class PreHolds:
    """The pre-holds of this instance."""

    def __init__(
        self,
        *,
        store: CallbackStore,
        watcher: QueueWatcher,
        ami: Callable[[], AmiClient | None],
        owner: str,
        prefix: str,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._store = store
        self._watcher = watcher
        self._ami = ami
        self._owner = owner
        self._prefix = prefix
        self.reason = prefix + HOLD
        self._metrics = metrics
        self._clock = clock
        self._holds: dict[tuple[str, str], PreHold] = {}
        self._count = 0
        self._dropped: list[PreHold] = []  # their locks are deleted by ``housekeep``
        self._refreshed = time.monotonic()
        self._failed_at: dict[tuple[str, str], float] = {}  # no retry at every pass (no spam)

    # --- queries ----------------------------------------------------------------------

    def held(self, queue: str | None = None) -> list[PreHold]:
        return [h for h in self._holds.values() if queue is None or h.queue == queue]

    def holds(self, queue: str, interface: str) -> bool:
        return (queue, interface) in self._holds

    def owns(self, lock: str) -> bool:
        """Whether ``lock`` is the Redis lock of one of our live pre-holds."""
        return any(h.lock == lock for h in self._holds.values())

    def free(self, queue: str) -> list[str]:
        """Pre-held members of ``queue`` that have freed up: app_queue would ring them now."""
        free = self._watcher.free_interfaces(queue)
        return sorted(h.interface for h in self.held(queue) if h.paused and h.interface in free)

    # --- taking and releasing -----------------------------------------------------------

    async def hold_busy(self, queue: str, skip: Collection[str] = ()) -> None:
        """Pre-hold every busy member of ``queue`` nobody has paused (``skip``: ours already)."""
        now = self._clock.now_ms()
        retry_from = time.monotonic() - RETRY_AFTER_FAILURE_S
        for member in self._watcher.members(queue):
            if (
                (queue, member.interface) in self._holds
                or self._failed_at.get((queue, member.interface), 0.0) > retry_from
                or member.interface in skip
                or member.paused
                or not member.logged_in
                or not member.is_busy(now)
            ):
                continue
            await self._take(queue, member.interface)

    async def _take(self, queue: str, interface: str) -> None:
        """Lock the member in Redis, then pause it: we only ever pause members we locked."""
        self._count += 1
        hold = PreHold(queue, interface, f"{self._owner}|~{HOLD}{self._count}")
        try:
            if not await self._store.lock_member(queue, interface, hold.lock, HOLD_LOCK_MS):
                return  # another instance holds or reserves it: theirs
        except StoreError as exc:
            log.warning("prehold.failed", queue=queue, member=interface, error=str(exc))
            self._failed_at[(queue, interface)] = time.monotonic()
            return
        self._holds[(queue, interface)] = hold  # before the pause: a sweep must see it as ours
        ami = self._ami()
        try:
            if ami is None:
                raise AmiError("AMI is not connected")
            await ami.queue_pause(interface, True, queue=queue, reason=self.reason)
        except AmiError as exc:
            log.warning("prehold.failed", queue=queue, member=interface, error=str(exc))
            self._failed_at[(queue, interface)] = time.monotonic()
            self._end(hold, "failed")
            await self._unlock(hold)
            return
        if hold.ended == "agent_paused":
            await self._give_back_pause(hold)
        if hold.ended:
            return  # the agent paused, unpaused or logged out meanwhile: theirs now
        hold.paused = True
        log.info("prehold.held", queue=queue, member=interface)
        self._gauge(queue)

    async def _give_back_pause(self, hold: PreHold) -> None:
        """The agent paused just before our pause landed, which overwrote their reason: put
        it back (app_queue has no compare-and-set pause)."""
        ami = self._ami()
        if ami is None:
            return
        try:
            await ami.queue_pause(hold.interface, True, queue=hold.queue, reason=hold.theirs)
        except AmiError as exc:
            log.warning("prehold.restore_failed", member=hold.interface, error=str(exc))

    def convert(self, queue: str, interface: str) -> PreHold | None:
        """Hand a freed pre-held member to a claim: it stays paused and locked for it."""
        hold = self._holds.get((queue, interface))
        if hold is None or not hold.paused:
            return None
        self._end(hold, "converted")
        return hold

    async def release(self, hold: PreHold, why: str) -> None:
        """End ``hold``: unpause the member unless someone else paused it since. Idempotent."""
        if self._holds.get((hold.queue, hold.interface)) is not hold:
            return
        self._end(hold, why)
        await self._unpause(hold)  # even if its pause is still on its way: it may have landed
        await self._unlock(hold)

    async def release_queue(
        self, queue: str, why: str, *, only: Collection[str] | None = None
    ) -> None:
        """Release the pre-holds of ``queue`` (only those of the interfaces ``only``, if given)."""
        for hold in self.held(queue):
            if only is None or hold.interface in only:
                await self.release(hold, why)

    async def release_all(self, why: str) -> None:
        for hold in self.held():
            await self.release(hold, why)

    async def _unpause(self, hold: PreHold) -> None:
        member = self._watcher.member(hold.queue, hold.interface)
        # paused with a reason not ours: the agent's, never undone (``apply`` drops it first)
        theirs = member is not None and member.paused and member.paused_reason != self.reason
        ami = self._ami()
        if member is None or theirs or ami is None:
            return
        try:
            await ami.queue_pause(hold.interface, False, queue=hold.queue)
        except AmiError as exc:
            log.warning("prehold.unpause_failed", member=hold.interface, error=str(exc))

    async def _unlock(self, hold: PreHold) -> None:
        try:
            await self._store.swap_member_lock(hold.queue, hold.interface, hold.lock, None)
        except StoreError as exc:  # it expires anyway
            log.warning("prehold.unlock_failed", member=hold.interface, error=str(exc))

    def _end(self, hold: PreHold, why: str) -> None:
        hold.ended = why
        if self._holds.get((hold.queue, hold.interface)) is hold:
            del self._holds[(hold.queue, hold.interface)]
        log.info(
            "prehold.released", queue=hold.queue, member=hold.interface, why=why,
            held_ms=int((time.monotonic() - hold.started) * 1000),
        )  # fmt: skip
        self._metrics.preholds.labels(hold.queue, why).inc()
        self._gauge(hold.queue)

    def _gauge(self, queue: str) -> None:
        self._metrics.preheld.labels(queue).set(sum(h.paused for h in self.held(queue)))

    # --- what Asterisk tells us ----------------------------------------------------------

    def apply(self, msg: AmiMessage) -> bool:
        """Drop a pre-hold the agent took over; True when its lock must be deleted."""
        name = msg.name.lower()
        if name not in ("queuememberpause", "queuememberremoved"):
            return False
        hold = self._holds.get((msg.get("Queue") or "", msg.get("Interface") or ""))
        if hold is None:
            return False
        if name == "queuememberremoved":
            why = "logged_out"
        else:
            paused = (msg.get("Paused") or "") in ("1", "true", "yes")
            if paused and (msg.get("PausedReason") or "") == self.reason:
                return False  # our own pause
            why = "agent_paused" if paused else "unpaused_by_other"
            hold.theirs = msg.get("PausedReason") or ""
        self._end(hold, why)
        self._dropped.append(hold)
        return True

    # --- upkeep ---------------------------------------------------------------------------

    async def housekeep(self) -> None:
        """Delete dropped pre-holds' locks; refresh live ones every ``REFRESH_S``."""
        dropped, self._dropped = self._dropped, []
        for hold in dropped:
            await self._unlock(hold)
        if time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        for hold in self.held():
            try:
                ok = await self._store.swap_member_lock(
                    hold.queue, hold.interface, hold.lock, hold.lock, HOLD_LOCK_MS
                )
            except StoreError as exc:
                log.warning("prehold.refresh_failed", member=hold.interface, error=str(exc))
                return
            if not ok and self._holds.get((hold.queue, hold.interface)) is hold:
                # expired (Redis away too long): whoever sweeps next unpauses the member
                log.warning("prehold.lock_lost", queue=hold.queue, member=hold.interface)
                self._end(hold, "lock_lost")

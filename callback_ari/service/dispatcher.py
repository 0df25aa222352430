"""Calls customers back: when a member is ready and it is a callback's turn, dial and connect.

One pass per queue (``run_once``) claims as many due callbacks as there are free ready members,
in original-join-time order, and only those that joined before the oldest caller still holding
(virtual hold). Passes are triggered by events: a member becoming ready, a retry falling due, an
attempt ending; a slow safety pass (>= 5 s) reclaims crashed leases and expires old callbacks.
While a due callback finds no member, each pass pre-holds the busy ones (``prehold.py``) so the
first to free up is the callback's, not app_queue's.
The attempt itself (dial, "press 1", continue into the queue) lives in ``attempt.py``.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from callback_ari.asterisk import ari_events as ev
from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock
from callback_ari.config.loader import Config, QueueConfig
from callback_ari.core import policy
from callback_ari.core.hours import BusinessHours
from callback_ari.core.phone import NumberPolicy, dial_string
from callback_ari.errors import CallbackAriError, NumberRejected, StoreError
from callback_ari.masking import mask
from callback_ari.metrics import Metrics
from callback_ari.models import Callback, Outcome, originate_channel_id, originate_other_channel_id
from callback_ari.service.attempt import (
    QUEUE_EVENTS,
    Attempt,
    AttemptRunner,
    AttemptState,
    QueueSeen,
    reservation_seconds,
)
from callback_ari.service.prehold import HOLD
from callback_ari.service.reservations import Reservation, ReservationBook
from callback_ari.service.watcher import QueueWatcher
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

SAFETY_INTERVAL_S = 5.0  # slow resync: reclaim leases, expire, catch missed wake-ups


class Dispatcher:
    """Owns every outgoing callback attempt of this service instance."""

    def __init__(
        self,
        *,
        config: Config,
        store: CallbackStore,
        ari: AriClient,
        watcher: QueueWatcher,
        clock: Clock,
        metrics: Metrics,
        owner: str,
        safety_interval: float = SAFETY_INTERVAL_S,
        reservations: ReservationBook | None = None,
    ) -> None:
        self._cfg = config
        self._book = reservations
        self._store = store
        self._watcher = watcher
        self._clock = clock
        self._metrics = metrics
        self._owner = owner
        self._safety_interval = max(safety_interval, SAFETY_INTERVAL_S)
        self._lease_ms = config.general.lease_seconds * 1000
        self._hours = {
            n: BusinessHours.parse(q.hours, q.timezone) for n, q in config.queues.items()
        }
        self._policies = {n: NumberPolicy.from_queue(q) for n, q in config.queues.items()}
        self._wake = {name: asyncio.Event() for name in config.queues}
        self._pass_lock = {name: asyncio.Lock() for name in config.queues}
        self._ready_at: dict[str, float] = {}  # queue -> loop time a member became ready
        self._head: dict[str, tuple[str, int] | None] = {}  # queue -> first due (id, join ms)
        self._pass_ms: dict[str, int] = {}  # queue -> clock time the last pass began
        self._by_channel: dict[str, Attempt] = {}
        self._in_flight: dict[str, dict[str, Attempt]] = {name: {} for name in config.queues}
        self._runner = AttemptRunner(
            ari=ari,
            store=store,
            clock=clock,
            metrics=metrics,
            owner=owner,
            lease_ms=self._lease_ms,
            on_released=self._released,
            reservations=reservations,
        )
        self._tg: asyncio.TaskGroup | None = None

    # --- signals in -------------------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s queue settings from the next decision on (SIGHUP reload).

        The set of queues stays the one the dispatcher started with; attempts already dialling
        finish with the settings they started with.
        """
        self._cfg = config
        self._hours = {
            n: BusinessHours.parse(q.hours, q.timezone) for n, q in config.queues.items()
        }
        self._policies = {n: NumberPolicy.from_queue(q) for n, q in config.queues.items()}

    def member_ready(self, queue: str) -> None:
        """Watcher signal: a member of ``queue`` became ready. Wakes that queue's loop now."""
        if queue in self._wake:
            self._ready_at.setdefault(queue, asyncio.get_running_loop().time())
            self._prepause(queue)
            self._wake[queue].set()

    def member_free(self, queue: str) -> None:
        """Watcher signal: a member of ``queue`` freed up, paused or not. A pre-held one is the
        waiting callback's: wake the queue's loop to reserve it."""
        if queue in self._wake and self._book is not None and self._book.preholds.free(queue):
            self._ready_at.setdefault(queue, asyncio.get_running_loop().time())
            self._wake[queue].set()

    def _prepause(self, queue: str) -> None:
        """Fast path: pause the member that just turned ready if a callback is first in line.

        app_queue rings a freed member for the head of the queue ~10 ms later; the pass that
        claims the callback needs several Redis round trips, so the pause goes first.
        """
        q = self._cfg.queues[queue]
        head = self._head.get(queue)
        if self._book is None or not q.reserve_member or head is None or not q.enabled:
            return
        if not self._hours[queue].is_open(self._clock.now_ms()):
            return
        bound = policy.join_before_ms(self._watcher.oldest_join_ms(queue), q.priority_boost)
        if bound is not None and head[1] >= bound:
            return  # a live caller is first: app_queue serves them, rightly
        unreserved = sum(not a.holds_member for a in self._in_flight[queue].values())
        free = self._book.free_interfaces(queue)
        if len(free) > unreserved:
            self._book.prepause(queue, free[-1], head[0])

    def wake(self, queue: str | None = None) -> None:
        """Ask for a dispatch pass (every queue when ``queue`` is None)."""
        for name, event in self._wake.items():
            if queue is None or name == queue:
                event.set()

    def handle_event(self, event: ev.AriEvent) -> bool:
        """Route an ARI event to the attempt owning its channel; False if it is not ours."""
        channel_id = event.channel_id
        attempt = self._by_channel.get(channel_id) if channel_id else None
        if attempt is None and isinstance(event, ev.Dial) and event.caller is not None:
            attempt = self._by_channel.get(event.caller.id)
        if attempt is None:
            return False
        attempt.events.put_nowait(event)
        return True

    def handle_ami(self, msg: AmiMessage) -> None:
        """Route an AMI event about a customer's channel to its attempt; watch reservations."""
        if msg.kind != "event":
            return
        if msg.name in QUEUE_EVENTS:
            attempt = self._by_channel.get(msg.get("Uniqueid") or "")
            if attempt is not None:
                attempt.events.put_nowait(
                    QueueSeen(msg.name, msg.get("Queue") or "", msg.get("DialStatus") or "")
                )
        if self._book is not None and self._tg is not None:
            for res in self._book.apply(msg):
                self._tg.create_task(self._lost(res), name=f"release:{res.interface}")

    async def _lost(self, res: Reservation) -> None:
        """app_queue rang the reserved member for someone else: the pause holds nothing now."""
        assert self._book is not None
        await self._book.release(res, "taken_by_other")
        self.wake(res.queue)

    def owns_channel(self, channel_id: str) -> bool:
        return channel_id in self._by_channel

    def in_flight(self, queue: str) -> int:
        return len(self._in_flight.get(queue, {}))

    def attempts(self) -> list[Attempt]:
        return [a for per_queue in self._in_flight.values() for a in per_queue.values()]

    async def resync(self, channels: list[ev.ChannelInfo], *, listed_at: float) -> None:
        """After an ARI reconnect, recover what the lost events would have told each attempt.

        A vanished channel ends its attempt; a ringing attempt whose channel is up in our app
        was answered while we were deaf, so it gets the StasisStart it missed (rather than
        being hung up as "no answer" on a customer who picked up).
        """
        live = {c.id: c for c in channels}
        for attempt in self.attempts():
            if attempt.originated is None or attempt.originated >= listed_at:
                # its originate was still in flight when the list was taken (soak: a call
                # answered in that window was ended as a hang-up): its absence means nothing
                continue
            if not any(cid in live for cid in attempt.channel_ids):
                attempt.lost()
                continue
            own = live.get(attempt.channel_id)
            if (
                attempt.state is AttemptState.RINGING
                and own is not None
                and own.state == "Up"
                and own.app_name == "Stasis"
            ):
                log.info("callback.answer_recovered", callback_id=attempt.cb.id)
                attempt.events.put_nowait(
                    ev.StasisStart(
                        type="StasisStart",
                        timestamp="",
                        application=self._cfg.general.app,
                        channel=own,
                        args=("callback", attempt.cb.id),
                    )
                )

    # --- loops ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every queue's dispatch loop and the safety loop until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for name in self._cfg.queues:
                    tg.create_task(self._queue_loop(name), name=f"dispatch:{name}")
                tg.create_task(self._safety_loop(), name="dispatch:safety")
        finally:
            self._tg = None

    async def _queue_loop(self, queue: str) -> None:
        wake = self._wake[queue]
        while True:
            timeout = await self._sleep_hint(queue)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()
            wake.clear()
            try:
                await self.run_once(queue)
            except StoreError as exc:
                self._metrics.errors.labels("store").inc()
                log.warning("dispatch.store_error", queue=queue, error=str(exc))
                await asyncio.sleep(1.0)

    async def _sleep_hint(self, queue: str) -> float:
        """Seconds until the queue's next retry falls due, capped by the safety interval.

        A retry already due when the last pass began was seen by that pass, which could not
        dial it (no free member, closed, gated): a member turning ready or an attempt ending
        wakes the loop for it. Without this the loop would spin on a due retry while every
        member is busy, one Redis round trip after another.
        """
        try:
            due = await self._store.next_due_ms(queue)
        except StoreError:
            return self._safety_interval
        if due is None or due <= self._pass_ms.get(queue, -1):
            return self._safety_interval
        return min(self._safety_interval, max(0.0, (due - self._clock.now_ms()) / 1000))

    async def _safety_loop(self) -> None:
        while True:
            await asyncio.sleep(self._safety_interval)
            try:
                await self.housekeeping()
            except StoreError as exc:
                log.warning("dispatch.housekeeping_failed", error=str(exc))
            self.wake()

    async def housekeeping(self) -> None:
        """Reclaim crashed leases and expire callbacks past max age or after closing time."""
        now = self._clock.now_ms()
        reclaimed = await self._store.reclaim_expired_leases(now_ms=now)
        if reclaimed:
            log.warning("callback.lease_reclaimed", count=len(reclaimed), ids=reclaimed[:20])
        for name, q in self._cfg.queues.items():
            # policy.is_expired: max_age seconds old is expired; the store's cutoff is exclusive.
            cutoff = now - q.max_age * 1000 + 1
            expired = await self._store.expire_older_than(name, cutoff, now_ms=now)
            if q.after_hours == "expire" and not self._hours[name].is_open(now):
                expired += await self._store.expire_older_than(name, now + 1, now_ms=now)
            for cb_id in expired:
                log.info("callback.expired", callback_id=cb_id, queue=name)
                await self._count_finished(cb_id, now)

    async def _count_finished(self, cb_id: str, now: int) -> None:
        """Count a callback the store just finished (its origin is on the record)."""
        try:
            cb = await self._store.get(cb_id)
        except StoreError as exc:
            log.warning("dispatch.store_error", queue=None, error=str(exc))
            return
        self._metrics.callback_finished(cb, now)

    # --- one pass ---------------------------------------------------------------------

    async def run_once(self, queue: str) -> int:
        """Claim and start as many callbacks as ``queue`` allows now; returns how many."""
        if self._tg is None:
            raise CallbackAriError("dispatcher is not running")
        q = self._cfg.queues[queue]
        started = 0
        async with self._pass_lock[queue]:
            self._pass_ms[queue] = self._clock.now_ms()
            ready_since = self._ready_at.pop(queue, None)
            if not q.enabled or not self._hours[queue].is_open(self._clock.now_ms()):
                await self._release_preholds(queue, "closed")
                return 0
            ready = self._watcher.ready_members(queue)
            bound = policy.join_before_ms(self._watcher.oldest_join_ms(queue), q.priority_boost)
            in_flight = self._in_flight[queue].values()
            # agent-first always reserves: the reservation is how it picks the member
            reserving = q.reserve_member or q.dialing_mode == "agent_first"
            book = self._book if reserving else None
            max_dialing: int | None
            if book is not None:
                # Each claim first locks a free ready member (Redis, across instances) and
                # pauses it; attempts holding no member (waiting for an agent after joining,
                # or whose reservation failed) will still take one of the ready members.
                unreserved = sum(not a.holds_member for a in in_flight)
                slots = max(0, len(book.free_interfaces(queue)) - unreserved)
                # Another instance's customer waiting in the queue holds no member (it was
                # unpaused for them): only the store's count, across instances, knows it.
                max_dialing = ready + await self.reserved_members(queue)
            else:
                slots = policy.dispatch_slots(ready_members=ready, in_flight=len(in_flight))
                # The store counts the dialing callbacks of every instance, those continued
                # into the queue and waiting for an agent included (dialing until AgentConnect).
                max_dialing = ready
            starved = False  # a member was free but nothing could be claimed
            for _ in range(slots):
                interface = await book.take(queue) if book is not None else None
                if book is not None and interface is None:
                    break
                cb = await self._store.claim_next(
                    queue,
                    owner=self._owner,
                    lease_ms=self._lease_ms,
                    join_before_ms=bound,
                    max_dialing=max_dialing,
                )
                if cb is None:
                    if book is not None and interface is not None:
                        await book.unlock(queue, interface)
                        starved = True
                    break
                attempt = self._reserve(cb, q, agent=interface)
                if book is not None and interface is not None:
                    attempt.reservation = await book.hold(
                        queue, interface, cb.id, attempt.channel_id, reservation_seconds(q)
                    )
                if ready_since is not None:
                    self._metrics.ready_to_dial.labels(queue).observe(
                        asyncio.get_running_loop().time() - ready_since
                    )
                self._tg.create_task(self._runner.run(attempt), name=f"attempt:{cb.id}")
                started += 1
            if book is not None:  # what the fast path pauses a member for
                self._head[queue] = None if starved else await self._store.first_due(queue)
                await self._prehold(queue, self._head[queue], bound)
            else:
                await self._release_preholds(queue, "off")
        return started

    async def _prehold(self, queue: str, head: tuple[str, int] | None, bound: int | None) -> None:
        """After a pass: pre-hold the busy members while a due callback still has none.

        ``head`` is the first callback due after the pass; it lacks a member (the pass took
        every free one it could) unless a live caller is ahead of it. Its wait is what the
        pre-holds are for: without one, they all go back at once. Pre-held members that freed
        up but are spoken for by our customers already in the queue (attempts holding no
        member, as the pass counts them) go back too: app_queue rings them for those. One that
        frees up while this pass runs stays: the watcher's signal brings the next pass for it.
        """
        assert self._book is not None
        preholds = self._book.preholds
        if head is None or (bound is not None and head[1] >= bound):
            await preholds.release_queue(queue, "not_needed")
            return
        unreserved = sum(not a.holds_member for a in self._in_flight[queue].values())
        freed = preholds.free(queue)
        others = len(self._book.free_interfaces(queue)) - len(freed)
        spoken_for = max(0, min(len(freed), unreserved - others))
        if spoken_for:
            await preholds.release_queue(queue, "not_taken", only=freed[:spoken_for])
        ours = {r.interface for r in self._book.held(queue)} | set(
            self._book.free_interfaces(queue)
        )
        await preholds.hold_busy(queue, skip=ours)
        if preholds.free(queue):  # freed up while its pause was on its way: take it now
            self._wake[queue].set()

    async def _release_preholds(self, queue: str, why: str) -> None:
        if self._book is not None:
            await self._book.preholds.release_queue(queue, why)

    async def reserved_members(self, queue: str) -> int:
        """Members any instance holds for a callback: paused in ``queue`` and locked in Redis."""
        # A pre-hold pauses and locks a *busy* member for no callback in particular: it is not
        # a reservation until it frees up and a claim converts it (still paused ``<app>:hold``).
        free = self._watcher.free_interfaces(queue)
        paused = [
            m.interface
            for m in self._watcher.members(queue)
            if m.paused and (m.interface in free or not m.paused_reason.endswith(f":{HOLD}"))
        ]
        locks = await self._store.member_locks(queue, paused)  # one round trip per pass
        return sum(lock is not None for lock in locks)

    def _reserve(self, cb: Callback, q: QueueConfig, *, agent: str | None = None) -> Attempt:
        """Build the attempt and reserve its channel ids and member slot before dialling.

        Agent-first, the channel we originate is the member's (``agent``), not the customer's.
        """
        try:
            endpoint: str | None = dial_string(q.dial_template, cb.number, self._policies[q.name])
        except NumberRejected as exc:
            log.error(
                "callback.number_refused",
                callback_id=cb.id,
                number=mask(cb.number),
                reason=exc.reason,
            )
            endpoint = None
        technology = endpoint.split("/", 1)[0].upper() if endpoint else ""
        attempt = Attempt(
            cb=cb,
            queue=q,
            endpoint=endpoint,
            channel_id=originate_channel_id(cb.id, cb.attempts),
            other_id=originate_other_channel_id(cb.id, cb.attempts)
            if (
                technology == "LOCAL"
                if q.dialing_mode != "agent_first"
                else (agent or "").upper().startswith("LOCAL/")
            )
            else None,
            technology=technology,
        )
        for cid in attempt.channel_ids:
            self._by_channel[cid] = attempt
        self._in_flight[q.name][cb.id] = attempt
        return attempt

    def _released(self, attempt: Attempt, outcome: Outcome | None) -> None:
        """The attempt no longer holds a member: free its slot and look for more work."""
        for cid in attempt.channel_ids:
            if self._by_channel.get(cid) is attempt:
                del self._by_channel[cid]
        self._in_flight[attempt.queue.name].pop(attempt.cb.id, None)
        self.wake(attempt.queue.name)

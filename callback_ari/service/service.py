"""The running service: wires config, store, ARI, AMI, the queue watcher and the flows together.

Event routing lives here and nowhere else: ARI events go to the offer session or dial attempt
that owns their channel; AMI events feed the watcher, whose signals wake the dispatcher and the
withdraw loop. After every reconnect the service resynchronises (``resync.py``: ARI channels
still in our app, an AMI QueueStatus snapshot), because Asterisk drops events while a link is
down. Recall cancellation (``recall.py``) and the gauges (``gauges.py``) are wired in here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from callback_ari.asterisk import ari_events as ev
from callback_ari.asterisk.agi import AgiServer
from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock, SystemClock
from callback_ari.config.loader import Config
from callback_ari.core import offer, policy
from callback_ari.core.hours import BusinessHours
from callback_ari.core.reasons import parse_reasons
from callback_ari.errors import AriError
from callback_ari.metrics import Metrics
from callback_ari.service import recordings
from callback_ari.service.abandon import AbandonFollowUp
from callback_ari.service.dispatcher import Dispatcher
from callback_ari.service.gauges import Gauges
from callback_ari.service.grace import release_when_gone
from callback_ari.service.intake import ENTRIES, HeldCallback, OfferEntry
from callback_ari.service.offer_agi import AgiOffers
from callback_ari.service.offer_ari import OfferSession
from callback_ari.service.prehold import PreHold
from callback_ari.service.recall import RecallCanceller
from callback_ari.service.reload import ReloadPlan, plan_reload
from callback_ari.service.reservations import Reservation, ReservationBook
from callback_ari.service.resync import Resync
from callback_ari.service.trends import Trends
from callback_ari.service.watcher import QueueWatcher
from callback_ari.service.withdrawer import Withdrawer
from callback_ari.store.store import CallbackStore, connect_redis

log = structlog.get_logger(__name__)

# A server started with the service (the HTTP API): given the running service, the coroutine
# that serves until cancelled, or None if it is switched off.
FrontEnd = Callable[["Service"], Coroutine[Any, Any, None] | None]


class Service:
    """One callback-ari instance. ``await Service(config).run()`` until cancelled.

    ``front_ends`` (the HTTP API, see ``web.py``) are started with the service's other tasks.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        front_ends: Sequence[FrontEnd] = (),
    ) -> None:
        self.config = config
        self._front_ends = tuple(front_ends)
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.metrics.declare_queues(config.queues, ENTRIES)
        for name, q in config.queues.items():
            self.metrics.declare_reasons(name, (r.name for r in parse_reasons(q.reasons)))
        self.metrics.watch_links(self.readiness)
        self.owner = config.general.instance_id
        self.store: CallbackStore | None = None
        self.ari: AriClient | None = None
        self.ami: AmiClient | None = None
        self.watcher = QueueWatcher(
            config.queues, self.clock, wrapup_s={n: q.wrapup_time for n, q in config.queues.items()}
        )
        self.dispatcher: Dispatcher | None = None
        self.reservations: ReservationBook | None = None
        self.sessions: dict[str, OfferSession] = {}
        self.started = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._hours = {
            n: BusinessHours.parse(q.hours, q.timezone) for n, q in config.queues.items()
        }
        self.gauges = Gauges(
            config=config, metrics=self.metrics, watcher=self.watcher, clock=self.clock
        )
        self.trends = Trends(
            config=config, metrics=self.metrics, watcher=self.watcher, clock=self.clock
        )
        self.withdrawer = Withdrawer(
            config=config,
            watcher=self.watcher,
            clock=self.clock,
            ami=lambda: self.ami,
            ari_up=lambda: self.ari is not None and self.ari.connected,
            offer_open=self._offer_open,
            pending=self.gauges.pending,
            spawn=self.spawn,
        )
        self.http_ready = asyncio.Event()
        self._ari_connects = 0
        self._ami_connects = 0
        self._resync: Resync | None = None
        self.agi: AgiServer | None = None
        # Parts built later (or by front ends) that take new queue settings on a reload.
        self._reload_listeners: list[Callable[[Config], None]] = [self.withdrawer.reconfigure]

    # --- life cycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect everything and serve until cancelled; raises on fatal errors."""
        cfg = self.config
        redis = connect_redis(
            cfg.redis.url, sentinel_master=cfg.redis.sentinel_master, sentinels=cfg.redis.sentinels
        )
        try:
            self.store = CallbackStore(
                redis,
                prefix=cfg.redis.prefix,
                clock=self.clock,
                audit_maxlen=cfg.redis.audit_maxlen,
                min_replicas=cfg.redis.min_replicas,
                replica_timeout_ms=round(cfg.redis.min_replicas_timeout * 1000),
            )
            await self.store.ping()
            self.gauges.store_ok = True
            async with AriClient(
                cfg.ari.url,
                cfg.ari.username,
                cfg.ari.password,
                cfg.general.app,
                verify_tls=cfg.ari.verify_tls,
            ) as ari:
                self.ari = ari
                self.ami = AmiClient(
                    cfg.ami.host,
                    cfg.ami.port,
                    cfg.ami.username,
                    cfg.ami.secret,
                    ping_interval=cfg.ami.ping_interval,
                    ping_timeout=cfg.ami.ping_timeout,
                    ssl=ssl.create_default_context() if cfg.ami.tls else None,
                )
                self.reservations = ReservationBook(
                    store=self.store,
                    watcher=self.watcher,
                    ami=lambda: self.ami if self.ami is not None and self.ami.connected else None,
                    owner=self.owner,
                    app=cfg.general.app,
                    metrics=self.metrics,
                    clock=self.clock,
                )
                self.dispatcher = Dispatcher(
                    config=cfg,
                    store=self.store,
                    ari=ari,
                    watcher=self.watcher,
                    clock=self.clock,
                    metrics=self.metrics,
                    owner=self.owner,
                    reservations=self.reservations,
                )
                self._resync = Resync(
                    config=cfg,
                    clock=self.clock,
                    ari=ari,
                    ami=self.ami,
                    watcher=self.watcher,
                    dispatcher=self.dispatcher,
                    reservations=self.reservations,
                    sessions=self.sessions,
                    start_offer=self._start_offer,
                    hang_up=self._spawn_hangup,
                    wake=self._wake_all,
                )
                recall = RecallCanceller(
                    config=cfg,
                    store=self.store,
                    metrics=self.metrics,
                    owns_channel=self.dispatcher.owns_channel,
                    spawn=self.spawn,
                    now_ms=self.clock.now_ms,
                )
                self.on_reload(self.dispatcher.reconfigure)
                self.on_reload(recall.reconfigure)
                abandon = AbandonFollowUp(
                    config=cfg,
                    store=self.store,
                    metrics=self.metrics,
                    owns_channel=self.dispatcher.owns_channel,
                    withdrew=self.withdrawer.withdrew,
                    offer_open=self._offer_open,
                    spawn=self.spawn,
                )
                self.on_reload(abandon.reconfigure)
                # before the leave listeners: the withdrawer forgets its callers on leave
                self.watcher.on_caller_abandon(abandon.caller_abandoned)
                self.watcher.on_member_ready(self.dispatcher.member_ready)
                self.watcher.on_caller_join(recall.caller_joined)
                self.watcher.on_caller_leave(self.withdrawer.caller_left)
                # the oldest live caller leaving may lift the virtual-hold gate for a callback
                self.watcher.on_caller_leave(lambda queue, _c: self.wake_dispatch(queue))
                self.watcher.on_member_free(self.dispatcher.member_free)
                # The links outlive the workers: a worker's clean-up on shutdown (hanging up,
                # unpausing reserved and pre-held members) still reaches Asterisk.
                async with asyncio.TaskGroup() as links:
                    links.create_task(ari.run_events(self._on_ari_event, self._on_ari_connect))
                    links.create_task(self.ami.run(self._on_ami_event, self._on_ami_connect))
                    async with asyncio.TaskGroup() as tg:
                        self._tg = tg
                        tg.create_task(self.watcher.run())
                        tg.create_task(self.dispatcher.run())
                        tg.create_task(self.reservations.run())
                        tg.create_task(self.withdrawer.run())
                        tg.create_task(self.gauges.run(self.store, in_flight=self._in_flight))
                        tg.create_task(self._resync.run())
                        tg.create_task(self.trends.run(self.store))
                        for extra in self.extra_tasks():
                            tg.create_task(extra)
                        self.started.set()
                        log.info("service.started", instance=self.owner, queues=list(cfg.queues))
        finally:
            self._tg = None
            self._resync = None
            if self.ami is not None:
                await self.ami.aclose()
            await redis.aclose()

    def extra_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """Servers that share the service's life: the front ends given and the FastAGI server."""
        assert self.store is not None
        cfg = self.config
        tasks = [task for front_end in self._front_ends if (task := front_end(self)) is not None]
        if self.ari is not None:
            sweeper = recordings.RecordingSweeper(
                ari=self.ari, store=self.store, clock=self.clock,
                retention_s=cfg.general.recording_retention,
            )  # fmt: skip
            sweeper.reconfigure(cfg)
            self.on_reload(sweeper.reconfigure)
            tasks.append(sweeper.run())
        if cfg.agi.enabled:
            offers = AgiOffers(
                store=self.store,
                config=cfg,
                metrics=self.metrics,
                clock=self.clock,
                wait_estimate=lambda queue: self.watcher.estimated_wait_s(queue, 1),
                on_booked=self._watch_hangup,
            )
            self.on_reload(offers.reconfigure)
            self.agi = AgiServer(offers, on_crash=lambda: self.metrics.errors.labels("agi").inc())
            tasks.append(self.agi.serve(cfg.agi.bind, cfg.agi.port))
        return tasks

    def on_reload(self, listener: Callable[[Config], None]) -> None:
        """Call ``listener(config)`` with the settings a reload applied (see ``reload``)."""
        self._reload_listeners.append(listener)

    def reload(self, wanted: Config) -> ReloadPlan:
        """Take from a re-read config what is safe without a restart (SIGHUP).

        Dialogues and dial attempts in progress keep the settings they started with; every
        decision from now on uses the new ones. What needs a restart is logged and kept.
        """
        plan = plan_reload(self.config, wanted)
        cfg = self.config = plan.config
        self._hours = {n: BusinessHours.parse(q.hours, q.timezone) for n, q in cfg.queues.items()}
        self.watcher.set_wrapup({n: q.wrapup_time for n, q in cfg.queues.items()})
        for listener in self._reload_listeners:
            listener(cfg)
        log.info("config.reloaded", applied=list(plan.applied), sessions_kept=len(self.sessions))
        if plan.needs_restart:
            log.warning("config.restart_needed", settings=list(plan.needs_restart))
        return plan

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: each link's state."""
        return {
            "redis": self.gauges.store_ok,
            "ari": bool(self.ari is not None and self.ari.connected),
            "ami": bool(self.ami is not None and self.ami.connected),
        }

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Start a task owned by the service's task group."""
        if self._tg is None:
            coro.close()
            log.debug("service.task_dropped", task=name, reason="not running")
            return
        try:
            self._tg.create_task(coro, name=name)
        except RuntimeError:  # the task group is shutting down: nothing new may start
            coro.close()
            log.debug("service.task_dropped", task=name, reason="shutting down")

    # --- ARI --------------------------------------------------------------------------

    def _on_ari_event(self, event: ev.AriEvent) -> None:
        assert self.dispatcher is not None
        if isinstance(event, ev.StasisStart):
            self._stasis_start(event)
            return
        if self.dispatcher.handle_event(event):
            return
        channel_id = event.channel_id
        session = self.sessions.get(channel_id) if channel_id else None
        if session is not None:
            session.feed(event)

    def _stasis_start(self, event: ev.StasisStart) -> None:
        assert self.dispatcher is not None
        channel = event.channel
        if self.dispatcher.handle_event(event):
            return
        args = tuple(event.args)
        if args[:1] == ("callback",):
            # A callback channel whose attempt is not ours (a crashed run): never leave it open.
            log.warning("callback.orphan_channel", channel_id=channel.id)
            self._spawn_hangup(channel.id, "orphan")
            return
        entry = OfferEntry.from_args(args, self.clock.now_ms())
        if entry is None or entry.queue not in self.config.queues:
            log.warning("offer.unknown_entry", channel_id=channel.id, args=list(args))
            self._spawn_hangup(channel.id, "unknown")
            return
        self._start_offer(channel, entry)

    def _start_offer(self, channel: ev.ChannelInfo, entry: OfferEntry) -> None:
        assert self.ari is not None and self.store is not None
        q = self.config.queues[entry.queue]
        session = OfferSession(
            ari=self.ari,
            store=self.store,
            queue=q,
            channel=channel,
            entry=entry,
            clock=self.clock,
            metrics=self.metrics,
            dialogue_timeout=self.config.general.dialogue_timeout,
            # their turn is the position they left at: the callback keeps it
            wait_estimate=lambda: self.watcher.estimated_wait_s(entry.queue, entry.position or 1),
        )
        self.sessions[channel.id] = session
        self.spawn(self._run_offer(session, entry), name=f"offer:{channel.id}")

    async def _run_offer(self, session: OfferSession, entry: OfferEntry) -> None:
        try:
            if not self._offer_open(entry.queue):
                log.info("offer.closed", queue=entry.queue, channel_id=session.channel_id)
                await session.return_without_offer(offer.ContinueReason.CLOSED)
                return
            result = await session.run()
            if session.held is not None:
                self._watch_hangup(session.held)
            if result.outcome is offer.OfferOutcome.CONTINUED:
                self.withdrawer.declined(session.channel_id)
            self.wake_dispatch(entry.queue)  # a callback stored: dial it now if it may be
        except asyncio.CancelledError:
            # Shutting down: nobody is left in a dead dialogue; back to the queue they go.
            await asyncio.shield(session.return_without_offer(offer.ContinueReason.SHUTDOWN))
            raise
        finally:
            self.sessions.pop(session.channel_id, None)

    def _offer_open(self, queue: str) -> bool:
        q = self.config.queues[queue]
        return policy.offer_open(
            open_now=q.enabled and self._hours[queue].is_open(self.clock.now_ms()),
            pending=self.gauges.pending(queue),
            max_pending=q.max_pending,
            store_ok=self.gauges.store_ok,
        )

    async def _on_ari_connect(self) -> None:
        """Resync after (re)connecting: Asterisk sent nothing while we were away."""
        if self._ari_connects:
            self.metrics.reconnects.labels("ari").inc()
        self._ari_connects += 1
        assert self._resync is not None and self.ari is not None
        await self._resync.ari_channels()
        try:
            info = await self.ari.asterisk_info()
        except AriError as exc:
            log.warning("ari.info_failed", error=str(exc))
        else:
            system = info.get("system")
            version = system.get("version") if isinstance(system, dict) else None
            self.metrics.saw_asterisk(str(version or ""))

    def _spawn_hangup(self, channel_id: str, why: str = "orphan") -> None:
        """Hang a channel up in the background; ``why`` names the task."""
        self.spawn(self._hangup_quietly(channel_id), name=f"{why}:{channel_id}")

    async def _hangup_quietly(self, channel_id: str) -> None:
        assert self.ari is not None
        with contextlib.suppress(AriError):
            await self.ari.hangup(channel_id)

    # --- AMI --------------------------------------------------------------------------

    def _on_ami_event(self, message: AmiMessage) -> None:
        if self._resync is not None and self._resync.hold(message):
            return
        self.watcher.apply(message)
        if self.dispatcher is not None:
            self.dispatcher.handle_ami(message)
        self.withdrawer.wake()

    async def _on_ami_connect(self) -> None:
        assert self._resync is not None and self.dispatcher is not None
        if self._ami_connects:
            self.metrics.reconnects.labels("ami").inc()
        self._ami_connects += 1
        await self._resync.queue_status()
        log.info("ami.resynced", queues=len(self.config.queues))
        self.dispatcher.wake()
        self.withdrawer.wake()

    def _watch_hangup(self, held: HeldCallback) -> None:
        """A callback was booked in a call: start its grace once that call is over."""
        self.spawn(self._release_when_gone(held), name=f"grace:{held.callback_id}")

    async def _release_when_gone(self, held: HeldCallback) -> None:
        assert self.ari is not None and self.store is not None
        q = self.config.queues.get(held.queue)
        if q is None:  # the queue went away in a reload: the fallback time applies
            return
        if await release_when_gone(self.ari, self.store, q, held, self.clock):
            self.wake_dispatch(held.queue)

    def wake_dispatch(self, queue: str) -> None:
        """Look for a callback to dial in ``queue`` now (e.g. one was just stored)."""
        if self.dispatcher is not None:
            self.dispatcher.wake(queue)

    def held_reservations(self, queue: str) -> list[Reservation]:
        """The members this instance holds paused for callbacks in ``queue``."""
        return self.reservations.held(queue) if self.reservations is not None else []

    def preheld_members(self, queue: str) -> list[PreHold]:
        """The busy members this instance holds paused while a callback of ``queue`` waits."""
        return self.reservations.preholds.held(queue) if self.reservations is not None else []

    def _wake_all(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        self.withdrawer.wake()

    # --- gauges -----------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Refresh the gauges and the pending-cap cache now (tests; the loop does it too)."""
        assert self.store is not None
        await self.gauges.refresh(self.store, in_flight=self._in_flight)

    @property
    def _in_flight(self) -> Callable[[str], int] | None:
        return self.dispatcher.in_flight if self.dispatcher is not None else None

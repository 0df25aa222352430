"""The running service: wires config, store, ARI, AMI, the queue watcher and the flows together.

Event routing lives here and nowhere else: ARI events go to the offer session or dial attempt
that owns their channel; AMI events feed the watcher, whose signals wake the dispatcher and the
withdraw loop. After every reconnect the service resynchronises (ARI: channels still in our
app; AMI: a QueueStatus snapshot), because Asterisk drops events while a link is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from callback_ari import api, policy
from callback_ari import ari_events as ev
from callback_ari.agi import AgiServer
from callback_ari.ami import AmiClient
from callback_ari.ami_protocol import AmiMessage
from callback_ari.ari import AriClient
from callback_ari.clock import Clock, SystemClock
from callback_ari.config import Config
from callback_ari.dispatcher import Dispatcher
from callback_ari.errors import AmiError, AriError, NumberRejected, StoreError
from callback_ari.hours import BusinessHours
from callback_ari.intake import OfferEntry, number_validator
from callback_ari.metrics import Metrics
from callback_ari.models import State
from callback_ari.offer_ari import OfferSession
from callback_ari.reservations import ReservationBook
from callback_ari.store import CallbackStore, connect_redis
from callback_ari.watcher import QueueCaller, QueueWatcher
from callback_ari.withdrawer import Withdrawer

log = structlog.get_logger(__name__)

GAUGE_INTERVAL_S = 5.0


class Service:
    """One callback-ari instance. ``await Service(config).run()`` until cancelled."""

    def __init__(
        self, config: Config, *, clock: Clock | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
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
        self._pending_counts: dict[str, int] = {}
        self._store_ok = False
        self.withdrawer = Withdrawer(
            config=config,
            watcher=self.watcher,
            clock=self.clock,
            ami=lambda: self.ami,
            ari_up=lambda: self.ari is not None and self.ari.connected,
            offer_open=self._offer_open,
            pending=lambda queue: self._pending_counts.get(queue, 0),
            spawn=self.spawn,
        )
        self.http_ready = asyncio.Event()
        self._ari_connects = 0
        self._ami_connects = 0
        self._ami_backlog: list[AmiMessage] | None = None  # events held while resyncing
        self.agi: AgiServer | None = None

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
            )
            await self.store.ping()
            self._store_ok = True
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
                self.watcher.on_member_ready(self.dispatcher.member_ready)
                self.watcher.on_caller_join(self._caller_joined)
                self.watcher.on_caller_leave(self.withdrawer.caller_left)
                # the oldest live caller leaving may lift the virtual-hold gate for a callback
                self.watcher.on_caller_leave(lambda queue, _c: self._wake_dispatch(queue))
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    tg.create_task(ari.run_events(self._on_ari_event, self._on_ari_connect))
                    tg.create_task(self.ami.run(self._on_ami_event, self._on_ami_connect))
                    tg.create_task(self.watcher.run())
                    tg.create_task(self.dispatcher.run())
                    tg.create_task(self.reservations.run())
                    tg.create_task(self.withdrawer.run())
                    tg.create_task(self._gauge_loop())
                    tg.create_task(self._resync_loop())
                    for extra in self.extra_tasks():
                        tg.create_task(extra)
                    self.started.set()
                    log.info("service.started", instance=self.owner, queues=list(cfg.queues))
        finally:
            self._tg = None
            if self.ami is not None:
                await self.ami.aclose()
            await redis.aclose()

    def extra_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """Servers that share the service's life: the HTTP API and the FastAGI front end."""
        assert self.store is not None
        cfg = self.config
        tasks: list[Coroutine[Any, Any, None]] = []
        if cfg.http.enabled:
            app = api.create_app(
                store=self.store,
                config=cfg,
                metrics=self.metrics,
                readiness=self.readiness,
                clock=self.clock,
                status=self.status,
                on_stored=self._wake_dispatch,
            )
            tasks.append(api.serve(app, cfg.http.bind, cfg.http.port, listening=self.http_ready))
        if cfg.agi.enabled:
            self.agi = AgiServer(
                store=self.store,
                config=cfg,
                metrics=self.metrics,
                clock=self.clock,
                wait_estimate=lambda queue: self.watcher.estimated_wait_s(queue, 1),
            )
            tasks.append(self.agi.serve(cfg.agi.bind, cfg.agi.port))
        return tasks

    async def status(self) -> api.StatusDoc:
        """The status page's JSON: live queue data from the watcher, the rest from Redis."""
        assert self.store is not None
        return await api.build_status(
            self.store,
            self.config,
            self.clock,
            watcher_view=api.watcher_view_of(self.watcher, self.clock),
            in_flight=self.dispatcher.in_flight if self.dispatcher else (lambda _q: 0),
            links=self.readiness(),
            reservations=self._reservation_views,
        )

    def _reservation_views(self, queue: str) -> list[api.ReservationView]:
        if self.reservations is None:
            return []
        now = time.monotonic()
        return [
            {
                "member": r.interface,
                "callback_id": r.callback_id,
                "held_s": round(now - r.started, 1),
                "deadline_s": round(max(0.0, r.deadline - now), 1),
            }
            for r in self.reservations.held(queue)
        ]

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: each link's state."""
        return {
            "redis": self._store_ok,
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
            self.spawn(self._hangup_quietly(channel.id), name=f"orphan:{channel.id}")
            return
        entry = OfferEntry.from_args(args, self.clock.now_ms())
        if entry is None or entry.queue not in self.config.queues:
            log.warning("offer.unknown_entry", channel_id=channel.id, args=list(args))
            self.spawn(self._hangup_quietly(channel.id), name=f"unknown:{channel.id}")
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
            wait_estimate=lambda: self.watcher.estimated_wait_s(entry.queue, 1),
        )
        self.sessions[channel.id] = session
        self.spawn(self._run_offer(session, entry), name=f"offer:{channel.id}")

    async def _run_offer(self, session: OfferSession, entry: OfferEntry) -> None:
        try:
            if not self._offer_open(entry.queue):
                log.info("offer.closed", queue=entry.queue, channel_id=session.channel_id)
                await session.return_without_offer("closed")
                return
            result = await session.run()
            if result.startswith("continued:"):
                self.withdrawer.declined(session.channel_id)
            self._wake_dispatch(entry.queue)  # a callback stored: dial it now if it may be
        except asyncio.CancelledError:
            # Shutting down: nobody is left in a dead dialogue; back to the queue they go.
            await asyncio.shield(session.return_without_offer("shutdown"))
            raise
        finally:
            self.sessions.pop(session.channel_id, None)

    def _offer_open(self, queue: str) -> bool:
        q = self.config.queues[queue]
        return policy.offer_open(
            open_now=q.enabled and self._hours[queue].is_open(self.clock.now_ms()),
            pending=self._pending_counts.get(queue, 0),
            max_pending=q.max_pending,
            store_ok=self._store_ok,
        )

    async def _on_ari_connect(self) -> None:
        """Resync after (re)connecting: Asterisk sent nothing while we were away."""
        self.metrics.connected.labels("ari").set(1)
        if self._ari_connects:
            self.metrics.reconnects.labels("ari").inc()
        self._ari_connects += 1
        await self._resync_ari()

    async def _resync_ari(self) -> None:
        """Hand every channel still in our app back to its flow, or back to the dialplan."""
        assert self.ari is not None and self.dispatcher is not None
        listed_at = time.monotonic()
        try:
            channels = await self.ari.list_channels()
        except AriError as exc:
            log.warning("ari.resync_failed", error=str(exc))
            return
        live = {c.id for c in channels}
        for session in list(self.sessions.values()):
            await session.resync()
        await self.dispatcher.resync(channels, listed_at=listed_at)
        for listed in channels:
            # The list is already old here (awaits above): a flow may have finished or taken
            # the channel since. Act only on what a fresh look still shows as ours and unowned.
            if not self._unowned_in_app(listed):
                continue
            channel = await self._fresh_unowned(listed.id)
            if channel is None:
                continue
            args = channel.app_data[len(self._app_prefix) :].split(",")
            entry = OfferEntry.from_args(args, self.clock.now_ms())
            if entry is not None and entry.queue in self.config.queues:
                # We lost this caller's dialogue (restart): start it again from the offer.
                log.info("offer.resumed", channel_id=channel.id, queue=entry.queue)
                self._start_offer(channel, entry)
            else:
                log.warning("ari.orphan_channel", channel_id=channel.id)
                self.spawn(self._hangup_quietly(channel.id), name=f"orphan:{channel.id}")
        log.info("ari.resynced", channels=len(live), sessions=len(self.sessions))

    @property
    def _app_prefix(self) -> str:
        return f"{self.config.general.app},"

    def _unowned_in_app(self, channel: ev.ChannelInfo) -> bool:
        """In our Stasis app, and neither an offer session nor a dial attempt holds it."""
        assert self.dispatcher is not None
        if channel.id in self.sessions or self.dispatcher.owns_channel(channel.id):
            return False
        return channel.app_name == "Stasis" and channel.app_data.startswith(self._app_prefix)

    async def _fresh_unowned(self, channel_id: str) -> ev.ChannelInfo | None:
        """The channel as ARI shows it now, if it is still in our app with no flow."""
        assert self.ari is not None
        try:
            channel = await self.ari.get_channel(channel_id)
        except AriError:
            return None  # gone (hung up, continued and destroyed) or ARI away: nothing to do
        return channel if self._unowned_in_app(channel) else None

    async def _hangup_quietly(self, channel_id: str) -> None:
        assert self.ari is not None
        with contextlib.suppress(AriError):
            await self.ari.hangup(channel_id)

    # --- AMI --------------------------------------------------------------------------

    def _on_ami_event(self, message: AmiMessage) -> None:
        if self._ami_backlog is not None:
            self._ami_backlog.append(message)  # applied on top of the snapshot, in order
            return
        self._apply_ami(message)
        self.withdrawer.wake()

    def _apply_ami(self, message: AmiMessage) -> None:
        self.watcher.apply(message)
        if self.dispatcher is not None:
            self.dispatcher.handle_ami(message)

    async def _load_queue_status(self) -> None:
        """Replace the watcher's state with a QueueStatus snapshot, then replay the events
        that arrived meanwhile: an event read in the same chunk as the reply's end (a member
        freeing up) is newer than the snapshot and must not be rolled back by it."""
        assert self.ami is not None
        backlog: list[AmiMessage] = []
        self._ami_backlog = backlog
        try:
            self.watcher.load_snapshot(await self.ami.queue_status())
        finally:  # replayed even if QueueStatus failed: those events happened
            self._ami_backlog = None
            for message in backlog:
                self._apply_ami(message)
        if self.reservations is not None:
            # a member paused for a reservation nobody holds any more (a crash) is released
            await self.reservations.sweep(self.config.queues)

    async def _on_ami_connect(self) -> None:
        assert self.ami is not None and self.dispatcher is not None
        self.metrics.connected.labels("ami").set(1)
        if self._ami_connects:
            self.metrics.reconnects.labels("ami").inc()
        self._ami_connects += 1
        await self._load_queue_status()
        log.info("ami.resynced", queues=len(self.config.queues))
        self.dispatcher.wake()
        self.withdrawer.wake()

    def _wake_dispatch(self, queue: str) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake(queue)

    def _caller_joined(self, queue: str, caller: QueueCaller) -> None:
        """A caller joined a queue: cancel their pending callback if they called again."""
        q = self.config.queues.get(queue)
        if q is None or q.on_recall != "cancel" or not caller.caller_number:
            return
        if self.dispatcher is not None and self.dispatcher.owns_channel(caller.uniqueid):
            return
        self.spawn(self._cancel_on_recall(queue, caller), name=f"recall:{caller.uniqueid}")

    async def _cancel_on_recall(self, queue: str, caller: QueueCaller) -> None:
        assert self.store is not None
        q = self.config.queues[queue]
        try:
            number = number_validator(q)(caller.caller_number)
            existing = await self.store.find_live(queue, number)
            if existing is None or existing.state is State.DIALING:
                return  # a dialing callback's own customer joining the queue is not a re-call
            await self.store.cancel(existing.id, reason="recalled")
        except (NumberRejected, StoreError):
            return
        log.info("callback.cancelled_on_recall", callback_id=existing.id, queue=queue)

    # --- periodic resync -----------------------------------------------------------------

    async def _resync_loop(self) -> None:
        """Every resync_interval: repair what a lost event may have left behind."""
        while True:
            await asyncio.sleep(self.config.general.resync_interval)
            if self.ami is not None and self.ami.connected:
                try:
                    await self._load_queue_status()
                except AmiError as exc:
                    log.warning("ami.resync_failed", error=str(exc))
            if self.ari is not None and self.ari.connected:
                await self._resync_ari()
            if self.dispatcher is not None:
                self.dispatcher.wake()
            self.withdrawer.wake()

    # --- gauges -----------------------------------------------------------------------

    async def _gauge_loop(self) -> None:
        """Refresh gauges and the pending-cap cache; also tells whether Redis answers."""
        while True:
            await self.refresh_gauges()
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def refresh_gauges(self) -> None:
        assert self.store is not None
        try:
            counts = await self.store.counts()
            self._store_ok = True
            self.metrics.connected.labels("redis").set(1)
        except StoreError:
            self._store_ok = False
            self.metrics.connected.labels("redis").set(0)
            return
        for name in self.config.queues:
            per_state = counts.get(name, {})
            self._pending_counts[name] = sum(per_state.get(s.value, 0) for s in State if s.is_live)
            for state in State:
                self.metrics.pending.labels(name, state.value).set(per_state.get(state.value, 0))
            self.metrics.ready_members.labels(name).set(self.watcher.ready_members(name))
            callers = self.watcher.callers(name)
            self.metrics.callers_holding.labels(name).set(len(callers))
            oldest = self.watcher.oldest_join_ms(name)
            longest = 0.0 if oldest is None else (self.clock.now_ms() - oldest) / 1000
            self.metrics.longest_hold.labels(name).set(longest)
            if self.dispatcher is not None:
                self.metrics.in_flight.labels(name).set(self.dispatcher.in_flight(name))
        self.metrics.connected.labels("ari").set(int(bool(self.ari and self.ari.connected)))
        self.metrics.connected.labels("ami").set(int(bool(self.ami and self.ami.connected)))

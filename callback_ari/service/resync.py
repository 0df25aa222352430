"""Resynchronisation: repair what Asterisk did not tell us while a link was down.

After every reconnect, and every ``resync_interval`` in case an event was lost: the AMI side
reloads the queue watcher from a QueueStatus snapshot (and releases members left paused for
reservations nobody holds); the ARI side hands every channel still
in our Stasis app back to its flow, restarts a lost offer dialogue, or hangs up an orphan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from callback_ari.asterisk import ari_events as ev
from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock
from callback_ari.config.loader import Config
from callback_ari.errors import AmiError, AriError
from callback_ari.service.dispatcher import Dispatcher
from callback_ari.service.intake import OfferEntry
from callback_ari.service.offer_ari import OfferSession
from callback_ari.service.reservations import ReservationBook
from callback_ari.service.watcher import QueueWatcher

log = structlog.get_logger(__name__)


class Resync:
    """Both links' resynchronisation, and the periodic loop that runs it."""

    def __init__(
        self,
        *,
        config: Config,
        clock: Clock,
        ari: AriClient,
        ami: AmiClient,
        watcher: QueueWatcher,
        dispatcher: Dispatcher,
        sessions: Mapping[str, OfferSession],
        reservations: ReservationBook | None = None,
        start_offer: Callable[[ev.ChannelInfo, OfferEntry], None],
        hang_up: Callable[[str], None],
        wake: Callable[[], None],
    ) -> None:
        self._config = config
        self._clock = clock
        self._ari = ari
        self._ami = ami
        self._watcher = watcher
        self._dispatcher = dispatcher
        self._reservations = reservations
        self._sessions = sessions  # the service's live offer sessions by channel id
        self._start_offer = start_offer
        self._hang_up = hang_up  # spawns a quiet hang-up of the channel
        self._wake = wake  # the dispatcher and the withdraw loop
        self._ami_backlog: list[AmiMessage] | None = None  # events held while resyncing

    # --- AMI ------------------------------------------------------------------------------

    def hold(self, message: AmiMessage) -> bool:
        """Keep an AMI event back while a snapshot loads; True if it was held."""
        if self._ami_backlog is None:
            return False
        self._ami_backlog.append(message)  # applied on top of the snapshot, in order
        return True

    async def queue_status(self) -> None:
        """Replace the watcher's state with a QueueStatus snapshot, then replay the events
        that arrived meanwhile: an event read in the same chunk as the reply's end (a member
        freeing up) is newer than the snapshot and must not be rolled back by it."""
        backlog: list[AmiMessage] = []
        self._ami_backlog = backlog
        try:
            self._watcher.load_snapshot(await self._ami.queue_status())
        finally:  # replayed even if QueueStatus failed: those events happened
            self._ami_backlog = None
            for message in backlog:
                self._watcher.apply(message)
                self._dispatcher.handle_ami(message)
        if self._reservations is not None:
            # a member paused for a reservation nobody holds any more (a crash) is released
            await self._reservations.sweep(self._config.queues)

    # --- ARI ------------------------------------------------------------------------------

    async def ari_channels(self) -> None:
        """Hand every channel still in our app back to its flow, or back to the dialplan."""
        listed_at = time.monotonic()
        try:
            channels = await self._ari.list_channels()
        except AriError as exc:
            log.warning("ari.resync_failed", error=str(exc))
            return
        live = {c.id for c in channels}
        for session in list(self._sessions.values()):
            await session.resync()
        await self._dispatcher.resync(channels, listed_at=listed_at)
        for listed in channels:
            # The list is already old here (awaits above): a flow may have finished or taken
            # the channel since. Act only on what a fresh look still shows as ours and unowned.
            if not self._unowned_in_app(listed):
                continue
            channel = await self._fresh_unowned(listed.id)
            if channel is None:
                continue
            args = channel.app_data[len(self._app_prefix) :].split(",")
            entry = OfferEntry.from_args(args, self._clock.now_ms())
            if entry is not None and entry.queue in self._config.queues:
                # We lost this caller's dialogue (restart): start it again from the offer.
                log.info("offer.resumed", channel_id=channel.id, queue=entry.queue)
                self._start_offer(channel, entry)
            else:
                log.warning("ari.orphan_channel", channel_id=channel.id)
                self._hang_up(channel.id)
        log.info("ari.resynced", channels=len(live), sessions=len(self._sessions))

    @property
    def _app_prefix(self) -> str:
        return f"{self._config.general.app},"

    def _unowned_in_app(self, channel: ev.ChannelInfo) -> bool:
        """In our Stasis app, and neither an offer session nor a dial attempt holds it."""
        if channel.id in self._sessions or self._dispatcher.owns_channel(channel.id):
            return False
        return channel.app_name == "Stasis" and channel.app_data.startswith(self._app_prefix)

    async def _fresh_unowned(self, channel_id: str) -> ev.ChannelInfo | None:
        """The channel as ARI shows it now, if it is still in our app with no flow."""
        try:
            channel = await self._ari.get_channel(channel_id)
        except AriError:
            return None  # gone (hung up, continued and destroyed) or ARI away: nothing to do
        return channel if self._unowned_in_app(channel) else None

    # --- periodic -------------------------------------------------------------------------

    async def run(self) -> None:
        """Every resync_interval: repair what a lost event may have left behind."""
        while True:
            await asyncio.sleep(self._config.general.resync_interval)
            if self._ami.connected:
                try:
                    await self.queue_status()
                except AmiError as exc:
                    log.warning("ami.resync_failed", error=str(exc))
            if self._ari.connected:
                await self.ari_channels()
            self._wake()

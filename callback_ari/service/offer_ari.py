"""Drives the offer dialogue (``offer.OfferMachine``) over ARI for one caller in Stasis.

The machine decides; this module only executes its actions (play, stop, timers, store,
continue, hang up) against ARI and the store, and turns ARI events back into machine inputs.
Every exit path ends with the caller either stored and handed back to the kit with
``CB_RESULT=CALLBACK`` (its subroutine returns ``QUEUESTATUS=CALLBACK``) or continued back into
the queue at the position they left; a caller who hangs up just ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog

from callback_ari.asterisk import ari_events as ev
from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock
from callback_ari.config.loader import QueueConfig
from callback_ari.core import offer
from callback_ari.errors import AriConflict, AriError, AriNotFound
from callback_ari.metrics import Metrics
from callback_ari.models import Origin
from callback_ari.service.intake import (
    CB_RESULT,
    CB_RESULT_CALLBACK,
    HeldCallback,
    OfferEntry,
    hold_for_hangup_ms,
    number_validator,
    offer_finished,
    offer_settings,
    offer_started,
    store_from_dialogue,
)
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)


class OfferSession:
    """One caller's dialogue over ARI. Feed events with ``feed``; ``run`` until it ends."""

    def __init__(
        self,
        *,
        ari: AriClient,
        store: CallbackStore,
        queue: QueueConfig,
        channel: ev.ChannelInfo,
        entry: OfferEntry,
        clock: Clock,
        metrics: Metrics,
        dialogue_timeout: float,
        wait_estimate: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._ari = ari
        self._store = store
        self._q = queue
        self._channel = channel
        self._entry = entry
        self._clock = clock
        self._metrics = metrics
        self._dialogue_timeout = dialogue_timeout
        self._wait_estimate = wait_estimate
        self._events: asyncio.Queue[ev.AriEvent] = asyncio.Queue()
        self._machine = offer.OfferMachine(
            offer_settings(queue),
            number_validator(queue),
            caller_id=channel.caller_number or None,
            position=entry.position,
            wait_s=wait_estimate() if queue.announce_position else None,
        )
        self._todo: deque[offer.Action] = deque()
        self._playback: tuple[str, int] | None = None  # (playback id, token)
        self._timer: tuple[float, int] | None = None  # (loop deadline, token)
        self._ended = False
        self._stored: HeldCallback | None = None  # booked here: held until the line is down
        self.result: offer.OfferResult | None = None  # set when the dialogue has ended

    @property
    def channel_id(self) -> str:
        return self._channel.id

    def feed(self, event: ev.AriEvent) -> None:
        self._events.put_nowait(event)

    async def resync(self) -> None:
        """After an ARI reconnect: recover inputs whose events were lost while deaf."""
        try:
            await self._ari.get_channel(self.channel_id)
        except AriNotFound:
            self._inject(offer.Hangup())
            return
        except AriError:
            return
        if self._playback is not None:
            playback_id, token = self._playback
            if not await self._ari.playback_exists(playback_id):
                self._playback = None
                self._inject(offer.PlaybackDone(token))

    def _inject(self, event: offer.Event) -> None:
        self._todo.extend(self._machine.handle(event))
        self._events.put_nowait(_WAKE)

    async def run(self) -> offer.OfferResult:
        """Run the dialogue to its end; returns the machine's result."""
        q = self._q
        offer_started(
            self._metrics, q, self._entry, self._clock.now_ms(), channel_id=self.channel_id,
            caller=self._channel.caller_number, frontend="ari",
        )  # fmt: skip
        try:
            async with asyncio.timeout(self._dialogue_timeout):
                self._todo.extend(self._machine.start())
                while not self._ended:
                    while self._todo and not self._ended:
                        await self._execute(self._todo.popleft())
                    if self._ended or self._machine.done:
                        break
                    await self._next_input()
        except TimeoutError:
            log.warning("offer.dialogue_timeout", queue=q.name, channel_id=self.channel_id)
            await self._back_to_queue(offer.ContinueReason.DIALOGUE_TIMEOUT)
        except (AriNotFound, AriConflict) as exc:
            # 404/409 on the caller's own channel: it hung up (or left our app) before its
            # StasisEnd reached us. Nothing to return to the queue; not an internal error.
            log.info("offer.caller_gone", queue=q.name, channel_id=self.channel_id, error=str(exc))
            self._ended = True
        except Exception as exc:  # any internal error: the caller goes back to the queue
            self._metrics.errors.labels("flow").inc()
            log.exception("offer.error", queue=q.name, channel_id=self.channel_id, error=str(exc))
            await self._back_to_queue(offer.ContinueReason.ERROR)
        result = self.result or self._machine.result or _ABANDONED
        self.result = result
        offer_finished(self._metrics, q, result, channel_id=self.channel_id, frontend="ari")
        return result

    async def _next_input(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = None if self._timer is None else max(0.0, self._timer[0] - loop.time())
        try:
            async with asyncio.timeout(timeout):
                event = await self._events.get()
        except TimeoutError:
            assert self._timer is not None
            token = self._timer[1]
            self._timer = None
            self._todo.extend(self._machine.handle(offer.Timeout(token)))
            return
        if event is _WAKE:
            return
        machine_input = self._translate(event)
        if machine_input is not None:
            self._todo.extend(self._machine.handle(machine_input))

    def _translate(self, event: ev.AriEvent) -> offer.Event | None:
        if isinstance(event, ev.ChannelDtmfReceived):
            return offer.Digit(event.digit)
        if isinstance(event, ev.PlaybackFinished):
            if self._playback is not None and self._playback[0] == event.playback_id:
                token = self._playback[1]
                self._playback = None
                return offer.PlaybackDone(token)
            return None
        if isinstance(event, ev.ChannelHangupRequest | ev.StasisEnd | ev.ChannelDestroyed):
            self._ended = self._ended or isinstance(event, ev.StasisEnd | ev.ChannelDestroyed)
            return offer.Hangup()
        return None

    async def _execute(self, action: offer.Action) -> None:
        match action:
            case offer.Play(media=media, token=token):
                playback_id = f"{self.channel_id}-o{token}"
                self._playback = (playback_id, token)
                try:
                    await self._ari.play(self.channel_id, media, playback_id, self._q.language)
                except (AriNotFound, AriConflict):
                    self._todo.extend(self._machine.handle(offer.Hangup()))
            case offer.StopPlayback():
                if self._playback is not None:
                    playback_id, _ = self._playback
                    self._playback = None
                    with contextlib.suppress(AriError):
                        await self._ari.stop_playback(playback_id)
            case offer.StartTimer(seconds=seconds, token=token):
                self._timer = (asyncio.get_running_loop().time() + seconds, token)
            case offer.CancelTimer():
                self._timer = None
            case offer.Store(number=number, reason=reason):
                result = await self._store_callback(number, reason)
                self._todo.extend(self._machine.handle(result))
            case offer.ContinueToQueue(reason=reason):
                await self._back_to_queue(reason)
            case offer.HangupCall(reason=reason):
                self.result = self._machine.result or offer.OfferResult(reason)
                self._ended = True
                await self._hand_back_booked()

    @property
    def held(self) -> HeldCallback | None:
        """The callback booked in this dialogue, still held until the caller's line is down
        (None if nothing was booked here, or the caller was sent back to the queue)."""
        if self._stored is None or self.result is None:
            return None
        if self.result.outcome is offer.OfferOutcome.CONTINUED:
            return None
        return self._stored

    async def _store_callback(self, number: str, reason: str) -> offer.Event:
        held_until = hold_for_hangup_ms(self._q, self._clock.now_ms(), self._dialogue_timeout)
        event = await store_from_dialogue(
            self._store,
            self._metrics,
            self._q,
            number=number,
            caller_name=self._channel.caller_name,
            source_channel=self.channel_id,
            entry=self._entry,
            origin=Origin.PHONE,
            wait_estimate=self._wait_estimate,
            held_until_ms=held_until,
            reason=reason,
        )
        if isinstance(event, offer.Stored) and event.created:
            self._stored = HeldCallback(
                self._q.name, event.callback_id, self.channel_id, held_until
            )
        return event

    async def _hand_back_booked(self) -> None:
        """The caller has a callback: back to the kit, which returns QUEUESTATUS=CALLBACK.

        ``CB_RESULT=CALLBACK`` and a continue to the line after ``Stasis()`` let the admin's
        dialplan say goodbye or hang up; if that fails the call is hung up as before.
        """
        try:
            await self._ari.set_variable(self.channel_id, CB_RESULT, CB_RESULT_CALLBACK)
            await self._ari.continue_next(self.channel_id)
        except AriError:
            with contextlib.suppress(AriError):
                await self._ari.hangup(self.channel_id)

    async def return_without_offer(self, reason: offer.ContinueReason) -> None:
        """Callbacks are closed for this queue (or we shut down): the caller keeps holding."""
        self._metrics.offer_ended(self._q.name, reason.value)
        await self._back_to_queue(reason)

    async def _back_to_queue(self, reason: offer.ContinueReason) -> None:
        """Continue the caller into the return context: same queue, the position they left."""
        self._ended = True
        self.result = offer.OfferResult.continued(reason)
        q = self._q
        try:
            if self._entry.position:
                await self._ari.set_variable(
                    self.channel_id, "CB_POSITION", str(self._entry.position)
                )
            await self._ari.continue_in_dialplan(self.channel_id, q.return_context, q.name, 1)
        except AriNotFound:
            self.result = _ABANDONED
        except AriError as exc:
            log.error("offer.continue_failed", channel_id=self.channel_id, error=str(exc))


_ABANDONED = offer.OfferResult(offer.OfferOutcome.ABANDONED)
_WAKE: ev.AriEvent = ev.OtherEvent(type="_wake", timestamp="", application="", raw={})

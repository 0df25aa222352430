"""FastAGI offer driver: the same offer dialogue and store code, driven over AGI commands.

For dialplan-first installations: ``AGI(agi://127.0.0.1:4573/offer?queue=support)`` (optionally
``&entry=timeout&join=${CB_JOIN}&position=${QUEUEPOSITION}``), or the Stasis-style arguments
``AGI(agi://127.0.0.1:4573/offer,support,timeout,${CB_JOIN},${QUEUEPOSITION})``. The session
ends by setting the dialplan location (return context) or, for a booked caller, by setting
``CB_RESULT=CALLBACK`` for the kit's line after ``AGI()``, exactly like the ARI driver. If the
session ends any other way (error, timeout) the socket is closed and Asterisk continues after
``AGI()``: the dialplan should send the caller back to the queue there.

It does not record the caller's message (``record_message``): that is ARI's
``POST /channels/{id}/record``, and only the ARI offer asks for one.

The wire (environment, replies, the listening socket) is ``agi.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from urllib.parse import parse_qs

import structlog

from callback_ari.asterisk.agi import ALL_DIGITS, AgiChannel, AgiServer, dtmf_key, quoted
from callback_ari.clock import Clock, SystemClock
from callback_ari.config.loader import Config
from callback_ari.core import offer
from callback_ari.errors import AgiError, AgiHangup
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


class AgiOfferSession:
    """The offer dialogue over one AGI channel. Sequential: AGI has one command at a time."""

    def __init__(
        self,
        agi: AgiChannel,
        *,
        store: CallbackStore,
        config: Config,
        entry: OfferEntry,
        metrics: Metrics,
        wait_estimate: Callable[[], float | None] = lambda: None,
        clock: Clock | None = None,
    ) -> None:
        self._agi = agi
        self._store = store
        self._q = config.queues[entry.queue]
        self._dialogue_timeout = float(config.general.dialogue_timeout)
        self._entry = entry
        self._metrics = metrics
        self._wait_estimate = wait_estimate
        self._clock: Clock = clock or SystemClock()
        self._caller_id = _known(agi.env.get("agi_callerid", "")) or None
        self._machine = offer.OfferMachine(
            offer_settings(self._q, records=False),  # no recorded message over FastAGI
            number_validator(self._q),
            caller_id=self._caller_id,
            position=entry.position,
            wait_s=wait_estimate() if self._q.announce_position else None,
        )
        self._timer: tuple[int, int] | None = None  # (deadline ms, token); AGI waits inline
        self._stored: HeldCallback | None = None  # booked here: held until the line is down
        self.result: offer.OfferResult | None = None  # set when the dialogue has ended

    async def run(self) -> offer.OfferResult:
        """Run the dialogue to its end; returns its result (as the ARI driver does)."""
        q = self._q
        channel_id = self._agi.env.get("agi_uniqueid", "")
        offer_started(
            self._metrics, q, self._entry, self._clock.now_ms(), channel_id=channel_id,
            caller=self._caller_id, frontend="agi",
        )  # fmt: skip
        todo: deque[offer.Action] = deque(self._machine.start())
        try:
            async with asyncio.timeout(self._dialogue_timeout):
                if q.language:  # AGI plays and says numbers in the channel's language
                    await self._agi.command("SET", "VARIABLE", "CHANNEL(language)", q.language)
                # The last actions (continue, hang up) come with the machine already done.
                while self.result is None and (todo or not self._machine.done):
                    if todo:
                        todo.extend(await self._execute(todo.popleft()))
                    else:
                        todo.extend(self._machine.handle(await self._idle_input()))
        except AgiHangup:
            self._machine.handle(offer.Hangup())
        except TimeoutError:
            log.warning("offer.dialogue_timeout", queue=q.name, frontend="agi")
            await self._back_to_queue(offer.ContinueReason.DIALOGUE_TIMEOUT)
        except AgiError as exc:
            log.error("agi.command_failed", queue=q.name, error=str(exc))
            self._metrics.errors.labels("agi").inc()
            await self._back_to_queue(offer.ContinueReason.ERROR)
        except Exception as exc:  # any internal error: the caller goes back to the queue
            log.exception("offer.error", queue=q.name, frontend="agi", error=str(exc))
            self._metrics.errors.labels("flow").inc()
            await self._back_to_queue(offer.ContinueReason.ERROR)
        result = self.result or self._machine.result or _ABANDONED
        self.result = result
        offer_finished(self._metrics, q, result, channel_id=channel_id, frontend="agi")
        return result

    @property
    def held(self) -> HeldCallback | None:
        """The callback booked in this dialogue, still held until the caller's line is down."""
        if self._stored is None or self.result is None:
            return None
        if self.result.outcome is offer.OfferOutcome.CONTINUED:
            return None
        return self._stored

    async def _idle_input(self) -> offer.Event:
        """Nothing is playing: wait for a key until the armed timer runs out."""
        if self._timer is None:  # the machine always arms one; never wait forever
            raise AgiError("offer dialogue waits with no timer armed")
        deadline, token = self._timer
        left_ms = deadline - self._clock.now_ms()
        if left_ms > 0:
            result, _ = await self._agi.command("WAIT", "FOR", "DIGIT", str(left_ms))
            if result < 0:
                raise AgiHangup("WAIT FOR DIGIT: result=-1")
            if result > 0:  # the timer stays armed: an ignored key does not stop the clock
                return offer.Digit(dtmf_key(result) or "?")
        self._timer = None
        return offer.Timeout(token)

    async def _execute(self, action: offer.Action) -> list[offer.Action]:
        match action:
            case offer.Play(media=media, token=token, interruptible=interruptible):
                escape = ALL_DIGITS if interruptible else ""
                for uri in media:
                    key = await self._play(uri, escape)
                    if key:
                        return self._machine.handle(offer.Digit(key))
                return self._machine.handle(offer.PlaybackDone(token))
            case offer.StartTimer(seconds=seconds, token=token):
                self._timer = (self._clock.now_ms() + round(seconds * 1000), token)
            case offer.CancelTimer():
                self._timer = None
            case offer.Store(number=number, reason=reason):
                held_until = hold_for_hangup_ms(
                    self._q, self._clock.now_ms(), self._dialogue_timeout
                )
                result = await store_from_dialogue(
                    self._store, self._metrics, self._q, number=number,
                    caller_name=_known(self._agi.env.get("agi_calleridname", "")),
                    source_channel=self._agi.env.get("agi_uniqueid", ""), entry=self._entry,
                    origin=Origin.AGI, wait_estimate=self._wait_estimate, reason=reason,
                    held_until_ms=held_until,
                )  # fmt: skip
                if isinstance(result, offer.Stored) and result.created:
                    self._stored = HeldCallback(
                        self._q.name,
                        result.callback_id,
                        self._agi.env.get("agi_uniqueid", ""),
                        held_until,
                    )
                return self._machine.handle(result)
            case offer.ContinueToQueue(reason=reason):
                await self._back_to_queue(reason)
            case offer.HangupCall(reason=reason):
                # Booked: the kit's line after AGI() sees CB_RESULT and returns
                # QUEUESTATUS=CALLBACK to the admin's dialplan.
                self.result = self._machine.result or offer.OfferResult(reason)
                with contextlib.suppress(AgiError):  # gone already: nothing left to do
                    await self._agi.command("SET", "VARIABLE", CB_RESULT, CB_RESULT_CALLBACK)
            case offer.StopPlayback():
                pass  # AGI playback already stopped when the key came back
        return []

    async def _play(self, uri: str, escape: str) -> str:
        """Play one media URI; the escape key pressed, or '' if it played to the end."""
        scheme, _, target = uri.partition(":")
        if scheme == "sound":
            words = ("STREAM", "FILE", target, quoted(escape))
        elif scheme == "digits":
            words = ("SAY", "DIGITS", target, quoted(escape))
        elif scheme == "number":
            words = ("SAY", "NUMBER", target, quoted(escape))
        else:
            log.warning("agi.unsupported_media", uri=uri)
            return ""
        result, _ = await self._agi.command(*words)
        if result < 0:
            # A hang-up, or a missing sound file on a live channel: the next command tells
            # (a dead channel answers it with HANGUP/511), so carry on as if it had played.
            log.warning("agi.playback_failed", uri=uri)
            return ""
        return dtmf_key(result) if escape else ""

    async def _back_to_queue(self, reason: offer.ContinueReason) -> None:
        """Point the channel at the return context: same queue, the position they left."""
        self.result = offer.OfferResult.continued(reason)
        q = self._q
        try:
            if self._entry.position:
                await self._agi.command("SET", "VARIABLE", "CB_POSITION", str(self._entry.position))
            await self._agi.command("SET", "CONTEXT", q.return_context)
            await self._agi.command("SET", "EXTENSION", q.name)
            await self._agi.command("SET", "PRIORITY", "1")
        except AgiHangup:
            self.result = _ABANDONED
        except AgiError as exc:
            log.error("agi.continue_failed", queue=q.name, error=str(exc))


_ABANDONED = offer.OfferResult(offer.OfferOutcome.ABANDONED)


def _known(value: str) -> str:
    """Asterisk sends ``unknown`` for a caller ID number or name that is not set."""
    return "" if value == "unknown" else value


def entry_from_env(env: dict[str, str], now_ms: int) -> OfferEntry | None:
    """The offer entry from ``agi://host/offer?queue=Q&entry=..&join=..&position=..``.

    The Stasis-style arguments (``AGI(agi://host/offer,Q,entry,join,position)``) are read
    from ``agi_arg_1..4`` for whatever the query string does not give.
    """
    script, _, query_text = env.get("agi_network_script", "").partition("?")
    if script.strip("/") != "offer":
        return None
    query = {k: v[0] for k, v in parse_qs(query_text).items()}
    names = ("queue", "entry", "join", "position")
    args = [query.get(name, env.get(f"agi_arg_{i}", "")) for i, name in enumerate(names, 1)]
    return OfferEntry.from_args(["offer", *args], now_ms)


class AgiOffers:
    """The handler ``AgiServer`` runs per connection: the offer dialogue the script asks for."""

    def __init__(
        self, *, store: CallbackStore, config: Config, metrics: Metrics, clock: Clock,
        wait_estimate: Callable[[str], float | None] = lambda _q: None,
        on_booked: Callable[[HeldCallback], None] = lambda _held: None,
    ) -> None:  # fmt: skip
        self._on_booked = on_booked  # the service releases it once the caller's line is down
        self._store = store
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._wait_estimate = wait_estimate

    def reconfigure(self, config: Config) -> None:
        """New connections use ``config``; dialogues in progress keep their settings."""
        self._config = config

    async def __call__(self, agi: AgiChannel) -> str:
        """Run the offer for one connection; the outcome code, or "unknown" for other scripts."""
        entry = entry_from_env(agi.env, self._clock.now_ms())
        if entry is None or entry.queue not in self._config.queues:
            log.warning("agi.unknown_script", script=agi.env.get("agi_network_script", "")[:80])
            return "unknown"  # closing the socket returns the caller to the dialplan
        session = AgiOfferSession(
            agi, store=self._store, config=self._config, entry=entry, metrics=self._metrics,
            wait_estimate=lambda: self._wait_estimate(entry.queue), clock=self._clock,
        )  # fmt: skip
        result = await session.run()
        if session.held is not None:
            self._on_booked(session.held)
        return str(result)


def offer_server(
    *, store: CallbackStore, config: Config, metrics: Metrics, clock: Clock,
    wait_estimate: Callable[[str], float | None] = lambda _q: None,
    on_booked: Callable[[HeldCallback], None] = lambda _held: None,
) -> AgiServer:  # fmt: skip
    """A FastAGI server running one offer dialogue per connection."""
    offers = AgiOffers(
        store=store, config=config, metrics=metrics, clock=clock, wait_estimate=wait_estimate,
        on_booked=on_booked,
    )  # fmt: skip
    return AgiServer(offers, on_crash=lambda: metrics.errors.labels("agi").inc())

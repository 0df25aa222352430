"""One callback dial attempt: originate, wait for answer, "press 1", join the queue, an agent.

States (``AttemptState``), each with its own deadline so no attempt can hang:

    originating --200--> ringing --StasisStart--> answered --"1"--> connecting --> done
         |                  |                        |                  |
      409/error        destroyed/timeout       hangup/no "1"     AgentConnect: connected
         v                  v                        v           hangup first: abandoned
        done              done                     done               done

``connected`` means an agent answered (AMI AgentConnect of the customer's channel); a
customer who pressed 1 and hung up before that is ``abandoned``. The member reservation
(``reservations.py``) is released the moment the confirmed customer has joined the queue at
the head, or as soon as the attempt fails. The outcome (``outcomes.classify``) is recorded in
the store as soon as it is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from callback_ari.asterisk import ari_events as ev
from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock
from callback_ari.config.loader import QueueConfig
from callback_ari.core import outcomes, policy
from callback_ari.core.backoff import Backoff
from callback_ari.core.prompts import playback_files
from callback_ari.core.reasons import parse_reasons, whisper_files
from callback_ari.core.recordings import is_recording_name
from callback_ari.errors import (
    AriConflict,
    AriError,
    AriNotFound,
    AriUnavailable,
    StoreError,
    StoreUnavailable,
)
from callback_ari.masking import mask
from callback_ari.metrics import Metrics
from callback_ari.models import (
    Callback,
    Outcome,
    originate_channel_id,
    originate_other_channel_id,
)
from callback_ari.service.reservations import Reservation, ReservationBook
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

ANSWER_MARGIN_S = 5.0  # beyond the ring timeout before we give up on events
DESTROY_GRACE_S = 0.25  # a Local ;1 destroy can precede the ;2 destroy that carries the cause
JOIN_TIMEOUT_S = 5.0  # after continue: the customer's QueueCallerJoin is due within this
AGENT_TONE_S = 3.0  # agent-first: the outcome tone (1 s in the kit) before the agent hangs up
RESERVE_MARGIN_S = 10.0  # a reservation outlives the longest attempt by this much
PREVIOUS_GONE_S = 2.0  # longest wait for a hung-up previous call to be gone before redialling
RECORD_RETRY_FIRST_S = 0.25  # an outcome not stored (Redis unreachable) is retried with backoff
RECORD_RETRY_MAX_S = 2.0  # from this up to this, for at most half the lease
PROMPT_ALLOWANCE_S = 30.0  # longest "press 1" prompt we wait for before the confirm timer
RESUMED_CAUSE = "answered/connected-before-restart"  # found in the queue after a crash
# Once a callback reached an agent, the dialplan kit sets the global CB_REACHED_<CB_ID> to
# CB_STAMP ([callback-whisper], [callback-agent-confirm]): a retry after the instance was
# killed mid-call reads it; the stamp (created_ms) tells this callback from an older one with
# the same id. Not AstDB: Asterisk blocks DB() writes from channels that ARI started.
REACHED_VAR_PREFIX = "CB_REACHED_"
REACHED_STAMP_VAR = "CB_STAMP"


class AttemptState(StrEnum):
    ORIGINATING = "originating"
    RINGING = "ringing"
    ANSWERED = "answered"
    CONNECTING = "connecting"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ChannelLost:
    """Synthetic input: after a reconnect the channel was gone (its events were lost)."""

    channel_id: str


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """Synthetic input: another instance reclaimed this callback; stop at once."""


@dataclass(frozen=True, slots=True)
class QueueSeen:
    """AMI told us about one of the attempt's channels: in the queue (QueueCallerJoin,
    AgentConnect, QueueCallerAbandon, QueueCallerLeave), its Hangup, or (agent-first) the
    member's Dial to the customer ending (DialEnd, ``status`` = its DialStatus) and the
    member's call entering the bridge with the customer (BridgeEnter)."""

    event: str
    queue: str
    status: str = ""


AttemptInput = ev.AriEvent | ChannelLost | LeaseLost | QueueSeen
QUEUE_EVENTS = frozenset(
    {"QueueCallerJoin", "AgentConnect", "QueueCallerAbandon", "QueueCallerLeave", "Hangup",
     "DialEnd", "BridgeEnter"}
)  # fmt: skip
AGENT_WHISPER_S = 30.0  # agent-first: longest whisper before the customer is dialled


def reservation_seconds(q: QueueConfig) -> float:
    """A reservation's deadline: the longest ring, the "press 1" round, then a margin
    (agent-first: the member's ring and whisper come first)."""
    confirm = PROMPT_ALLOWANCE_S + q.confirm_timeout
    agent = q.ring_timeout + AGENT_WHISPER_S if q.dialing_mode == "agent_first" else 0.0
    return agent + q.ring_timeout + ANSWER_MARGIN_S + confirm + JOIN_TIMEOUT_S + RESERVE_MARGIN_S


def agent_first_seconds(q: QueueConfig) -> float:
    """Longest agent-first attempt: the member rings and hears the whisper, the customer
    rings and hears the "press 1" round."""
    confirm = PROMPT_ALLOWANCE_S + q.confirm_timeout
    return 2 * q.ring_timeout + AGENT_WHISPER_S + confirm + ANSWER_MARGIN_S


@dataclass(slots=True)
class Attempt:
    """What we know about one live dial attempt."""

    cb: Callback
    queue: QueueConfig
    endpoint: str | None
    channel_id: str
    other_id: str | None
    technology: str
    events: asyncio.Queue[AttemptInput] = field(default_factory=asyncio.Queue)
    state: AttemptState = AttemptState.ORIGINATING
    dialstatus: str | None = None
    causes: dict[str, tuple[int, str]] = field(default_factory=dict)
    answered: bool = False
    confirmed: bool = False
    reservation: Reservation | None = None
    started: float = field(default_factory=time.monotonic)
    # when Asterisk answered the originate: a channel list taken before may not show the call
    originated: float | None = None

    def ringing(self) -> None:
        """Asterisk answered the originate: the call exists from now on."""
        self.originated = time.monotonic()
        self.state = AttemptState.RINGING

    @property
    def holds_member(self) -> bool:
        """A member is paused for this attempt right now."""
        return self.reservation is not None and self.reservation.held

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel_id, self.other_id) if self.other_id else (self.channel_id,)

    def lost(self) -> None:
        self.events.put_nowait(ChannelLost(self.channel_id))

    def best_cause(self) -> tuple[int | None, str]:
        """The most telling hangup cause: a non-zero one if any half reported it."""
        for cause, txt in self.causes.values():
            if cause:
                return cause, txt
        for cause, txt in self.causes.values():
            return cause, txt
        return None, ""


def whisper_variables(a: Attempt) -> dict[str, str]:
    """What ``[callback-whisper]`` plays to the member: "callback", the reason, the message.

    The recording is played from Asterisk's spool by name, so only a validated name goes in.
    """
    q, cb = a.queue, a.cb
    recorded = bool(cb.recording)
    return {
        "CB_WHISPER": whisper_files(
            q.prompts["whisper"], parse_reasons(q.reasons), cb.reason, recorded=recorded
        ),
        "CB_RECORDING": cb.recording if is_recording_name(cb.recording) else "",
        REACHED_STAMP_VAR: reached_stamp(cb),
    }


def reached_stamp(cb: Callback) -> str:
    """What the kit sets ``REACHED_VAR_PREFIX + cb.id`` to once ``cb`` reached an agent."""
    return str(cb.created_ms)


class AttemptRunner:
    """Runs attempts; knows ARI, the store and the prompts, not the dispatch policy."""

    def __init__(
        self,
        *,
        ari: AriClient,
        store: CallbackStore,
        clock: Clock,
        metrics: Metrics,
        owner: str,
        lease_ms: int,
        on_released: Callable[[Attempt, Outcome | None], None],
        reservations: ReservationBook | None = None,
    ) -> None:
        self._ari = ari
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._owner = owner
        self._lease_ms = lease_ms
        self._on_released = on_released
        self._book = reservations

    async def run(self, a: Attempt) -> None:
        """The whole attempt; never raises except cancellation."""
        outcome: Outcome | None = None
        cause = ""
        released = False
        try:
            async with asyncio.TaskGroup() as tg:
                keeper = tg.create_task(self._keep_lease(a))
                try:
                    if a.queue.dialing_mode == "agent_first":
                        outcome, cause = await self._agent_first(a)
                    else:
                        outcome, cause = await self._dial_and_confirm(a)
                    if a.confirmed and outcome is Outcome.CONNECTED:  # continued into the queue
                        outcome, cause = await self._wait_for_agent(a)
                    await self._release(a, "attempt_ended")
                    recorded = await self._record(a, outcome, cause)
                    # the kit may have marked it; once recorded, the record is the truth
                    if recorded and (a.answered or outcome is Outcome.CONNECTED):
                        await self._forget_reached(a)
                finally:
                    keeper.cancel()
            self._on_released(a, outcome)
            released = True
        except asyncio.CancelledError:
            # Shutting down mid-attempt: hang up (so nobody is left with a dead line), give
            # the member back and let the lease expire; the next instance retries.
            await asyncio.shield(self._hangup(a))
            await asyncio.shield(self._release(a, "shutdown"))
            raise
        except Exception as exc:  # one bad attempt must not stop the dispatcher
            self._metrics.errors.labels("flow").inc()
            log.exception("callback.attempt_error", callback_id=a.cb.id, error=str(exc))
            await self._hangup(a)
            await self._release(a, "error")
            if outcome is None:
                with contextlib.suppress(Exception):
                    await self._record(a, Outcome.ERROR, f"error/{type(exc).__name__}")
        finally:
            a.state = AttemptState.DONE
            if not released:
                self._on_released(a, outcome)

    # --- phases -----------------------------------------------------------------------

    async def _dial_and_confirm(self, a: Attempt) -> tuple[Outcome, str]:
        if a.endpoint is None:
            return Outcome.REJECTED, "refused/number-policy"
        q = a.queue
        log.info(
            "callback.dialing",
            callback_id=a.cb.id,
            queue=q.name,
            attempt=a.cb.attempts,
            number=mask(a.cb.number),
            channel_id=a.channel_id,
        )
        if await self._previous_call_connected(a):
            return Outcome.CONNECTED, RESUMED_CAUSE
        try:
            await self._ari.originate(
                endpoint=a.endpoint,
                channel_id=a.channel_id,
                other_channel_id=a.other_id,
                app_args=("callback", a.cb.id),
                caller_id=q.caller_id or None,
                timeout=q.ring_timeout,
                variables={
                    "CB_ID": a.cb.id,
                    "CB_PRIO": str(q.queue_priority),
                    **whisper_variables(a),
                },
            )
        except AriConflict:
            log.error("callback.duplicate_channel", callback_id=a.cb.id, channel_id=a.channel_id)
            return Outcome.ERROR, "error/duplicate-channel-id"
        except AriUnavailable:
            if not await self._channel_exists(a.channel_id):
                return Outcome.ERROR, "error/ari-unavailable"
        except AriError as exc:
            return Outcome.ERROR, f"error/originate-{getattr(exc, 'status', 'failed')}"
        a.ringing()
        answered = await self._await_answer(a)
        if answered is not None:
            return answered
        a.state = AttemptState.ANSWERED
        a.answered = True
        return await self._confirm(a)

    async def _await_answer(self, a: Attempt) -> tuple[Outcome, str] | None:
        """None once the customer answered; otherwise the outcome of the unanswered call."""
        try:
            async with asyncio.timeout(a.queue.ring_timeout + ANSWER_MARGIN_S):
                while True:
                    item = await a.events.get()
                    if isinstance(item, ev.StasisStart) and item.channel.id == a.channel_id:
                        return None
                    if isinstance(item, ev.Dial) and item.dialstatus:
                        a.dialstatus = item.dialstatus
                    elif isinstance(item, ev.ChannelDestroyed):
                        a.causes[item.channel.id] = (item.cause, item.cause_txt)
                        if item.channel.id == a.channel_id:
                            await self._drain_other_destroy(a)
                            return self._classify(a)
                    elif isinstance(item, ChannelLost):
                        return Outcome.NO_ANSWER, "lost/events-missed"
                    elif isinstance(item, LeaseLost):
                        await self._hangup(a)
                        return Outcome.ERROR, "error/lease-lost"
        except TimeoutError:
            await self._hangup(a)
            return Outcome.NO_ANSWER, "timeout/no-events"

    async def _drain_other_destroy(self, a: Attempt) -> None:
        """Give the other Local half a moment to report the cause that matters (17, 34, 19)."""
        if a.other_id is None or a.other_id in a.causes:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DESTROY_GRACE_S):
                while a.other_id not in a.causes:
                    item = await a.events.get()
                    if isinstance(item, ev.ChannelDestroyed):
                        a.causes[item.channel.id] = (item.cause, item.cause_txt)
                    elif isinstance(item, ev.Dial) and item.dialstatus:
                        a.dialstatus = item.dialstatus

    def _classify(self, a: Attempt) -> tuple[Outcome, str]:
        cause, cause_txt = a.best_cause()
        outcome = outcomes.classify(
            dialstatus=a.dialstatus,
            cause=cause,
            answered=a.answered,
            confirmed=a.confirmed,
            technology=a.technology,
        )
        return outcome, outcomes.describe(a.dialstatus, cause, cause_txt)

    async def _confirm(self, a: Attempt) -> tuple[Outcome, str]:
        """Play "we are returning your call, press 1" once; only a 1 connects the customer.

        The customer then has exactly ``confirm_timeout`` seconds (a key during the prompt
        counts too). The prompt is not repeated: a line that answers and never presses 1 is
        usually a voicemail box, and everything we play to it is recorded.
        """
        q = a.queue
        media = (*q.prompts["callback_intro"], *q.prompts["callback_press1"])
        playback_id = f"{a.channel_id}-p1"
        try:
            await self._ari.play(a.channel_id, media, playback_id, q.language)
        except AriNotFound:
            return Outcome.HANGUP, "hangup/before-prompt"
        result = await self._wait_for_one(a, playback_id)
        if result == "hangup":
            return Outcome.HANGUP, "hangup/before-confirm"
        if result == "lease":
            await self._hangup(a)
            return Outcome.ERROR, "error/lease-lost"
        if result != "1":
            await self._hangup(a)
            return Outcome.NOT_CONFIRMED, "answered/no-confirmation"
        a.confirmed = True
        with contextlib.suppress(AriError):
            await self._ari.stop_playback(playback_id)
        await self._show_customer(a)
        try:
            await self._ari.continue_in_dialplan(a.channel_id, q.connect_context, q.name, 1)
        except AriNotFound:
            return Outcome.HANGUP, "hangup/before-connect"
        return Outcome.CONNECTED, "answered/confirmed"

    async def _wait_for_one(self, a: Attempt, playback_id: str) -> str:
        """'1', 'timeout', 'hangup' or 'lease'. Digits during the prompt count (barge-in)."""
        deadline = PROMPT_ALLOWANCE_S
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                return "timeout"
            try:
                async with asyncio.timeout(remaining):
                    item = await a.events.get()
            except TimeoutError:
                return "timeout"
            if isinstance(item, ev.ChannelDtmfReceived) and item.channel.id == a.channel_id:
                if item.digit == "1":
                    return "1"
            elif isinstance(item, ev.PlaybackFinished) and item.playback_id == playback_id:
                end = loop.time() + a.queue.confirm_timeout
            elif isinstance(item, ev.ChannelHangupRequest | ev.StasisEnd | ev.ChannelDestroyed):
                if item.channel_id in a.channel_ids:
                    return "hangup"
            elif isinstance(item, ChannelLost):
                return "hangup"
            elif isinstance(item, LeaseLost):
                return "lease"

    async def _show_customer(self, a: Attempt) -> None:
        """The member's phone shows the customer's number (and name), not our trunk's ID."""
        try:
            await self._ari.set_variable(a.channel_id, "CALLERID(num)", a.cb.number)
            if a.cb.caller_name:
                await self._ari.set_variable(a.channel_id, "CALLERID(name)", a.cb.caller_name)
        except AriError as exc:  # cosmetic: never fail a confirmed customer over it
            log.warning("callback.callerid_failed", callback_id=a.cb.id, error=str(exc))

    async def _wait_for_agent(self, a: Attempt) -> tuple[Outcome, str]:
        """From "pressed 1" to an agent answering: connected, or abandoned if they hang up.

        The member reservation is released once app_queue has the customer at the head
        (QueueCallerJoin), so app_queue rings that member for them and nobody else.
        """
        a.state = AttemptState.CONNECTING
        joined = left = abandoned = False
        try:
            async with asyncio.timeout(a.queue.max_age):
                while True:
                    wait = JOIN_TIMEOUT_S if a.holds_member and not joined else None
                    try:
                        async with asyncio.timeout(wait):
                            item = await a.events.get()
                    except TimeoutError:
                        log.warning("callback.join_not_seen", callback_id=a.cb.id)
                        await self._release(a, "join_timeout")
                        continue
                    if isinstance(item, QueueSeen):
                        if item.event == "QueueCallerJoin":
                            joined = True
                            await self._release(a, "joined")
                        elif item.event == "AgentConnect":
                            return Outcome.CONNECTED, "agent/answered"
                        elif item.event == "QueueCallerAbandon":
                            # app_queue's word for a caller who hung up while waiting; it
                            # comes before the Leave and the Hangup of the same channel
                            abandoned = True
                        elif item.event == "QueueCallerLeave":
                            left = True
                        elif item.event == "Hangup":
                            if left and not abandoned:  # out without an agent (leavewhenempty)
                                return Outcome.ERROR, "queue/left-without-agent"
                            return Outcome.ABANDONED, "hangup/waiting-for-agent"
                    elif isinstance(item, ChannelLost):
                        return Outcome.ABANDONED, "lost/gone-while-queued"
                    elif isinstance(item, LeaseLost):
                        return Outcome.ERROR, "error/lease-lost"
        except TimeoutError:
            return Outcome.CONNECTED, "queued/agent-not-seen"

    async def _agent_first(self, a: Attempt) -> tuple[Outcome, str]:
        """Ring the reserved member, whisper, then the dialplan dials and confirms the customer.

        The member's call runs ``[<agent_context>]`` (extensions_callback.conf): a beep, the
        whisper ("callback" and the reason, as ``[callback-whisper]`` plays it in
        customer-first) and the customer's number, then Asterisk's own Dial, whose ``U()``
        gosub plays the customer the same "press 1" as customer-first before the bridge; a
        restart of the service never cuts a call. We follow it over AMI on the member's
        channel: BridgeEnter (only after a 1) is connected; DialEnd CONTINUE is answered and
        not confirmed (a machine, or a customer who hung up during the "press 1"); DialEnd
        ANSWER then the member's Hangup without a bridge (a kit whose confirm gosub lets Dial
        bridge a customer who hung up) is a hangup; any other dial status is the customer's
        outcome (the dialplan gives the agent 1 s of busy or congestion tone, then hangs up);
        the member's leg ending before any DialEnd means the agent did not answer.
        """
        q = a.queue
        res = a.reservation
        if a.endpoint is None:
            return Outcome.REJECTED, "refused/number-policy"
        if res is None or not res.held:
            return Outcome.ERROR, "error/no-member-reserved"
        log.info(
            "callback.dialing_agent", callback_id=a.cb.id, queue=q.name, attempt=a.cb.attempts,
            member=res.interface, number=mask(a.cb.number), channel_id=a.channel_id,
        )  # fmt: skip
        if await self._previous_call_connected(a):
            return Outcome.CONNECTED, RESUMED_CAUSE
        name = a.cb.caller_name.replace('"', "") or "Callback"
        try:
            await self._ari.originate(
                endpoint=res.interface,
                channel_id=a.channel_id,
                other_channel_id=a.other_id,
                caller_id=f'"{name}" <{a.cb.number}>',  # what the agent's phone shows
                timeout=q.ring_timeout,
                variables={
                    "CB_ID": a.cb.id,
                    "CB_DIAL": a.endpoint,  # validated by dial_string: no separators
                    "CB_NUMBER": a.cb.number.lstrip("+"),
                    "CB_RING": str(q.ring_timeout),
                    "CB_CALLERID": q.caller_id,
                    **whisper_variables(a),  # [callback-whisper], as in customer-first
                    "CB_CONFIRM": playback_files(
                        (*q.prompts["callback_intro"], *q.prompts["callback_press1"])
                    ),
                    "CB_CONFIRM_WAIT": str(q.confirm_timeout),
                },
                dialplan=(q.agent_context, q.name, 1),
            )
        except AriConflict:
            log.error("callback.duplicate_channel", callback_id=a.cb.id, channel_id=a.channel_id)
            return Outcome.ERROR, "error/duplicate-channel-id"
        except AriError as exc:
            return Outcome.ERROR, f"error/originate-{getattr(exc, 'status', 'failed')}"
        a.ringing()
        try:
            async with asyncio.timeout(agent_first_seconds(q)):
                while True:
                    item = await a.events.get()
                    if isinstance(item, QueueSeen) and item.event == "BridgeEnter":
                        # Dial bridges the member only with a customer who pressed 1
                        a.state = AttemptState.CONNECTING
                        a.answered = True  # not a.confirmed: that means "into the queue"
                        await self._release(a, "connected")
                        return Outcome.CONNECTED, "agent_first/bridged"
                    if isinstance(item, QueueSeen) and item.event == "DialEnd":
                        a.dialstatus = item.status
                        if item.status == "ANSWER":  # the "press 1" is over: a 1, or a hangup
                            a.state = AttemptState.ANSWERED
                            a.answered = True
                            continue
                        outcome = outcomes.classify(
                            dialstatus=item.status, cause=None, answered=False,
                            confirmed=False, technology=a.technology,
                        )  # fmt: skip
                        # The agent hears the outcome's tone, then the dialplan hangs up:
                        # the member stays ours until then, so no attempt rings it while
                        # it is still on this call.
                        await self._agent_leg_gone(a)
                        if outcome is Outcome.NOT_CONFIRMED:
                            return outcome, "agent_first/not-confirmed"
                        return outcome, f"agent_first/{item.status}"
                    if isinstance(item, QueueSeen) and item.event == "Hangup":
                        if a.answered:  # answered, then gone during the "press 1"
                            return Outcome.HANGUP, "agent_first/hangup-before-confirm"
                        return Outcome.ERROR, "agent_first/agent-no-answer"
                    if isinstance(item, ChannelLost):
                        return Outcome.ERROR, "agent_first/lost"
                    if isinstance(item, LeaseLost):
                        await self._hangup(a)
                        return Outcome.ERROR, "error/lease-lost"
        except TimeoutError:
            await self._hangup(a)
            return Outcome.ERROR, "agent_first/timeout"

    async def _agent_leg_gone(self, a: Attempt) -> None:
        """Until the agent's leg of an agent-first attempt has hung up (the dialplan plays
        ``AGENT_TONE_S`` at most of busy/congestion tone first); if it has not by then, hang
        it up: the agent is released either way."""
        try:
            async with asyncio.timeout(AGENT_TONE_S):
                while True:
                    item = await a.events.get()
                    if isinstance(item, ChannelLost) or (
                        isinstance(item, QueueSeen) and item.event == "Hangup"
                    ):
                        return
        except TimeoutError:
            log.warning("callback.agent_leg_stuck", callback_id=a.cb.id, channel_id=a.channel_id)
            await self._hangup(a)

    async def _release(self, a: Attempt, why: str) -> None:
        """Give the reserved member back (unpause); never raises."""
        res = a.reservation
        if res is None or not res.held or self._book is None:
            return
        try:
            await self._book.release(res, why)
        except Exception:
            log.exception("reservation.release_error", callback_id=a.cb.id)

    # --- store, lease, cleanup ----------------------------------------------------------

    async def _record(self, a: Attempt, outcome: Outcome, cause: str) -> bool:
        """Store the attempt's outcome; False if that failed (the lease then runs out and
        the callback is retried, the kit's mark telling a retry that it was connected).

        Redis unreachable (a Sentinel failover takes a few seconds) is retried for up to half
        the lease: recording is idempotent, and the lease keeper runs meanwhile.
        """
        q = a.queue
        now = self._clock.now_ms()
        final = (outcome is Outcome.REJECTED and cause.startswith("refused/")) or (
            outcome is Outcome.ABANDONED
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._lease_ms / 2000
        backoff = Backoff(base=RECORD_RETRY_FIRST_S, cap=RECORD_RETRY_MAX_S)
        while True:
            try:
                updated = await self._store.record_outcome(
                    a.cb.id,
                    self._owner,
                    outcome=outcome,
                    cause=cause,
                    retry_at_ms=policy.next_attempt_ms(now, q.retry_interval, a.cb.attempts),
                    max_attempts=a.cb.attempts if final else q.max_attempts,
                )
                break
            except StoreUnavailable as exc:
                pause = backoff.next_delay()
                if loop.time() + pause > give_up:
                    return self._record_failed(a, exc)
                log.warning("callback.record_retry", callback_id=a.cb.id, error=str(exc))
                await asyncio.sleep(pause)
            except StoreError as exc:
                return self._record_failed(a, exc)
        self._metrics.attempts.labels(q.name, outcome.value).inc()
        self._metrics.callback_finished(updated, now)
        log.info(
            "callback.attempt",
            callback_id=a.cb.id,
            queue=q.name,
            attempt=a.cb.attempts,
            outcome=outcome.value,
            cause=cause,
            state=updated.state.value,
            next_attempt_ms=updated.next_attempt_ms or None,
            number=mask(a.cb.number),
            duration_ms=int((time.monotonic() - a.started) * 1000),
        )
        return True

    def _record_failed(self, a: Attempt, exc: StoreError) -> bool:
        self._metrics.errors.labels("store").inc()
        log.error("callback.record_failed", callback_id=a.cb.id, error=str(exc))
        return False

    async def _keep_lease(self, a: Attempt) -> None:
        interval = max(1.0, self._lease_ms / 3000)
        while True:
            await asyncio.sleep(interval)
            try:
                ok = await self._store.renew_lease(a.cb.id, self._owner, self._lease_ms)
            except StoreError as exc:
                log.warning("callback.lease_renew_failed", callback_id=a.cb.id, error=str(exc))
                continue
            if not ok:
                log.error("callback.lease_lost", callback_id=a.cb.id)
                a.events.put_nowait(LeaseLost())
                return

    async def _previous_call_connected(self, a: Attempt) -> bool:
        """A retry never overlaps the previous attempt's call, even after a crash.

        The previous call still up outside Stasis means the customer pressed 1 and was
        continued into the queue, and the instance died before recording it: they are
        connected, so say so instead of cutting them off and ringing them again. A previous
        call already over may have reached an agent while no instance watched (killed
        mid-call): the kit's mark says so. Any other leftover call (still ringing, or
        answered and waiting in Stasis for the "press 1") is hung up before we dial.
        """
        if a.cb.attempts <= 1:
            return False
        previous = originate_channel_id(a.cb.id, a.cb.attempts - 1)
        try:
            channel = await self._ari.get_channel(previous)
        except AriNotFound:
            return await self._reached_agent_before(a)
        if channel.state == "Up" and channel.app_name != "Stasis":
            log.warning(
                "callback.previous_call_connected",
                callback_id=a.cb.id,
                channel_id=previous,
                context=channel.context,
            )
            return True
        with contextlib.suppress(AriNotFound):
            await self._ari.hangup(previous)
            log.warning("callback.previous_call_hung_up", callback_id=a.cb.id, channel_id=previous)
        # Asterisk answers the DELETE before the channel is gone: wait, or the customer's
        # line is briefly rung by both calls (seen on a real Asterisk 22).
        halves = (previous, originate_other_channel_id(a.cb.id, a.cb.attempts - 1))
        try:
            async with asyncio.timeout(PREVIOUS_GONE_S):
                await self._until_gone(halves if a.other_id else halves[:1])
        except TimeoutError:
            log.warning("callback.previous_call_lingers", callback_id=a.cb.id, channel_id=previous)
        return False

    async def _reached_agent_before(self, a: Attempt) -> bool:
        """Whether the kit marked this callback as having reached an agent (a global variable).

        If ARI cannot tell us, or the kit is older than the mark, we dial.
        """
        try:
            mark = await self._ari.get_global(REACHED_VAR_PREFIX + a.cb.id)
        except AriError as exc:
            log.warning("callback.reached_unknown", callback_id=a.cb.id, error=str(exc))
            return False
        if mark != reached_stamp(a.cb):
            return False
        log.warning("callback.previous_call_reached_agent", callback_id=a.cb.id)
        return True

    async def _forget_reached(self, a: Attempt) -> None:
        """Drop the kit's mark once the attempt's outcome is recorded: the record is the truth
        from then on, and Asterisk keeps no global per callback."""
        with contextlib.suppress(AriError):
            await self._ari.unset_global(REACHED_VAR_PREFIX + a.cb.id)

    async def _until_gone(self, channel_ids: tuple[str, ...]) -> None:
        """Return once Asterisk no longer knows any of ``channel_ids``; the caller bounds it."""
        for channel_id in channel_ids:
            while True:
                if not await self._channel_exists(channel_id):
                    break
                await asyncio.sleep(0.02)

    async def _channel_exists(self, channel_id: str) -> bool:
        try:
            await self._ari.get_channel(channel_id)
        except AriError:
            return False
        return True

    async def _hangup(self, a: Attempt) -> None:
        if a.endpoint is None:
            return
        with contextlib.suppress(AriError):
            await self._ari.hangup(a.channel_id)

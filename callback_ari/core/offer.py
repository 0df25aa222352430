"""The caller's callback offer dialogue as a pure state machine: events in, actions out.

No I/O and no asyncio: a driver (ARI in ``offer_ari``, FastAGI in ``agi``) executes the
actions and feeds back what happened. Driver contract:

- ``Play`` is always the last action of a list, and so is ``Store``; execute in order.
- One timer at a time: ``StartTimer`` replaces any running timer, ``CancelTimer`` drops it.
- ``Record`` (queues with ``record_message``, after a new callback is stored) is last too:
  record the caller's message for that callback; feed ``RecordingDone(token)`` when it ends,
  fails or cannot start. A hang-up meanwhile keeps the callback (and the partial recording).
- Feed ``PlaybackDone(token)`` when a ``Play`` ends on its own (not after ``StopPlayback``),
  ``Timeout(token)`` when a timer runs out, ``Digit`` for DTMF, ``Hangup`` when the caller
  leaves, and ``Stored``/``StoreFailed`` as the answer to ``Store``.
- Tokens make late events harmless: a ``PlaybackDone`` or ``Timeout`` whose token is not the
  current one is ignored. Unexpected events never raise; an internal fault ends the dialogue
  with ``ContinueToQueue(ContinueReason.ERROR)`` so the caller is never stranded.

Transitions (``_after_prompt``, ``_on_silence``, ``_on_key`` below hold the whole table):

==================  ====================  =========================  ==========================
state               prompt ends           silence (timer)            key
==================  ====================  =========================  ==========================
offer (interr.)     -> offer_wait         --                         barge in as offer_wait
offer_wait          --                    leave "silence"            1 accept, 2 leave
                                                                     "declined", else retry
callerid_readback   -> confirm            --                         ignored
number_readback     -> confirm            --                         ignored
confirm (interr.)   -> confirm_wait       --                         barge in as confirm_wait
confirm_wait        --                    retry read-back            1 Store, 2 entry, else
                                                                     retry read-back
entry (interr.)     -> entry_digits       --                         barge in as entry_digits
entry_digits        --                    submit (empty = a try)     0-9 type, # submit,
                                                                     * start over
reason (interr.)    -> reason_wait        --                         barge in as reason_wait
reason_wait         --                    Store without a reason     a listed digit: Store with
                                                                     it, else retry (then none)
storing             --                    --                         ignored
record_prompt (i.)  -> recording (Record) --                         # farewell, else Record
recording           --                    farewell (lost event)      ignored (# is Asterisk's)
farewell            final action, done    --                         ignored
==================  ====================  =========================  ==========================
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import structlog

from callback_ari.core.prompts import DEFAULT_PROMPTS, position_media, readback_media, wait_media
from callback_ari.errors import NumberRejected

__all__ = [
    "DEFAULT_PROMPTS", "Action", "CancelTimer", "ContinueReason", "ContinueToQueue", "Digit",
    "Event", "Hangup", "HangupCall", "OfferMachine", "OfferOutcome", "OfferResult",
    "OfferSettings", "Play", "PlaybackDone", "Record", "RecordingDone", "StartTimer", "Step",
    "StopPlayback", "Store", "StoreFailed", "Stored", "Timeout",
]  # fmt: skip

log = structlog.get_logger(__name__)

DTMF = frozenset("0123456789*#ABCD")
_RECORD_MARGIN_S = 10  # past record_message, a recording whose end was not reported is over


@dataclass(frozen=True, slots=True)
class OfferSettings:
    """Per-queue dialogue settings; a prompt missing from ``prompts`` uses its default."""

    prompts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_PROMPTS)
    max_tries: int = 3
    digit_timeout: float = 5
    response_timeout: float = 8
    max_digits: int = 15
    announce_wait: bool = True
    announce_position: bool = False  # position (and wait) before the offer
    # the reason menu after the number is confirmed: (digit, name, media said for it)
    reasons: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    record_s: int = 0  # after storing, record a message of at most this long (0 = off)
    record_silence_s: int = 0  # silence that ends the message (0 = none)

    def __post_init__(self) -> None:
        if self.max_tries < 1 or self.max_digits < 1:
            raise ValueError("max_tries and max_digits must be >= 1")
        if not (self.digit_timeout > 0 and self.response_timeout > 0):
            raise ValueError("digit_timeout and response_timeout must be > 0")

    def prompt(self, name: str) -> tuple[str, ...]:
        return tuple(self.prompts.get(name, DEFAULT_PROMPTS[name]))


# --- inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digit:
    d: str


@dataclass(frozen=True, slots=True)
class PlaybackDone:
    token: int


@dataclass(frozen=True, slots=True)
class Timeout:
    token: int


@dataclass(frozen=True, slots=True)
class RecordingDone:
    """The caller's message ended (#, silence, time limit), failed or could not start."""

    token: int


@dataclass(frozen=True, slots=True)
class Hangup:
    """The caller hung up (or the channel is gone)."""


@dataclass(frozen=True, slots=True)
class Stored:
    callback_id: str
    created: bool  # False: a live callback for this number already existed and is kept
    wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class StoreFailed:
    reason: str


Event: TypeAlias = Digit | PlaybackDone | Timeout | Hangup | Stored | StoreFailed | RecordingDone

# --- outputs -----------------------------------------------------------------------


class OfferOutcome(enum.StrEnum):
    """How a dialogue ended (the ``result`` label of ``callback_offer_results_total``)."""

    STORED = "stored"  # a new callback; the caller hung up keeping their place
    EXISTING = "existing"  # the number already had a live callback, which is kept
    CONTINUED = "continued"  # back into the queue; ``ContinueReason`` says why
    ABANDONED = "abandoned"  # the caller hung up before the dialogue ended


class ContinueReason(enum.StrEnum):
    """Why a caller went back into the queue."""

    SILENCE = "silence"  # no answer to the offer
    DECLINED = "declined"  # pressed 2
    TOO_MANY_TRIES = "too_many_tries"
    STORE_FAILED = "store_failed"  # Redis failed, or the number was refused at the last check
    ERROR = "error"  # a fault on our side (the machine, a driver, ARI/AGI)
    DIALOGUE_TIMEOUT = "dialogue_timeout"  # the dialogue ran past dialogue_timeout
    CLOSED = "closed"  # callbacks closed for the queue (hours, cap, store down): no offer
    SHUTDOWN = "shutdown"  # the service is stopping


@dataclass(frozen=True, slots=True)
class Play:
    media: tuple[str, ...]
    token: int
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class StopPlayback:
    pass


@dataclass(frozen=True, slots=True)
class StartTimer:
    seconds: float
    token: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    pass


@dataclass(frozen=True, slots=True)
class Store:
    number: str
    reason: str = ""  # the reason the caller picked from the queue's menu ("" = none)


@dataclass(frozen=True, slots=True)
class Record:
    """Record the caller's message for ``callback_id`` (name: ``core.recordings``)."""

    callback_id: str
    max_s: int
    silence_s: int
    token: int


@dataclass(frozen=True, slots=True)
class ContinueToQueue:
    reason: ContinueReason


@dataclass(frozen=True, slots=True)
class HangupCall:
    reason: OfferOutcome  # STORED or EXISTING


Action: TypeAlias = (
    Play | StopPlayback | StartTimer | CancelTimer | Store | Record | ContinueToQueue | HangupCall
)


@dataclass(frozen=True, slots=True)
class OfferResult:
    """How the dialogue ended; ``reason`` is set exactly when the caller was continued."""

    outcome: OfferOutcome
    number: str | None = None  # the confirmed number, if the caller got that far
    callback_id: str | None = None
    reason: ContinueReason | None = None

    def __post_init__(self) -> None:
        if (self.outcome is OfferOutcome.CONTINUED) != (self.reason is not None):
            raise ValueError("a reason goes with a continued result, and only with one")

    @classmethod
    def continued(cls, reason: ContinueReason, number: str | None = None) -> OfferResult:
        return cls(OfferOutcome.CONTINUED, number, reason=reason)

    @property
    def label(self) -> str:
        """The metrics label: the reason of a continued result, else the outcome."""
        return (self.reason or self.outcome).value

    def __str__(self) -> str:
        """The log form: ``stored``, ``existing``, ``continued:<reason>`` or ``abandoned``."""
        if self.reason is not None:
            return f"{self.outcome}:{self.reason}"
        return str(self.outcome)


class Step(enum.StrEnum):
    NEW = "new"
    OFFER = "offer"
    OFFER_WAIT = "offer_wait"
    CALLERID_READBACK = "callerid_readback"
    NUMBER_READBACK = "number_readback"
    CONFIRM = "confirm"
    CONFIRM_WAIT = "confirm_wait"
    ENTRY = "entry"
    ENTRY_DIGITS = "entry_digits"
    REASON = "reason"
    REASON_WAIT = "reason_wait"
    STORING = "storing"
    RECORD_PROMPT = "record_prompt"
    RECORDING = "recording"
    FAREWELL = "farewell"
    DONE = "done"


# An interruptible prompt, cut short by a key, continues as the state that follows it.
_BARGE_IN = {
    Step.OFFER: Step.OFFER_WAIT,
    Step.CONFIRM: Step.CONFIRM_WAIT,
    Step.ENTRY: Step.ENTRY_DIGITS,
    Step.REASON: Step.REASON_WAIT,
    # a key during "leave your message": # skips it, any other starts the recording now
    Step.RECORD_PROMPT: Step.RECORDING,
}
_WAITING = frozenset({Step.OFFER_WAIT, Step.CONFIRM_WAIT, Step.ENTRY_DIGITS, Step.REASON_WAIT})


class OfferMachine:
    """One caller's offer dialogue. ``start()`` once, then ``handle(event)`` until ``done``."""

    def __init__(
        self,
        settings: OfferSettings,
        validate: Callable[[str], str],
        *,
        caller_id: str | None,
        position: int = 0,
        wait_s: float | None = None,
    ) -> None:
        self._s = settings
        self._position = position  # in the queue when the offer began (0 = unknown)
        self._wait_s = wait_s  # the estimated wait at that position, None if unknown
        self._validate = validate  # raw -> dial-safe number, or raises NumberRejected
        self._caller_id = caller_id or None
        self._state = Step.NEW
        self._last_token = 0
        self._play_token: int | None = None
        self._timer_token: int | None = None
        self._tries = 0  # failed tries in the current menu; reset when the menu changes
        self._typed = ""
        self._swallow_hash = False  # the '#' a caller presses after an auto-submitted number
        self._candidate: str | None = None  # validated number being read back
        self._from_callerid = False
        self._confirmed: str | None = None  # set when Store is emitted
        self._final: ContinueToQueue | HangupCall | None = None  # after the farewell prompt
        self._pending: OfferResult | None = None
        self._result: OfferResult | None = None
        self._store_in_flight = False
        self._record_token: int | None = None
        self._callback_id: str | None = None  # the callback stored in this dialogue
        self._farewell: tuple[str, ...] = ()  # said after the recorded message

    @property
    def state(self) -> Step:
        return self._state

    @property
    def done(self) -> bool:
        return self._state is Step.DONE

    @property
    def result(self) -> OfferResult | None:
        """Set once ``done``."""
        return self._result

    def start(self) -> list[Action]:
        """Play the offer. Calling it again (or after a hangup) does nothing."""
        if self._state is not Step.NEW:
            return []
        return self._guarded(
            None, lambda: self._prompt(Step.OFFER, self._offer_media(), interruptible=True)
        )

    def _offer_media(self) -> tuple[str, ...]:
        """The offer, after the position and estimated wait when ``announce_position``."""
        if not self._s.announce_position:
            return self._s.prompt("offer")
        where = position_media(
            self._s.prompt("position"), self._s.prompt("position_first"), self._position
        )
        wait = wait_media(self._s.prompt("wait_estimate"), self._wait_s)
        return where + wait + self._s.prompt("offer")

    def handle(self, event: Event) -> list[Action]:
        """Advance on one input; stale or unexpected inputs return ``[]``."""
        if self._state is Step.DONE:
            self._late(event)
            return []
        return self._guarded(event, lambda: self._dispatch(event))

    # --- the table -----------------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Action]:
        if isinstance(event, Digit) and self._swallow_hash:
            # A full-length number was submitted on its last digit; the '#' the caller was
            # told to press follows and must not cut off the next prompt or cost a try.
            self._swallow_hash = False
            if event.d == "#":
                return []
        match event:
            case Hangup():
                return self._hung_up()
            case PlaybackDone(token=token) if token == self._play_token:
                self._play_token = None
                return self._after_prompt()
            case Timeout(token=token) if token == self._timer_token:
                self._timer_token = None
                return self._on_silence()
            case Digit(d=d) if d in DTMF and self._state in _BARGE_IN:
                self._play_token = None
                self._state = _BARGE_IN[self._state]
                return [StopPlayback(), *self._on_key(d)]
            case Digit(d=d) if d in DTMF and self._state in _WAITING:
                return self._on_key(d)
            case Stored() if self._state is Step.STORING:
                return self._stored(event)
            case RecordingDone(token=token) if token == self._record_token:
                return self._after_recording()
            case StoreFailed() if self._state is Step.STORING:
                self._store_in_flight = False
                return self._leave(ContinueReason.STORE_FAILED, "sorry_error")
        return []  # stale token, key during a read-back, or an event this state ignores

    def _after_prompt(self) -> list[Action]:
        match self._state:
            case Step.OFFER:
                return self._wait(Step.OFFER_WAIT, self._s.response_timeout)
            case Step.CALLERID_READBACK | Step.NUMBER_READBACK:
                return self._prompt(Step.CONFIRM, "confirm_number", interruptible=True)
            case Step.CONFIRM:
                return self._wait(Step.CONFIRM_WAIT, self._s.response_timeout)
            case Step.ENTRY:
                return self._wait(Step.ENTRY_DIGITS, self._s.response_timeout)
            case Step.REASON:
                return self._wait(Step.REASON_WAIT, self._s.response_timeout)
            case Step.RECORD_PROMPT:
                return self._record()
            case Step.FAREWELL:
                return self._finish()
        return []

    def _on_silence(self) -> list[Action]:
        match self._state:
            case Step.OFFER_WAIT:
                return self._leave(ContinueReason.SILENCE)
            case Step.CONFIRM_WAIT:
                return self._retry_confirm(invalid_key=False)
            case Step.ENTRY_DIGITS:
                return self._submit()  # inter-digit timeout, or nothing typed at all
            case Step.REASON_WAIT:
                return self._store()  # no reason given: the callback matters more
            case Step.RECORDING:
                return self._after_recording()  # its end was never reported: move on
        return []

    def _on_key(self, d: str) -> list[Action]:
        match self._state, d:
            case Step.OFFER_WAIT, "1":
                return self._accept()
            case Step.OFFER_WAIT, "2":
                return self._leave(ContinueReason.DECLINED)
            case Step.OFFER_WAIT, _:
                return self._retry_offer()
            case Step.CONFIRM_WAIT, "1":
                return self._ask_reason() if self._s.reasons else self._store()
            case Step.CONFIRM_WAIT, "2":
                if self._from_callerid:
                    self._tries = 0  # a new menu: entering a number gets its own tries
                return self._enter_number()
            case Step.CONFIRM_WAIT, _:
                return self._retry_confirm(invalid_key=True)
            case Step.ENTRY_DIGITS, "#":
                return self._submit()
            case Step.ENTRY_DIGITS, "*":
                return self._enter_number()  # start over
            case Step.ENTRY_DIGITS, _:
                return self._type(d)
            case Step.REASON_WAIT, _:
                return self._pick_reason(d)
            case Step.RECORDING, "#" if self._record_token is None:
                return self._after_recording()  # typed ahead: no message
            case Step.RECORDING, _ if self._record_token is None:
                return self._record()
        return []

    # --- transitions ---------------------------------------------------------------

    def _accept(self) -> list[Action]:
        self._tries = 0
        number = self._callable_caller_id()
        if number is None:
            return self._enter_number()
        self._candidate, self._from_callerid = number, True
        media = self._s.prompt("confirm_callerid") + readback_media(number)
        return self._prompt(Step.CALLERID_READBACK, media, interruptible=False)

    def _callable_caller_id(self) -> str | None:
        if self._caller_id is None:
            return None
        try:
            return self._validate(self._caller_id)
        except NumberRejected as exc:
            log.info("offer.callerid_not_callable", reason=exc.reason)
            return None

    def _retry_offer(self) -> list[Action]:
        if self._failed():
            return self._leave(ContinueReason.TOO_MANY_TRIES, "too_many_tries")
        media = self._s.prompt("invalid") + self._s.prompt("offer")
        return self._prompt(Step.OFFER, media, interruptible=True)

    def _retry_confirm(self, *, invalid_key: bool) -> list[Action]:
        if self._failed():
            return self._leave(ContinueReason.TOO_MANY_TRIES, "too_many_tries")
        assert self._candidate is not None
        lead = self._s.prompt("invalid") if invalid_key else ()
        intro = "confirm_callerid" if self._from_callerid else "readback_intro"
        step = Step.CALLERID_READBACK if self._from_callerid else Step.NUMBER_READBACK
        media = lead + self._s.prompt(intro) + readback_media(self._candidate)
        return self._prompt(step, media, interruptible=False)

    def _enter_number(self, lead: tuple[str, ...] = ()) -> list[Action]:
        self._typed, self._candidate, self._from_callerid = "", None, False
        media = lead + self._s.prompt("enter_number")
        return self._prompt(Step.ENTRY, media, interruptible=True)

    def _type(self, d: str) -> list[Action]:
        self._typed += d
        if len(self._typed) >= self._s.max_digits:
            self._swallow_hash = True
            return self._submit()
        return self._wait(Step.ENTRY_DIGITS, self._s.digit_timeout)

    def _submit(self) -> list[Action]:
        typed, self._typed = self._typed, ""
        if not typed:
            return self._entry_failed(invalid=False)
        try:
            if not typed.isdecimal() or not typed.isascii():
                raise NumberRejected("invalid_chars")
            number = self._validate(typed)
        except NumberRejected as exc:
            log.info("offer.number_rejected", reason=exc.reason)
            return self._entry_failed(invalid=True)
        self._candidate, self._from_callerid = number, False
        media = self._s.prompt("readback_intro") + readback_media(number)
        return self._prompt(Step.NUMBER_READBACK, media, interruptible=False)

    def _entry_failed(self, *, invalid: bool) -> list[Action]:
        if self._failed():
            return self._leave(ContinueReason.TOO_MANY_TRIES, "too_many_tries")
        return self._enter_number(self._s.prompt("invalid") if invalid else ())

    # --- the reason menu (optional per queue) ---------------------------------------

    def _ask_reason(self, lead: tuple[str, ...] = ()) -> list[Action]:
        if not lead:
            self._tries = 0  # a new menu gets its own tries
        menu: tuple[str, ...] = ()
        for digit, _name, media in self._s.reasons:  # "For <billing>, press 1. For ..."
            menu += (*self._s.prompt("reason_for"), *media, *self._s.prompt("reason_press"),
                     f"digits:{digit}")  # fmt: skip
        return self._prompt(Step.REASON, lead + menu, interruptible=True)

    def _pick_reason(self, d: str) -> list[Action]:
        for digit, name, _media in self._s.reasons:
            if d == digit:
                return self._store(name)
        if self._failed():
            return self._store()  # too many wrong keys: booked without a reason, not lost
        return self._ask_reason(self._s.prompt("invalid"))

    def _store(self, reason: str = "") -> list[Action]:
        assert self._candidate is not None
        self._confirmed = self._candidate
        self._store_in_flight = True
        actions = self._disarm()
        self._state = Step.STORING
        return [*actions, Store(self._confirmed, reason)]

    def _stored(self, event: Stored) -> list[Action]:
        self._store_in_flight = False
        outcome = OfferOutcome.STORED if event.created else OfferOutcome.EXISTING
        self._pending = OfferResult(outcome, self._confirmed, event.callback_id)
        self._final = HangupCall(outcome)
        if event.created:
            wait = self._s.prompt("wait_estimate") if self._s.announce_wait else ()
            media = self._s.prompt("stored") + wait_media(wait, event.wait_s)
        else:
            media = self._s.prompt("already_pending")
        media += self._s.prompt("goodbye")
        if event.created and self._s.record_s > 0:
            # the callback is safe; a hang-up from here on keeps it
            self._callback_id, self._farewell = event.callback_id, media
            return self._prompt(Step.RECORD_PROMPT, "record_intro", interruptible=True)
        return self._prompt(Step.FAREWELL, media, interruptible=False)

    # --- the recorded message (optional per queue) -----------------------------------

    def _record(self) -> list[Action]:
        assert self._callback_id is not None
        actions = self._disarm()
        self._state = Step.RECORDING
        self._record_token = self._new_token()
        # a guard in case the end of the recording is never reported
        self._timer_token = self._new_token()
        guard = StartTimer(self._s.record_s + _RECORD_MARGIN_S, self._timer_token)
        record = Record(
            self._callback_id, self._s.record_s, self._s.record_silence_s, self._record_token
        )
        return [*actions, guard, record]

    def _after_recording(self) -> list[Action]:
        self._record_token = None
        return self._prompt(Step.FAREWELL, self._farewell, interruptible=False)

    def _leave(self, reason: ContinueReason, lead: str | None = None) -> list[Action]:
        """Back to the queue, after an optional explanation and "returning to the queue"."""
        self._pending = OfferResult.continued(reason, self._confirmed)
        self._final = ContinueToQueue(reason)
        media = (self._s.prompt(lead) if lead else ()) + self._s.prompt("returning_to_queue")
        return self._prompt(Step.FAREWELL, media, interruptible=False)

    def _finish(self) -> list[Action]:
        assert self._final is not None
        self._state, self._result = Step.DONE, self._pending
        return [*self._disarm(), self._final]

    def _hung_up(self) -> list[Action]:
        keeps_result = isinstance(self._final, HangupCall)  # stored/existing stands
        abandoned = OfferResult(OfferOutcome.ABANDONED, self._confirmed)
        self._result = self._pending if keeps_result else abandoned
        self._state, self._play_token, self._timer_token = Step.DONE, None, None
        self._record_token = None
        return []  # the caller is gone: nothing to play, nothing to store

    def _late(self, event: Event) -> None:
        """A store answer after the caller hung up still tells whether the callback exists."""
        if self._store_in_flight and isinstance(event, Stored | StoreFailed):
            self._store_in_flight = False
            if isinstance(event, Stored):
                outcome = OfferOutcome.STORED if event.created else OfferOutcome.EXISTING
                self._result = OfferResult(outcome, self._confirmed, event.callback_id)

    # --- mechanics -----------------------------------------------------------------

    def _failed(self) -> bool:
        """Count a failed try; True when the caller has used them all."""
        self._tries += 1
        return self._tries >= self._s.max_tries

    def _prompt(
        self, step: Step, media: tuple[str, ...] | str, *, interruptible: bool
    ) -> list[Action]:
        if isinstance(media, str):
            media = self._s.prompt(media)
        actions = self._disarm()
        self._state = step
        if not media:  # the admin silenced this prompt: behave as if it had just ended
            return [*actions, *self._after_prompt()]
        self._play_token = self._new_token()
        return [*actions, Play(media, self._play_token, interruptible)]

    def _wait(self, step: Step, seconds: float) -> list[Action]:
        self._state = step
        self._timer_token = self._new_token()
        return [StartTimer(seconds, self._timer_token)]

    def _disarm(self) -> list[Action]:
        if self._timer_token is None:
            return []
        self._timer_token = None
        return [CancelTimer()]

    def _new_token(self) -> int:
        self._last_token += 1
        return self._last_token

    def _guarded(self, event: Event | None, step: Callable[[], list[Action]]) -> list[Action]:
        """Run one step; an internal fault sends the caller back to the queue, never raises."""
        # What runs now, before the step changes it: a step that fails loses its actions.
        playing = self._play_token is not None and not isinstance(event, PlaybackDone)
        armed = self._timer_token is not None and not isinstance(event, Timeout)
        try:
            return step()
        except Exception:
            log.exception("offer.machine_error", state=str(self._state), input=repr(event))
            actions: list[Action] = [StopPlayback()] if playing else []
            actions += [CancelTimer()] if armed else []
            self._play_token = self._timer_token = None
            self._state = Step.DONE
            self._result = OfferResult.continued(ContinueReason.ERROR, self._confirmed)
            return [*actions, ContinueToQueue(ContinueReason.ERROR)]

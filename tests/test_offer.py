"""The offer dialogue state machine: every path a caller can take, as exact action sequences."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from callback_ari.core.offer import (
    DEFAULT_PROMPTS,
    Action,
    CancelTimer,
    ContinueToQueue,
    Digit,
    Event,
    Hangup,
    HangupCall,
    OfferMachine,
    OfferResult,
    OfferSettings,
    Play,
    PlaybackDone,
    StartTimer,
    Step,
    StopPlayback,
    Store,
    Stored,
    StoreFailed,
    Timeout,
)
from callback_ari.core.offer import ContinueReason as Reason
from callback_ari.core.offer import OfferOutcome as Outcome
from callback_ari.core.prompts import PROMPT_NAMES, wait_media
from callback_ari.errors import NumberRejected

# --- a driver double and a number policy stand-in (phone.py is written elsewhere) ----------

# One short, recognisable media per prompt so expected sequences read like the dialogue.
PROMPTS = {name: (f"sound:{name}",) for name in PROMPT_NAMES}
SETTINGS = OfferSettings(prompts=PROMPTS)
EMERGENCY = frozenset({"911", "112", "999", "000", "110", "100"})


def validate(raw: str) -> str:
    """Like phone.validate_number for a US queue without international calls."""
    if not raw:
        raise NumberRejected("empty")
    if raw in EMERGENCY:
        raise NumberRejected("emergency")
    if raw.startswith(("900", "1900", "976")):
        raise NumberRejected("premium")
    if raw.startswith(("011", "+")) and not raw.startswith("+1"):
        raise NumberRejected("international")
    digits = raw.removeprefix("+").removeprefix("1") if len(raw) > 10 else raw
    if not digits.isdecimal() or len(digits) != 10:
        raise NumberRejected("invalid")
    return digits


def P(*names: str) -> tuple[str, ...]:
    """The media of these prompts, concatenated."""
    return tuple(m for name in names for m in PROMPTS[name])


class Call:
    """Feeds the machine the way a driver does and remembers the live play/timer tokens."""

    def __init__(
        self,
        caller_id: str | None = None,
        settings: OfferSettings = SETTINGS,
        check: Callable[[str], str] = validate,
    ) -> None:
        self.machine = OfferMachine(settings, check, caller_id=caller_id)
        self.play: int | None = None
        self.timer: int | None = None
        self.actions: list[Action] = []

    def state(self) -> Step:  # a method, so mypy does not narrow it across calls
        return self.machine.state

    def _track(self, actions: list[Action]) -> list[Action]:
        self.actions += actions
        for action in actions:
            match action:
                case Play(token=token):
                    self.play = token
                case StopPlayback():
                    self.play = None
                case StartTimer(token=token):
                    self.timer = token
                case CancelTimer():
                    self.timer = None
        return actions

    def start(self) -> list[Action]:
        return self._track(self.machine.start())

    def send(self, event: Event) -> list[Action]:
        return self._track(self.machine.handle(event))

    def ends(self) -> list[Action]:
        """The prompt now playing ends on its own."""
        assert self.play is not None, "nothing is playing"
        token, self.play = self.play, None
        return self.send(PlaybackDone(token))

    def silence(self) -> list[Action]:
        """The running timer expires."""
        assert self.timer is not None, "no timer is running"
        token, self.timer = self.timer, None
        return self.send(Timeout(token))

    def press(self, keys: str) -> list[Action]:
        actions: list[Action] = []
        for key in keys:
            actions += self.send(Digit(key))
        return actions

    def stored(
        self, callback_id: str = "cb1", created: bool = True, wait_s: float | None = None
    ) -> list[Action]:
        return self.send(Stored(callback_id, created, wait_s))

    @property
    def stores(self) -> list[Store]:
        return [a for a in self.actions if isinstance(a, Store)]


CALLER = "5551234567"
OTHER = "5559876543"


def at_entry(caller_id: str | None = None) -> Call:
    """A caller who accepted the offer and heard "enter your number" to the end."""
    call = Call(caller_id)
    call.start()
    call.ends()
    call.press("1")
    if caller_id is not None:  # decline the caller ID read-back
        call.ends()
        call.ends()
        call.press("2")
    call.ends()
    assert call.state() is Step.ENTRY_DIGITS
    return call


def at_confirm(number: str = OTHER) -> Call:
    """A caller who typed a valid number and heard it read back and the confirm menu."""
    call = at_entry()
    call.press(number + "#")
    call.ends()
    call.ends()
    assert call.state() is Step.CONFIRM_WAIT
    return call


# --- the happy paths ---------------------------------------------------------------------


def test_accept_caller_id_stores_announces_wait_and_hangs_up() -> None:
    call = Call(CALLER)
    assert call.start() == [Play(P("offer"), 1, True)]
    assert call.ends() == [StartTimer(8, 2)]
    assert call.press("1") == [
        CancelTimer(),
        Play((*P("confirm_callerid"), "digits:5551234567"), 3, False),
    ]
    assert call.ends() == [Play(P("confirm_number"), 4, True)]
    assert call.ends() == [StartTimer(8, 5)]
    assert call.press("1") == [CancelTimer(), Store(CALLER)]
    assert call.state() is Step.STORING and not call.machine.done
    assert call.stored("cb1", created=True, wait_s=200) == [
        Play((*P("stored", "wait_estimate"), "number:4", *P("goodbye")), 6, False)
    ]
    assert call.ends() == [HangupCall(Outcome.STORED)]
    assert call.machine.done
    assert call.machine.result == OfferResult(Outcome.STORED, CALLER, "cb1")
    assert str(call.machine.result) == "stored"


def test_caller_id_not_callable_goes_straight_to_number_entry() -> None:
    for caller_id in (None, "", "112", "anonymous"):
        call = Call(caller_id)
        call.start()
        call.ends()
        assert call.press("1") == [CancelTimer(), Play(P("enter_number"), 3, True)]


def test_international_caller_id_is_read_back_without_the_plus() -> None:
    call = Call("+15551234567", check=lambda raw: raw)
    call.start()
    call.ends()
    assert call.press("1")[-1] == Play((*P("confirm_callerid"), "digits:15551234567"), 3, False)


def test_enter_another_number_instead_of_caller_id() -> None:
    call = Call(CALLER)
    call.start()
    call.ends()
    call.press("1")
    call.ends()
    call.ends()
    assert call.press("2") == [CancelTimer(), Play(P("enter_number"), 6, True)]
    call.ends()
    call.press(OTHER)
    assert call.press("#") == [
        CancelTimer(),
        Play((*P("readback_intro"), f"digits:{OTHER}"), 18, False),
    ]
    assert call.ends() == [Play(P("confirm_number"), 19, True)]
    assert call.ends() == [StartTimer(8, 20)]
    assert call.press("1") == [CancelTimer(), Store(OTHER)]
    assert call.stored("cb9", wait_s=None) == [Play(P("stored", "goodbye"), 21, False)]
    assert call.ends() == [HangupCall(Outcome.STORED)]
    assert call.machine.result == OfferResult(Outcome.STORED, OTHER, "cb9")


def test_typing_arms_the_inter_digit_timer_and_hash_ends_the_number() -> None:
    call = at_entry()
    assert call.press("5") == [StartTimer(5, 5)]
    assert call.press("5") == [StartTimer(5, 6)]
    call.press("59876543")
    assert call.press("#") == [
        CancelTimer(),
        Play((*P("readback_intro"), f"digits:{OTHER}"), 15, False),
    ]


def test_inter_digit_timeout_ends_the_number() -> None:
    call = at_entry()
    call.press(OTHER)
    assert call.silence() == [Play((*P("readback_intro"), f"digits:{OTHER}"), 15, False)]


def test_star_starts_the_number_over() -> None:
    call = at_entry()
    call.press("123")
    assert call.press("*") == [CancelTimer(), Play(P("enter_number"), 8, True)]
    call.ends()
    call.press(OTHER + "#")
    call.ends()
    call.ends()
    call.press("1")
    assert call.stores == [Store(OTHER)]


def test_max_digits_cap_submits_without_waiting() -> None:
    settings = OfferSettings(prompts=PROMPTS, max_digits=10)
    call = Call(None, settings)
    call.start()
    call.ends()
    call.press("1")
    call.ends()
    actions = call.press(OTHER)
    assert actions[-2:] == [
        CancelTimer(),
        Play((*P("readback_intro"), f"digits:{OTHER}"), 14, False),
    ]
    assert call.press("7") == []  # digits during the read-back do nothing


def test_re_enter_after_read_back() -> None:
    call = at_confirm("5550000000")
    assert call.press("2") == [CancelTimer(), Play(P("enter_number"), call.play or 0, True)]
    call.ends()
    call.press(OTHER + "#")
    call.ends()
    call.ends()
    call.press("1")
    assert call.stores == [Store(OTHER)]


# --- invalid input and tries -------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("911", "emergency"),
        ("112", "emergency"),
        ("999", "emergency"),
        ("9005551234", "premium"),
        ("19005551234", "premium"),
        ("01144123456", "international"),
        ("123", "invalid"),
    ],
)
def test_rejected_numbers_are_never_stored(typed: str, reason: str) -> None:
    with pytest.raises(NumberRejected, match=reason):
        validate(typed)
    call = at_entry()
    call.press(typed)
    assert call.press("#") == [
        CancelTimer(),
        Play(P("invalid", "enter_number"), call.play or 0, True),
    ]
    assert call.state() is Step.ENTRY
    call.ends()
    call.press(OTHER + "#")  # the second try is a good number
    call.ends()
    call.ends()
    call.press("1")
    assert call.stores == [Store(OTHER)]


def test_three_invalid_numbers_apologise_and_return_to_queue() -> None:
    call = at_entry()
    call.press("911#")
    call.ends()
    call.press("123")
    call.silence()  # inter-digit timeout submits "123": second try
    call.ends()
    call.press("112")
    assert call.press("#") == [
        CancelTimer(),
        Play(P("too_many_tries", "returning_to_queue"), call.play or 0, False),
    ]
    assert call.press("1") == []  # the apology is not interruptible
    assert call.ends() == [ContinueToQueue(Reason.TOO_MANY_TRIES)]
    assert call.machine.result == OfferResult.continued(Reason.TOO_MANY_TRIES)
    assert call.stores == []


def test_nothing_typed_counts_as_a_failed_try() -> None:
    call = at_entry()
    assert call.silence() == [Play(P("enter_number"), 5, True)]  # no "invalid": just ask again
    call.ends()
    call.press("#")  # '#' alone is as good as nothing
    assert call.state() is Step.ENTRY
    call.ends()
    assert call.silence() == [Play(P("too_many_tries", "returning_to_queue"), 9, False)]
    assert call.ends() == [ContinueToQueue(Reason.TOO_MANY_TRIES)]


def test_silence_at_offer_keeps_the_caller_in_queue() -> None:
    call = Call(CALLER)
    call.start()
    call.ends()
    assert call.silence() == [Play(P("returning_to_queue"), 3, False)]
    assert call.ends() == [ContinueToQueue(Reason.SILENCE)]
    assert call.machine.result == OfferResult.continued(Reason.SILENCE)


def test_decline_with_2_keeps_the_caller_in_queue() -> None:
    call = Call(CALLER)
    call.start()
    call.ends()
    assert call.press("2") == [CancelTimer(), Play(P("returning_to_queue"), 3, False)]
    assert call.ends() == [ContinueToQueue(Reason.DECLINED)]
    assert str(call.machine.result) == "continued:declined"


def test_invalid_key_at_offer_replays_it_and_counts() -> None:
    call = Call(CALLER)
    call.start()
    call.ends()
    assert call.press("5") == [CancelTimer(), Play(P("invalid", "offer"), 3, True)]
    assert call.press("#") == [StopPlayback(), Play(P("invalid", "offer"), 4, True)]
    assert call.press("9") == [
        StopPlayback(),
        Play(P("too_many_tries", "returning_to_queue"), 5, False),
    ]
    assert call.ends() == [ContinueToQueue(Reason.TOO_MANY_TRIES)]


def test_confirm_silence_or_wrong_key_replays_the_read_back() -> None:
    call = at_confirm()
    readback = (*P("readback_intro"), f"digits:{OTHER}")
    assert call.silence() == [Play(readback, call.play or 0, False)]
    call.ends()
    call.ends()
    assert call.press("7") == [
        CancelTimer(),
        Play((*P("invalid"), *readback), call.play or 0, False),
    ]
    call.ends()
    call.ends()
    assert call.silence() == [
        Play(P("too_many_tries", "returning_to_queue"), call.play or 0, False)
    ]
    assert call.ends() == [ContinueToQueue(Reason.TOO_MANY_TRIES)]
    assert call.stores == []


def test_entering_a_number_after_the_caller_id_gets_fresh_tries() -> None:
    call = Call(CALLER)
    call.start()
    call.ends()
    call.press("1")
    call.ends()
    call.ends()
    call.silence()  # one failed try on the caller ID menu
    call.ends()
    call.ends()
    call.press("4")  # two
    call.ends()
    call.ends()
    call.press("2")
    call.ends()
    call.press("911#")
    call.ends()
    call.press("123#")
    assert call.state() is Step.ENTRY  # two failures on entry: still going
    call.ends()
    call.press(OTHER + "#")
    call.ends()
    call.ends()
    call.press("1")
    assert call.stores == [Store(OTHER)]


# --- barge-in, read-backs, stale tokens ------------------------------------------------


def test_digit_during_interruptible_prompt_stops_it_and_is_used() -> None:
    call = Call(None)
    call.start()
    assert call.press("1") == [StopPlayback(), Play(P("enter_number"), 2, True)]
    assert call.press("5") == [StopPlayback(), StartTimer(5, 3)]
    call.press("559876543")
    assert call.press("#")[-1] == Play((*P("readback_intro"), f"digits:{OTHER}"), 13, False)
    call.ends()
    assert call.press("1") == [StopPlayback(), Store(OTHER)]  # barge into the confirm menu


def test_digits_during_read_back_are_not_the_confirmation() -> None:
    call = at_entry()
    call.press(OTHER + "#")
    assert call.state() is Step.NUMBER_READBACK
    assert call.press("1") == []
    assert call.press("1#2") == []
    assert call.ends() == [Play(P("confirm_number"), call.play or 0, True)]
    assert call.stores == []
    assert call.state() is Step.CONFIRM


def test_stale_tokens_are_ignored() -> None:
    call = Call(None)
    call.start()  # play 1
    call.press("1")  # barge in: play 1 stopped, play 2 started
    assert call.send(PlaybackDone(1)) == []  # ARI may still report the stopped playback
    assert call.state() is Step.ENTRY
    call.ends()  # play 2 ends, timer 3
    call.press("5")  # timer 4 replaces timer 3
    assert call.send(Timeout(3)) == []
    assert call.send(Timeout(99)) == []
    assert call.send(PlaybackDone(2)) == []
    assert call.state() is Step.ENTRY_DIGITS


def test_unexpected_events_are_ignored() -> None:
    call = Call(CALLER)
    call.start()
    assert call.send(Stored("cb1", True, None)) == []
    assert call.send(StoreFailed("x")) == []
    assert call.send(Digit("x")) == []
    assert call.send(Digit("")) == []
    assert call.start() == []  # starting twice does not replay the offer
    assert call.state() is Step.OFFER


# --- store results -----------------------------------------------------------------------


def test_duplicate_request_keeps_the_existing_callback() -> None:
    call = at_confirm()
    call.press("1")
    assert call.stored("cb0", created=False, wait_s=600) == [
        Play(P("already_pending", "goodbye"), call.play or 0, False)
    ]
    assert call.ends() == [HangupCall(Outcome.EXISTING)]
    assert call.machine.result == OfferResult(Outcome.EXISTING, OTHER, "cb0")


def test_store_failure_apologises_and_returns_to_queue() -> None:
    call = at_confirm()
    call.press("1")
    assert call.send(StoreFailed("store_unavailable")) == [
        Play(P("sorry_error", "returning_to_queue"), call.play or 0, False)
    ]
    assert call.ends() == [ContinueToQueue(Reason.STORE_FAILED)]
    assert call.machine.result == OfferResult.continued(Reason.STORE_FAILED, OTHER)


def test_wait_estimate_is_optional() -> None:
    quiet = OfferSettings(prompts=PROMPTS, announce_wait=False)
    call = Call(CALLER, quiet)
    call.start()
    call.ends()
    call.press("1")
    call.ends()
    call.ends()
    call.press("1")
    assert call.stored(wait_s=300) == [Play(P("stored", "goodbye"), 6, False)]


def test_wait_estimate_media() -> None:
    two = DEFAULT_PROMPTS["wait_estimate"]
    assert wait_media(two, 61) == ("sound:queue-holdtime", "number:2", "sound:queue-minutes")
    assert wait_media(two, 5) == ("sound:queue-holdtime", "number:1", "sound:queue-minutes")
    assert wait_media(("recording:in",), 120) == ("recording:in", "number:2")
    assert wait_media(two, None) == ()
    assert wait_media(two, 0) == ()
    assert wait_media(two, float("nan")) == ()
    assert wait_media((), 120) == ()


# --- hangups -----------------------------------------------------------------------------


def _offer_playing() -> Call:
    call = Call(CALLER)
    call.start()
    return call


def _offer_waiting() -> Call:
    call = _offer_playing()
    call.ends()
    return call


def _callerid_readback() -> Call:
    call = _offer_waiting()
    call.press("1")
    return call


def _confirm_playing() -> Call:
    call = _callerid_readback()
    call.ends()
    return call


def _entry_playing() -> Call:
    call = _confirm_playing()
    call.ends()
    call.press("2")
    return call


def _typing() -> Call:
    call = at_entry()
    call.press("555")
    return call


def _number_readback() -> Call:
    call = at_entry()
    call.press(OTHER + "#")
    return call


def _confirm_waiting() -> Call:
    return at_confirm()


def _farewell_to_queue() -> Call:
    call = _offer_waiting()
    call.press("2")
    return call


@pytest.mark.parametrize(
    ("reach", "state"),
    [
        (lambda: Call(CALLER), Step.NEW),
        (_offer_playing, Step.OFFER),
        (_offer_waiting, Step.OFFER_WAIT),
        (_callerid_readback, Step.CALLERID_READBACK),
        (_confirm_playing, Step.CONFIRM),
        (_entry_playing, Step.ENTRY),
        (_typing, Step.ENTRY_DIGITS),
        (_number_readback, Step.NUMBER_READBACK),
        (_confirm_waiting, Step.CONFIRM_WAIT),
        (_farewell_to_queue, Step.FAREWELL),
    ],
)
def test_hangup_before_confirmation_stores_nothing(reach: Callable[[], Call], state: Step) -> None:
    call = reach()
    assert call.state() is state
    assert call.send(Hangup()) == []
    assert call.machine.done
    assert call.machine.result == OfferResult(Outcome.ABANDONED)
    # whatever the driver still delivers afterwards changes nothing
    for event in (PlaybackDone(call.play or 0), Timeout(call.timer or 0), Digit("1"), Hangup()):
        assert call.send(event) == []
    assert call.stores == []
    assert call.start() == []


def test_hangup_while_storing_keeps_the_number_and_learns_the_outcome() -> None:
    call = at_confirm()
    call.press("1")
    assert call.send(Hangup()) == []
    assert call.machine.result == OfferResult(Outcome.ABANDONED, OTHER)
    assert call.stored("cb7", created=True) == []  # nobody to tell, but it was stored
    assert call.machine.result == OfferResult(Outcome.STORED, OTHER, "cb7")


def test_hangup_while_storing_then_store_failed_stays_abandoned() -> None:
    call = at_confirm()
    call.press("1")
    call.send(Hangup())
    assert call.send(StoreFailed("store_unavailable")) == []
    assert call.machine.result == OfferResult(Outcome.ABANDONED, OTHER)


def test_hangup_during_stored_confirmation_keeps_stored() -> None:
    call = at_confirm()
    call.press("1")
    call.stored("cb3", wait_s=30)
    assert call.send(Hangup()) == []
    assert call.machine.result == OfferResult(Outcome.STORED, OTHER, "cb3")


# --- faults never strand the caller ----------------------------------------------------------


@pytest.mark.expect_errors("offer.machine_error")
def test_a_crashing_validator_sends_the_caller_back_to_the_queue() -> None:
    def broken(raw: str) -> str:
        raise RuntimeError("bug")

    call = Call(CALLER, check=broken)
    call.start()
    call.ends()
    assert call.press("1") == [CancelTimer(), ContinueToQueue(Reason.ERROR)]
    assert call.machine.result == OfferResult.continued(Reason.ERROR)
    assert call.press("1") == []


@pytest.mark.expect_errors("offer.machine_error")
def test_a_validator_returning_garbage_is_not_read_back_or_stored() -> None:
    call = Call(None, check=lambda raw: "call me")
    call.start()
    call.ends()
    call.press("1")
    call.ends()
    call.press(OTHER)
    assert call.press("#") == [CancelTimer(), ContinueToQueue(Reason.ERROR)]
    assert call.stores == []


@pytest.mark.expect_errors("offer.machine_error")
def test_fault_during_playback_stops_it_first() -> None:
    def broken(raw: str) -> str:
        raise RuntimeError("bug")

    call = Call(CALLER, check=broken)
    call.start()
    assert call.press("1") == [
        StopPlayback(),
        ContinueToQueue(Reason.ERROR),
    ]  # barge into the offer
    assert call.machine.done


@pytest.mark.expect_errors("offer.machine_error")
def test_fault_after_storing_still_releases_the_caller() -> None:
    call = at_confirm()
    call.press("1")
    assert call.send(Stored("cb1", True, "soon")) == [ContinueToQueue(Reason.ERROR)]  # type: ignore[arg-type]
    assert call.machine.result == OfferResult.continued(Reason.ERROR, OTHER)


# --- settings and prompts ----------------------------------------------------------------


def test_silenced_prompts_skip_straight_on() -> None:
    quiet = OfferSettings(prompts={**PROMPTS, "returning_to_queue": (), "confirm_number": ()})
    call = Call(None, quiet)
    call.start()
    call.ends()
    assert call.press("2") == [CancelTimer(), ContinueToQueue(Reason.DECLINED)]
    call = Call(CALLER, quiet)
    call.start()
    call.ends()
    call.press("1")
    assert call.ends() == [StartTimer(8, 4)]  # read-back ends: straight to waiting for 1/2


def test_missing_prompt_names_fall_back_to_defaults() -> None:
    settings = OfferSettings(prompts={"offer": ("recording:custom-offer",)})
    assert settings.prompt("offer") == ("recording:custom-offer",)
    assert settings.prompt("goodbye") == DEFAULT_PROMPTS["goodbye"]
    assert OfferSettings().prompt("offer") == DEFAULT_PROMPTS["offer"]


def test_default_prompts_are_stock_sounds_for_every_step() -> None:
    assert set(DEFAULT_PROMPTS) == set(PROMPT_NAMES)
    for name, media in DEFAULT_PROMPTS.items():
        assert media, name
        for uri in media:
            assert re.fullmatch(r"sound:[a-z0-9/-]+", uri), uri


def test_settings_reject_nonsense() -> None:
    for bad in ({"max_tries": 0}, {"max_digits": 0}, {"digit_timeout": 0}):
        with pytest.raises(ValueError):
            OfferSettings(**bad)  # type: ignore[arg-type]


def test_custom_timeouts_are_used() -> None:
    settings = OfferSettings(prompts=PROMPTS, response_timeout=12, digit_timeout=3.5)
    call = Call(None, settings)
    call.start()
    assert call.ends() == [StartTimer(12, 2)]
    call.press("1")
    assert call.ends() == [StartTimer(12, 4)]
    assert call.press("5") == [StartTimer(3.5, 5)]


def test_machine_constructed_like_the_drivers_do() -> None:
    machine = OfferMachine(OfferSettings(), validate, caller_id=None)
    assert machine.state is Step.NEW and not machine.done and machine.result is None
    assert machine.start() == [Play(DEFAULT_PROMPTS["offer"], 1, True)]


def test_hash_after_an_auto_submitted_full_length_number_is_not_a_new_try() -> None:
    """15 digits submit at once; the '#' the caller then presses must not cut the next prompt."""

    def refuse_all(raw: str) -> str:
        raise NumberRejected("invalid")

    machine = OfferMachine(OfferSettings(max_digits=15), refuse_all, caller_id=None)
    actions = machine.start()
    token = next(a.token for a in actions if isinstance(a, Play))
    machine.handle(Digit("1"))  # accept: no callable caller ID, straight to entry
    for d in "123456789012345":
        actions = machine.handle(Digit(d))
    invalid_prompt = next(a for a in actions if isinstance(a, Play))
    assert "sound:privacy-incorrect" in invalid_prompt.media
    assert machine.handle(Digit("#")) == []  # swallowed: no StopPlayback, no failed try
    # the prompt plays on to its end and the caller is waiting for digits again
    follow = machine.handle(PlaybackDone(invalid_prompt.token))
    assert any(isinstance(a, StartTimer) for a in follow)
    del token


def test_position_and_wait_before_the_offer_only_when_switched_on() -> None:
    """announce_position: "there are <N> calls waiting", the estimate, then the offer."""
    loud = OfferSettings(prompts=PROMPTS, announce_position=True)
    machine = OfferMachine(loud, validate, caller_id=CALLER, position=4, wait_s=17 * 60)
    assert machine.start() == [
        Play(("sound:position", "number:4", "sound:wait_estimate", "number:20", "sound:offer"),
             1, True)
    ]  # fmt: skip
    first = OfferMachine(loud, validate, caller_id=CALLER, position=1, wait_s=None)
    assert first.start() == [Play(("sound:position_first", "sound:offer"), 1, True)]
    # off (the default): the offer alone, whatever is known
    plain = OfferMachine(SETTINGS, validate, caller_id=CALLER, position=4, wait_s=600)
    assert plain.start() == [Play(P("offer"), 1, True)]


REASONS = (("1", "billing", ("sound:r-billing",)), ("2", "technical", ("sound:r-tech",)))


def _confirmed(settings: OfferSettings) -> Call:
    """A caller who accepted and confirmed their caller ID, up to the key press that books."""
    call = Call(CALLER, settings)
    call.start()
    call.ends()
    call.press("1")  # accept
    call.ends()  # caller ID read back
    call.ends()  # "if this is correct press 1"
    return call


def test_reason_menu_after_confirming_then_store_with_the_reason() -> None:
    settings = OfferSettings(prompts=PROMPTS, reasons=REASONS)
    call = _confirmed(settings)
    menu = call.press("1")
    assert menu == [
        CancelTimer(),
        Play(("sound:reason_for", "sound:r-billing", "sound:reason_press", "digits:1",
              "sound:reason_for", "sound:r-tech", "sound:reason_press", "digits:2"),
             call.play or 0, True),
    ]  # fmt: skip
    assert call.stores == []
    call.press("2")  # barge in: technical
    assert call.stores == [Store(CALLER, "technical")]


def test_reason_menu_never_costs_the_callback() -> None:
    settings = OfferSettings(prompts=PROMPTS, reasons=REASONS, max_tries=2)
    silent = _confirmed(settings)
    silent.press("1")
    silent.ends()
    silent.silence()
    assert silent.stores == [Store(CALLER, "")]  # booked, without a reason
    wrong = _confirmed(settings)
    wrong.press("1")
    wrong.press("9")  # not on the menu: "invalid", the menu again
    assert wrong.stores == [] and wrong.state() is Step.REASON
    wrong.press("9")  # out of tries: booked without a reason
    assert wrong.stores == [Store(CALLER, "")]
    # without reasons configured, confirming books at once, as before
    plain = _confirmed(SETTINGS)
    plain.press("1")
    assert plain.stores == [Store(CALLER, "")]


def test_a_result_carries_a_reason_exactly_when_continued() -> None:
    assert str(OfferResult.continued(Reason.SILENCE)) == "continued:silence"
    assert str(OfferResult(Outcome.ABANDONED)) == "abandoned"
    with pytest.raises(ValueError, match="reason"):
        OfferResult(Outcome.CONTINUED)
    with pytest.raises(ValueError, match="reason"):
        OfferResult(Outcome.STORED, reason=Reason.ERROR)


def test_the_metric_labels_are_the_result_enums() -> None:
    from callback_ari.metrics import OFFER_RESULTS

    labels = {o.value for o in Outcome if o is not Outcome.CONTINUED} | {r.value for r in Reason}
    assert labels == set(OFFER_RESULTS)
    assert OfferResult.continued(Reason.DECLINED).label == "declined"
    assert OfferResult(Outcome.STORED, "+12025550143", "7").label == "stored"

"""Property tests of the offer state machine: random callers, late events and store results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callback_ari.core.offer import (
    Action,
    CancelTimer,
    ContinueReason,
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
from callback_ari.core.offer import OfferOutcome as Outcome
from tests.test_offer import CALLER, PROMPTS, validate

KEYS = "0123456789*#ABCD"


@dataclass
class Checker:
    """Plays the driver and checks every promise the machine makes, step by step."""

    machine: OfferMachine
    settings: OfferSettings
    accepted: set[str] = field(default_factory=set)  # what validate() returned
    play: int | None = None
    timer: int | None = None
    readback: tuple[int, str] | None = None  # (play token, number) of the latest read-back
    confirmable: str | None = None  # read back to the end, confirm menu not left since
    stores: list[str] = field(default_factory=list)
    finals: list[Action] = field(default_factory=list)
    was_done: bool = False

    def step(self, event: Event | None) -> list[Action]:
        actions = self.machine.start() if event is None else self.machine.handle(event)
        if self.was_done:
            assert actions == [], "a finished dialogue emitted actions"
        if isinstance(event, PlaybackDone) and event.token == self.play:
            self.play = None
            if self.readback is not None and self.readback[0] == event.token:
                self.confirmable = self.readback[1]
        if isinstance(event, Timeout) and event.token == self.timer:
            self.timer = None
        for i, action in enumerate(actions):
            last = i == len(actions) - 1
            match action:
                case Play(media=media, token=token, interruptible=interruptible):
                    assert last, "Play must be the last action"
                    assert media, "an empty Play"
                    assert self.play is None, "Play while another prompt still plays"
                    self.play = token
                    spoken = [m for m in media if m.startswith("digits:")]
                    if spoken:
                        assert not interruptible, "read-backs must not be interruptible"
                        self.readback = (token, spoken[0].removeprefix("digits:"))
                    if media != self.settings.prompt("confirm_number"):
                        self.confirmable = None
                case StopPlayback():
                    assert self.play is not None, "StopPlayback with nothing playing"
                    self.play = None
                case StartTimer(token=token, seconds=seconds):
                    assert seconds in (self.settings.digit_timeout, self.settings.response_timeout)
                    self.timer = token
                case CancelTimer():
                    self.timer = None
                case Store(number=number):
                    assert last, "Store must be the last action"
                    assert event == Digit("1"), "Store without a '1'"
                    assert number in self.accepted, "Store of a number validate() never accepted"
                    assert self.confirmable is not None
                    assert number.removeprefix("+") == self.confirmable, "not the read-back number"
                    self.stores.append(number)
                case ContinueToQueue() | HangupCall():
                    assert last
                    self.finals.append(action)
        if self.machine.done:
            self.was_done = True
        elif self.machine.state is not Step.NEW and self.machine.state is not Step.STORING:
            assert self.play is not None or self.timer is not None, "silence without a timer"
        assert len(self.stores) <= 1
        return actions


def make_validator(
    accepted: set[str], crash_on: str | None, crashes: list[str]
) -> Callable[[str], str]:
    def check(raw: str) -> str:
        if crash_on is not None and crash_on in raw:
            crashes.append(raw)
            raise RuntimeError("validator bug")
        number = validate(raw)
        accepted.add(number)
        return number

    return check


caller_ids = st.sampled_from([None, "", CALLER, "15551234567", "911", "+442071234567", "abc"])
prompt_sets = st.sets(st.sampled_from(sorted(PROMPTS)), max_size=3).map(
    lambda silenced: {n: (() if n in silenced else m) for n, m in PROMPTS.items()}
)
offer_settings = st.builds(
    OfferSettings,
    prompts=prompt_sets,
    max_tries=st.sampled_from([3, 3, 2, 1, 4]),
    digit_timeout=st.sampled_from([5, 2.5]),
    response_timeout=st.sampled_from([8, 10]),
    max_digits=st.sampled_from([15, 15, 11, 10, 4]),
    announce_wait=st.booleans(),
)
store_answers = st.one_of(
    st.builds(Stored, st.just("cb1"), st.booleans(), st.none() | st.floats(0, 7200)),
    st.builds(StoreFailed, st.sampled_from(["store_unavailable", "rejected:emergency"])),
)
moves = st.one_of(
    st.sampled_from(KEYS + "x").map(lambda d: ("digit", d)),
    st.just(("done", None)),
    st.just(("silence", None)),
    st.integers(-2, 40).map(lambda t: ("stale_done", t)),
    st.integers(-2, 40).map(lambda t: ("stale_timeout", t)),
    store_answers.map(lambda a: ("store", a)),
    st.just(("hangup", None)),
)
# Callers mostly answer menus and type whole numbers; other events are rarer but everywhere.
weighted_moves = st.one_of(
    st.sampled_from(["1", "1", "2", "5559876543#", "5559876543", "911#", "1900555#", "*"]).map(
        lambda keys: ("keys", keys)
    ),
    st.just(("done", None)),
    st.just(("done", None)),
    moves,
)

DONE = ("done", None)
YES, NO, TYPE_OTHER = ("keys", "1"), ("keys", "2"), ("keys", "5559876543#")
Script = tuple[str | None, list[tuple[str, object]]]
GOOD_PATHS: tuple[Script, ...] = (  # (caller ID, moves)
    (CALLER, [DONE, YES, DONE, DONE, YES]),  # confirm the caller ID
    (None, [DONE, YES, DONE, TYPE_OTHER, DONE, DONE, YES]),  # no caller ID: type a number
    (CALLER, [DONE, YES, DONE, DONE, NO, DONE, TYPE_OTHER, DONE, DONE, YES]),  # another number
)


@st.composite
def cooperative_scripts(draw: st.DrawFn) -> Script:
    """A caller heading for a callback, with a little noise at random moments."""
    caller_id, path = draw(st.sampled_from(GOOD_PATHS))
    script = list(path)
    for _ in range(draw(st.integers(0, 3))):
        script.insert(draw(st.integers(0, len(script))), draw(moves))
    return caller_id, script


random_scripts = st.tuples(caller_ids, st.lists(weighted_moves, max_size=60))


def to_events(checker: Checker, move: tuple[str, object]) -> list[Event]:
    kind, arg = move
    match kind:
        case "digit" | "keys":
            assert isinstance(arg, str)
            return [Digit(key) for key in arg]
        case "done":
            return [PlaybackDone(checker.play if checker.play is not None else -1)]
        case "silence":
            return [Timeout(checker.timer if checker.timer is not None else -1)]
        case "stale_done":
            assert isinstance(arg, int)
            return [PlaybackDone(arg)]
        case "stale_timeout":
            assert isinstance(arg, int)
            return [Timeout(arg)]
        case "store":
            assert isinstance(arg, Stored | StoreFailed)
            return [arg]
    return [Hangup()]


@pytest.mark.expect_errors("offer.machine_error")  # the injected validator crash
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    opening=st.one_of(random_scripts, cooperative_scripts()),
    offer=offer_settings,
    crash_on=st.sampled_from([None, None, None, "9", "00"]),
    data=st.data(),
)
def test_any_caller_ends_stored_continued_or_abandoned(
    opening: Script,
    offer: OfferSettings,
    crash_on: str | None,
    data: st.DataObject,
) -> None:
    with capture_logs():  # the injected crashes log tracebacks: keep them, skip rendering
        _run_one_caller(opening, offer, crash_on, data)


def _run_one_caller(
    opening: Script, offer: OfferSettings, crash_on: str | None, data: st.DataObject
) -> None:
    caller_id, script = opening
    accepted: set[str] = set()
    crashes: list[str] = []  # inputs on which the injected validator bug fired
    machine = OfferMachine(offer, make_validator(accepted, crash_on, crashes), caller_id=caller_id)
    checker = Checker(machine, offer, accepted)
    checker.step(None)
    for move in script:
        for each in to_events(checker, move):
            checker.step(each)
    # Drive to the end the way a patient driver would: answer the store, let prompts finish,
    # let timers run out. Every dialogue must finish in a bounded number of such steps.
    for _ in range(200):
        if machine.done:
            break
        if machine.state is Step.STORING:
            checker.step(data.draw(store_answers))
        elif checker.play is not None:
            checker.step(PlaybackDone(checker.play))
        else:
            assert checker.timer is not None, f"stuck in {machine.state}"
            checker.step(Timeout(checker.timer))
    assert machine.done
    result = machine.result
    assert result is not None
    note_outcome(str(result))
    # An internal fault is the injected crash and nothing else: a bug in the machine itself
    # (which _guarded turns into continued:error) fails here instead of passing as a "crash".
    if crashes:
        assert result == OfferResult.continued(ContinueReason.ERROR, result.number)
    else:
        assert result.reason is not ContinueReason.ERROR, "the machine failed on its own"
    assert len(checker.finals) <= 1
    if not checker.finals:
        assert result.outcome in (Outcome.ABANDONED, Outcome.STORED, Outcome.EXISTING)
        if result.outcome is not Outcome.ABANDONED:  # hung up while confirming: it was stored
            assert checker.stores == [result.number]
    elif isinstance(final := checker.finals[0], HangupCall):
        assert checker.stores == [result.number]
        assert result.outcome is final.reason
        assert final.reason in (Outcome.STORED, Outcome.EXISTING)
    else:
        assert isinstance(final, ContinueToQueue)
        assert result.outcome is Outcome.CONTINUED and result.reason is final.reason
    if result.number is not None:
        assert checker.stores == [result.number]


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.sampled_from([*KEYS]).map(Digit) | st.builds(Hangup), max_size=30))
def test_events_before_start_or_after_end_do_nothing(events: list[Event]) -> None:
    machine = OfferMachine(OfferSettings(prompts=PROMPTS), validate, caller_id=CALLER)
    for event in events:
        if not isinstance(event, Hangup):
            assert machine.handle(event) == []
    machine.handle(Hangup())
    assert machine.start() == []
    for event in events:
        assert machine.handle(event) == []
    assert machine.result == OfferResult(Outcome.ABANDONED)

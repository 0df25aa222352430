"""Dial status + hangup cause -> Outcome, against what Asterisk 22 really reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callback_ari.core.outcomes import Q850, classify, describe
from callback_ari.models import Outcome


def _unanswered(dialstatus: str | None, cause: int | None, technology: str = "PJSIP") -> Outcome:
    return classify(
        dialstatus=dialstatus, cause=cause, answered=False, confirmed=False, technology=technology
    )


# Transcripts README fact 13 (Local channel originate): the final dialstatus and the most
# telling cause of the two halves (a non-zero one when either half had it).
@pytest.mark.parametrize(
    ("dialstatus", "cause", "expected"),
    [
        ("BUSY", 17, Outcome.BUSY),  # ;1 0 "Unknown", ;2 17 "User busy"
        ("BUSY", 0, Outcome.BUSY),  # only the ;1 half's destroy seen so far
        ("CONGESTION", 34, Outcome.CONGESTION),  # ;2 state Busy (sic), cause 34
        ("CONGESTION", 0, Outcome.CONGESTION),
        ("", 19, Outcome.NO_ANSWER),  # no final Dial event: only the initial dialstatus ""
        (None, 19, Outcome.NO_ANSWER),
        (None, 0, Outcome.REJECTED),  # invalid extension: no Dial events, cause 0 on both
        ("", 0, Outcome.REJECTED),
    ],
)
def test_local_rows_of_the_recorded_table(
    dialstatus: str | None, cause: int, expected: Outcome
) -> None:
    assert _unanswered(dialstatus, cause, technology="Local") is expected


def test_local_answered_row_connects_only_after_press_1() -> None:
    def answered(confirmed: bool) -> Outcome:
        return classify(
            dialstatus="ANSWER", cause=None, answered=True, confirmed=confirmed,
            technology="Local",
        )  # fmt: skip

    assert answered(confirmed=True) is Outcome.CONNECTED
    assert answered(confirmed=False) is Outcome.NOT_CONFIRMED


def test_recorded_transcript_events_classify_as_the_scenario_names(asterisk_data: Path) -> None:
    """Replay the app's Dial/ChannelDestroyed events of each recorded scenario."""
    dialstatus: dict[str, str | None] = {}
    causes: dict[str, list[int]] = {}
    for line in (asterisk_data / "originate_outcomes.jsonl").read_text().splitlines():
        rec = json.loads(line)
        event = rec.get("event")
        if rec.get("dir") != "event" or rec.get("socket") != "callback-ari" or not event:
            continue
        scenario = rec["scenario"]
        causes.setdefault(scenario, [])
        dialstatus.setdefault(scenario, None)
        if event["type"] == "Dial" and event.get("dialstatus"):
            dialstatus[scenario] = event["dialstatus"]
        elif event["type"] == "ChannelDestroyed":
            causes[scenario].append(event["cause"])
    expected = {
        "busy": Outcome.BUSY,
        "congestion": Outcome.CONGESTION,
        "no_answer": Outcome.NO_ANSWER,
        "invalid_extension": Outcome.REJECTED,
    }
    for scenario, outcome in expected.items():
        # the attempt runner passes a non-zero cause from either half when there is one
        best = next((c for c in causes[scenario] if c), causes[scenario][0])
        got = _unanswered(dialstatus[scenario], best, technology="Local")
        assert got is outcome, (scenario, dialstatus[scenario], causes[scenario])


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (17, Outcome.BUSY),
        (18, Outcome.NO_ANSWER),
        (19, Outcome.NO_ANSWER),
        (16, Outcome.NO_ANSWER),  # normal clearing before answer: the far end gave up ringing
        (21, Outcome.REJECTED),
        (1, Outcome.REJECTED),
        (3, Outcome.REJECTED),
        (22, Outcome.REJECTED),
        (28, Outcome.REJECTED),
        (27, Outcome.CONGESTION),  # destination out of order: temporary, not the number
        (34, Outcome.CONGESTION),
        (38, Outcome.CONGESTION),
        (41, Outcome.CONGESTION),
        (42, Outcome.CONGESTION),
        (44, Outcome.CONGESTION),
        (66, Outcome.ERROR),  # dial template names a channel driver that is not loaded
    ],
)
def test_pjsip_cause_without_dialstatus(cause: int, expected: Outcome) -> None:
    assert _unanswered(None, cause) is expected


@pytest.mark.parametrize(
    ("dialstatus", "cause", "expected"),
    [
        ("BUSY", 17, Outcome.BUSY),
        ("busy", None, Outcome.BUSY),  # case-insensitive
        ("NOANSWER", 19, Outcome.NO_ANSWER),
        ("NOANSWER", 16, Outcome.NO_ANSWER),
        ("CANCEL", 16, Outcome.NO_ANSWER),
        ("CONGESTION", 34, Outcome.CONGESTION),
        ("CONGESTION", 16, Outcome.CONGESTION),  # 16 says nothing about a failure
        ("CHANUNAVAIL", None, Outcome.CONGESTION),
        ("CHANUNAVAIL", 1, Outcome.REJECTED),  # SIP 404 Not Found
        ("CHANUNAVAIL", 21, Outcome.REJECTED),  # SIP 403/603
        ("CHANUNAVAIL", 66, Outcome.ERROR),
        ("CONGESTION", 17, Outcome.BUSY),  # SIP 486 behind a failing proxy
        ("DONTCALL", None, Outcome.REJECTED),
        ("TORTURE", None, Outcome.REJECTED),
        ("INVALIDARGS", None, Outcome.ERROR),
    ],
)
def test_pjsip_dialstatus_with_cause(dialstatus: str, cause: int | None, expected: Outcome) -> None:
    assert _unanswered(dialstatus, cause) is expected


def test_nothing_known_on_sip_is_an_error_but_on_local_an_invalid_extension() -> None:
    assert _unanswered(None, 0) is Outcome.ERROR
    assert _unanswered(None, None) is Outcome.ERROR
    assert _unanswered(None, 0, technology="LOCAL") is Outcome.REJECTED


def test_unnamed_causes_fall_back_by_q850_class() -> None:
    assert _unanswered(None, 25) is Outcome.NO_ANSWER  # normal class
    assert _unanswered(None, 39) is Outcome.CONGESTION  # resource unavailable class
    assert _unanswered(None, 95) is Outcome.REJECTED  # invalid message class
    # the class edges: 1-31 normal, 32-47 resource unavailable, 48 and up rejected
    assert _unanswered(None, 30) is Outcome.NO_ANSWER
    assert _unanswered(None, 32) is Outcome.CONGESTION
    assert _unanswered(None, 46) is Outcome.CONGESTION
    assert _unanswered(None, 48) is Outcome.REJECTED


@pytest.mark.parametrize(
    ("answered", "confirmed", "cause", "expected"),
    [
        (True, True, None, Outcome.CONNECTED),
        (True, True, 16, Outcome.CONNECTED),
        (True, False, None, Outcome.NOT_CONFIRMED),  # still up: nobody pressed 1 in time
        (True, False, 16, Outcome.HANGUP),  # the customer hung up before pressing 1
        (False, False, 17, Outcome.BUSY),
        (False, True, 17, Outcome.BUSY),  # confirmed without an answer is impossible
    ],
)
def test_answered_and_confirmed_combinations(
    answered: bool, confirmed: bool, cause: int | None, expected: Outcome
) -> None:
    got = classify(
        dialstatus="ANSWER" if answered else "BUSY",
        cause=cause,
        answered=answered,
        confirmed=confirmed,
        technology="PJSIP",
    )
    assert got is expected


def test_dialstatus_answer_counts_as_answered_even_if_stasisstart_was_missed() -> None:
    got = classify(
        dialstatus="ANSWER", cause=16, answered=False, confirmed=False, technology="PJSIP"
    )
    assert got is Outcome.HANGUP


def test_agent_first_continue_is_answered_and_not_confirmed() -> None:
    """Agent-first: the customer's "press 1" gosub ended without a 1 (GOSUB_RESULT=CONTINUE);
    Asterisk 22 reports DialEnd DialStatus CONTINUE (recorded on the sandbox PBX)."""
    assert _unanswered("CONTINUE", None, "Local") is Outcome.NOT_CONFIRMED
    assert _unanswered("continue", None) is Outcome.NOT_CONFIRMED
    assert _unanswered("ABORT", None, "Local") is Outcome.NOT_CONFIRMED  # the agent hung up too


def test_describe_reads_like_the_record() -> None:
    assert describe("BUSY", 17, "User busy") == "BUSY/17 User busy"
    assert describe("busy", 17, "") == "BUSY/17 User busy"  # Q.850 name when none given
    assert describe(None, 19, "User alerting, no answer") == "-/19 User alerting, no answer"
    assert describe("", 0, "Unknown") == "-/0 Unknown"
    assert describe("CONGESTION", None, None) == "CONGESTION/-"
    assert describe("CHANUNAVAIL", 250, None) == "CHANUNAVAIL/250"


def test_q850_names_match_asterisk_cause_txt_in_the_transcripts() -> None:
    assert Q850[0] == "Unknown"
    assert Q850[16] == "Normal Clearing"
    assert Q850[17] == "User busy"
    assert Q850[19] == "User alerting, no answer"
    assert Q850[34] == "Circuit/channel congestion"

"""What the caller is told about when to expect the call: rounded up, never too early."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from callback_ari.core.estimator import promise_minutes
from callback_ari.core.prompts import position_media, wait_media

WAIT = ("sound:queue-holdtime", "sound:queue-minutes")


def test_promise_rounds_up_to_a_step_that_suits_its_size() -> None:
    cases = {
        1: 1, 59: 1, 60: 1, 61: 2, 119: 2, 600: 10,  # whole minutes up to 10
        601: 15, 11 * 60: 15, 15 * 60: 15, 16 * 60: 20, 59 * 60: 60, 3600: 60,  # 5-minute steps
        3601: 75, 61 * 60: 75, 80 * 60: 90, 2 * 3600: 120,  # 15-minute steps beyond an hour
    }  # fmt: skip
    assert {s: promise_minutes(s) for s in cases} == cases
    assert promise_minutes(0) == 1 and promise_minutes(-5) == 1  # never "0 minutes"


@given(st.floats(min_value=0.001, max_value=30 * 86400, allow_nan=False))
def test_a_promise_is_never_earlier_than_the_estimate(wait_s: float) -> None:
    minutes = promise_minutes(wait_s)
    assert minutes * 60 >= wait_s
    # ... and not absurdly later: within one step of the estimate
    step = 1 if minutes <= 10 else 5 if minutes <= 60 else 15
    assert minutes - step < max(1, math.ceil(wait_s / 60))


@given(st.floats(min_value=0, max_value=86400), st.floats(min_value=0, max_value=86400))
def test_a_longer_estimate_never_gets_a_shorter_promise(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert promise_minutes(low) <= promise_minutes(high)


def test_the_read_back_says_the_rounded_minutes() -> None:
    assert wait_media(WAIT, 17 * 60 + 5) == ("sound:queue-holdtime", "number:20",
                                             "sound:queue-minutes")  # fmt: skip
    assert wait_media(WAIT, None) == ()
    assert wait_media((), 300) == ()


def test_position_is_said_as_app_queue_says_it() -> None:
    prompt, first = (
        ("sound:queue-thereare", "sound:queue-callswaiting"),
        ("sound:queue-youarenext",),
    )
    assert position_media(prompt, first, 3) == ("sound:queue-thereare", "number:3",
                                                "sound:queue-callswaiting")  # fmt: skip
    assert position_media(prompt, first, 1) == first
    assert position_media(prompt, first, 0) == ()

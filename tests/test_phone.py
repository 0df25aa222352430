"""Phone numbers: what may be called back, dial strings, Asterisk patterns, masking."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callback_ari.config.loader import QueueConfig
from callback_ari.core.phone import (
    NumberPolicy,
    asterisk_pattern_match,
    check_pattern,
    dial_string,
    validate_number,
)
from callback_ari.errors import NumberRejected
from callback_ari.masking import mask, set_masking

US = NumberPolicy(region="US")
GB = NumberPolicy(region="GB")
OPEN = ("_X.", "_+X.")  # allow patterns that match anything
ARABIC_202 = "\u0662\u0660\u0662"  # Arabic-Indic digits are digits to str.isdigit()


def reason(raw: str, policy: NumberPolicy) -> str:
    with pytest.raises(NumberRejected) as info:
        validate_number(raw, policy)
    return info.value.reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025551234", "2025551234"),
        ("(202) 555-1234", "2025551234"),
        ("+1 202-555-1234", "2025551234"),
        ("1.202.555.1234", "2025551234"),
        ("  12025551234 ", "2025551234"),
    ],
)
def test_us_numbers_come_out_as_national_digits(raw: str, expected: str) -> None:
    assert validate_number(raw, US) == expected


def test_gb_national_numbers_keep_their_trunk_prefix() -> None:
    assert validate_number("020 7946 0018", GB) == "02079460018"
    assert validate_number("+44 20 7946 0018", GB) == "02079460018"


@pytest.mark.parametrize("raw", ["5551234", "4567", "20255512345678"])
def test_invalid_numbers(raw: str) -> None:
    assert reason(raw, US) == "invalid"


@pytest.mark.parametrize(
    "raw",
    [
        "202555123a",
        "anonymous",
        "202*5551234",
        "2025551234#",
        "1+2025551234",
        ARABIC_202 + "5551234",
    ],
)
def test_anything_but_digits_and_formatting_is_invalid_chars(raw: str) -> None:
    assert reason(raw, US) == "invalid_chars"


@pytest.mark.parametrize("raw", ["", "   ", "()", "+", "- ."])
def test_empty(raw: str) -> None:
    assert reason(raw, US) == "empty"


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("911", "US"),
        ("112", "US"),
        ("112", "DE"),
        ("110", "DE"),
        ("999", "GB"),
        ("112", "GB"),
        ("000", "AU"),
        ("15", "FR"),
        ("+1 911", "US"),
        ("1911", "US"),  # trunks may strip the long-distance 1
        ("0112", "GB"),  # ... or the trunk prefix 0
        ("0000", "AU"),
        ("119", "JP"),
    ],
)
def test_emergency_numbers_are_refused_even_when_allowed(raw: str, region: str) -> None:
    policy = NumberPolicy(region=region, allow_international=True, allow_patterns=OPEN)
    assert reason(raw, policy) == "emergency"
    assert reason(raw, NumberPolicy(region=region)) == "emergency"


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("9005551234", "US"),
        ("1-900-555-1234", "US"),
        ("0901 123 4567", "GB"),
        ("0871 234 5678", "GB"),
        ("+44 909 876 5432", "US"),
    ],
)
def test_premium_rate_is_refused_even_when_allowed(raw: str, region: str) -> None:
    policy = NumberPolicy(region=region, allow_international=True, allow_patterns=OPEN)
    assert reason(raw, policy) == "premium"
    assert reason(raw, NumberPolicy(region=region)) == "premium"


def test_international_is_refused_unless_allowed() -> None:
    for raw in ("+44 20 7946 0018", "011 44 20 7946 0018"):
        assert reason(raw, US) == "international"
        allowed = NumberPolicy(region="US", allow_international=True)
        assert validate_number(raw, allowed) == "+442079460018"
    # another NANP country shares +1 but is still outside the US
    assert reason("416 555 1234", US) == "international"


def test_deny_patterns_win_over_allow_patterns() -> None:
    policy = NumberPolicy(
        region="US", allow_patterns=("_NXXNXXXXXX",), deny_patterns=("_202NXXXXXX",)
    )
    assert reason("2025551234", policy) == "denied"
    assert validate_number("3125551234", policy) == "3125551234"


def test_deny_patterns_see_the_e164_form_too() -> None:
    policy = NumberPolicy(region="US", deny_patterns=("_+1202.",))
    assert reason("(202) 555-1234", policy) == "denied"


def test_allow_patterns_restrict_and_admit_internal_numbers() -> None:
    policy = NumberPolicy(region="US", allow_patterns=("_NXXNXXXXXX", "4711", "_8XXX"))
    assert validate_number("2025551234", policy) == "2025551234"
    assert validate_number("4711", policy) == "4711"  # not a valid public number, but allowed
    assert validate_number("8123", policy) == "8123"
    assert reason("4712", policy) == "not_allowed"
    assert reason("12025551234", NumberPolicy("US", allow_patterns=("_8XXX",))) == "not_allowed"
    assert reason("4711", US) == "invalid"


def test_allow_pattern_does_not_bypass_the_international_switch() -> None:
    policy = NumberPolicy(region="US", allow_patterns=("_+44.",))
    assert reason("+442079460018", policy) == "international"
    policy = NumberPolicy(region="US", allow_international=True, allow_patterns=("_+44.",))
    assert validate_number("+442079460018", policy) == "+442079460018"
    assert reason("+33 1 42 68 53 00", policy) == "not_allowed"


def test_policy_from_queue_config() -> None:
    q = QueueConfig(name="q", region="GB", allow_international=True, deny_patterns=("_07.",))
    assert NumberPolicy.from_queue(q) == NumberPolicy("GB", True, (), ("_07.",))


@pytest.mark.parametrize(
    ("pattern", "digits", "matches"),
    [
        ("_NXXNXXXXXX", "2025551234", True),
        ("_NXXNXXXXXX", "1025551234", False),
        ("_NXXNXXXXXX", "202555123", False),
        ("_NXX-XXXX", "5551234", True),
        ("_ZX", "10", True),
        ("_ZX", "01", False),
        ("_[1-5]XX", "399", True),
        ("_[1-5]XX", "699", False),
        ("_[135]", "3", True),
        ("_[135]", "2", False),
        ("_X.", "12", True),
        ("_X.", "1", False),
        ("_X!", "1", True),
        ("_+44.", "+442079460018", True),
        ("911", "911", True),
        ("911", "9111", False),
    ],
)
def test_asterisk_pattern_semantics(pattern: str, digits: str, matches: bool) -> None:
    assert asterisk_pattern_match(pattern, digits) is matches


@pytest.mark.parametrize("pattern", ["", "_[12", "_X.X", "_X$", "abc", "_[a-z]"])
def test_malformed_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(ValueError):
        check_pattern(pattern)
    assert asterisk_pattern_match(pattern, "123") is False


def test_dial_string_substitutes_the_validated_number() -> None:
    assert dial_string("PJSIP/{number}@trunk", "(202) 555-1234", US) == "PJSIP/2025551234@trunk"
    assert dial_string("PJSIP/{e164}@carrier", "2025551234", US) == "PJSIP/+12025551234@carrier"
    intl = NumberPolicy(region="US", allow_international=True)
    assert dial_string("PJSIP/{number}@t", "011442079460018", intl) == "PJSIP/+442079460018@t"


def test_dial_string_revalidates() -> None:
    with pytest.raises(NumberRejected) as info:
        dial_string("PJSIP/{number}@trunk", "911", US)
    assert info.value.reason == "emergency"
    with pytest.raises(NumberRejected) as info:
        dial_string("PJSIP/{number}@trunk", "2025551234&PJSIP/666", US)
    assert info.value.reason == "invalid_chars"


@pytest.mark.parametrize(
    "template", ["PJSIP/{number},30", "PJSIP/{number}&DAHDI/1", "PJSIP/{x}", "PJSIP/trunk", "{{n}"]
)
def test_dial_string_refuses_unsafe_templates(template: str) -> None:
    with pytest.raises(NumberRejected) as info:
        dial_string(template, "2025551234", US)
    assert info.value.reason == "invalid_chars"


@pytest.fixture
def masking() -> Iterator[None]:
    yield
    set_masking(True)


def test_mask_shows_only_the_last_four(masking: None) -> None:
    assert mask("+12025551234") == "********1234"
    assert mask("2025551234") == "******1234"
    assert mask(mask("2025551234")) == "******1234"
    assert mask("911") == "***"
    assert mask(None) == ""
    assert mask("") == ""
    set_masking(False)
    assert mask("2025551234") == "2025551234"

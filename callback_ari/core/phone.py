"""Phone numbers: validate what a caller keyed or presented, build dial strings, match patterns."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Protocol

import phonenumbers
from phonenumbers import shortnumberinfo

from callback_ari.errors import NumberRejected

# Numbers that must never be called back, whatever phonenumbers' metadata says: emergency and
# public-safety short codes of the regions callback-ari is likely to serve.
EMERGENCY_NUMBERS = frozenset(
    {
        "911", "112", "999", "000", "110", "118", "119", "100", "101", "102", "103", "104",
        "106", "108", "111", "113", "115", "117", "120", "122", "123", "133", "15", "17", "18",
        "08", "061", "062", "063", "065", "066", "995", "997", "998",
    }
)  # fmt: skip

REASONS = frozenset(
    {"empty", "invalid_chars", "invalid", "emergency", "premium", "international", "denied"}
) | {"not_allowed"}

_FORMATTING = frozenset(" -.()")
_MAX_INPUT = 64  # longer than any caller ID or keyed number; refuse before parsing
_MAX_DIGITS = 20
# Everything a dial string may contain after substitution: no ',', '&', '$', quotes, spaces ...
_SAFE_DIAL = re.compile(r"^[A-Za-z0-9_./@:+*#-]+$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_REFUSED_TYPES = {
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
}


class _NumberSettings(Protocol):
    """The part of a queue's configuration that governs which numbers may be called."""

    @property
    def region(self) -> str: ...
    @property
    def allow_international(self) -> bool: ...
    @property
    def allow_patterns(self) -> tuple[str, ...]: ...
    @property
    def deny_patterns(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class NumberPolicy:
    """Which numbers a queue may call back."""

    region: str = "US"
    allow_international: bool = False
    allow_patterns: tuple[str, ...] = ()
    deny_patterns: tuple[str, ...] = ()

    @classmethod
    def from_queue(cls, q: _NumberSettings) -> NumberPolicy:
        """The policy of one configured queue."""
        return cls(q.region, q.allow_international, q.allow_patterns, q.deny_patterns)


def validate_number(raw: str, policy: NumberPolicy) -> str:
    """Return the dial-safe form of ``raw`` or raise NumberRejected with a stable reason.

    ``raw`` is DTMF digits or a caller ID. The result holds only digits and an optional leading
    '+': a domestic number in national dialling form (2025551234, 02079460018), any other as +E.164.
    """
    text = raw.strip()
    if not text:
        raise NumberRejected("empty")
    if len(text) > _MAX_INPUT:
        raise NumberRejected("invalid", "too long")
    plus = text.startswith("+")
    body = text[1:] if plus else text
    if any(not (c.isascii() and c.isdigit()) and c not in _FORMATTING for c in body):
        raise NumberRejected("invalid_chars")
    digits = "".join(c for c in body if c.isdigit())
    if not digits:
        raise NumberRejected("empty")
    if len(digits) > _MAX_DIGITS:
        raise NumberRejected("invalid", "too many digits")
    region = policy.region.upper()
    keyed = ("+" if plus else "") + digits
    if any(_is_emergency(d, region) for d in _dialled_variants(digits, region)):
        raise NumberRejected("emergency", "emergency number")

    parsed: phonenumbers.PhoneNumber | None
    try:
        parsed = phonenumbers.parse(keyed, region)
    except phonenumbers.NumberParseException:
        parsed = None
    valid = parsed is not None and phonenumbers.is_valid_number(parsed)
    forms = [keyed]
    dial = keyed
    foreign = False
    if parsed is not None:
        nsn = phonenumbers.national_significant_number(parsed)
        if _is_emergency(nsn, region) or (
            valid and _is_emergency(nsn, phonenumbers.region_code_for_number(parsed) or region)
        ):
            raise NumberRejected("emergency", "emergency number")
        if phonenumbers.number_type(parsed) in _REFUSED_TYPES or _is_premium_short(parsed, region):
            raise NumberRejected("premium", "premium-rate or shared-cost number")
        if valid:
            dial, foreign = _dial_form(parsed, region)
            forms = [dial, phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)]
            forms.append(keyed)

    if any(asterisk_pattern_match(p, f) for p in policy.deny_patterns for f in forms):
        raise NumberRejected("denied", "matches a deny pattern")
    if policy.allow_patterns:
        if not any(asterisk_pattern_match(p, f) for p in policy.allow_patterns for f in forms):
            raise NumberRejected("not_allowed", "matches no allow pattern")
        if not valid:
            return keyed  # e.g. an internal extension the admin allowed explicitly
    if not valid:
        raise NumberRejected("invalid", "not a valid number for region " + region)
    if foreign and not policy.allow_international:
        raise NumberRejected("international", "international numbers are not allowed")
    return dial


def _dial_form(parsed: phonenumbers.PhoneNumber, region: str) -> tuple[str, bool]:
    """(dialable digits, is it outside ``region``) of a valid number."""
    number_region = phonenumbers.region_code_for_number(parsed)
    foreign = number_region != region
    if parsed.country_code == phonenumbers.country_code_for_region(region):
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(c for c in national if c.isdigit()), foreign
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), foreign


def _dialled_variants(digits: str, region: str) -> set[str]:
    """``digits`` and what a trunk may see after stripping prefixes: 1911 -> 911, 0112 -> 112."""
    variants = {digits}
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    cc = str(phonenumbers.country_code_for_region(region))
    prefixes = [cc, meta.national_prefix if meta else None]
    if meta and meta.international_prefix and meta.international_prefix.isdigit():
        prefixes.append(meta.international_prefix + cc)
    for prefix in prefixes:
        if prefix and prefix != "0" and digits.startswith(prefix):
            variants.add(digits[len(prefix) :])
        elif prefix == "0" and digits.startswith("0") and len(digits) > 1:
            variants.add(digits[1:])
    return variants


def _is_emergency(digits: str, region: str) -> bool:
    if digits in EMERGENCY_NUMBERS:
        return True
    try:
        return bool(
            shortnumberinfo.is_emergency_number(digits, region)
            or shortnumberinfo.connects_to_emergency_number(digits, region)
        )
    except Exception:  # phonenumbers raises on unknown regions; treat as not emergency here
        return False


def _is_premium_short(parsed: phonenumbers.PhoneNumber, region: str) -> bool:
    try:
        cost = shortnumberinfo.expected_cost_for_region(parsed, region)
    except Exception:  # unknown region metadata
        return False
    return bool(cost == shortnumberinfo.ShortNumberCost.PREMIUM_RATE)


def e164(number: str, policy: NumberPolicy) -> str:
    """The +E.164 form of an already validated number (itself if it has no E.164 form)."""
    if number.startswith("+"):
        return number
    try:
        parsed = phonenumbers.parse(number, policy.region.upper())
    except phonenumbers.NumberParseException:
        return number
    if not phonenumbers.is_valid_number(parsed):
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def check_dial_template(template: str) -> None:
    """Raise ValueError unless ``template`` has {number} or {e164} and no other placeholder."""
    names = _PLACEHOLDER.findall(template)
    if not names:
        raise ValueError("must contain {number} or {e164}")
    unknown = sorted({n for n in names if n not in ("number", "e164")})
    if unknown:
        raise ValueError("unknown placeholder " + ", ".join("{" + n + "}" for n in unknown))
    rest = _PLACEHOLDER.sub("0", template)
    if "{" in rest or "}" in rest:
        raise ValueError("unbalanced braces")
    if not _SAFE_DIAL.match(rest):
        raise ValueError("may only contain letters, digits and / @ : . _ + * # -")


def dial_string(template: str, number: str, policy: NumberPolicy) -> str:
    """Re-validate ``number`` under ``policy`` and substitute it into the dial template."""
    try:
        check_dial_template(template)
    except ValueError as exc:
        raise NumberRejected("invalid_chars", f"bad dial template: {exc}") from exc
    checked = validate_number(number, policy)
    values = {"number": checked, "e164": e164(checked, policy)}
    result = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if not _SAFE_DIAL.match(result):
        raise NumberRejected("invalid_chars", "dial string would contain unsafe characters")
    return result


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile an Asterisk extension pattern (or a literal number) to an anchored regex.

    ``_`` starts a pattern: X = 0-9, Z = 1-9, N = 2-9, [15-7] = a set, ``.`` = one or more of
    anything, ``!`` = zero or more; ``-`` is ignored for readability. Anything else is literal.
    Raises ValueError for a malformed pattern.
    """
    if not pattern:
        raise ValueError("empty pattern")
    if not pattern.startswith("_"):
        if not re.fullmatch(r"\+?[0-9*#]+", pattern):
            raise ValueError(f"not a number or an _pattern: {pattern!r}")
        return re.compile(re.escape(pattern))
    out: list[str] = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        c = body[i].upper()
        if c in ".!":
            if i != len(body) - 1:
                raise ValueError(f"'{c}' must be the last character of {pattern!r}")
            out.append(".+" if c == "." else ".*")
        elif c == "X":
            out.append("[0-9]")
        elif c == "Z":
            out.append("[1-9]")
        elif c == "N":
            out.append("[2-9]")
        elif c == "-":
            pass
        elif c == "[":
            end = body.find("]", i)
            if end < 0:
                raise ValueError(f"unclosed '[' in {pattern!r}")
            inner = body[i + 1 : end]
            if not inner or not re.fullmatch(r"[0-9*#+]([0-9*#+]|-[0-9])*", inner):
                raise ValueError(f"bad character set [{inner}] in {pattern!r}")
            out.append("[" + "".join("-" if ch == "-" else re.escape(ch) for ch in inner) + "]")
            i = end
        elif c in "0123456789*#+":
            out.append(re.escape(c))
        else:
            raise ValueError(f"unexpected {body[i]!r} in {pattern!r}")
        i += 1
    return re.compile("".join(out))


def check_pattern(pattern: str) -> None:
    """Raise ValueError if ``pattern`` is not a valid allow/deny pattern."""
    compile_pattern(pattern)


def asterisk_pattern_match(pattern: str, digits: str) -> bool:
    """True if ``digits`` matches the Asterisk extension ``pattern`` (literal: exact match)."""
    try:
        return compile_pattern(pattern).fullmatch(digits) is not None
    except ValueError:
        return False

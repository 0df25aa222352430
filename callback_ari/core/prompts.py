"""Every prompt of both dialogues, declared once: name, stock default and what the caller hears.

Every default below is a file of the stock ``asterisk-core-sounds-en`` package (1.5 and later),
so a fresh Asterisk plays the whole dialogue without custom recordings. The stock set has no
sentence that says "call you back", so ``offer`` in particular deserves a real recording.
Replace any prompt per queue with ``prompt_<name> = sound:a, recording:b`` (an empty value
plays nothing for that step). The config keys, the example config and the README table are
generated from ``PROMPTS``.

Numbers are spoken by Asterisk itself: the read-back is ``digits:<number>`` (digit by digit,
a leading ``+`` is not spoken) and the wait estimate inserts ``number:<minutes>`` before the
last media of ``wait_estimate`` (after it when there is only one), so a recording pair like
``recording:we-call-in, recording:minutes`` reads naturally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from callback_ari.core.estimator import promise_minutes


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt: its config name (``prompt_<name>``), stock media, and what it says."""

    name: str
    default: tuple[str, ...]
    hears: str  # what the caller hears with the default media, and when


PROMPTS: tuple[Prompt, ...] = (
    Prompt("offer", ("sound:queue-thankyou", "sound:vm-press", "sound:digits/1"),
           '"Thank you for your patience. Press... one." (for a callback; 2 or silence keeps '
           "holding)"),
    Prompt("confirm_callerid", ("sound:vm-num-i-have",),
           '"The number I have is" -- then the caller ID is read back.'),
    Prompt("enter_number", ("sound:privacy-prompt", "sound:vm-then-pound"),
           '"Please enter your phone number, starting with the area code. Then press pound."'),
    Prompt("readback_intro", ("sound:you-entered",),
           '"You entered" -- then the keyed number is read back.'),
    Prompt("confirm_number", ("sound:if-correct-press", "sound:digits/1", "sound:vm-calldiffnum"),
           '"If this is correct, press one. Press 2 to enter a different number."'),
    Prompt("invalid", ("sound:privacy-incorrect",),
           "\"I'm sorry, that number is not valid.\" (invalid, international, refused)"),
    Prompt("too_many_tries", ("sound:vm-sorry",),
           "\"I'm sorry I did not understand your response.\" Too many wrong entries; the "
           "caller returns to the queue."),
    Prompt("already_pending", ("sound:auth-thankyou",),
           '"Thank you." This number already has a callback pending; it is kept.'),
    Prompt("stored", ("sound:num-was-successfully", "sound:added"),
           'The callback is booked: "The number was successfully added."'),
    Prompt("wait_estimate", ("sound:queue-holdtime", "sound:queue-minutes"),
           '"The estimated hold time is currently <N> minutes": number:<N> is inserted before '
           "the last media (after it when there is only one)."),
    Prompt("position", ("sound:queue-thereare", "sound:queue-callswaiting"),
           'With announce_position, before the offer: "There are <N> calls waiting" '
           "(number:<N> inserted like the wait)."),
    Prompt("position_first", ("sound:queue-youarenext",),
           'With announce_position, at position 1: "You are next."'),
    Prompt("reason_for", ("sound:for",),
           'The reason menu, per entry: "For" <reason> "press" <digit> (queues with reasons).'),
    Prompt("reason_press", ("sound:vm-press",), 'The reason menu: "press".'),
    Prompt("record_intro", ("sound:vm-intro",),
           'With record_message, after booking: "Please leave your message after the tone. '
           'When done, hang up or press the pound key." (record "After the tone, say your name '
           'and why you called, then press pound"). # during it skips the message, another '
           'key starts recording at once.'),
    Prompt("returning_to_queue", ("sound:queue-thankyou",),
           '"Thank you for your patience." The caller goes back to the queue, keeping their '
           "place."),
    Prompt("sorry_error", ("sound:sorry",),
           "Something failed on our side (store unavailable): \"We're sorry.\", then back to "
           "the queue."),
    Prompt("callback_intro", ("sound:queue-thankyou",),
           'Callback call, on answer (record "This is your requested callback from ...").'),
    Prompt("callback_press1", ("sound:vm-press", "sound:digits/1"),
           'Callback call: "Press... one." to be connected.'),
    Prompt("callback_connecting", ("sound:queue-youarenext",),
           'Confirmed: "You are next."'),
    Prompt("whisper", ("sound:callback-announce",),
           "The agent hears this, then the caller's reason and recorded message, before being "
           "bridged to a callback (queues with reasons or record_message)."),
    Prompt("goodbye", ("sound:vm-goodbye",), 'Before hanging up: "Goodbye."'),
)  # fmt: skip

PROMPT_NAMES: tuple[str, ...] = tuple(p.name for p in PROMPTS)

DEFAULT_PROMPTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {p.name: p.default for p in PROMPTS}
)

# Stock sounds of other languages lack some English files; a queue with ``language`` set gets
# these instead of the English defaults it would otherwise hear in English (Asterisk falls back
# to en for a missing file). Checked against Debian's asterisk-core-sounds-es-gsm 1.6.
LANGUAGE_PROMPTS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "es": MappingProxyType(
            {
                # "El número que tengo es" (no "you entered" in es)
                "readback_intro": ("sound:vm-num-i-have",),
                # "Presione 1. Para marcar otro número, presione 2."
                "confirm_number": ("sound:vm-press", "sound:digits/1", "sound:vm-calldiffnum"),
                "stored": ("sound:auth-thankyou",),  # "Gracias"
                "sorry_error": ("sound:vm-sorry",),
                # no "for" in es: the menu says "<reason>, presione <digit>"
                "reason_for": (),
            }
        ),
    }
)


def language_defaults(language: str) -> Mapping[str, tuple[str, ...]]:
    """Default prompts that differ for ``language`` (es, es_MX... share es); {} if none."""
    return LANGUAGE_PROMPTS.get(language.split("_")[0].lower(), MappingProxyType({}))


def playback_files(media: tuple[str, ...]) -> str:
    """A prompt as dialplan ``Playback``/``Read`` take it, ``file&file``; '' = nothing to play.

    Only ``sound:`` media are files a dialplan application plays; the others (recording:,
    digits:, number:, tone:) are left out. Sound names are validated by the config (letters,
    digits, ``_ . / -``), so the value can never carry dialplan syntax (, ^ ( ) |).
    """
    return "&".join(m.removeprefix("sound:") for m in media if m.startswith("sound:"))


_DIGITS = frozenset("0123456789")


def readback_media(number: str) -> tuple[str, ...]:
    """``digits:`` media for a dial-safe number; ``+`` is not spoken (``digits:`` takes digits).

    Raises ValueError for anything else: the validator promised digits and an optional ``+``.
    """
    spoken = number.removeprefix("+")
    if not spoken or not set(spoken) <= _DIGITS:
        raise ValueError("validated number is not digits with an optional leading '+'")
    return (f"digits:{spoken}",)


def wait_media(prompt: tuple[str, ...], wait_s: float | None) -> tuple[str, ...]:
    """The wait estimate in minutes, rounded up (``promise_minutes``); nothing if unknown."""
    if not prompt or wait_s is None or not math.isfinite(wait_s) or wait_s <= 0:
        return ()
    return _with_number(prompt, promise_minutes(wait_s))


def position_media(
    prompt: tuple[str, ...], first: tuple[str, ...], position: int
) -> tuple[str, ...]:
    """The caller's queue position, as app_queue says it: "you are next" at 1, else
    "there are <N> calls waiting"; nothing when the position is unknown (0)."""
    if position <= 0:
        return ()
    if position == 1:
        return first
    return _with_number(prompt, position) if prompt else ()


def _with_number(prompt: tuple[str, ...], n: int) -> tuple[str, ...]:
    """``number:<n>`` before the last media (after it when there is only one)."""
    number = f"number:{n}"
    if len(prompt) == 1:
        return (*prompt, number)
    return (*prompt[:-1], number, prompt[-1])

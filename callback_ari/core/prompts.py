"""The offer dialogue's prompts: stock Asterisk English defaults and how numbers are spoken.

Every default below is a file of the stock ``asterisk-core-sounds-en`` package (1.5 and later),
so a fresh Asterisk plays the whole dialogue without custom recordings. The stock set has no
sentence that says "call you back", so ``offer`` in particular deserves a real recording.
Replace any prompt per queue with ``prompt_<name> = sound:a, recording:b`` (an empty value
plays nothing for that step).

=====================  ================================================  ===========================
prompt                 default media                                     what the caller hears
=====================  ================================================  ===========================
offer                  sound:queue-thankyou, sound:vm-press,             "Thank you for your
                       sound:digits/1                                    patience. Press... one."
confirm_callerid       sound:vm-num-i-have                               "The number I have is"
                                                                         (then the caller ID)
enter_number           sound:privacy-prompt, sound:vm-then-pound         "Please enter your phone
                                                                         number, starting with the
                                                                         area code. Then press
                                                                         pound."
readback_intro         sound:you-entered                                 "You entered" (then the
                                                                         number)
confirm_number         sound:if-correct-press, sound:digits/1,           "If this is correct,
                       sound:vm-calldiffnum                              press... one. Press 2 to
                                                                         enter a different number."
invalid                sound:privacy-incorrect                           "I'm sorry, that number is
                                                                         not valid."
too_many_tries         sound:vm-sorry                                    "I'm sorry I did not
                                                                         understand your response."
already_pending        sound:auth-thankyou                               "Thank you."
stored                 sound:num-was-successfully, sound:added           "The number was
                                                                         successfully... added."
wait_estimate          sound:queue-holdtime, sound:queue-minutes         "The estimated hold time
                                                                         is currently <N> minutes."
returning_to_queue     sound:queue-thankyou                              "Thank you for your
                                                                         patience."
sorry_error            sound:sorry                                       "We're sorry."
goodbye                sound:vm-goodbye                                  "Goodbye."
=====================  ================================================  ===========================

Numbers are spoken by Asterisk itself: the read-back is ``digits:<number>`` (digit by digit,
a leading ``+`` is not spoken) and the wait estimate inserts ``number:<minutes>`` before the
last media of ``wait_estimate`` (after it when there is only one), so a recording pair like
``recording:we-call-in, recording:minutes`` reads naturally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

PROMPT_NAMES: tuple[str, ...] = (
    "offer", "confirm_callerid", "enter_number", "readback_intro", "confirm_number", "invalid",
    "too_many_tries", "already_pending", "stored", "wait_estimate", "returning_to_queue",
    "sorry_error", "goodbye",
)  # fmt: skip

DEFAULT_PROMPTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "offer": ("sound:queue-thankyou", "sound:vm-press", "sound:digits/1"),
        "confirm_callerid": ("sound:vm-num-i-have",),
        "enter_number": ("sound:privacy-prompt", "sound:vm-then-pound"),
        "readback_intro": ("sound:you-entered",),
        "confirm_number": ("sound:if-correct-press", "sound:digits/1", "sound:vm-calldiffnum"),
        "invalid": ("sound:privacy-incorrect",),
        "too_many_tries": ("sound:vm-sorry",),
        "already_pending": ("sound:auth-thankyou",),
        "stored": ("sound:num-was-successfully", "sound:added"),
        "wait_estimate": ("sound:queue-holdtime", "sound:queue-minutes"),
        "returning_to_queue": ("sound:queue-thankyou",),
        "sorry_error": ("sound:sorry",),
        "goodbye": ("sound:vm-goodbye",),
    }
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
            }
        ),
    }
)


def language_defaults(language: str) -> Mapping[str, tuple[str, ...]]:
    """Default prompts that differ for ``language`` (es, es_MX... share es); {} if none."""
    return LANGUAGE_PROMPTS.get(language.split("_")[0].lower(), MappingProxyType({}))


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
    """The wait estimate in whole minutes (at least 1); nothing if unknown or no prompt set."""
    if not prompt or wait_s is None or not math.isfinite(wait_s) or wait_s <= 0:
        return ()
    minutes = f"number:{max(1, math.ceil(wait_s / 60))}"
    if len(prompt) == 1:
        return (*prompt, minutes)
    return (*prompt[:-1], minutes, prompt[-1])

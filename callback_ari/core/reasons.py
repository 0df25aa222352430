"""A queue's reason menu (``reasons = 1:billing, 2:technical=sound:custom/tech``), parsed.

Each entry is ``DIGIT:NAME`` with an optional ``=sound:FILE``: the prompt said for the reason
in the caller's menu and whispered to the agent. Without it the prompt is
``sound:callback-reason-NAME`` (record it, or name a file that exists).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENTRY = re.compile(
    r"([0-9])\s*:\s*([a-z][a-z0-9_-]{0,31})(?:=sound:([A-Za-z0-9_][A-Za-z0-9_./-]*))?"
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One menu entry: the key, the name stored on the callback, the sound said for it."""

    digit: str
    name: str
    sound: str  # a sound name without "sound:" (Playback and Queue take it as is)

    @property
    def media(self) -> tuple[str, ...]:
        return (f"sound:{self.sound}",)


def parse_reasons(entries: tuple[str, ...]) -> tuple[Reason, ...]:
    """The menu in order; ValueError naming the bad entry, a repeated digit or name."""
    out: list[Reason] = []
    for raw in entries:
        m = _ENTRY.fullmatch(raw.strip())
        if m is None or ".." in raw:
            raise ValueError(
                f"bad reason {raw!r}: use DIGIT:NAME or DIGIT:NAME=sound:FILE "
                "(NAME: lower-case letters, digits, _ or -)"
            )
        digit, name, sound = m.group(1), m.group(2), m.group(3)
        if any(r.digit == digit for r in out) or any(r.name == name for r in out):
            raise ValueError(f"reason {raw!r} repeats a digit or a name")
        out.append(Reason(digit, name, sound or f"callback-reason-{name}"))
    return tuple(out)


def whisper_files(
    prompt: tuple[str, ...], reasons: tuple[Reason, ...], reason: str, *, recorded: bool = False
) -> str:
    """What the member hears before the bridge, as Playback's ``file&file``; '' = nothing.

    Only for a queue with a reason menu or a recorded message (``recorded``: the dialplan
    plays it after these): "callback" (``prompt``'s sound: media) and the reason's sound
    when the caller picked one. Names are the validated sound names, so the value can never
    carry dialplan syntax.
    """
    if not reasons and not recorded:
        return ""
    files = [m.removeprefix("sound:") for m in prompt if m.startswith("sound:")]
    picked = next((r for r in reasons if r.name == reason), None)
    if picked is not None:
        files.append(picked.sound)
    return "&".join(files)

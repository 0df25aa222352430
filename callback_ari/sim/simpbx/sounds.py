"""Stock core sounds the fake knows (with durations) and how long any media URI plays."""

from __future__ import annotations

from dataclasses import dataclass

# Seconds, as played by Asterisk 22 with asterisk-core-sounds-en. queue-thankyou and
# vm-enter-num-to-call are measured in the recordings; the rest are close estimates.
CORE_SOUNDS: dict[str, float] = {
    "queue-thankyou": 1.60,
    "vm-enter-num-to-call": 2.04,
    "queue-youarenext": 1.70,
    "queue-holdtime": 2.20,
    "queue-minutes": 0.80,
    "queue-seconds": 0.80,
    "queue-callswaiting": 1.90,
    "queue-thereare": 0.90,
    "queue-less-than": 0.70,
    "queue-periodic-announce": 3.40,
    "queue-reporthold": 1.20,
    "vm-press": 0.50,
    "vm-num-i-have": 1.30,
    "vm-then-pound": 0.90,
    "vm-calldiffnum": 2.60,
    "vm-sorry": 0.70,
    "vm-goodbye": 0.70,
    "vm-star-cancel": 1.70,
    "vm-isunavail": 1.60,
    "vm-intro": 3.90,
    "privacy-prompt": 3.30,
    "privacy-incorrect": 2.10,
    "privacy-thankyou": 0.80,
    "you-entered": 0.80,
    "if-correct-press": 1.30,
    "auth-thankyou": 0.70,
    "num-was-successfully": 1.30,
    "added": 0.50,
    "sorry": 0.60,
    "goodbye": 0.60,
    "hello-world": 1.10,
    "beep": 0.27,
    "agent-pass": 1.00,
    "please-try-again": 1.00,
    "pls-try-call-later": 1.90,
    "invalid": 1.10,
    "tt-monkeys": 7.50,
    "tt-weasels": 2.60,
    "demo-congrats": 11.40,
    "conf-now-muted": 1.30,
    "transfer": 0.90,
    "pbx-invalid": 2.00,
    "please-hold": 0.80,
    "one-moment-please": 0.90,
    "thank-you-for-calling": 1.10,
    "connecting": 0.80,
    "ss-noservice": 2.80,
}
for _digit in "0123456789":
    CORE_SOUNDS[f"digits/{_digit}"] = 0.55
for _n in range(1, 11):
    CORE_SOUNDS[f"silence/{_n}"] = float(_n)

DIGIT_SECONDS = 0.84  # per digit of digits:N and per word of number:N (5551234 -> 5.87 s)
TONE_SECONDS = 3600.0  # tone: plays until stopped


@dataclass(frozen=True, slots=True)
class SoundInfo:
    """What GET /sounds/{id} describes."""

    sound_id: str
    duration: float

    def to_json(self) -> dict[str, object]:
        """The ARI Sound model."""
        return {
            "id": self.sound_id,
            "text": "",
            "formats": [{"language": "en", "format": "gsm"}],
        }


def _number_words(n: int) -> int:
    """How many recorded words ast_say_number uses for n (English)."""
    if n < 0:
        return 1 + _number_words(-n)
    if n < 20:
        return 1
    if n < 100:
        return 1 if n % 10 == 0 else 2
    if n < 1000:
        return 2 + (0 if n % 100 == 0 else _number_words(n % 100))
    for size in (1_000_000_000, 1_000_000, 1000):
        if n >= size:
            rest = n % size
            return _number_words(n // size) + 1 + (0 if rest == 0 else _number_words(rest))
    return 1


def lookup(sound_id: str) -> SoundInfo | None:
    """A known stock sound, or None."""
    duration = CORE_SOUNDS.get(sound_id)
    return None if duration is None else SoundInfo(sound_id, duration)


def all_sounds() -> list[SoundInfo]:
    """Every sound the fake knows, sorted by id."""
    return [SoundInfo(k, v) for k, v in sorted(CORE_SOUNDS.items())]


def media_duration(uri: str) -> float | None:
    """Seconds a media URI plays, or None when Asterisk would fail to play it."""
    scheme, _, rest = uri.partition(":")
    if scheme == "sound":
        info = lookup(rest)
        return None if info is None else info.duration
    if scheme == "digits":
        return round(DIGIT_SECONDS * len(rest), 3) if rest else 0.0
    if scheme == "characters":
        return round(DIGIT_SECONDS * len(rest), 3)
    if scheme == "number":
        try:
            return round(DIGIT_SECONDS * _number_words(int(rest)), 3)
        except ValueError:
            return None
    if scheme == "tone":
        return TONE_SECONDS
    return None  # recording: (none stored), unsupported schemes

"""Phone-number masking for logs, the API and the CLI: a process-wide switch and ``mask``."""

from __future__ import annotations

_masking = True


def set_masking(enabled: bool) -> None:
    """Turn masking of numbers by mask() on or off for the whole process."""
    global _masking
    _masking = enabled


def masking_enabled() -> bool:
    """Whether mask() currently hides digits."""
    return _masking


def mask(number: str | None) -> str:
    """Hide all but the last four characters of a number ("*******1234"); idempotent."""
    if not number:
        return ""
    if not _masking:
        return number
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]

"""The caller's recorded message: its name (derived from the callback id), and when it goes.

A recording is named ``callback-<callback id>``: nothing the caller typed or said reaches the
name, so it is safe in an ARI path and in the member's ``Playback()``. The service keeps it
while the callback lives and deletes it ``recording_retention`` seconds after the callback
became final (connected, failed, cancelled, expired) or vanished from the store.
"""

from __future__ import annotations

import re

from callback_ari.models import Callback

PREFIX = "callback-"
FORMAT = "wav"  # what ARI records in; Playback() finds it without the extension
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NAME = re.compile(re.escape(PREFIX) + _ID.pattern)


def recording_name(callback_id: str) -> str:
    """The stored recording's name for a callback; ValueError for an id we never generate."""
    if not _ID.fullmatch(callback_id):
        raise ValueError(f"not a callback id usable in a recording name: {callback_id!r}")
    return PREFIX + callback_id


def is_recording_name(name: str) -> bool:
    """Whether ``name`` is one of ours (``callback-<id>``) and safe in a path."""
    return _NAME.fullmatch(name) is not None


def callback_id_of(name: str) -> str | None:
    """The callback a stored recording belongs to; None for anyone else's recording."""
    return name.removeprefix(PREFIX) if is_recording_name(name) else None


def deletable(cb: Callback | None, now_ms: int, retention_s: int) -> bool:
    """Whether a recording may go: its callback is gone, or final for ``retention_s`` or more.

    A live callback (pending, dialing, retry_wait) keeps its recording: the agent has not
    heard it yet.
    """
    if cb is None:
        return True
    if cb.state.is_live:
        return False
    return now_ms - cb.updated_ms >= retention_s * 1000

"""FreePBX: what ``check`` knows about it, read from files FreePBX writes and files it leaves alone.

FreePBX regenerates ``queues_additional.conf`` (one ``[<queue number>]`` section per queue) on
every Apply Config; an administrator adds to a queue in ``queues_post_custom.conf``, which
``queues.conf`` includes after it, with ``[400](+)``. The kit's exit-digit context has to get
there: a ``context =`` written anywhere FreePBX regenerates is lost on the next reload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Contexts every FreePBX 16/17 dialplan has and a plain Asterisk does not.
FREEPBX_CONTEXTS = ("from-internal", "ext-queues")
ETC = Path("/etc/asterisk")
GENERATED = "queues_additional.conf"
CUSTOM = "queues_post_custom.conf"

_SECTION = re.compile(r"^\[([^\]]+)\]\s*(\(([^)]*)\))?")


def queue_contexts(text: str) -> dict[str, str]:
    """``context =`` of each section of a queues*.conf text (the last one wins, as in
    Asterisk); ``[400](+)`` adds to the section of the same name, ``[400]`` starts it."""
    found: dict[str, str] = {}
    section: str | None = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            if "+" not in (m.group(3) or ""):
                found.pop(section, None)
            continue
        key, sep, value = line.partition("=")
        if section and sep and key.strip().rstrip(">").strip() == "context":
            found[section] = value.lstrip(">").strip()
    return found


@dataclass(frozen=True, slots=True)
class QueueContext:
    """What the two files say about one queue's ``context =``."""

    generated: str | None  # from queues_additional.conf (the Break Out Menu, if any)
    custom: str | None  # from queues_post_custom.conf

    @property
    def effective(self) -> str | None:
        return self.custom if self.custom is not None else self.generated


def read_queue_context(queue: str, etc: Path = ETC) -> QueueContext:
    """The queue's context in FreePBX's files; OSError if they cannot be read."""
    generated = queue_contexts((etc / GENERATED).read_text(errors="replace")).get(queue)
    custom_path = etc / CUSTOM
    custom_text = custom_path.read_text(errors="replace") if custom_path.exists() else ""
    return QueueContext(generated, queue_contexts(custom_text).get(queue))


def context_fix(queue: str, exit_context: str, etc: Path = ETC) -> str:
    """The lines to add, and where: the file FreePBX leaves alone."""
    return (
        f"add `[{queue}](+)` and `context = {exit_context}` to {etc / CUSTOM} (FreePBX rewrites "
        f"{GENERATED} on every Apply Config), leave the queue's Break Out Menu empty, then "
        "`fwconsole reload`"
    )

"""AMI wire format: an incremental parser of server bytes into messages and an action encoder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import structlog

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
"""A message (or a single line) longer than this is dropped; Asterisk's largest are a few KiB."""

MessageKind: TypeAlias = Literal["banner", "response", "event", "action"]
FieldValue: TypeAlias = str | int | bool | Sequence[str]

_KIND_BY_KEY: dict[str, MessageKind] = {
    "event": "event",
    "response": "response",
    "action": "action",
}


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI message: an ordered multi-dict of ``Key: Value`` headers.

    Keys are looked up case-insensitively (Asterisk spells ``ActionID`` both ways across
    modules); repeated keys such as ``ChanVariable`` are all kept, in wire order.
    """

    kind: MessageKind
    fields: tuple[tuple[str, str], ...] = ()
    banner: str = ""
    _index: dict[str, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, list[str]] = {}
        for key, value in self.fields:
            index.setdefault(key.lower(), []).append(value)
        self._index.update({k: tuple(v) for k, v in index.items()})

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> AmiMessage:
        """Build a message from headers, deriving its kind (used by tests and fakes)."""
        fields = tuple(pairs)
        return cls(kind=_kind_of(fields) or "event", fields=fields)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        values = self._index.get(key.lower())
        return values[0] if values else default

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated header, in wire order."""
        return list(self._index.get(key.lower(), ()))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    @property
    def name(self) -> str:
        """The Event name, the Response value, the Action name, or the banner text."""
        if self.kind == "banner":
            return self.banner
        return self.get(self.kind, "") or ""

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def is_error(self) -> bool:
        return self.kind == "response" and self.name.lower() == "error"


def _kind_of(fields: Sequence[tuple[str, str]]) -> MessageKind | None:
    """The first of Event/Response/Action decides (OriginateResponse events carry both)."""
    for key, _ in fields:
        kind = _KIND_BY_KEY.get(key.lower())
        if kind is not None:
            return kind
    return None


class AmiParser:
    """Incremental, I/O-free parser of the bytes an AMI server sends.

    The stream starts with a banner line (``Asterisk Call Manager/11.0.0``) ended by a single
    CRLF; then every message is ``Key: Value`` lines ended by an empty line. LF-only line
    endings are accepted. A line without a colon, a message with neither Event nor Response
    nor Action, and a message (or line) over ``max_message_bytes`` are logged as
    ``ami.bad_message`` and skipped; parsing continues with the next message. Buffered
    bytes never exceed ``max_message_bytes`` plus one ``feed`` chunk.
    """

    def __init__(self, *, expect_banner: bool = True, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self._expect_banner = expect_banner
        self._max = max_message_bytes
        self._buf = bytearray()
        self._fields: list[tuple[str, str]] = []
        self._size = 0
        self._discarding = False
        self.bad_messages = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Consume ``data``; return every message it completed, in order."""
        self._buf += data
        out: list[AmiMessage] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            raw = bytes(self._buf[start:end])
            start = end + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            msg = self._line(raw)
            if msg is not None:
                out.append(msg)
        del self._buf[:start]
        if len(self._buf) > self._max:
            # One line longer than any message may be: drop it and the rest of its message.
            if not self._discarding:
                self._bad("oversized", size=self._size + len(self._buf))
            self._buf.clear()
            self._fields = []
            self._size = 0
            self._discarding = True
        return out

    def _line(self, raw: bytes) -> AmiMessage | None:
        if self._expect_banner:
            self._expect_banner = False
            text = raw.decode("utf-8", errors="replace")
            if ":" not in text:
                return AmiMessage(kind="banner", banner=text)
        if not raw:
            return self._end_of_message()
        if self._discarding:
            return None
        self._size += len(raw) + 2
        if self._size > self._max:
            self._bad("oversized", size=self._size)
            self._fields = []
            self._size = 0
            self._discarding = True
            return None
        text = raw.decode("utf-8", errors="replace")
        key, sep, value = text.partition(":")
        key = key.strip()
        if not sep or not key:
            self._bad("no_colon", line=text[:80])
            return None
        self._fields.append((key, value[1:] if value.startswith(" ") else value))
        return None

    def _end_of_message(self) -> AmiMessage | None:
        fields, self._fields, self._size = tuple(self._fields), [], 0
        if self._discarding:
            self._discarding = False
            return None
        if not fields:
            return None  # stray blank line between messages
        kind = _kind_of(fields)
        if kind is None:
            self._bad("no_kind", keys=",".join(k for k, _ in fields[:5]))
            return None
        return AmiMessage(kind=kind, fields=fields)

    def _bad(self, reason: str, **kw: object) -> None:
        self.bad_messages += 1
        log.warning("ami.bad_message", reason=reason, **kw)


def encode_action(
    name: str,
    action_id: str,
    fields: Mapping[str, FieldValue | None] | Iterable[tuple[str, FieldValue | None]] = (),
) -> bytes:
    """Encode an action as wire bytes (CRLF line ends, blank line at the end).

    ``None`` values are left out, booleans become ``true``/``false`` and a sequence value
    repeats the header (e.g. several ``Variable`` lines). CR or LF in a name, key or value
    would let a value inject headers or whole actions, so it raises ``ValueError``.
    """
    pairs: list[tuple[str, str]] = [("Action", name), ("ActionID", action_id)]
    items = fields.items() if isinstance(fields, Mapping) else fields
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, int | str):
            pairs.append((key, str(value)))
        else:
            pairs.extend((key, str(v)) for v in value)
    lines: list[str] = []
    for key, value in pairs:
        if not key or ":" in key or _has_line_break(key) or key != key.strip():
            raise ValueError(f"invalid AMI header name {key!r}")
        if _has_line_break(value):
            raise ValueError(f"AMI header {key} must not contain CR or LF")
        lines.append(f"{key}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _has_line_break(text: str) -> bool:
    return "\r" in text or "\n" in text

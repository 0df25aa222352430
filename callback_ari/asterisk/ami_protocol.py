"""AMI wire format: an incremental parser of server bytes, an action encoder, reply roles."""

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
ReplyRole: TypeAlias = Literal["answer", "failed", "list_start", "list_item", "list_end", "no_list"]

_KIND_BY_KEY: dict[str, MessageKind] = {
    "event": "event",
    "response": "response",
    "action": "action",
}


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI message: an ordered multi-dict of ``Key: Value`` headers.

    Keys are looked up case-insensitively (Asterisk spells ``ActionID`` both ways across
    modules); repeated keys such as ``ChanVariable`` are all kept, in wire order. The
    case-insensitive index is built on the first lookup: most messages on a busy AMI link
    are routed on one or two headers or dropped unread.
    """

    kind: MessageKind
    fields: tuple[tuple[str, str], ...] = ()
    banner: str = ""
    _index: dict[str, tuple[str, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> AmiMessage:
        """Build a message from headers, deriving its kind (used by tests and fakes)."""
        fields = tuple(pairs)
        return cls(kind=_kind_of(fields) or "event", fields=fields)

    def _lookup(self) -> dict[str, tuple[str, ...]]:
        index = self._index
        if index is None:
            index = {}
            for key, value in self.fields:
                lower = key.lower()
                seen = index.get(lower)
                index[lower] = (value,) if seen is None else (*seen, value)
            object.__setattr__(self, "_index", index)  # a cache: the value stays unchanged
        return index

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        values = self._lookup().get(key.lower())
        return values[0] if values else default

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated header, in wire order."""
        return list(self._lookup().get(key.lower(), ()))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup()

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

    Framing works on whole messages, not lines: a message ends at the first ``\\n`` followed
    by an empty line (``\\n\\n`` or ``\\n\\r\\n``). Once CRLF is rewritten to LF that end is
    exactly ``\\n\\n``, so C-level ``replace`` and ``split`` do the framing and Python code
    runs once per message and once per header.
    """

    def __init__(self, *, expect_banner: bool = True, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self._expect_banner = expect_banner
        self._max = max_message_bytes
        self._buf = bytearray()
        self._scan = 0  # a message end may start here in _buf; bytes before it were searched
        self._discarding = False  # inside an oversized message: drop everything up to its end
        self.bad_messages = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Consume ``data``; return every message it completed, in order."""
        buf = self._buf
        buf += data
        out: list[AmiMessage] = []
        if self._expect_banner:
            self._take_banner(out)
        # Everything up to the last message end is parsed now; the rest waits for more bytes.
        lf, crlf = buf.rfind(b"\n\n", self._scan), buf.rfind(b"\n\r\n", self._scan)
        end = max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)
        if end:
            chunks = buf[:end].replace(b"\r\n", b"\n").split(b"\n\n")
            del buf[:end]
            chunks.pop()  # empty, or the blank lines after the last end
            if self._discarding:  # the first chunk is the tail of an oversized message
                self._discarding = False
                del chunks[0]
            for chunk in chunks:
                msg = self._message(chunk)
                if msg is not None:
                    out.append(msg)
        if self._discarding or (len(buf) > self._max and self._too_long(buf)):
            del buf[:-2]  # two bytes in case the end ("\n\r\n") straddles the next feed
        self._scan = max(0, len(buf) - 2)
        return out

    def _take_banner(self, out: list[AmiMessage]) -> None:
        """Take the banner line off the front of the stream, if the first line is one."""
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            return
        self._expect_banner = False
        text = buf[: nl - 1 if buf[nl - 1 : nl] == b"\r" else nl].decode("utf-8", "replace")
        if ":" not in text:  # else it is the first header of the first message
            out.append(AmiMessage(kind="banner", banner=text))
            del buf[: nl + 1]
            self._scan = 0

    def _too_long(self, pending: bytearray) -> bool:
        """Whether an incomplete message is already too long, and if so start discarding it.

        Leading blank lines and a CR waiting for its LF do not count: a message is never
        dropped here that would have fitted once complete.
        """
        size = len(pending.lstrip(b"\r\n").rstrip(b"\r"))
        if size <= self._max:
            return False
        self._bad("oversized", size=size)
        self._discarding = True
        self._expect_banner = False  # a banner is one short line
        return True

    def _message(self, chunk: bytes | bytearray) -> AmiMessage | None:
        """One message from its LF-separated lines (maybe led by stray blank lines)."""
        if len(chunk) * 2 + 2 > self._max:  # else even one-byte lines with CRLF fit
            body = chunk.lstrip(b"\n")
            size = len(body) + body.count(b"\n") + 2  # on the wire: every line and its CRLF
            if size > self._max:
                self._bad("oversized", size=size)
                return None
        fields: list[tuple[str, str]] = []
        append = fields.append
        for line in chunk.decode("utf-8", "replace").split("\n"):
            key, sep, value = line.partition(":")
            key = key.strip()
            if not key or not sep:
                if line:
                    self._bad("no_colon", line=line[:80])
                continue  # a blank line can only lead the chunk: a stray one between messages
            append((key, value[1:] if value[:1] == " " else value))
        if not fields:
            return None
        kind = _KIND_BY_KEY.get(fields[0][0].lower()) or _kind_of(fields)
        if kind is None:
            self._bad("no_kind", keys=",".join(k for k, _ in fields[:5]))
            return None
        return AmiMessage(kind=kind, fields=tuple(fields))

    def _bad(self, reason: str, **kw: object) -> None:
        self.bad_messages += 1
        log.warning("ami.bad_message", reason=reason, **kw)


def reply_role(msg: AmiMessage, complete_event: str | None) -> ReplyRole | None:
    """What ``msg``, carrying the ActionID of an action still waiting, means for that action.

    ``complete_event`` is None for a plain action, which one Response answers ("answer" or
    "failed"). A list action (``complete_event`` names its last event, e.g.
    ``QueueStatusComplete``) gets a Response with ``EventList: start`` ("list_start"), then
    item events ("list_item") up to that event or one saying ``EventList: complete``
    ("list_end"); a Response without ``EventList: start`` means no list at all ("no_list").
    None: not a reply, e.g. the ``OriginateResponse`` event of an async Originate.
    """
    if msg.kind == "response":
        if msg.is_error:
            return "failed"
        if complete_event is None:
            return "answer"
        return "list_start" if (msg.get("EventList") or "").lower() == "start" else "no_list"
    if msg.kind != "event" or complete_event is None:
        return None
    if (
        msg.name.lower() == complete_event.lower()
        or (msg.get("EventList") or "").lower() == "complete"
    ):
        return "list_end"
    return "list_item"


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

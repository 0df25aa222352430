"""AMI framing: every recorded Asterisk 22 block parses, bad input is skipped, actions are safe."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callback_ari.ami_protocol import MAX_MESSAGE_BYTES, AmiMessage, AmiParser, encode_action

_HEADER = re.compile(r"^(<<<|>>>) \[t=([0-9.]+)\] (SENT|RECV) conn=(\w+)(.*)$")


@dataclass(frozen=True, slots=True)
class Block:
    """One block of ami_queue.txt: a message one side wrote (or the banner, or an EOF marker)."""

    direction: str  # "SENT" (client) or "RECV" (server)
    conn: str
    t: float
    lines: tuple[str, ...]
    banner: bool = False
    eof: bool = False

    @property
    def pairs(self) -> list[tuple[str, str]]:
        out = []
        for line in self.lines:
            key, _, value = line.partition(":")
            out.append((key, value[1:] if value.startswith(" ") else value))
        return out

    def wire(self) -> bytes:
        """The bytes on the wire: CRLF line ends; the banner has no blank line after it."""
        if self.eof:
            return b""
        if self.banner:
            return (self.lines[0] + "\r\n").encode()
        return ("\r\n".join(self.lines) + "\r\n\r\n").encode()

    def message(self) -> AmiMessage:
        return AmiMessage.from_pairs(self.pairs)


def load_transcript(path: Path) -> list[Block]:
    """Every SENT/RECV block of the recorded transcript, in file order."""
    lines = path.read_text().split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        i += 1
        if m is None:
            continue
        body: list[str] = []
        while i < len(lines) and lines[i] != "":
            body.append(lines[i])
            i += 1
        _arrow, t, direction, conn, rest = m.groups()
        blocks.append(
            Block(
                direction=direction,
                conn=conn,
                t=float(t),
                lines=tuple(body),
                banner="banner line" in rest,
                eof="connection closed" in rest,
            )
        )
    return blocks


def transcript(shared_asterisk: Path) -> list[Block]:
    return load_transcript(shared_asterisk / "transcripts-22" / "ami_queue.txt")


def server_messages(shared_asterisk: Path, conn: str = "main") -> list[AmiMessage]:
    """What the server sent on ``conn``, parsed (the banner excluded)."""
    blocks = [b for b in transcript(shared_asterisk) if b.conn == conn and b.direction == "RECV"]
    data = b"".join(b.wire() for b in blocks)
    return [m for m in AmiParser().feed(data) if m.kind != "banner"]


def feed_in_chunks(parser: AmiParser, data: bytes, rng: random.Random) -> list[AmiMessage]:
    out: list[AmiMessage] = []
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 7, 64, 500, 4096))
        out.extend(parser.feed(data[pos : pos + size]))
        pos += size
    return out


@pytest.fixture(scope="module")
def blocks(shared_asterisk: Path) -> list[Block]:
    return transcript(shared_asterisk)


def test_transcript_has_every_part(blocks: list[Block]) -> None:
    assert len(blocks) == 399
    assert {b.conn for b in blocks} == {"aux", "aux2", "main"}
    assert sum(b.banner for b in blocks) == 3
    assert sum(b.eof for b in blocks) == 3


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("conn", ["aux", "aux2", "main"])
@pytest.mark.parametrize("direction", ["RECV", "SENT"])
def test_every_block_parses_in_random_chunks(
    blocks: list[Block], seed: int, conn: str, direction: str
) -> None:
    mine = [b for b in blocks if b.conn == conn and b.direction == direction and not b.eof]
    parser = AmiParser(expect_banner=direction == "RECV")
    with capture_logs() as logs:
        got = feed_in_chunks(parser, b"".join(b.wire() for b in mine), random.Random(seed))
    assert logs == []
    assert len(got) == len(mine)
    for block, msg in zip(mine, got, strict=True):
        if block.banner:
            assert msg.kind == "banner"
            assert msg.name == "Asterisk Call Manager/11.0.0"
            continue
        assert list(msg.fields) == block.pairs
        assert (
            msg.kind
            == {"Event": "event", "Response": "response", "Action": "action"}[block.pairs[0][0]]
        )
        assert msg.name == block.pairs[0][1]


def test_main_connection_message_counts(blocks: list[Block]) -> None:
    main = [b for b in blocks if b.conn == "main" and b.direction == "RECV" and not b.eof]
    msgs = AmiParser().feed(b"".join(b.wire() for b in main))
    kinds = Counter(m.kind for m in msgs)
    assert kinds == {"banner": 1, "response": 34, "event": 319}
    names = Counter(m.name for m in msgs if m.kind == "event")
    assert names["QueueCallerJoin"] == 4
    assert names["QueueMember"] == 11
    assert names["QueueStatusComplete"] == 7
    assert names["AgentComplete"] == 2
    assert Counter(m.name for m in msgs if m.kind == "response") == {
        "Success": 29,
        "Error": 4,
        "Goodbye": 1,
    }


def test_fields_as_recorded(blocks: list[Block]) -> None:
    main = [b for b in blocks if b.conn == "main" and b.direction == "RECV"]
    msgs = AmiParser().feed(b"".join(b.wire() for b in main))
    by_name = {m.name: m for m in reversed(msgs) if m.kind == "event"}  # first of each name
    bad = by_name["RequestBadFormat"]
    assert bad.get("RequestType") == "Action: FooBar"  # a value holding ": "
    member = next(m for m in msgs if m.name == "QueueMember")
    assert member.get("PausedReason") == ""
    assert member.get("pausedreason") == ""  # keys are case-insensitive
    assert member.action_id == "qs-all"
    assert member.get("Nope", "dflt") == "dflt"
    complete = by_name["AgentComplete"]
    assert (complete.get("TalkTime"), complete.get("Reason")) == ("3", "caller")
    # OriginateResponse carries "Response: Success" but is an event
    originate = by_name["OriginateResponse"]
    assert originate.kind == "event"
    assert originate.get("Response") == "Success"
    ping = next(m for m in msgs if m.get("Ping") == "Pong")
    assert ping.kind == "response" and ping.action_id is None


def test_lf_only_line_endings(blocks: list[Block]) -> None:
    main = [b for b in blocks if b.conn == "main" and b.direction == "RECV"]
    crlf = b"".join(b.wire() for b in main)
    assert AmiParser().feed(crlf.replace(b"\r\n", b"\n")) == AmiParser().feed(crlf)


def test_repeated_headers_are_all_kept() -> None:
    data = (
        b"Event: Newchannel\r\nChanVariable: A=1\r\nChannel: PJSIP/x\r\n"
        b"ChanVariable: B=2\r\nChanVariable: C=x: y\r\n\r\n"
    )
    (msg,) = AmiParser(expect_banner=False).feed(data)
    assert msg.get_all("ChanVariable") == ["A=1", "B=2", "C=x: y"]
    assert msg.get("ChanVariable") == "A=1"
    assert msg.get_all("Missing") == []
    assert [k for k, _ in msg] == [
        "Event",
        "ChanVariable",
        "Channel",
        "ChanVariable",
        "ChanVariable",
    ]


def test_garbage_line_is_logged_and_skipped() -> None:
    parser = AmiParser()
    with capture_logs() as logs:
        msgs = parser.feed(
            b"Asterisk Call Manager/11.0.0\r\n"
            b"Event: A\r\nthis line has no colon\r\nX: 1\r\n\r\n"
            b"just garbage\r\n\r\n"
            b"Event: B\r\n\r\n"
        )
    assert [(m.kind, m.name) for m in msgs] == [
        ("banner", "Asterisk Call Manager/11.0.0"),
        ("event", "A"),
        ("event", "B"),
    ]
    assert msgs[1].fields == (("Event", "A"), ("X", "1"))
    assert [entry["event"] for entry in logs] == ["ami.bad_message", "ami.bad_message"]
    assert parser.bad_messages == 2


def test_message_without_kind_is_skipped() -> None:
    with capture_logs() as logs:
        msgs = AmiParser(expect_banner=False).feed(b"Foo: bar\r\n\r\nEvent: Next\r\n\r\n")
    assert [m.name for m in msgs] == ["Next"]
    assert logs[0]["event"] == "ami.bad_message" and logs[0]["reason"] == "no_kind"


def test_oversized_message_is_skipped_and_next_parsed() -> None:
    parser = AmiParser(expect_banner=False)
    lines = b"".join(b"Filler%d: %s\r\n" % (i, b"x" * 100) for i in range(800))
    assert len(lines) > MAX_MESSAGE_BYTES
    with capture_logs() as logs:
        msgs = feed_in_chunks(
            parser,
            b"Event: Huge\r\n" + lines + b"\r\nEvent: After\r\nA: 1\r\n\r\n",
            random.Random(1),
        )
    assert [m.name for m in msgs] == ["After"]
    assert [entry["reason"] for entry in logs] == ["oversized"]


def test_endless_line_is_capped_and_stream_recovers() -> None:
    parser = AmiParser(expect_banner=False)
    with capture_logs() as logs:
        for _ in range(40):
            assert parser.feed(b"y" * 4096) == []
            assert parser.buffered_bytes <= MAX_MESSAGE_BYTES
        msgs = parser.feed(b"\r\n\r\nResponse: Success\r\nActionID: 7\r\n\r\n")
    assert [(m.kind, m.action_id) for m in msgs] == [("response", "7")]
    assert [entry["reason"] for entry in logs] == ["oversized"]


def test_encode_action_wire_format_and_round_trip() -> None:
    data = encode_action(
        "QueuePause",
        "cbari-1-3",
        {"Interface": "Local/agent1@agents/n", "Paused": True, "Queue": None, "Reason": "a: b"},
    )
    assert data == (
        b"Action: QueuePause\r\nActionID: cbari-1-3\r\nInterface: Local/agent1@agents/n\r\n"
        b"Paused: true\r\nReason: a: b\r\n\r\n"
    )
    (msg,) = AmiParser(expect_banner=False).feed(data)
    assert msg.kind == "action" and msg.name == "QueuePause" and msg.action_id == "cbari-1-3"
    repeated = encode_action("Originate", "1", [("Variable", ["A=1", "B=2"]), ("Timeout", 30)])
    assert b"Variable: A=1\r\nVariable: B=2\r\nTimeout: 30\r\n" in repeated


@pytest.mark.parametrize(
    ("name", "action_id", "fields"),
    [
        ("Getvar", "1", {"Variable": "X\r\nAction: Hangup"}),
        ("Getvar", "1", {"Variable": "X\nAction: Hangup"}),
        ("Getvar", "1", {"Variable": "X\r"}),
        ("Getvar", "1", {"Bad:Key": "x"}),
        ("Getvar", "1", {"Bad\nKey": "x"}),
        ("Getvar\r\nAction: Hangup", "1", {}),
        ("Getvar", "1\r\nChannel: x", {}),
        ("Originate", "1", {"Variable": ["A=1", "B=2\r\n"]}),
    ],
)
def test_encode_action_rejects_header_injection(
    name: str, action_id: str, fields: dict[str, str | list[str]]
) -> None:
    with pytest.raises(ValueError):
        encode_action(name, action_id, fields)

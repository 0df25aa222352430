"""AMI framing: every recorded Asterisk 22 block parses, bad input is skipped, actions are safe."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callback_ari.asterisk.ami_protocol import (
    MAX_MESSAGE_BYTES,
    AmiMessage,
    AmiParser,
    encode_action,
    reply_role,
)

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


def transcript(asterisk_data: Path) -> list[Block]:
    return load_transcript(asterisk_data / "ami_queue.txt")


def server_messages(asterisk_data: Path, conn: str = "main") -> list[AmiMessage]:
    """What the server sent on ``conn``, parsed (the banner excluded)."""
    blocks = [b for b in transcript(asterisk_data) if b.conn == conn and b.direction == "RECV"]
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
def blocks(asterisk_data: Path) -> list[Block]:
    return transcript(asterisk_data)


def test_transcript_has_every_part(blocks: list[Block]) -> None:
    assert len(blocks) == 409
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
    assert kinds == {"banner": 1, "response": 34, "event": 329}
    names = Counter(m.name for m in msgs if m.kind == "event")
    # Debian's Asterisk 22.10 is built with the test framework: one TestEvent (CallIDChange,
    # class "reporting") per call id set on a channel; its "State" key appears twice.
    assert names["TestEvent"] == 10
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


SMALL_STREAM = (
    b"Asterisk Call Manager/11.0.0\r\n"
    b"Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n"
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
    b"\r\n"  # a stray blank line between messages
    b"Event: Newchannel\r\nChanVariable: A=1\r\nChanVariable: B=x: y\r\n\r\n"
)


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_every_split_point_gives_the_same_messages(line_end: bytes) -> None:
    data = SMALL_STREAM.replace(b"\r\n", line_end)
    whole = AmiParser().feed(data)
    assert [m.name for m in whole] == [
        "Asterisk Call Manager/11.0.0",
        "Success",
        "FullyBooted",
        "Newchannel",
    ]
    assert whole[3].get_all("chanvariable") == ["A=1", "B=x: y"]
    for cut in range(len(data) + 1):  # includes \r\n|\r\n, \r\n\r|\n and the banner's \r|\n
        parser = AmiParser()
        with capture_logs() as logs:
            got = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert (got, logs, parser.buffered_bytes) == (whole, [], 0), f"split at {cut}"


def test_message_end_split_between_its_two_crlfs() -> None:
    parser = AmiParser(expect_banner=False)
    assert parser.feed(b"Event: A\r\nX: 1\r\n") == []
    (first,) = parser.feed(b"\r\nEvent: B\r\n")
    assert first.fields == (("Event", "A"), ("X", "1"))
    assert parser.feed(b"\r") == []
    (second,) = parser.feed(b"\n")
    assert second.name == "B"
    assert parser.buffered_bytes == 0


def test_mixed_line_endings_end_messages() -> None:
    msgs = AmiParser(expect_banner=False).feed(
        b"Event: A\r\nX: 1\n\r\nEvent: B\nY: 2\r\n\nEvent: C\n\n\n\r\nEvent: D\r\n\r\n"
    )
    assert [m.fields for m in msgs] == [
        (("Event", "A"), ("X", "1")),
        (("Event", "B"), ("Y", "2")),
        (("Event", "C"),),
        (("Event", "D"),),
    ]


def test_a_first_line_with_a_colon_is_a_header_not_a_banner() -> None:
    parser = AmiParser()
    assert parser.feed(b"Event: A\r") == []
    (msg,) = parser.feed(b"\n\r\n")
    assert (msg.kind, msg.name) == ("event", "A")


def test_oversized_message_within_one_feed_is_skipped() -> None:
    parser = AmiParser(expect_banner=False, max_message_bytes=100)
    big = b"Event: Big\r\nX: " + b"y" * 100 + b"\r\n\r\n"
    with capture_logs() as logs:
        msgs = parser.feed(b"Event: Before\r\n\r\n" + big + b"Event: After\r\n\r\n")
    assert [m.name for m in msgs] == ["Before", "After"]
    assert [entry["reason"] for entry in logs] == ["oversized"]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_a_message_of_exactly_the_limit_is_kept(chunk: int) -> None:
    body = b"Event: A\r\nX: " + b"y" * 50 + b"\r\n"  # the size counted: lines with their CRLF
    data = body + b"\r\n" + b"Event: B\r\n\r\n"
    for limit, names in ((len(body), ["A", "B"]), (len(body) - 1, ["B"])):
        parser = AmiParser(expect_banner=False, max_message_bytes=limit)
        with capture_logs() as logs:
            msgs = [m for i in range(0, len(data), chunk) for m in parser.feed(data[i : i + chunk])]
        assert [m.name for m in msgs] == names
        assert len(logs) == 2 - len(names)


def test_headers_after_an_endless_line_belong_to_the_dropped_message() -> None:
    parser = AmiParser(expect_banner=False, max_message_bytes=1000)
    with capture_logs() as logs:
        assert parser.feed(b"Event: Big\r\nX: " + b"y" * 2000) == []
        assert parser.buffered_bytes <= 2
        assert parser.feed(b"\r\nY: still part of Big\r\n") == []
        assert parser.feed(b"\r") == []
        msgs = parser.feed(b"\nEvent: Next\r\n\r\n")
    assert [m.name for m in msgs] == ["Next"]
    assert [entry["reason"] for entry in logs] == ["oversized"]
    assert parser.buffered_bytes == 0


def test_lookups_do_not_change_equality_or_hash() -> None:
    a = AmiMessage.from_pairs([("Event", "QueueMember"), ("Queue", "q"), ("queue", "r")])
    b = AmiMessage.from_pairs([("Event", "QueueMember"), ("Queue", "q"), ("queue", "r")])
    assert (a.get("QUEUE"), a.get_all("queue"), "Queue" in a, "Nope" in a) == (
        "q",
        ["q", "r"],
        True,
        False,
    )
    assert a == b and hash(a) == hash(b)
    assert a != AmiMessage.from_pairs([("Event", "QueueMember"), ("Queue", "q")])


def test_reply_roles_of_plain_and_list_actions() -> None:
    def msg(*pairs: tuple[str, str]) -> AmiMessage:
        return AmiMessage.from_pairs([*pairs, ("ActionID", "7")])

    ok, error = msg(("Response", "Success")), msg(("Response", "Error"), ("Message", "No"))
    start = msg(("Response", "Success"), ("EventList", "start"))
    item = msg(("Event", "QueueMember"))
    complete = msg(("Event", "queuestatuscomplete"))
    flagged = msg(("Event", "SomethingComplete"), ("EventList", "Complete"))
    originate = msg(("Event", "OriginateResponse"), ("Response", "Success"))
    assert [reply_role(m, None) for m in (ok, error, item, originate)] == [
        "answer",
        "failed",
        None,
        None,
    ]
    list_end = "QueueStatusComplete"
    assert [reply_role(m, list_end) for m in (ok, error, start, item, complete, flagged)] == [
        "no_list",
        "failed",
        "list_start",
        "list_item",
        "list_end",
        "list_end",
    ]
    assert reply_role(msg(("Action", "Ping")), list_end) is None


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

"""Replays ami_queue.txt against the fake's AMI server and compares responses and queue events."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callback_ari.sim.simpbx.extensions import RECORDED_DIALPLAN
from callback_ari.sim.simpbx.members import MemberSpec
from callback_ari.sim.simpbx.sim import SimAsterisk

SCALE = 0.08
Fields = list[tuple[str, str]]
QUEUE_EVENTS = {
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "AgentCalled",
    "AgentConnect",
    "AgentComplete",
    "QueueMemberStatus",
    "QueueMemberPause",
    "QueueParams",
    "QueueMember",
    "QueueEntry",
    "QueueStatusComplete",
    "QueueSummary",
    "QueueSummaryComplete",
    "UserEvent",
    "FullyBooted",
    "SuccessfulAuth",
    "RequestBadFormat",
}
# values that depend on the clock, on id counters or on Asterisk's uptime
VOLATILE = {
    "Uniqueid",
    "Linkedid",
    "DestUniqueid",
    "DestLinkedid",
    "LastPause",
    "LastCall",
    "LoginTime",
    "HoldTime",
    "TalkTime",
    "Wait",
    "Uptime",
    "LastReload",
    "Timestamp",
    "Holdtime",
    "EventTV",
    "SessionTV",
    "SessionID",
    "LocalAddress",
    "RemoteAddress",
}
_HEX = re.compile(r"-[0-9a-f]{8};")


@dataclass(frozen=True, slots=True)
class Block:
    """One block of the transcript."""

    kind: str  # sent | recv | cli | banner | eof
    conn: str
    t: float
    fields: Fields


def parse_transcript(path: Path) -> list[Block]:
    blocks: list[Block] = []
    head: re.Match[str] | None = None
    body: list[str] = []

    def flush() -> None:
        if head is None:
            return
        kind, t, conn, rest = head.group(1), float(head.group(2)), head.group(3), head.group(4)
        if "banner" in rest:
            blocks.append(Block("banner", conn, t, []))
        elif "connection closed" in rest:
            blocks.append(Block("eof", conn, t, []))
        else:
            pairs = [
                tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")
                for line in body
            ]
            blocks.append(Block("sent" if kind == ">>>" else "recv", conn, t, pairs))  # type: ignore[arg-type]

    for line in path.read_text().splitlines():
        m = re.match(r"^(>>>|<<<) \[t=([\d.]+)\] (?:SENT|RECV) conn=(\w+)(.*)$", line)
        if m:
            flush()
            head, body = m, []
            continue
        cli = re.match(
            r"^### \[t=([\d.]+)\] CLI \(not AMI traffic\): devstate change (\S+) (\S+)", line
        )
        if cli:
            flush()
            head, body = None, []
            blocks.append(Block("cli", "", float(cli.group(1)), [(cli.group(2), cli.group(3))]))
            continue
        if line.startswith("###"):
            flush()
            head, body = None, []
            continue
        if line.strip() and head is not None:
            body.append(line)
    flush()
    return blocks


def comparable(fields: Fields) -> list[tuple[str, str]]:
    return [
        (k, "<v>" if k in VOLATILE else _HEX.sub("-XXXXXXXX;", v))
        for k, v in fields
        if k != "ActionID"
    ]


def name_of(fields: Fields) -> str:
    d = dict(fields)
    return d.get("Event") or ("Response:" + d.get("Response", ""))


def interesting(fields: Fields) -> bool:
    d = dict(fields)
    if "Event" in d:
        return d["Event"] in QUEUE_EVENTS
    return "Response" in d


def paced(fields: Fields) -> bool:
    """Counted to pace the replay: not RequestBadFormat, whose delivery varies (split_late)."""
    return interesting(fields) and name_of(fields) != "RequestBadFormat"


def split_late(
    messages: list[list[tuple[str, str]]],
) -> tuple[list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
    """(the RequestBadFormat events, the other messages), each in order."""
    late = [m for m in messages if name_of(m) == "RequestBadFormat"]
    return late, [m for m in messages if name_of(m) != "RequestBadFormat"]


def device_states(messages: list[Fields]) -> list[tuple[str, str]]:
    out = []
    for fields in messages:
        d = dict(fields)
        if d.get("Event") == "DeviceStateChange" and d["Device"].startswith(("Custom:", "Queue:")):
            out.append((d["Device"], d["State"]))
    return sorted(out)


class AmiClient:
    """A raw AMI connection that collects every message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.messages: list[Fields] = []
        self.banner = b""
        self.eof = asyncio.Event()
        self.changed = asyncio.Event()

    async def read_all(self) -> None:
        self.banner = await self.reader.readline()
        while True:
            try:
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                self.eof.set()
                self.changed.set()
                return
            lines = raw.decode().split("\r\n")
            self.messages.append([tuple(x.split(": ", 1)) for x in lines if ": " in x])  # type: ignore[misc]
            self.changed.set()

    async def wait_count(self, n: int) -> None:
        async with asyncio.timeout(10):
            while len([m for m in self.messages if paced(m)]) < n:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    fake = SimAsterisk(time_scale=SCALE, dialplan=RECORDED_DIALPLAN)
    fake.add_queue(
        "support",
        [
            MemberSpec("Local/agent1@agents/n", "Agent One", "Custom:agent1"),
            MemberSpec("Local/agent2@agents/n", "Agent Two", "Custom:agent2"),
        ],
        exit_digit=None,
    )
    async with fake:
        fake.set_devstate("Custom:agent1", "INUSE")
        fake.set_devstate("Custom:agent2", "INUSE")
        yield fake


@pytest.mark.slow  # replays a recording at its recorded pace
async def test_ami_transcript_replay(sim: SimAsterisk, asterisk_data: Path) -> None:
    blocks = parse_transcript(asterisk_data / "ami_queue.txt")
    # the recording starts with the agents' devstates and a stats reset, done by the fixture
    blocks = [b for b in blocks if b.t > 0.1]
    loop = asyncio.get_running_loop()
    start, t0 = loop.time(), blocks[0].t
    clients: dict[str, AmiClient] = {}
    readers: list[asyncio.Task[None]] = []
    seen: dict[str, int] = {}
    rename: dict[str, str] = {}
    # recorded channel names -> their ids, so actions can name the fake's channels
    recorded_ids = {
        dict(b.fields)["Channel"]: dict(b.fields)["Uniqueid"]
        for b in blocks
        if b.kind == "recv" and "Channel" in dict(b.fields) and "Uniqueid" in dict(b.fields)
    }
    for block in blocks:
        if block.kind == "recv" and paced(block.fields):
            seen[block.conn] = seen.get(block.conn, 0) + 1
        delay = start + (block.t - t0) * SCALE - loop.time()
        if block.kind in ("banner", "sent", "cli") and delay > 0:
            await asyncio.sleep(delay)  # pacing of the replay
        if block.kind == "banner":
            client = AmiClient(*await asyncio.open_connection("127.0.0.1", sim.ami_port))
            clients[block.conn] = client
            readers.append(asyncio.create_task(client.read_all()))
        elif block.kind == "cli":
            for name, client in clients.items():
                if not client.eof.is_set():
                    await client.wait_count(seen.get(name, 0))
            sim.set_devstate(*block.fields[0])
        elif block.kind == "sent":
            client = clients[block.conn]
            try:
                await client.wait_count(seen.get(block.conn, 0))
            except TimeoutError:
                raise AssertionError(
                    (block, [name_of(m) for m in client.messages if interesting(m)], seen)
                ) from None
            fields = [(k, rename.get(v, v)) for k, v in block.fields]
            for k, v in block.fields:
                uid = recorded_ids.get(v)
                if uid is not None and uid in sim.pbx.channels:
                    fields = [
                        (k2, sim.pbx.channels[uid].name if v2 == v else v2) for k2, v2 in fields
                    ]
                elif k == "Channel":  # generated ids differ: match the name without its counter
                    alike = [
                        c.name for c in sim.channels() if _HEX.sub("-", c.name) == _HEX.sub("-", v)
                    ]
                    fields = [(k2, alike[0] if v2 == v and alike else v2) for k2, v2 in fields]
            client.writer.write("".join(f"{k}: {v}\r\n" for k, v in fields).encode() + b"\r\n")
        elif block.kind == "eof":
            async with asyncio.timeout(5):
                await clients[block.conn].eof.wait()
    async with asyncio.timeout(5):
        await asyncio.gather(*readers)
    for client in clients.values():
        client.writer.close()
        await client.writer.wait_closed()

    for conn, client in clients.items():
        assert client.banner == b"Asterisk Call Manager/11.0.0\r\n"
        want = [b.fields for b in blocks if b.kind == "recv" and b.conn == conn]
        got = client.messages
        want_i = [comparable(f) for f in want if interesting(f)]
        got_i = [comparable(f) for f in got if interesting(f)]
        # Asterisk queues RequestBadFormat behind one or two later responses of the same
        # session, varying from run to run: compared in their own order, not among the rest
        late, want_i = split_late(want_i)
        got_late, got_i = split_late(got_i)
        assert got_late == late, conn
        assert [name_of(f) for f in got_i] == [name_of(f) for f in want_i], conn
        for i, (g, w) in enumerate(zip(got_i, want_i, strict=True)):
            assert [k for k, _ in g] == [k for k, _ in w], f"{conn} #{i} {name_of(w)} keys"
            assert g == w, f"{conn} #{i} {name_of(w)}"
        assert device_states(got) == device_states(want), conn

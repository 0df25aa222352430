"""Replays the recorded ARI transcripts against the fake Asterisk and compares what comes back."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callback_ari.sim.simpbx.extensions import RECORDED_DIALPLAN
from callback_ari.sim.simpbx.sim import SimAsterisk

SCALE = 0.08  # replay at 8 % of the recorded pace; the fake runs on the same time scale
AUTH = {"Authorization": aiohttp.encode_basic_auth("cbuser", "cbpass")}
_LOCAL = re.compile(r"(Local/[^;\s\"]+?-)[0-9a-f]{8}(;[12])")
_UID = re.compile(r"^\d{9,11}\.\d+$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TIMED = {
    "QUEUEWAIT",
    "QUEUEWAIT_MS",
    "DIALEDTIME",
    "DIALEDTIME_MS",
    "ANSWEREDTIME",
    "ANSWEREDTIME_MS",
}


def normalise(value: Any, key: str = "") -> Any:
    """Drop what legitimately differs between runs: times, generated ids, name counters."""
    if isinstance(value, dict):
        out = {k: normalise(v, k) for k, v in value.items()}
        if out.get("variable") in _TIMED and str(out.get("value", "")).isdigit():
            out["value"] = "<n>"
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        if key in ("timestamp", "creationtime"):
            return "<ts>"
        if _UID.match(value):
            return "<uid>"
        if _UUID.match(value):
            return "<uuid>"
        return _LOCAL.sub(r"\1XXXXXXXX\2", value)
    return value


def load(name: str, shared: Path) -> list[dict[str, Any]]:
    path = shared / "transcripts-22" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Replay:
    """Drives the fake with the recorded requests, paced like the recording and synchronised
    on the number of events each socket had received before each request."""

    def __init__(self, sim: SimAsterisk, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.responses: list[tuple[dict[str, Any], int, Any, list[str]]] = []
        self.changed = asyncio.Event()

    async def _read(self, label: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events[label].append(json.loads(msg.data))
                self.changed.set()

    async def _wait_counts(self, want: dict[str, int]) -> None:
        async with asyncio.timeout(10):
            while any(len(self.events.get(k, [])) < n for k, n in want.items()):
                self.changed.clear()
                await self.changed.wait()

    async def _open(self, label: str, query: dict[str, str]) -> int:
        ws = await self.session.ws_connect(
            self.sim.ari_url + "/ari/events", params=query, protocols=("ari",)
        )
        self.sockets[label] = ws
        self.events.setdefault(label, [])
        self.readers[label] = asyncio.create_task(self._read(label, ws))
        return 101

    async def _close(self, label: str, clean: bool) -> None:
        ws = self.sockets.pop(label)
        if clean:
            await ws.close()
        else:
            sock = ws.get_extra_info("socket")
            sock.shutdown(socket.SHUT_RDWR)  # FIN without a close frame
            await ws.close()
        await self.readers.pop(label)

    async def run(self, lines: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        start, t0 = loop.time(), lines[0]["t"]
        counts: dict[str, int] = {}
        for line in lines:
            kind = line["dir"]
            if kind == "event":
                counts[line["socket"]] = counts.get(line["socket"], 0) + 1
                continue
            delay = start + (line["t"] - t0) * SCALE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing of the replay, not a wait for a condition
            if kind == "note":
                await self._note(line)
            elif kind == "request":
                await self._wait_counts({k: v for k, v in counts.items() if k != "observer"})
                await self._request(line)
        for label in list(self.sockets):
            await self._close(label, True)

    async def _note(self, line: dict[str, Any]) -> None:
        text = line["text"]
        cli = re.search(r"devstate change (\S+) (\S+)", text)
        if cli and "CLI (out-of-band" in text:
            self.sim.set_devstate(cli.group(1), cli.group(2))
        elif text.startswith("client closes websocket") and line.get("socket") in self.sockets:
            await self._close(line["socket"], "close frame" in text)

    async def _request(self, line: dict[str, Any]) -> None:
        query = {k: v for k, v in line["query"].items()}
        if line.get("websocket"):
            self.responses.append((line, await self._open(line["actor"], query), None, []))
            return
        url = self.sim.ari_url + line["path"]
        async with self.session.request(line["method"], url, params=query) as resp:
            body = await resp.read()
            headers = [k.decode() for k, _ in resp.raw_headers]
            parsed = json.loads(body) if body else None
            self.responses.append((line, resp.status, parsed, headers))


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    fake = SimAsterisk(time_scale=SCALE, dialplan=RECORDED_DIALPLAN)
    fake.add_queue(
        "support",
        ["agent1", "agent2"],
        handle_time=None,
        exit_digit=None,
    )
    async with fake:
        fake.set_devstate("Custom:agent1", "INUSE")
        fake.set_devstate("Custom:agent2", "INUSE")
        yield fake


async def replay(sim: SimAsterisk, lines: list[dict[str, Any]]) -> Replay:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        engine = Replay(sim, session)
        await engine.run(lines)
    return engine


def recorded_events(lines: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    return [line["event"] for line in lines if line["dir"] == "event" and line["socket"] == label]


def assert_same_events(lines: list[dict[str, Any]], engine: Replay, label: str) -> None:
    want = [normalise(e) for e in recorded_events(lines, label)]
    got = [normalise(e) for e in engine.events.get(label, [])]
    assert [e["type"] for e in got] == [e["type"] for e in want], label
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert list(g) == list(w), f"{label} event {i} keys"
        assert g == w, f"{label} event {i} ({w['type']})"


def assert_same_responses(engine: Replay) -> None:
    for line, status, body, headers in engine.responses:
        recorded = next_response(line)
        assert status == recorded["status"], (line["method"], line["path"])
        if status == 101:
            continue
        assert unordered(normalise(body)) == unordered(normalise(recorded["body"])), (
            line["method"],
            line["path"],
        )
        want_headers = list(recorded["headers"])
        assert [h for h in headers if h in want_headers or h == "Content-type"] == want_headers


def unordered(body: Any) -> Any:
    """Lists of objects (GET /channels) come in Asterisk's hash order: compare them sorted."""
    if isinstance(body, list) and all(isinstance(x, dict) for x in body):
        return sorted(body, key=lambda x: json.dumps(x, sort_keys=True))
    return body


_RESPONSES: dict[int, dict[str, Any]] = {}


def next_response(request: dict[str, Any]) -> dict[str, Any]:
    return _RESPONSES[id(request)]


def index_responses(lines: list[dict[str, Any]]) -> None:
    """Pair each request with its response (the next response line of the same actor)."""
    pending: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line["dir"] == "request":
            pending.setdefault(line["actor"], []).append(line)
        elif line["dir"] == "response":
            request = pending[line["actor"]].pop(0)
            _RESPONSES[id(request)] = line


@pytest.mark.parametrize(
    "scenario", ["offer_continue", "offer_app_hangup", "offer_caller_hangup_mid_playback"]
)
@pytest.mark.slow  # replays a recording at its recorded pace
async def test_offer_flow_matches_recording(
    sim: SimAsterisk, shared_asterisk: Path, scenario: str
) -> None:
    lines = [
        line
        for line in load("offer_flow.jsonl", shared_asterisk)
        if line.get("scenario") == scenario
    ]
    index_responses(lines)
    engine = await replay(sim, lines)
    assert_same_events(lines, engine, "callback-ari")
    assert_same_events(lines, engine, "harness")
    assert_same_responses(engine)


@pytest.mark.slow  # replays a recording at its recorded pace
async def test_originate_outcomes_match_recording(sim: SimAsterisk, shared_asterisk: Path) -> None:
    lines = load("originate_outcomes.jsonl", shared_asterisk)
    index_responses(lines)
    engine = await replay(sim, lines)
    got = [normalise(e) for e in engine.events["callback-ari"]]
    assert len(got) == len(recorded_events(lines, "callback-ari"))
    offset = 0
    for scenario in dict.fromkeys(line.get("scenario") for line in lines):
        want = [
            normalise(line["event"])
            for line in lines
            if line["dir"] == "event"
            and line["socket"] == "callback-ari"
            and line.get("scenario") == scenario
        ]
        mine, offset = got[offset : offset + len(want)], offset + len(want)
        if scenario == "busy":
            # the two recorded busy runs put ChannelStateChange(Busy) at different places (and
            # so snapshot different states); the fake follows busy_generated_ids, checked exactly
            assert sorted(e["type"] for e in mine) == sorted(e["type"] for e in want)
        else:
            assert [e["type"] for e in mine] == [e["type"] for e in want], scenario
            for i, (g, w) in enumerate(zip(mine, want, strict=True)):
                assert json.dumps(g) == json.dumps(w), f"{scenario} event {i}"
    assert_same_responses(engine)


@pytest.mark.slow  # replays a recording at its recorded pace
async def test_websocket_outage_matches_recording(sim: SimAsterisk, shared_asterisk: Path) -> None:
    lines = load("ws_disconnect.jsonl", shared_asterisk)
    index_responses(lines)
    engine = await replay(sim, lines)
    for label in ("callback-ari", "callback-ari#1", "callback-ari#2"):
        assert_same_events(lines, engine, label)
    # the harness follows several calls at once; Asterisk interleaves their threads
    # differently from run to run, so its events are compared channel by channel
    assert by_channel(engine.events["harness"]) == by_channel(recorded_events(lines, "harness"))
    assert_same_responses(engine)


def by_channel(events: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Normalised events grouped by the channel they concern, in arrival order."""
    groups: dict[str, list[Any]] = {}
    for event in events:
        target = event.get("playback", {}).get("target_uri", "")
        chan = (event.get("channel") or event.get("peer") or {}).get("id") or target
        groups.setdefault(chan, []).append(normalise(event))
    return groups

"""AriClient against a small ARI server that replays what Asterisk 22 answered in the recordings."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import ssl
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from callback_ari.asterisk import ari_events as ev
from callback_ari.asterisk.ari import AriClient
from callback_ari.core.backoff import Backoff
from callback_ari.errors import (
    ApplicationReplaced,
    AriAuthError,
    AriBadRequest,
    AriConflict,
    AriHTTPError,
    AriNotFound,
    AriPreconditionFailed,
    AriUnavailable,
    AriUnprocessable,
)
from callback_ari.sim.simpbx.redis_process import free_port

APP, USER, PASSWORD = "callback-ari", "cbuser", "cbpass"
WAIT = 5.0  # generous upper bound for anything awaited here
SPEC_FILES = ("channels", "playbacks", "applications", "sounds", "asterisk", "events")
NOT_FOUND = {"message": "Channel not found"}


# --- the recordings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    body: Any


def transcript(shared: Path, name: str) -> list[dict[str, Any]]:
    path = shared / "transcripts-22" / name
    return [json.loads(line) for line in path.read_text().splitlines()]


def exchanges(lines: list[dict[str, Any]], scenario: str | None = None) -> list[Exchange]:
    """REST request/response pairs (any actor) of one scenario, in recorded order."""
    pending: dict[tuple[str, str, str], deque[dict[str, Any]]] = {}
    out: list[Exchange] = []
    for item in lines:
        if scenario is not None and item.get("scenario") != scenario:
            continue
        if item["dir"] not in ("request", "response") or item.get("websocket"):
            continue
        key = (item["actor"], item["method"], item["path"])
        if item["dir"] == "request":
            pending.setdefault(key, deque()).append(item)
            continue
        req = pending[key].popleft()
        out.append(Exchange(req["method"], req["path"], dict(req["query"]), item["status"],
                            dict(item["headers"]), item["body"]))  # fmt: skip
    return out


def recorded_events(lines: list[dict[str, Any]], scenario: str, socket: str = APP) -> list[Any]:
    return [
        i["event"]
        for i in lines
        if i["dir"] == "event" and i.get("scenario") == scenario and i["socket"] == socket
    ]


# --- the spec -------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    pattern: re.Pattern[str]
    params: dict[str, dict[str, Any]]


def spec_operations(shared: Path) -> list[Operation]:
    ops = []
    for name in SPEC_FILES:
        doc = json.loads((shared / "ari-22" / f"{name}.json").read_text())
        for api in doc["apis"]:
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(api["path"]))
            for op in api["operations"]:
                params = {p["name"]: p for p in op.get("parameters", [])}
                ops.append(Operation(op["httpMethod"], re.compile(f"/ari{regex}"), params))
    return ops


def spec_problems(ops: list[Operation], method: str, raw_path: str,
                  query: list[tuple[str, str]], body: bytes) -> list[str]:  # fmt: skip
    """Why this request would not be valid ARI 22 (empty when it is)."""
    op = next((o for o in ops if o.method == method and o.pattern.fullmatch(raw_path)), None)
    if op is None:
        return [f"{method} {raw_path}: no such operation"]
    problems = []
    names = [k for k, _ in query]
    if len(names) != len(set(names)):
        problems.append(f"repeated query parameter in {names}")
    for name, value in query:
        p = op.params.get(name)
        if p is None or p["paramType"] != "query":
            problems.append(f"{name}: not a query parameter of {method} {op.pattern.pattern}")
            continue
        allowed = p.get("allowableValues", {}).get("values")
        values = value.split(",") if p.get("allowMultiple") else [value]
        if allowed and any(v not in allowed for v in values):
            problems.append(f"{name}={value!r} not in {allowed}")
    for name, p in op.params.items():
        if p["paramType"] == "query" and p.get("required") and name not in names:
            problems.append(f"required {name} missing")
    if body:
        body_params = {n for n, p in op.params.items() if p["paramType"] == "body"}
        decoded = json.loads(body)
        if not isinstance(decoded, dict) or not set(decoded) <= body_params:
            problems.append(f"body {decoded!r} does not match body parameters {body_params}")
    return problems


# --- the fake server --------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    url: str


@dataclass
class Socket:
    """One accepted /ari/events connection, driven by the test."""

    ws: web.WebSocketResponse
    request: web.Request
    opened_at: float

    async def send(self, event: Any) -> None:
        await self.ws.send_str(json.dumps(event, separators=(",", ":")))

    def abort(self) -> None:
        """TCP reset, no close frame (the recorded ``abrupt_drop``)."""
        assert self.request.transport is not None
        self.request.transport.abort()


@dataclass
class FakeAri:
    """An ARI server that answers each request with what Asterisk 22 answered to it.

    Exact match on (method, path, query); repeated requests get the recorded answers in order.
    Channels in ``gone`` answer the recorded 404 "Channel not found" (README fact 12). Answers
    for calls that the recordings lack are set by the test in ``extra``. Every request is
    checked against the ARI 22 spec; ``violations`` must stay empty.
    """

    ops: list[Operation]
    answers: dict[tuple[str, str, frozenset[tuple[str, str]]], deque[Exchange]]
    gone: set[str] = field(default_factory=set)
    extra: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    refuse_ws: deque[int] = field(default_factory=deque)
    stall: asyncio.Event | None = None
    autoping: bool = True  # False: a dead peer that never answers a ping
    seen: list[Seen] = field(default_factory=list)
    ws_seen: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    sockets: asyncio.Queue[Socket] = field(default_factory=asyncio.Queue)
    open_sockets: list[Socket] = field(default_factory=list)
    server: TestServer | None = None

    @classmethod
    def replaying(cls, shared: Path, pairs: list[Exchange]) -> FakeAri:
        answers: dict[tuple[str, str, frozenset[tuple[str, str]]], deque[Exchange]] = {}
        for x in pairs:
            answers.setdefault((x.method, x.path, frozenset(x.query.items())), deque()).append(x)
        return cls(spec_operations(shared), answers)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(""))

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_route("*", "/ari/{tail:.*}", self._rest)
        self.server = TestServer(app)
        await self.server.start_server(ssl=tls)

    async def close(self) -> None:
        if self.stall is not None:
            self.stall.set()
        for sock in self.open_sockets:
            await sock.ws.close()
        if self.server is not None:
            await self.server.close()

    async def _record(self, request: web.Request, into: list[Seen]) -> Seen:
        body = await request.read()
        query = list(request.query.items())
        seen = Seen(request.method, request.path, request.rel_url.raw_path, dict(query),
                    dict(request.headers), body, str(request.url))  # fmt: skip
        into.append(seen)
        problems = spec_problems(self.ops, request.method, seen.raw_path, query, body)
        self.violations.extend(f"{request.method} {seen.raw_path}: {p}" for p in problems)
        return seen

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request, self.seen)
        if self.stall is not None:
            await self.stall.wait()
        queue = self.answers.get((seen.method, seen.path, frozenset(seen.query.items())))
        if queue:
            x = queue.popleft() if len(queue) > 1 else queue[0]
            return _respond(x.status, x.body, x.headers)
        if (seen.method, seen.path) in self.extra:
            status, body = self.extra[seen.method, seen.path]
            return _respond(status, body)
        match = re.fullmatch(r"/ari/channels/([^/]+)(/.*)?", seen.raw_path)
        if match and unquote(match.group(1)) in self.gone:
            return _respond(404, NOT_FOUND)
        return _respond(501, {"message": f"no recorded answer for {seen.method} {seen.path}"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, self.ws_seen)
        if self.refuse_ws:
            return _respond(self.refuse_ws.popleft(), {"message": "refused by the test"})
        ws = web.WebSocketResponse(protocols=("ari",), autoping=self.autoping)
        await ws.prepare(request)
        sock = Socket(ws, request, asyncio.get_running_loop().time())
        self.open_sockets.append(sock)
        self.sockets.put_nowait(sock)
        async for _ in ws:  # the client never sends; this ends when the socket closes
            pass
        return ws


def _respond(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    keep = {k: v for k, v in (headers or {}).items()
            if k.lower() not in ("content-length", "date", "content-type")}  # fmt: skip
    if body is None:
        return web.Response(status=status, headers=keep)
    text = json.dumps(body, separators=(",", ":"))
    return web.Response(status=status, text=text, content_type="application/json", headers=keep)


# --- fixtures -------------------------------------------------------------------------

FakeFactory = Callable[..., Awaitable[FakeAri]]


@pytest.fixture
async def fake_ari(shared_asterisk: Path) -> AsyncIterator[FakeFactory]:
    fakes: list[FakeAri] = []

    async def make(file: str = "offer_flow.jsonl", scenario: str | None = None) -> FakeAri:
        pairs = exchanges(transcript(shared_asterisk, file), scenario)
        fake = FakeAri.replaying(shared_asterisk, pairs)
        await fake.start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        await fake.close()
    assert [v for f in fakes for v in f.violations] == []


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., AriClient]]:
    made: list[AriClient] = []

    def make(url: str, **kw: Any) -> AriClient:
        kw.setdefault("backoff", Backoff(base=0.02, cap=0.1))
        client = AriClient(url, USER, PASSWORD, APP, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@contextlib.asynccontextmanager
async def events_running(
    client: AriClient,
    on_event: Callable[[ev.AriEvent], None],
    on_connect: Callable[[], Awaitable[None]],
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run_events(on_event, on_connect))
    try:
        yield task
    finally:
        if not task.done():  # a test that awaited the task itself has seen its outcome
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Recorder:
    """on_event / on_connect targets that tests await instead of sleeping."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[ev.AriEvent] = asyncio.Queue()
        self.connects: asyncio.Queue[float] = asyncio.Queue()
        self.connect_count = 0
        self.order: list[str] = []

    def on_event(self, event: ev.AriEvent) -> None:
        self.order.append(event.type)
        self.events.put_nowait(event)

    async def on_connect(self) -> None:
        self.connect_count += 1
        self.order.append("on_connect")
        self.connects.put_nowait(asyncio.get_running_loop().time())

    async def next_event(self) -> ev.AriEvent:
        async with asyncio.timeout(WAIT):
            return await self.events.get()

    async def next_connect(self) -> float:
        async with asyncio.timeout(WAIT):
            return await self.connects.get()


async def next_socket(fake: FakeAri) -> Socket:
    async with asyncio.timeout(WAIT):
        return await fake.sockets.get()


def recorded_request(shared: Path, file: str, scenario: str, method: str, path: str,
                     occurrence: int = 0) -> Exchange:  # fmt: skip
    xs = [x for x in exchanges(transcript(shared, file), scenario)
          if (x.method, x.path) == (method, path)]  # fmt: skip
    return xs[occurrence]


# --- REST -----------------------------------------------------------------------------

ANSWERED = dict(
    endpoint="Local/5551000@customers/n", channel_id="cb-ans", other_channel_id="cb-ans-2",
    app_args=("callback", "TESTID"), caller_id="Callback <5559000>", timeout=10,
)  # fmt: skip


async def test_originate_sends_the_recorded_query_and_returns_the_channel(
    shared_asterisk: Path, fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("originate_outcomes.jsonl", "answered")
    async with clients(fake.url) as ari:
        channel = await ari.originate(**ANSWERED)  # type: ignore[arg-type]
    assert (channel.id, channel.state, channel.app_name) == ("cb-ans", "Down", "AppDial2")
    want = recorded_request(shared_asterisk, "originate_outcomes.jsonl", "answered",
                            "POST", "/ari/channels")  # fmt: skip
    [req] = fake.seen
    assert (req.method, req.raw_path, req.query, req.body) == ("POST", want.path, want.query, b"")


async def test_originate_channel_variables_travel_in_the_json_body(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("originate_outcomes.jsonl", "answered")
    ari = clients(fake.url)
    await ari.originate(**ANSWERED, variables={"CB_ID": "cb-7", "CB_PRIO": "10"})  # type: ignore[arg-type]
    [req] = fake.seen
    assert json.loads(req.body) == {"variables": {"CB_ID": "cb-7", "CB_PRIO": "10"}}
    assert req.headers["Content-Type"] == "application/json"
    assert "variables" not in req.query


async def test_duplicate_channel_id_raises_conflict(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("originate_outcomes.jsonl", "duplicate_channel_id")
    ari = clients(fake.url)
    with pytest.raises(AriConflict) as info:
        dup = {**ANSWERED, "channel_id": "cb-noans", "other_channel_id": "cb-other-x"}
        await ari.originate(**dup)  # type: ignore[arg-type]
    assert (info.value.status, info.value.method, info.value.path) == (409, "POST", "/channels")
    assert info.value.message == "Channel with given unique ID already exists"


async def test_play_continue_and_hangup_send_the_recorded_requests(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    offer = await fake_ari("offer_flow.jsonl", "offer_continue")
    ari = clients(offer.url)
    assert await ari.play("offer1-c", ["sound:vm-enter-num-to-call"], "offer1-pb2") == "offer1-pb2"
    await ari.answer("offer1-c")
    assert [(r.method, r.raw_path, r.query) for r in offer.seen] == [
        ("POST", "/ari/channels/offer1-c/play",
         {"media": "sound:vm-enter-num-to-call", "playbackId": "offer1-pb2"}),
        ("POST", "/ari/channels/offer1-c/answer", {}),
    ]  # fmt: skip
    answered = await fake_ari("originate_outcomes.jsonl", "answered")
    ari2 = clients(answered.url)
    await ari2.continue_in_dialplan("cb-ans", "callback-queue", "support", 1)
    await ari2.hangup("cb-ans")
    assert [(r.method, r.raw_path, r.query) for r in answered.seen] == [
        ("POST", "/ari/channels/cb-ans/continue",
         {"context": "callback-queue", "extension": "support", "priority": "1"}),
        ("DELETE", "/ari/channels/cb-ans", {}),
    ]  # fmt: skip


async def test_play_sends_several_media_comma_joined_and_refuses_commas_inside(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_caller_hangup_mid_playback")
    fake.gone.add("offer3-c")
    ari = clients(fake.url)
    with pytest.raises(AriNotFound):
        await ari.play("offer3-c", ["sound:queue-thankyou", "digits:5551234"], "p1")
    assert fake.seen[-1].query == {"media": "sound:queue-thankyou,digits:5551234",
                                   "playbackId": "p1"}  # fmt: skip
    with pytest.raises(ValueError, match="comma"):
        await ari.play("offer3-c", ["sound:a,b"], "p2")
    with pytest.raises(ValueError, match="hangup reason"):
        await ari.hangup("offer3-c", reason="bogus")
    assert len(fake.seen) == 1


async def test_get_variable_value_unset_and_gone_channel(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    fake.gone.add("offer3-c")
    ari = clients(fake.url)
    assert await ari.get_variable("offer1-c", "QUEUESTATUS") == "TIMEOUT"
    assert await ari.get_variable("offer1-c", "NO_SUCH_VAR") is None  # 404, variable flavour
    with pytest.raises(AriNotFound, match="Channel not found"):  # 404, channel flavour
        await ari.get_variable("offer3-c", "QUEUESTATUS")
    assert [(r.method, r.raw_path, r.query) for r in fake.seen] == [
        ("GET", "/ari/channels/offer1-c/variable", {"variable": "QUEUESTATUS"}),
        ("GET", "/ari/channels/offer1-c/variable", {"variable": "NO_SUCH_VAR"}),
        ("GET", "/ari/channels/offer3-c/variable", {"variable": "QUEUESTATUS"}),
    ]


async def test_dialplan_functions_read_through_get_variable(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("originate_outcomes.jsonl", "answered")
    ari = clients(fake.url)
    name = "QUEUE_MEMBER(support,ready)"
    assert [await ari.get_variable("cb-ans", name) for _ in range(2)] == ["0", "1"]


async def test_channel_queries_and_the_application(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    invalid = await fake_ari("originate_outcomes.jsonl", "invalid_extension")
    with pytest.raises(AriNotFound) as info:
        await clients(invalid.url).get_channel("cb-inval")
    assert (info.value.status, info.value.path) == (404, "/channels/cb-inval")
    answered = await fake_ari("originate_outcomes.jsonl", "answered")
    ari = clients(answered.url)
    assert (await ari.get_channel("cb-ans")).state == "Up"
    channels = await ari.list_channels()
    assert "cb-ans-2" in {c.id for c in channels}
    drop = await fake_ari("ws_disconnect.jsonl", "abrupt_drop")
    app = await clients(drop.url).application()
    assert app["channel_ids"] == ["abru0-c", "abru1-c"]


async def test_path_parameters_are_url_encoded(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    odd = "Local/agent1@agents-00000052;1 x"
    fake.gone.add(odd)
    ari = clients(fake.url)
    with pytest.raises(AriNotFound):
        await ari.answer(odd)
    with pytest.raises(AriNotFound):
        await ari.get_variable(odd, "A&B=C")
    assert [(r.raw_path, r.query) for r in fake.seen] == [
        ("/ari/channels/Local%2Fagent1%40agents-00000052%3B1%20x/answer", {}),
        ("/ari/channels/Local%2Fagent1%40agents-00000052%3B1%20x/variable", {"variable": "A&B=C"}),
    ]


async def test_calls_without_recordings_follow_the_spec(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    fake.extra.update({
        ("GET", "/ari/sounds/queue-thankyou"): (200, {"id": "queue-thankyou", "text": "",
            "formats": [{"language": "en", "format": "gsm"}]}),
        ("GET", "/ari/asterisk/info"): (200, {"system": {
            "version": "GIT-22-22.0.0-pre1-541-g69535d4837", "entity_id": "02:fc:00:00:00:01"}}),
        ("POST", "/ari/applications/callback-ari/subscription"): (200, {"name": APP,
            "channel_ids": [], "bridge_ids": [], "endpoint_ids": [],
            "device_names": ["Custom:agent1"], "events_allowed": [], "events_disallowed": []}),
        ("POST", "/ari/channels/offer1-c/variable"): (204, None),
        ("DELETE", "/ari/playbacks/offer1-pb2"): (204, None),
        ("GET", "/ari/sounds/no-such-sound"): (404, {"message": "Sound not found"}),
    })  # fmt: skip
    ari = clients(fake.url)
    assert await ari.sound_exists("queue-thankyou") is True
    assert await ari.sound_exists("queue-thankyou", lang="fr") is False
    assert await ari.sound_exists("no-such-sound") is False
    info = await ari.asterisk_info()
    assert info["system"]["entity_id"] == "02:fc:00:00:00:01"
    sub = await ari.subscribe("deviceState:Custom:agent1")
    assert sub["device_names"] == ["Custom:agent1"]
    await ari.set_variable("offer1-c", "CB_POSITION", "3")
    await ari.stop_playback("offer1-pb2")
    assert [(r.method, r.raw_path, r.query) for r in fake.seen][-3:] == [
        ("POST", "/ari/applications/callback-ari/subscription",
         {"eventSource": "deviceState:Custom:agent1"}),
        ("POST", "/ari/channels/offer1-c/variable", {"variable": "CB_POSITION", "value": "3"}),
        ("DELETE", "/ari/playbacks/offer1-pb2", {}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, AriBadRequest), (401, AriAuthError), (403, AriAuthError), (404, AriNotFound),
     (409, AriConflict), (412, AriPreconditionFailed), (422, AriUnprocessable),
     (500, AriHTTPError)],
)  # fmt: skip
async def test_error_statuses_map_to_our_exceptions(
    fake_ari: FakeFactory, clients: Callable[..., AriClient], status: int, error: type[Exception]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    fake.extra[("POST", "/ari/channels/x/continue")] = (status, {"message": f"status {status}"})
    with pytest.raises(error) as info:
        await clients(fake.url).continue_in_dialplan("x", "ctx", "s")
    assert type(info.value) is error
    assert isinstance(info.value, AriHTTPError)
    assert (info.value.status, info.value.message) == (status, f"status {status}")


async def test_unreachable_or_silent_server_raises_unavailable(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    with pytest.raises(AriUnavailable):
        await clients(f"http://127.0.0.1:{free_port()}").list_channels()
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    fake.stall = asyncio.Event()
    with pytest.raises(AriUnavailable, match=r"no answer within 0\.2 s"):
        await clients(fake.url, request_timeout=0.2).list_channels()


async def test_credentials_only_in_the_authorization_header(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    url_with_creds = fake.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    ari = clients(url_with_creds)
    assert PASSWORD not in repr(ari) and PASSWORD not in ari.base_url
    rec = Recorder()
    async with events_running(ari, rec.on_event, rec.on_connect):
        await rec.next_connect()
        await ari.list_channels()
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    [ws_req] = fake.ws_seen
    assert ws_req.headers["Authorization"] == basic
    assert ws_req.query == {"app": APP, "subscribeAll": "false"}
    assert fake.seen[-1].headers["Authorization"] == basic
    for req in (ws_req, *fake.seen):
        assert PASSWORD not in req.url and "api_key" not in req.url


def self_signed(tmp: Path) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_tls_is_verified_unless_configured_off(
    shared_asterisk: Path, tmp_path: Path, clients: Callable[..., AriClient]
) -> None:
    pairs = exchanges(transcript(shared_asterisk, "offer_flow.jsonl"), "offer_continue")
    fake = FakeAri.replaying(shared_asterisk, pairs)
    await fake.start(tls=self_signed(tmp_path))
    try:
        assert fake.url.startswith("https://")
        with pytest.raises(AriUnavailable, match="certificate"):
            await clients(fake.url).list_channels()
        insecure = clients(fake.url, verify_tls=False)
        assert await insecure.list_channels() == []
        rec = Recorder()
        async with events_running(insecure, rec.on_event, rec.on_connect):
            await next_socket(fake)  # wss:// derived from https://
            await rec.next_connect()
        assert [r.path for r in fake.seen] == ["/ari/channels"]
    finally:
        await fake.close()
    assert fake.violations == []


# --- events ---------------------------------------------------------------------------


async def test_events_arrive_decoded_after_on_connect(
    shared_asterisk: Path, fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    raw = recorded_events(transcript(shared_asterisk, "offer_flow.jsonl"), "offer_continue")
    ari = clients(fake.url)
    rec = Recorder()
    assert not ari.connected
    async with events_running(ari, rec.on_event, rec.on_connect):
        sock = await next_socket(fake)
        for event in raw:  # already queued while on_connect() runs: dispatched after it
            await sock.send(event)
        await rec.next_connect()
        assert ari.connected
        got = [await rec.next_event() for _ in raw]
        with pytest.raises(RuntimeError, match="already running"):
            await ari.run_events(rec.on_event, rec.on_connect)
    assert rec.order == ["on_connect", *(r["type"] for r in raw)]
    assert [e.type for e in got] == [r["type"] for r in raw]
    assert isinstance(got[0], ev.StasisStart) and got[0].args == ("offer", "support")
    assert (rec.connect_count, ari.reconnects, ari.connected) == (1, 0, False)
    assert fake.ws_seen[0].headers["Sec-WebSocket-Protocol"] == "ari"


@pytest.mark.parametrize("how", ["abrupt", "clean"])
async def test_reconnects_after_the_socket_drops_and_resyncs(
    shared_asterisk: Path, fake_ari: FakeFactory, clients: Callable[..., AriClient], how: str
) -> None:
    fake = await fake_ari("ws_disconnect.jsonl", "abrupt_drop")
    raw = recorded_events(transcript(shared_asterisk, "ws_disconnect.jsonl"), "abrupt_drop")
    cap = 0.2
    ari = clients(fake.url, backoff=Backoff(base=0.05, cap=cap))
    rec = Recorder()
    loop = asyncio.get_running_loop()
    async with events_running(ari, rec.on_event, rec.on_connect):
        first = await next_socket(fake)
        await rec.next_connect()
        await first.send(raw[0])
        assert (await rec.next_event()).type == "StasisStart"
        dropped_at = loop.time()
        if how == "abrupt":
            first.abort()
        else:
            await first.ws.close(code=1000)
        second = await next_socket(fake)
        await rec.next_connect()
        assert second.opened_at - dropped_at <= cap + 0.5  # first retry: at most base
        assert (rec.connect_count, ari.reconnects, ari.connected) == (2, 1, True)
        await second.send(raw[1])  # events resume on the new socket
        event = await rec.next_event()
        assert (event.type, event.channel_id) == ("StasisStart", "abru0-c")


async def test_a_silent_peer_is_detected_by_the_heartbeat(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    fake.autoping = False
    ari = clients(fake.url, heartbeat=0.2)
    rec = Recorder()
    async with events_running(ari, rec.on_event, rec.on_connect):
        await next_socket(fake)
        await rec.next_connect()
        await next_socket(fake)  # no pong within heartbeat/2: dropped and reconnected
        await rec.next_connect()
        assert ari.reconnects == 1


@pytest.mark.expect_errors("ari.auth_failed")
async def test_connect_failures_are_retried_with_backoff(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    fake.refuse_ws.extend([401, 503])
    ari = clients(fake.url)
    rec = Recorder()
    with capture_logs() as logs:
        async with events_running(ari, rec.on_event, rec.on_connect):
            await next_socket(fake)
            await rec.next_connect()
    assert len(fake.ws_seen) == 3
    names = [e["event"] for e in logs]
    assert names.count("ari.auth_failed") == 1
    assert names.count("ari.connect_failed") == 1
    assert ari.reconnects == 0  # never connected before: the first success is no reconnect


async def test_backoff_resets_only_after_a_connection_that_stayed_up(
    fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    for stable_after, attempts_after_two_drops in ((0.0, 1), (3600.0, 2)):
        backoff = Backoff(base=0.01, cap=0.05)
        ari = clients(fake.url, backoff=backoff, stable_after=stable_after)
        rec = Recorder()
        async with events_running(ari, rec.on_event, rec.on_connect):
            for _ in range(2):
                (await next_socket(fake)).abort()
                await rec.next_connect()
            await next_socket(fake)
            await rec.next_connect()
            assert backoff.attempt == attempts_after_two_drops


@pytest.mark.expect_errors("ari.application_replaced")
async def test_application_replaced_stops_the_stream_loudly(
    shared_asterisk: Path, fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("ws_disconnect.jsonl", "replaced")
    lines = transcript(shared_asterisk, "ws_disconnect.jsonl")
    start, replaced = recorded_events(lines, "replaced", socket="callback-ari#1")
    ari = clients(fake.url)
    rec = Recorder()
    with capture_logs() as logs:
        async with events_running(ari, rec.on_event, rec.on_connect) as task:
            sock = await next_socket(fake)
            await rec.next_connect()
            await sock.send(start)
            await sock.send(replaced)
            with pytest.raises(ApplicationReplaced):
                async with asyncio.timeout(WAIT):
                    await task
    assert not ari.connected
    assert (await rec.next_event()).type == "StasisStart" and rec.events.empty()
    [entry] = [e for e in logs if e["event"] == "ari.application_replaced"]
    assert entry["log_level"] == "error" and entry["app"] == APP


async def test_bad_frames_are_skipped_and_the_stream_goes_on(
    shared_asterisk: Path, fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    raw = recorded_events(transcript(shared_asterisk, "offer_flow.jsonl"), "offer_continue")
    start, finished = raw[0], raw[2]
    missing = {k: v for k, v in start.items() if k != "channel"}
    ari = clients(fake.url, max_message_bytes=4096)
    rec = Recorder()
    with capture_logs() as logs:
        async with events_running(ari, rec.on_event, rec.on_connect):
            sock = await next_socket(fake)
            await rec.next_connect()
            await sock.ws.send_str("{not json")
            await sock.ws.send_str("[1, 2]")
            await sock.ws.send_bytes(b"\x00\x01binary")
            await sock.ws.send_str(json.dumps({**start, "pad": "x" * 5000}))
            await sock.send({**start, "type": "SomethingNew"})
            await sock.send(missing)
            await sock.send(start)
            await sock.send(finished)
            got = [await rec.next_event(), await rec.next_event()]
    assert [e.type for e in got] == ["StasisStart", "PlaybackFinished"]
    assert ari.reconnects == 0
    reasons = [e["reason"] for e in logs if e["event"] == "ari.bad_event"]
    assert reasons == ["invalid_json", "not_an_object", "binary", "oversized", "unknown_type",
                       "malformed"]  # fmt: skip


@pytest.mark.expect_errors("ari.handler_error", "ari.on_connect_error")
async def test_a_failing_handler_does_not_stop_the_stream(
    shared_asterisk: Path, fake_ari: FakeFactory, clients: Callable[..., AriClient]
) -> None:
    fake = await fake_ari("offer_flow.jsonl", "offer_continue")
    raw = recorded_events(transcript(shared_asterisk, "offer_flow.jsonl"), "offer_continue")
    rec = Recorder()

    def on_event(event: ev.AriEvent) -> None:
        if isinstance(event, ev.StasisStart):
            raise RuntimeError("handler bug")
        rec.on_event(event)

    async def on_connect() -> None:
        await rec.on_connect()
        raise RuntimeError("resync bug")

    ari = clients(fake.url)
    with capture_logs() as logs:
        async with events_running(ari, on_event, on_connect):
            sock = await next_socket(fake)
            await rec.next_connect()
            for event in raw[:3]:
                await sock.send(event)
            assert (await rec.next_event()).type == "PlaybackStarted"
            assert (await rec.next_event()).type == "PlaybackFinished"
    names = [e["event"] for e in logs]
    assert names.count("ari.handler_error") == 1 and names.count("ari.on_connect_error") == 1
    assert ari.reconnects == 0


async def test_cancel_and_close_leave_no_tasks_behind(
    shared_asterisk: Path, clients: Callable[..., AriClient]
) -> None:
    before = asyncio.all_tasks()
    fake = FakeAri.replaying(shared_asterisk, [])
    await fake.start()
    ari = clients(fake.url)
    rec = Recorder()
    async with events_running(ari, rec.on_event, rec.on_connect):
        sock = await next_socket(fake)
        await rec.next_connect()
        sock.abort()
        await next_socket(fake)
        await rec.next_connect()
    assert not ari.connected
    await ari.close()
    await fake.close()
    assert asyncio.all_tasks() == before
    assert fake.violations == []

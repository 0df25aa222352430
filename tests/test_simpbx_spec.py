"""The fake's ARI route table and its Asterisk-style answers to requests that do not fit it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callback_ari.sim.recording import fetch_api_docs
from callback_ari.sim.sandbox import Harness
from callback_ari.sim.simpbx import spec
from callback_ari.sim.simpbx.sim import SimAsterisk

BASIC = "Authorization: Basic Y2J1c2VyOmNicGFzcw==\r\n"  # cbuser:cbpass
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=0.01) as fake:
        yield fake


async def raw(
    sim: SimAsterisk, request_line: str, auth: str = BASIC
) -> tuple[str, list[str], bytes]:
    """One HTTP request on a raw socket: status line, header lines as sent, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.ari_port)
    writer.write(f"{request_line} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *headers = head.decode().split("\r\n")
    return status, headers, body


@pytest.mark.asterisk
async def test_route_table_and_models_are_derived_from_the_live_ari_spec(
    pbx: Harness, asterisk_data: Path
) -> None:
    """The committed derived data equals what the sandbox Asterisk 22 serves as its api-docs."""
    box = pbx.sandbox
    async with asyncio.timeout(30):
        docs = await fetch_api_docs(box.ari_url, box.harness_user, box.harness_secret)
    shipped = json.loads((Path(spec.__file__).parent / spec.ROUTES_FILE).read_text())
    assert shipped == spec.generate_from(docs)
    assert shipped["apiVersion"] == "10.0.0"
    models = json.loads((asterisk_data / "ari_models.json").read_text())
    assert models == spec.extract_models(docs)


def test_route_table_covers_every_resource_of_the_models() -> None:
    """The shipped table knows every ARI 22 resource the service and the fake use."""
    table = spec.RouteTable.load()
    assert table.api_version == "10.0.0"
    tops = {route.segments[0] for route in table.routes}
    assert {"channels", "bridges", "playbacks", "applications", "asterisk", "events"} <= tops


def test_route_matching_prefers_literal_segments() -> None:
    table = spec.RouteTable.load()
    match = table.match("POST", "/channels/create")
    assert isinstance(match, spec.Match) and match.operation.nickname == "create"
    match = table.match("POST", "/channels/abc/play/pb-1")
    assert isinstance(match, spec.Match)
    assert match.path_vars == {"channelId": "abc", "playbackId": "pb-1"}


async def test_unknown_path_is_404_resource_not_found(sim: SimAsterisk) -> None:
    status, _, body = await raw(sim, "GET /ari/nonsense")
    assert status == "HTTP/1.1 404 Not Found"
    assert json.loads(body) == {"message": "Resource not found"}


async def test_wrong_method_is_405_with_allow(sim: SimAsterisk) -> None:
    status, headers, body = await raw(sim, "PUT /ari/channels")
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert "Allow: GET,POST" in headers
    assert json.loads(body) == {"message": "Invalid method"}


async def test_missing_required_parameter_is_400(sim: SimAsterisk) -> None:
    status, _, body = await raw(sim, "POST /ari/channels?app=callback-ari")
    assert status == "HTTP/1.1 400 Bad Request"
    assert json.loads(body) == {"message": "Endpoint must be specified"}
    status, _, body = await raw(sim, "GET /ari/channels/x/variable")
    assert status == "HTTP/1.1 400 Bad Request"
    assert json.loads(body) == {"message": "Variable name is required"}


async def test_value_outside_allowable_values_is_400(sim: SimAsterisk) -> None:
    status, _, body = await raw(sim, "DELETE /ari/channels/x?reason=bogus")
    assert status == "HTTP/1.1 400 Invalid Reason"
    assert json.loads(body) == {"message": "Invalid reason for hangup reason provided"}
    status, _, body = await raw(sim, "POST /ari/applications/x/subscription")
    assert status == "HTTP/1.1 400 Bad Request"


async def test_wrong_credentials_are_401_with_challenge(sim: SimAsterisk) -> None:
    status, headers, body = await raw(
        sim, "GET /ari/channels", auth="Authorization: Basic eDp5\r\n"
    )
    assert status == "HTTP/1.1 401 Unauthorized"
    assert 'WWW-Authenticate: Basic realm="Asterisk REST Interface"' in headers
    assert json.loads(body) == {"message": "Authentication required"}
    status, _, _ = await raw(sim, "GET /ari/channels?api_key=cbuser:cbpass", auth="")
    assert status == "HTTP/1.1 200 OK"


async def test_headers_look_like_asterisk(sim: SimAsterisk) -> None:
    _, headers, body = await raw(sim, "GET /ari/channels")
    names = [h.split(":", 1)[0] for h in headers if h.split(":", 1)[0] != "Connection"]
    assert names == ["Server", "Date", "Cache-Control", "Content-type", "Content-Length"]
    assert "Server: Asterisk/22.10.1+dfsg+~cs6.17.60671434-1" in headers
    assert body == b"[]"
    status, headers, _ = await raw(sim, "POST /ari/asterisk/variable?variable=X&value=1")
    assert status == "HTTP/1.1 204 No Content"
    assert "Content-Length: 0" in headers


async def test_trailing_slash_gets_asterisks_hint(sim: SimAsterisk) -> None:
    status, _, body = await raw(sim, "GET /ari/channels/")
    assert status == "HTTP/1.1 404 Not Found"
    assert json.loads(body) == {"message": "ARI URLs do not end with a slash. Try /ari/channels"}


async def test_websocket_handshake_answers_like_the_recording(
    sim: SimAsterisk, asterisk_data: Path
) -> None:
    """The 101 has exactly the headers Asterisk 22.10 sent, in its order and spelling."""
    recorded = next(
        item
        for line in (asterisk_data / "offer_flow.jsonl").read_text().splitlines()
        if (item := json.loads(line))["dir"] == "response" and item["status"] == 101
    )
    key = base64.b64encode(b"sixteen byte key").decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.ari_port)
    writer.write(
        (
            "GET /ari/events?app=callback-ari HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: ari\r\n{BASIC}\r\n"
        ).encode()
    )
    async with asyncio.timeout(5):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
    writer.close()
    await writer.wait_closed()
    status, *lines = head.strip().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert status == f"HTTP/1.1 101 {recorded['reason']}"
    assert list(headers) == list(recorded["headers"])
    accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    assert headers == {**recorded["headers"], "Sec-WebSocket-Accept": accept}

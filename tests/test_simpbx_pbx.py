"""Behaviour of the fake beyond the recordings: dialplan kit, queue entries, outcomes, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callback_ari.sim.simpbx.extensions import KIT_TEMPLATE
from callback_ari.sim.simpbx.sim import SimAsterisk

AUTH = {"Authorization": aiohttp.encode_basic_auth("cbuser", "cbpass")}


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    fake = SimAsterisk(time_scale=0.01)
    fake.add_queue("support", ["agent1"], timeout=30, handle_time=20, wrapup=5)
    async with fake:
        fake.set_devstate("Custom:agent1", "INUSE")
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


@pytest.fixture
async def app_socket(
    sim: SimAsterisk, http: aiohttp.ClientSession
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    ws = await http.ws_connect(sim.ari_url + "/ari/events?app=callback-ari", protocols=("ari",))
    try:
        yield ws
    finally:
        await ws.close()


async def ami_login(sim: SimAsterisk) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.ami_port)
    await reader.readline()
    writer.write(b"Action: Login\r\nUsername: cbami\r\nSecret: cbpass\r\nEvents: off\r\n\r\n")
    assert b"Authentication accepted" in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def ami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, action: str) -> str:
    writer.write(action.replace("\n", "\r\n").encode() + b"\r\n\r\n")
    async with asyncio.timeout(5):
        return (await reader.readuntil(b"\r\n\r\n")).decode()


async def test_queue_timeout_enters_stasis_with_kit_arguments(
    sim: SimAsterisk, app_socket: aiohttp.ClientWebSocketResponse
) -> None:
    caller = sim.caller_joins("support", "2025550123", "Bob")
    event = await sim.wait_event("StasisStart", app="callback-ari")
    offer, queue, entry, join_ms, position = event["args"]
    assert (offer, queue, entry, position) == ("offer", "support", "timeout", "1")
    assert int(join_ms) > 1_700_000_000_000
    assert event["channel"]["id"] == caller.id
    assert event["channel"]["caller"] == {"name": "Bob", "number": "2025550123"}


async def test_stasis_failure_returns_caller_to_queue(sim: SimAsterisk) -> None:
    caller = sim.caller_joins("support", "2025550123", "Bob")
    await sim.wait_for(lambda: caller.variables.get("STASISSTATUS") == "FAILED")
    await sim.wait_for(lambda: sim.queue_callers("support") == [caller])
    assert sim.events(kind="StasisStart") == []


async def test_exit_digit_and_withdraw_enter_stasis(
    sim: SimAsterisk, app_socket: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession
) -> None:
    caller = sim.caller_joins("support", "2025550123")
    await sim.wait_for(lambda: sim.queue_callers("support") == [caller])
    sim.press_digit(caller.id, "7")  # not the exit digit: ignored
    sim.press_digit(caller.id, "1")
    event = await sim.wait_event("StasisStart")
    assert event["args"][2] == "digit"
    mark = sim.mark()
    url = f"{sim.ari_url}/ari/channels/{caller.id}"
    async with http.post(
        url + "/continue", params={"context": "callback-return", "extension": "support"}
    ) as r:
        assert r.status == 204
    await sim.wait_for(lambda: sim.queue_callers("support") == [caller])
    reader, writer = await ami_login(sim)
    try:
        reply = await ami(
            reader,
            writer,
            "Action: QueueWithdrawCaller\nQueue: support\n"
            f"Caller: {caller.name}\nWithdrawInfo: cb-9",
        )
        assert "Withdraw requested successfully" in reply
        event = await sim.wait_event("StasisStart", since=mark)
        assert event["args"][2] == "withdraw"
        assert caller.variables["QUEUE_WITHDRAW_INFO"] == "cb-9"
        reply = await ami(
            reader,
            writer,
            "Action: QueueWithdrawCaller\nQueue: support\nCaller: PJSIP/x-1\nWithdrawInfo: x",
        )
        assert "Unable to request withdraw from queue: No such caller" in reply
    finally:
        writer.close()
        await writer.wait_closed()


async def test_return_keeps_position_and_connect_goes_to_the_head(
    sim: SimAsterisk, app_socket: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession
) -> None:
    first = sim.caller_joins("support", "2025550001")
    await sim.wait_for(lambda: sim.queue_callers("support") == [first])
    sim.press_digit(first.id, "1")
    await sim.wait_event("StasisStart")
    second = sim.caller_joins("support", "2025550002")
    await sim.wait_for(lambda: sim.queue_callers("support") == [second])
    url = f"{sim.ari_url}/ari/channels/{first.id}"
    async with http.post(url + "/variable", params={"variable": "CB_POSITION", "value": "1"}) as r:
        assert r.status == 204
    async with http.post(
        url + "/continue", params={"context": "callback-return", "extension": "support"}
    ) as r:
        assert r.status == 204
    await sim.wait_for(lambda: sim.queue_callers("support") == [first, second])
    join_ms = first.variables["CB_JOIN"]
    # a confirmed callback customer joins ahead of both, with QUEUE_PRIO 10
    async with http.post(
        sim.ari_url + "/ari/channels",
        params={"endpoint": "PJSIP/2025551234@trunk", "app": "callback-ari", "channelId": "cb-1"},
    ) as r:
        assert r.status == 200
        assert (await r.json())["state"] == "Down"
    await sim.wait_event("ChannelDtmfReceived", channel_id="cb-1")
    async with http.post(
        sim.ari_url + "/ari/channels/cb-1/continue",
        params={"context": "callback-connect", "extension": "support", "priority": "1"},
    ) as r:
        assert r.status == 204
    await sim.wait_for(lambda: [c.id for c in sim.queue_callers("support")][:1] == ["cb-1"])
    assert sim.pbx.channels["cb-1"].variables["QUEUE_PRIO"] == "10"
    assert first.variables["CB_JOIN"] == join_ms
    assert [r.query["endpoint"] for r in sim.originates] == ["PJSIP/2025551234@trunk"]


async def test_number_behaviour_sequence_for_retries(
    sim: SimAsterisk, app_socket: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession
) -> None:
    sim.set_number_behaviour("+12025550199", ["busy", "answer"])
    params = {
        "endpoint": "PJSIP/+12025550199@trunk",
        "app": "callback-ari",
        "appArgs": "callback,1",
    }
    async with http.post(sim.ari_url + "/ari/channels", params={**params, "channelId": "a1"}) as r:
        assert r.status == 200
    destroyed = await sim.wait_event("ChannelDestroyed", channel_id="a1")
    assert (destroyed["cause"], destroyed["cause_txt"]) == (17, "User busy")
    busy = [e for e in sim.events(kind="Dial") if e["peer"]["id"] == "a1"]
    assert [e["dialstatus"] for e in busy] == ["", "BUSY"]
    async with http.post(sim.ari_url + "/ari/channels", params={**params, "channelId": "a2"}) as r:
        assert r.status == 200
    start = await sim.wait_event("StasisStart", channel_id="a2")
    assert start["args"] == ["callback", "1"]
    dtmf = await sim.wait_event("ChannelDtmfReceived", channel_id="a2")
    assert dtmf["digit"] == "1"


async def test_playback_failure_stop_and_media_lists(
    sim: SimAsterisk, app_socket: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession
) -> None:
    caller = sim.caller_joins("support", "2025550123")
    await sim.wait_event("StasisStart")
    url = f"{sim.ari_url}/ari/channels/{caller.id}/play"
    async with http.post(url, params={"media": "sound:no-such-sound", "playbackId": "p1"}) as r:
        assert r.status == 201 and r.headers["Location"] == "/ari/playbacks/p1"
    finished = await sim.wait_event("PlaybackFinished", channel_id=caller.id)
    assert finished["playback"]["state"] == "failed"
    async with http.post(
        url, params={"media": "sound:queue-thankyou,digits:12", "playbackId": "p2"}
    ) as r:
        assert (await r.json())["next_media_uri"] == "digits:12"
    cont = await sim.wait_event("PlaybackContinuing", channel_id=caller.id)
    assert cont["playback"]["media_uri"] == "sound:queue-thankyou"
    mark = sim.mark()
    async with http.post(url, params={"media": "tone:ring", "playbackId": "p3"}) as r:
        assert r.status == 201
    await sim.wait_event("PlaybackStarted", channel_id=caller.id, since=mark)
    async with http.delete(sim.ari_url + "/ari/playbacks/p3") as r:
        assert r.status == 204
    done = await sim.wait_event("PlaybackFinished", channel_id=caller.id, since=mark)
    assert done["playback"]["state"] == "done"
    async with http.get(sim.ari_url + "/ari/playbacks/p3") as r:
        assert r.status == 404 and await r.json() == {"message": "Playback not found"}
    async with http.get(sim.ari_url + "/ari/sounds/no-such-sound") as r:
        assert r.status == 404
    async with http.get(sim.ari_url + "/ari/sounds/queue-thankyou") as r:
        assert (await r.json())["id"] == "queue-thankyou"


async def test_agent_connect_complete_and_wrapup(sim: SimAsterisk) -> None:
    caller = sim.caller_joins("support", "2025550123")
    await sim.wait_for(lambda: sim.queue_callers("support") == [caller])
    sim.set_devstate("Custom:agent1", "NOT_INUSE")
    connect = await sim.wait_ami_event("AgentConnect")
    assert connect["Channel"] == caller.name and connect["MemberName"] == "agent1"
    assert sim.dialplan.read(None, "QUEUE_MEMBER(support,ready)") == "0"
    complete = await sim.wait_ami_event("AgentComplete")
    assert complete["Reason"] == "agent"
    await sim.wait_for(lambda: caller.id not in sim.pbx.channels)
    await sim.wait_for(lambda: sim.dialplan.read(None, "QUEUE_MEMBER(support,ready)") == "1")
    member = sim.queues.queues["support"].members[0]
    assert member.calls_taken == 1 and not member.in_call


async def test_application_replaced_and_socket_drop(
    sim: SimAsterisk, http: aiohttp.ClientSession
) -> None:
    first = await http.ws_connect(sim.ari_url + "/ari/events?app=callback-ari", protocols=("ari",))
    second = await http.ws_connect(sim.ari_url + "/ari/events?app=callback-ari", protocols=("ari",))
    msg = await first.receive(timeout=5)
    event: dict[str, Any] = json.loads(msg.data)
    assert list(event) == ["type", "timestamp", "application", "asterisk_id"]
    assert event["type"] == "ApplicationReplaced"
    assert sim.drop_ari_sockets(clean=False) == 1
    msg = await second.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    assert not sim.app_connected()
    await first.close()
    await second.close()


async def test_ami_freeze_and_refused_connections(sim: SimAsterisk) -> None:
    reader, writer = await ami_login(sim)
    try:
        sim.freeze_ami(True)
        writer.write(b"Action: Ping\r\nActionID: p1\r\n\r\n")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await reader.readuntil(b"\r\n\r\n")
        sim.freeze_ami(False)
        assert "Pong" in await ami(reader, writer, "Action: Ping\nActionID: p2")
    finally:
        writer.close()
        await writer.wait_closed()
    await sim.refuse_connections(True)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", sim.ami_port)
    await sim.refuse_connections(False)
    reader, writer = await ami_login(sim)
    assert "Pong" in await ami(reader, writer, "Action: Ping")
    assert sim.drop_ami_connections() == 1
    writer.close()
    await writer.wait_closed()


async def test_ami_login_errors_and_show_dialplan(sim: SimAsterisk) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.ami_port)
    assert await reader.readline() == b"Asterisk Call Manager/11.0.0\r\n"
    assert "Permission denied" in await ami(reader, writer, "Action: QueueStatus")
    assert "Authentication failed" in await ami(
        reader, writer, "Action: Login\nUsername: cbami\nSecret: no"
    )
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    reader, writer = await ami_login(sim)
    try:
        reply = await ami(reader, writer, "Action: ShowDialPlan\nContext: nosuch")
        assert "Did not find context nosuch" in reply
        reply = await ami(reader, writer, "Action: ShowDialPlan\nContext: callback-connect")
        assert "DialPlan list will follow" in reply
    finally:
        writer.close()
        await writer.wait_closed()


REPO = Path(__file__).resolve().parent.parent
KIT_CONTEXTS = {"[callback-queue]", "[callback-offer]", "[callback-return]", "[callback-connect]"}


def test_the_fakes_kit_is_the_shipped_kit() -> None:
    """simpbx runs a per-queue copy of dialplan/extensions_callback.conf; the copy must be
    the shipped file's lines, so the e2e tests exercise what administrators install."""
    shipped: dict[str, list[str]] = {}
    context = ""
    for line in (REPO / "dialplan" / "extensions_callback.conf").read_text().splitlines():
        text = line.split(";", 1)[0].rstrip()
        if text.startswith("["):
            context = text
        elif text.startswith(("exten => support,", " same =>")) and context in KIT_CONTEXTS:
            shipped.setdefault(context, []).append(text)
    fake: dict[str, list[str]] = {}
    rendered = KIT_TEMPLATE.format(incoming="from-trunk", q="support", app="callback-ari",
                                   timeout="")  # fmt: skip
    for line in rendered.splitlines():
        if line.startswith("["):
            context = line
        elif line and context in KIT_CONTEXTS:
            fake.setdefault(context, []).append(line)
    assert fake == shipped
    assert set(shipped) == KIT_CONTEXTS

"""Keeping the callback's place on a real Asterisk 22: member reservations and honest outcomes.

Each test runs the real service against the sandbox PBX (a fresh Asterisk per test) and a real
redis-server, and watches what Asterisk itself reports through the tests' own ARI app and AMI
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callback_ari.config.loader import Config, parse_config
from callback_ari.models import State
from callback_ari.sim.sandbox import AmiMessage, Harness, Sandbox, SandboxError
from tests.harness import running_service, store_for

pytestmark = pytest.mark.asterisk

TOKEN = "reserve-test-token-0123456789"
AGENT1 = "Local/agent1@agents/n"
AGENT2 = "Local/agent2@agents/n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config_text(
    sandbox: Sandbox, redis_url: str, http_port: int, *, resync: int = 2, **queue: str
) -> str:
    """A QueueStatus snapshot holds AMI events back while it loads, so a short resync interval
    (2 s: the crash tests wait for one) delays a member-ready event now and then."""
    return sandbox.service_config(
        redis_url,
        general={
            "instance_id": "res-test", "resync_interval": str(resync), "lease_seconds": "10"
        },
        queue={
            "offer_threshold": "0", "withdraw": "no", "ring_timeout": "10",
            "confirm_timeout": "5", "retry_interval": "1", "max_attempts": "3", **queue,
        },
        extra=f"[http]\nbind = 127.0.0.1\nport = {http_port}\ntoken = {TOKEN}\n",
    )  # fmt: skip


def service_config(
    sandbox: Sandbox, redis_url: str, *, resync: int = 2, **queue: str
) -> tuple[Config, int]:
    port = free_port()
    text = config_text(sandbox, redis_url, port, resync=resync, **queue)
    return parse_config(text, env={}), port


async def request_callback(
    port: int, number: str, http: aiohttp.ClientSession | None = None
) -> str:
    """POST a web callback request (on ``http`` if given, else a new session); returns its id."""
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(
            f"http://127.0.0.1:{port}/api/v1/callbacks",
            json={"queue": "support", "number": number, "name": "Ann"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            cb_id: str = body["callback"]["id"]
            return cb_id


def ami_is(name: str, **fields: str) -> Callable[[AmiMessage], bool]:
    def match(m: AmiMessage) -> bool:
        return m.get("Event") == name and all(m.get(k) == v for k, v in fields.items())

    return match


async def member_paused(pbx: Harness, interface: str) -> tuple[bool, str]:
    """(paused, reason) of ``interface`` in support, from a fresh QueueStatus."""
    mark = len(pbx.watch.ami)
    await pbx.ami("QueueStatus", Queue="support", Member=interface)
    async with asyncio.timeout(5):
        item = await pbx.wait_ami(ami_is("QueueMember", Location=interface), since=mark)
    return item.get("Paused") == "1", item.get("PausedReason", "")


async def test_callback_keeps_its_place_against_a_later_live_caller(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """The issue's scenario: A (web, t0), live B (t0+2 s), agent1 frees at t0+4.5 s.

    A's customer is connected to agent1 less than 2 s after pressing 1; B holds until agent2
    frees up, and agent1 sees the customer's number.
    """
    await pbx.set_global("AGENT_TALK", "8")
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    config, port = service_config(sandbox, redis_url, resync=30)  # the default interval
    async with running_service(config):
        t0 = time.monotonic()
        cb_id = await request_callback(port, "2125551001")
        channel = f"cb-{cb_id}-a1"
        await asyncio.sleep(2.0 - (time.monotonic() - t0))
        live_b = await pbx.call_in("2125559002", exten="plain", name="Live B")
        async with asyncio.timeout(5):
            b_join = await pbx.wait_ami(ami_is("QueueCallerJoin", CallerIDNum="2125559002"))
        await asyncio.sleep(4.5 - (time.monotonic() - t0))
        mark = len(pbx.watch.ami)
        await pbx.device("agent1", "NOT_INUSE")
        async with asyncio.timeout(20):
            connect = await pbx.wait_ami(
                lambda m: m.get("Event") == "AgentConnect" and m.get("Interface") == AGENT1,
                since=mark,
            )
        assert connect["Uniqueid"] == channel, "agent1 went to someone else than callback A"
        paused = next(
            m for m in pbx.ami_events("QueueMemberPause", since=mark)
            if m.get("Interface") == AGENT1 and m.get("Paused") == "1"
        )  # fmt: skip
        assert paused["PausedReason"] == f"callback-ari:{cb_id}"
        pressed = [
            e for e in pbx.ari_events("ChannelDtmfReceived")
            if e["channel"]["id"] == channel and e.get("digit") == "1"
        ]  # fmt: skip
        assert pressed, "the customer never pressed 1"
        wait_after_1 = float(connect["_t"]) - pressed[0]["_t"]
        assert wait_after_1 < 2.0, f"A waited {wait_after_1:.2f} s after pressing 1"
        # the member's phone shows the customer's number
        called = next(
            m for m in pbx.ami_events("AgentCalled", since=mark) if m.get("Uniqueid") == channel
        )
        assert called["DestConnectedLineNum"].endswith("2125551001"), called
        # B still holds: nobody answered them while agent2 stayed busy
        await asyncio.sleep(1.0)
        assert not [
            m for m in pbx.ami_events("AgentConnect", since=mark)
            if m.get("Uniqueid") == b_join["Uniqueid"]
        ], "live caller B got an agent before the next member freed up"  # fmt: skip
        mark_b = len(pbx.watch.ami)
        await pbx.device("agent2", "NOT_INUSE")
        async with asyncio.timeout(10):
            b_connect = await pbx.wait_ami(
                ami_is("AgentConnect", Uniqueid=b_join["Uniqueid"]), since=mark_b
            )
        assert b_connect["Interface"] == AGENT2
        redis, store = await store_for(redis_url, prefix="cbari")
        try:
            cb = await store.get(cb_id)
        finally:
            await redis.aclose()
        assert cb.state is State.CONNECTED and cb.last_outcome == "connected"
        assert (await member_paused(pbx, AGENT1))[0] is False
        await pbx.hang_up(live_b)


HOLD = "callback-ari:hold"


async def status_doc(port: int) -> dict[str, Any]:
    """GET /api/v1/status: what the status page shows."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{port}/api/v1/status",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp,
    ):
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def devices_busy(pbx: Harness) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")


async def pre_held(pbx: Harness, since: int, *interfaces: str) -> None:
    """Wait until each of ``interfaces`` was paused with the pre-hold reason."""
    for interface in interfaces:
        await pbx.wait_ami(
            ami_is("QueueMemberPause", Interface=interface, Paused="1", PausedReason=HOLD),
            since=since,
        )


async def test_busy_members_are_pre_held_and_the_first_free_one_is_the_callbacks(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """Both agents busy and callback A due: both are paused with the pre-hold reason before
    live caller B joins. agent1 frees up: app_queue cannot ring it for B (paused all along),
    the service reserves it for A and unpauses agent2 at once; B holds until agent2 frees."""
    await pbx.set_global("AGENT_TALK", "8")
    await devices_busy(pbx)
    config, port = service_config(sandbox, redis_url, resync=30)
    async with running_service(config):
        mark = len(pbx.watch.ami)
        cb_id = await request_callback(port, "2125551021")
        async with asyncio.timeout(5):
            await pre_held(pbx, mark, AGENT1, AGENT2)
        assert await member_paused(pbx, AGENT1) == (True, HOLD)
        (support,) = (await status_doc(port))["queues"]
        assert sorted(h["member"] for h in support["preheld"]) == [AGENT1, AGENT2]
        assert support["reserved"] == []
        live_b = await pbx.call_in("2125559022", exten="plain", name="Live B")
        async with asyncio.timeout(5):
            b_join = await pbx.wait_ami(ami_is("QueueCallerJoin", CallerIDNum="2125559022"))
        await asyncio.sleep(0.5)  # B has been through app_queue's ring loop: nobody to ring
        assert not pbx.ami_events("AgentCalled", since=mark)
        freed = len(pbx.watch.ami)
        await pbx.device("agent1", "NOT_INUSE")
        async with asyncio.timeout(10):
            reserved = await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT1, Paused="1"), since=freed
            )
            released = await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT2, Paused="0"), since=freed
            )
        assert reserved["PausedReason"] == f"callback-ari:{cb_id}"
        assert float(released["_t"]) - float(reserved["_t"]) < 1.0  # "at once"
        async with asyncio.timeout(20):
            connect = await pbx.wait_ami(ami_is("AgentConnect", Interface=AGENT1), since=freed)
        assert connect["Uniqueid"] == f"cb-{cb_id}-a1"
        called = {m["Uniqueid"] for m in pbx.ami_events("AgentCalled", since=mark)}
        assert b_join["Uniqueid"] not in called, "app_queue rang a member for B"
        mark_b = len(pbx.watch.ami)
        await pbx.device("agent2", "NOT_INUSE")
        async with asyncio.timeout(10):
            b_connect = await pbx.wait_ami(
                ami_is("AgentConnect", Uniqueid=b_join["Uniqueid"]), since=mark_b
            )
        assert b_connect["Interface"] == AGENT2
        await pbx.hang_up(live_b)


async def test_an_agent_who_pauses_during_a_pre_hold_keeps_their_pause(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """agent2 pauses for lunch while pre-held: when agent1 frees up and the pre-holds end,
    and after a resync, and after the service stops, agent2 is still on lunch."""
    await pbx.set_global("AGENT_TALK", "8")
    await devices_busy(pbx)
    config, port = service_config(sandbox, redis_url, resync=2)
    async with running_service(config):
        mark = len(pbx.watch.ami)
        cb_id = await request_callback(port, "2125551023")
        async with asyncio.timeout(5):
            await pre_held(pbx, mark, AGENT1, AGENT2)
        await pbx.ami(
            "QueuePause", Queue="support", Interface=AGENT2, Paused="true", Reason="lunch"
        )
        freed = len(pbx.watch.ami)
        await pbx.device("agent1", "NOT_INUSE")
        async with asyncio.timeout(10):
            await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT1, PausedReason=f"callback-ari:{cb_id}"),
                since=freed,
            )
        await asyncio.sleep(2.5)  # a resync (2 s) and its sweep
        assert await member_paused(pbx, AGENT2) == (True, "lunch")
        unpaused = ami_is("QueueMemberPause", Interface=AGENT2, Paused="0")
        assert not [m for m in pbx.ami_events("QueueMemberPause", since=mark) if unpaused(m)]
    assert await member_paused(pbx, AGENT2) == (True, "lunch")


async def test_api_callback_with_a_ready_member_is_dialled_at_once(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """Requested over the API while agent1 is ready and nobody holds: originated < 100 ms."""
    await pbx.device("agent2", "INUSE")
    config, port = service_config(sandbox, redis_url)
    async with running_service(config) as service:
        async with asyncio.timeout(5):
            while service.watcher.ready_members("support") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz"):
                pass  # the connection is open: the clock below times the service, not TCP
            mark = len(pbx.watch.ari)
            before = time.monotonic()
            cb_id = await request_callback(port, "2125551003", http)
            async with asyncio.timeout(5):
                created = await pbx.wait_ari(
                    lambda e: (
                        e.get("type") == "ChannelCreated" and e["channel"]["id"] == f"cb-{cb_id}-a1"
                    ),
                    since=mark,
                )
        latency = created["_t"] - before
        assert latency < 0.1, f"dialled {latency * 1000:.0f} ms after the request"


async def test_pressed_1_then_hung_up_is_abandoned_not_connected(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """The customer confirms, joins, the agent's phone rings unanswered, the customer hangs up."""
    await pbx.db_put("cbtest/agent", "agent1", "noanswer")
    await pbx.device("agent2", "INUSE")
    config, port = service_config(sandbox, redis_url)
    async with running_service(config):
        mark = len(pbx.watch.ami)
        cb_id = await request_callback(port, "2125551004")
        channel = f"cb-{cb_id}-a1"
        async with asyncio.timeout(20):
            await pbx.wait_ami(ami_is("QueueCallerJoin", Uniqueid=channel), since=mark)
            await pbx.wait_ami(ami_is("AgentCalled", Uniqueid=channel), since=mark)
        await pbx.hang_up(f"{channel}-2")  # the customer puts the phone down
        redis, store = await store_for(redis_url, prefix="cbari")
        try:
            async with asyncio.timeout(10):
                while (cb := await store.get(cb_id)).state is State.DIALING:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            await redis.aclose()
        assert not pbx.ami_events("AgentConnect", since=mark)
        assert cb.state is not State.CONNECTED
        assert cb.last_outcome == "abandoned", cb
        assert cb.state is State.FAILED  # final: they had the call and chose to leave


async def test_agent_own_pause_is_never_undone(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """agent1 pauses themselves while reserved: the service leaves the pause alone."""
    await pbx.device("agent2", "INUSE")
    await pbx.customer("2125553005", "noanswer")
    config, port = service_config(sandbox, redis_url, ring_timeout="5")
    async with running_service(config):
        mark = len(pbx.watch.ami)
        cb_id = await request_callback(port, "2125553005")
        async with asyncio.timeout(5):
            await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT1, PausedReason=f"callback-ari:{cb_id}"),
                since=mark,
            )
        await pbx.ami(
            "QueuePause", Queue="support", Interface=AGENT1, Paused="true", Reason="lunch"
        )
        # the attempt ends (no answer) and the service would release its reservation
        async with asyncio.timeout(20):
            await pbx.wait_ami(
                lambda m: m.get("Event") == "Hangup" and m.get("Uniqueid") == f"cb-{cb_id}-a1",
                since=mark,
            )
        await asyncio.sleep(1.0)
        assert await member_paused(pbx, AGENT1) == (True, "lunch")
        # a resync later it is still the agent's pause
        await asyncio.sleep(2.5)
        assert await member_paused(pbx, AGENT1) == (True, "lunch")


@contextlib.asynccontextmanager
async def service_process(conf: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(  # noqa: ASYNC220 -- starting it does not block
        [sys.executable, "-m", "callback_ari", "-c", str(conf), "--log-format", "json", "run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_reservation_cleared_after_sigkill(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL mid-reservation leaves agent1 paused; the restarted service unpauses it within
    one resync interval (2 s here)."""
    await pbx.device("agent2", "INUSE")
    await pbx.customer("2125553006", "noanswer")
    port = free_port()
    conf = tmp_path / "callback_ari.conf"
    conf.write_text(config_text(sandbox, redis_url, port, ring_timeout="30"))
    mark = len(pbx.watch.ami)
    async with service_process(conf) as proc:
        async with asyncio.timeout(15):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    cb_id = await request_callback(port, "2125553006")
                    break
                await asyncio.sleep(0.2)
            await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT1, PausedReason=f"callback-ari:{cb_id}"),
                since=mark,
            )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert await member_paused(pbx, AGENT1) == (True, f"callback-ari:{cb_id}")
    with contextlib.suppress(SandboxError):
        await pbx.hang_up(f"cb-{cb_id}-a1")  # the ringing customer call the crash left behind
    mark = len(pbx.watch.ami)
    async with service_process(conf):
        started = time.monotonic()
        async with asyncio.timeout(15):
            await pbx.wait_ami(ami_is("QueueMemberPause", Interface=AGENT1, Paused="0"), since=mark)
        assert time.monotonic() - started < 2.0 + 3.0  # one resync interval + start-up
    assert await member_paused(pbx, AGENT1) == (False, "")


async def test_pre_holds_cleared_after_sigkill(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL while both busy agents are pre-held: the restarted service unpauses both
    within one resync interval (2 s here)."""
    await devices_busy(pbx)
    await pbx.customer("2125553024", "noanswer")
    port = free_port()
    conf = tmp_path / "callback_ari.conf"
    conf.write_text(config_text(sandbox, redis_url, port))
    mark = len(pbx.watch.ami)
    async with service_process(conf) as proc:
        async with asyncio.timeout(15):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    cb_id = await request_callback(port, "2125553024")
                    break
                await asyncio.sleep(0.2)
            await pre_held(pbx, mark, AGENT1, AGENT2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert await member_paused(pbx, AGENT1) == (True, HOLD)
    await pbx.device("agent1", "NOT_INUSE")  # freed while nobody ran: it stays paused
    mark = len(pbx.watch.ami)
    async with service_process(conf):
        started = time.monotonic()
        async with asyncio.timeout(15):
            for agent in (AGENT1, AGENT2):
                await pbx.wait_ami(
                    ami_is("QueueMemberPause", Interface=agent, Paused="0"), since=mark
                )
        assert time.monotonic() - started < 2.0 + 3.0  # one resync interval + start-up
        # then agent1, ready, is reserved for the callback (ringing): agent2 is not needed
        async with asyncio.timeout(10):
            await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT1, PausedReason=f"callback-ari:{cb_id}"),
                since=mark,
            )
    assert await member_paused(pbx, AGENT2) == (False, "")


async def test_agent_first_rings_the_member_then_the_customer_then_bridges(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """dialing_mode = agent_first: agent1 is rung (and hears the number), then the customer,
    and Asterisk bridges both; the callback is connected."""
    await pbx.set_global("AGENT_TALK", "30")  # the whisper alone takes about 10 s
    await pbx.device("agent2", "INUSE")
    config, port = service_config(sandbox, redis_url, dialing_mode="agent_first")
    async with running_service(config):
        mark_ari, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
        cb_id = await request_callback(port, "2125551010")
        agent_leg = f"cb-{cb_id}-a1"
        async with asyncio.timeout(30):
            dial_end = await pbx.wait_ami(
                ami_is("DialEnd", Uniqueid=agent_leg, DialStatus="ANSWER"), since=mark_ami
            )
            customer = dial_end["DestUniqueid"]
            entered: set[str] = set()
            bridge = ""
            while entered != {agent_leg, customer}:
                m = await pbx.wait_ami(
                    lambda m: (
                        m.get("Event") == "BridgeEnter"
                        and m.get("Uniqueid") in {agent_leg, customer} - entered
                    ),
                    since=mark_ami,
                )
                entered.add(m["Uniqueid"])
                assert bridge in ("", m["BridgeUniqueid"])
                bridge = m["BridgeUniqueid"]
        async with asyncio.timeout(5):  # ARI's stream may lag AMI's
            for channel in (agent_leg, customer):
                await pbx.wait_ari(
                    lambda e, c=channel: (
                        e.get("type") == "ChannelCreated" and e["channel"]["id"] == c
                    ),
                    since=mark_ari,
                )
        created = {
            e["channel"]["id"]: e["_t"] for e in pbx.ari_events("ChannelCreated", since=mark_ari)
        }
        assert created[agent_leg] < created[customer], "the customer was rung before the member"
        agent_called = [
            e for e in pbx.ari_events("ChannelCreated", since=mark_ari)
            if e["channel"]["name"].startswith("Local/agent1@agents")
        ]  # fmt: skip
        assert agent_called, "agent1 was not the member rung"
        redis, store = await store_for(redis_url, prefix="cbari")
        try:
            async with asyncio.timeout(5):
                while (cb := await store.get(cb_id)).state is State.DIALING:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose()
        assert (cb.state, cb.last_outcome) == (State.CONNECTED, "connected")


async def test_agent_first_busy_customer_releases_the_agent_and_is_retried(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """The customer is busy: the agent hears it and is free again within 2 s; a retry follows."""
    await pbx.set_global("AGENT_TALK", "30")  # the agent stays on the line: we release them
    await pbx.device("agent2", "INUSE")
    config, port = service_config(sandbox, redis_url, dialing_mode="agent_first")
    async with running_service(config):
        mark_ari, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
        cb_id = await request_callback(port, "2125552011")
        agent_leg = f"cb-{cb_id}-a1"
        async with asyncio.timeout(30):
            busy = await pbx.wait_ami(
                ami_is("DialEnd", Uniqueid=agent_leg, DialStatus="BUSY"), since=mark_ami
            )
            gone = await pbx.wait_ami(ami_is("Hangup", Uniqueid=agent_leg), since=mark_ami)
        released = float(gone["_t"]) - float(busy["_t"])
        assert released < 2.0, f"the agent was held {released:.2f} s after the busy signal"
        async with asyncio.timeout(10):
            await pbx.wait_ami(
                ami_is("QueueMemberPause", Interface=AGENT1, Paused="0"), since=mark_ami
            )
            await pbx.wait_ari(
                lambda e: (
                    e.get("type") == "ChannelCreated" and e["channel"]["id"] == f"cb-{cb_id}-a2"
                ),
                since=mark_ari,
            )

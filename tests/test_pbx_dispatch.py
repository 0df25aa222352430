"""Real PBX: when a member is ready the customer is dialled, confirms, and reaches an agent.

Callbacks are requested over the service's HTTP API; everything after that is watched on the
sandbox Asterisk: the member's device state (AMI DeviceStateChange), the customer's channel
(ARI, id ``cb-<id>-a<attempt>``), the prompt it hears, the queue join and AgentConnect.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from callback_ari.sim.sandbox import Harness, JsonDict, Sandbox
from tests.pbx_service import (
    ServiceProcess,
    gone,
    heard,
    hears,
    joins_queue,
    service,
    until,
)

# Real time on a shared 2-core machine: each step waits for what Asterisk reports, so a
# generous ceiling costs nothing when the flow works.
pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]

ATTEMPT_ID = re.compile(r"cb-(\d+)-a(\d+)$")  # the ;1 half the service originates


def attempts(pbx: Harness, since: int = 0) -> list[str]:
    """Ids of the customer calls the service placed, in order."""
    return [
        e["channel"]["id"]
        for e in pbx.ari_events("ChannelCreated", since)
        if ATTEMPT_ID.match(e["channel"]["id"])
    ]


def most_in_flight(events: list[JsonDict]) -> int:
    """The most customer calls that were up at the same time, replayed from ARI events."""
    live: set[str] = set()
    most = 0
    for e in events:
        channel = e.get("channel", {}).get("id", "")
        if not ATTEMPT_ID.match(channel):
            continue
        if e["type"] == "ChannelCreated":
            live.add(channel)
        elif e["type"] == "ChannelDestroyed":
            live.discard(channel)
        most = max(most, len(live))
    return most


async def devices(pbx: Harness, agent1: str, agent2: str) -> None:
    await pbx.device("agent1", agent1)
    await pbx.device("agent2", agent2)


async def created(pbx: Harness, channel: str, *, since: int = 0) -> JsonDict:
    return await pbx.wait_ari(
        lambda e: e.get("type") == "ChannelCreated" and e["channel"]["id"] == channel, since=since
    )


async def settles(svc: ServiceProcess, callback_id: str, *states: str) -> JsonDict:
    """Poll the HTTP API until the callback reaches one of ``states`` (Asterisk cannot tell)."""
    while True:
        cb = await svc.callback(callback_id)
        if cb["state"] in states:
            return cb
        await asyncio.sleep(0.1)


async def test_member_ready_customer_dialled_confirms_and_reaches_an_agent(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await devices(pbx, "INUSE", "INUSE")  # both agents on calls
    await pbx.set_global("AGENT_TALK", "2")
    async with service(sandbox, redis_url, tmp_path) as svc:
        cb_id = await svc.request_callback("2125551101", name="Ann")
        await asyncio.sleep(1.5)
        assert attempts(pbx) == []  # nobody is ready: nobody is dialled
        mark, ami_mark = len(pbx.watch.ari), len(pbx.watch.ami)
        await pbx.device("agent1", "NOT_INUSE")
        channel = f"cb-{cb_id}-a1"
        async with asyncio.timeout(10):
            dialled = await created(pbx, channel, since=mark)
            ready = await pbx.wait_ami(
                lambda m: (
                    m.get("Event") == "DeviceStateChange"
                    and m.get("Device") == "Custom:agent1"
                    and m.get("State") == "NOT_INUSE"
                ),
                since=ami_mark,
            )
        # both as the harness received them (ARI and AMI sockets): a bound, not a benchmark
        latency = dialled["_t"] - float(ready["_t"])
        print(f"member ready -> customer channel created: {latency * 1000:.1f} ms")
        assert latency < 0.5
        async with asyncio.timeout(15):
            await hears(pbx, channel, "sound:vm-press", since=mark)
            await pbx.wait_ari(
                lambda e: (
                    e.get("type") == "ChannelDtmfReceived"
                    and e["channel"]["id"] == channel
                    and e["digit"] == "1"
                ),
                since=mark,
            )
            join = await joins_queue(pbx, channel, since=ami_mark)
            connect = await pbx.wait_ami(
                lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == channel,
                since=ami_mark,
            )
        assert join["Position"] == "1"
        assert connect["MemberName"] == "Agent One"
        async with asyncio.timeout(10):
            cb = await settles(svc, cb_id, "connected")
        assert cb["attempts"] == 1
        assert attempts(pbx) == [channel]


@pytest.mark.parametrize(
    ("number", "outcome"),
    [("2125552101", "busy"), ("2125553101", "no_answer"), ("2125555101", "not_confirmed")],
)
async def test_unreached_customer_is_retried_then_failed(
    number: str, outcome: str, pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    async with service(sandbox, redis_url, tmp_path, queue={"max_attempts": "2"}) as svc:
        cb_id = await svc.request_callback(number)
        async with asyncio.timeout(40):
            cb = await settles(svc, cb_id, "failed")
        assert (cb["attempts"], cb["last_outcome"]) == (2, outcome)
        assert attempts(pbx) == [f"cb-{cb_id}-a1", f"cb-{cb_id}-a2"]
        assert pbx.ami_events("AgentConnect") == []
        first_gone = await gone(pbx, f"cb-{cb_id}-a1")
        second = await created(pbx, f"cb-{cb_id}-a2")
        assert second["_t"] - first_gone["_t"] >= 0.9  # retry_interval = 1


async def test_voicemail_like_answer_gets_confirm_timeout_after_the_prompt(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """The README: after the prompt, N seconds to press 1 -- not a second prompt and 2N."""
    queue = {"confirm_timeout": "6", "max_attempts": "1"}
    async with service(sandbox, redis_url, tmp_path, queue=queue) as svc:
        cb_id = await svc.request_callback("2125555102")
        channel = f"cb-{cb_id}-a1"
        async with asyncio.timeout(30):
            prompt_end = await heard(pbx, channel, "sound:digits/1")
            hangup = await pbx.wait_ari(
                lambda e: (
                    (e.get("type") == "ChannelHangupRequest" and e["channel"]["id"] == channel)
                    or (e.get("type") == "ChannelDestroyed" and e["channel"]["id"] == channel)
                )
            )
            cb = await settles(svc, cb_id, "failed")
        held = hangup["_t"] - prompt_end["_t"]
        print(f"voicemail-like line hung up {held:.2f} s after the prompt ended")
        assert 5.8 <= held <= 6.8, f"line held {held:.1f} s after the prompt"
        plays = [
            e
            for e in pbx.ari_events("PlaybackStarted")
            if e["playback"]["target_uri"] == f"channel:{channel}"
            and e["playback"]["media_uri"] == "sound:vm-press"
        ]
        assert len(plays) == 1
        assert cb["last_outcome"] == "not_confirmed"


async def test_callback_served_before_a_later_live_caller(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await devices(pbx, "INUSE", "INUSE")
    await pbx.set_global("AGENT_TALK", "2")
    async with service(sandbox, redis_url, tmp_path) as svc:
        cb_id = await svc.request_callback("2125551301")
        await asyncio.sleep(0.5)
        mark = len(pbx.watch.ami)
        live = await pbx.call_in("2125551302", exten="plain")  # joins after the request
        async with asyncio.timeout(20):
            await joins_queue(pbx, live + "-pbx", since=mark)
        await pbx.device("agent1", "NOT_INUSE")
        async with asyncio.timeout(20):
            first = await pbx.wait_ami(lambda m: m.get("Event") == "AgentConnect", since=mark)
        assert first["Uniqueid"] == f"cb-{cb_id}-a1", "the live caller who came later won"


async def test_never_more_attempts_in_flight_than_ready_members(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """Four customers who never answer: one ready member rings one, two ring two."""
    await devices(pbx, "NOT_INUSE", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path, queue={"max_attempts": "1"}) as svc:
        for n in range(4):
            await svc.request_callback(f"212555320{n}")

        async def dialled(count: int) -> bool:
            return len(attempts(pbx)) >= count

        async with asyncio.timeout(15):
            await until(lambda: dialled(2))  # one rang out, the next one rings
        assert most_in_flight(pbx.watch.ari) == 1
        await pbx.device("agent2", "NOT_INUSE")
        async with asyncio.timeout(15):
            await until(lambda: dialled(4))
        await asyncio.sleep(1)
        assert most_in_flight(pbx.watch.ari) == 2
        assert [cb["state"] for cb in await svc.callbacks()].count("failed") >= 2

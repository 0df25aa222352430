"""Redis Sentinel for real: a failover under load, with no promise lost and none dialled twice.

One master, one replica and three sentinels (Debian's redis-server / redis-sentinel on free
loopback ports), the real service with ``min_replicas = 1`` against the simulated PBX. Callers
ask for callbacks while one agent works through them; the master is SIGKILLed mid-stream.
Every caller who heard "stored" must have a callback on the promoted master that is dialled
exactly once; /readyz must show the gap and recover; dispatching must go on afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from callback_ari.models import State
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.sim.simpbx.redis_sentinel import MASTER_NAME, SentinelSet
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore, connect_redis
from tests.harness import KIT, running_service, service_config, wait_prompt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(150),
    # the point: callers asking while the master is gone go back to the queue, and an outcome
    # written in the gap is retried after its lease (exactly-once is asserted below)
    pytest.mark.expect_errors(
        "offer.store_failed", "offer.not_replicated", "callback.record_failed"
    ),
]

TIME_SCALE = 0.05
INCOMING = (
    "[from-trunk]\nexten => support,1,Gosub(callback-queue,support,1())\n same => n,Hangup()\n"
)
STORED = "num-was-successfully"
SORRY = "sound:sorry"


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    with SentinelSet(replicas=1) as topology:
        yield topology


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=TIME_SCALE, dialplan=KIT + INCOMING) as pbx:
        # one agent at a time, 40 PBX s (2 s here) a call: callbacks queue up across the kill
        pbx.add_queue("support", ["agent1", "agent2"], handle_time=40.0)
        pbx.set_devstate("Custom:agent1", "INUSE")  # busy while the first callers ask
        pbx.set_devstate("Custom:agent2", "INUSE")
        yield pbx


async def ask_for_callback(sim: SimAsterisk, number: str) -> str:
    """One caller's offer dialogue: "stored", "refused" (back to the queue) or "live" (an
    agent came free before the offer and took the call: nothing to promise)."""
    caller = sim.caller_joins("support", number, "Caller")
    try:
        async with asyncio.timeout(8):
            mark = await wait_prompt(sim, caller.id, "queue-thankyou")
    except TimeoutError:
        return "live"
    sim.press_digit(caller.id, "1")
    mark = await wait_prompt(sim, caller.id, "if-correct-press", since=mark)
    sim.press_digit(caller.id, "1")

    def heard(media: str) -> bool:
        for event in sim.events(app="callback-ari", kind="PlaybackStarted", since=mark):
            pb = event.get("playback", {})
            if pb.get("target_uri") == f"channel:{caller.id}" and media in str(
                pb.get("media_uri", "")
            ):
                return True
        return False

    await sim.wait_for(lambda: heard(STORED) or heard(SORRY), timeout=40)
    return "stored" if heard(STORED) else "refused"


async def test_failover_under_load_keeps_every_promise_and_dials_each_once(
    sentinels: SentinelSet, sim: SimAsterisk
) -> None:
    port = free_port()
    config = service_config(
        sim,
        "redis://127.0.0.1:6379/0",  # with Sentinel only credentials and db come from here
        http_port=port,
        redis={
            "sentinel_master": MASTER_NAME,
            "sentinels": ", ".join(sentinels.sentinel_addresses),
            "min_replicas": 1,
            "min_replicas_timeout": 1.0,
        },
    )
    base = f"http://127.0.0.1:{port}"
    heard: dict[str, str] = {}
    ready_log: list[tuple[int, tuple[str, ...]]] = []  # (status, links down) per poll

    async def caller(number: str) -> None:
        heard[number] = await ask_for_callback(sim, number)

    async def watch_readyz(http: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/readyz") as resp:
                    body = await resp.json()
                    ready_log.append((resp.status, tuple(body.get("down", ()))))
            await asyncio.sleep(0.1)

    async with running_service(config), aiohttp.ClientSession() as http:
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(watch_readyz(http))
            # numbers 202-555-1xxx answer and press 1 in the fake
            before = [tg.create_task(caller(f"2025551{100 + i}")) for i in range(4)]
            await asyncio.gather(*before)
            assert all(heard[n] == "stored" for n in heard)  # a replica confirmed each one
            sim.set_devstate("Custom:agent1", "NOT_INUSE")  # dispatching starts: the load
            await sim.wait_for(lambda: bool(sim.originates), timeout=10)
            # more callers in the middle of their dialogue while the master dies
            during = [tg.create_task(caller(f"2025551{200 + i}")) for i in range(3)]
            await asyncio.sleep(1.5)
            old = await asyncio.to_thread(sentinels.kill_master)
            new = await asyncio.to_thread(sentinels.wait_promoted, old)
            promoted_at = time.time()
            await asyncio.gather(*during)
            # the service follows the promotion: /readyz comes back by itself
            async with asyncio.timeout(20):
                while not ready_log or "redis" in ready_log[-1][1]:  # noqa: ASYNC110 -- polled
                    await asyncio.sleep(0.1)
            watcher.cancel()

        gap = [status for status, down in ready_log if "redis" in down]
        assert gap and set(gap) == {503}, "the gap while Redis was unreachable never showed"
        promised = sorted(n for n, what in heard.items() if what == "stored")
        client = connect_redis(f"redis://127.0.0.1:{new}/0")
        store = CallbackStore(client, prefix="cbtest")
        try:
            # every promise survives on the promoted master and is dialled to the end
            sim.set_devstate("Custom:agent2", "NOT_INUSE")
            async with asyncio.timeout(60):
                while True:
                    cbs = {cb.number: cb for cb in await store.list(limit=500)}
                    if all(n in cbs and cbs[n].state is State.CONNECTED for n in promised):
                        break
                    await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    assert len(promised) >= 4
    # and it kept dispatching on the promoted master
    assert any(o.at > promoted_at for o in sim.originates)
    for number in promised:
        cb = cbs[number]
        dials = [o for o in sim.originates if o.query["channelId"].startswith(f"cb-{cb.id}-a")]
        assert len(dials) == 1, (number, [o.query["channelId"] for o in dials])
        assert dials[0].query["endpoint"] == f"PJSIP/{number}@trunk"
    dialled = {o.query["endpoint"].split("/")[1].split("@")[0] for o in sim.originates}
    assert set(promised) <= dialled

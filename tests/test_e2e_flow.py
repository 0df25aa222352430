"""The whole promise end to end: hold, offer, store, member ready, call back, connect.

Real service, real redis-server, the simulated PBX on real sockets running our dialplan kit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callback_ari.models import State
from callback_ari.sim.simpbx.sim import SimAsterisk
from tests.harness import (
    KIT,
    running_service,
    service_config,
    store_for,
    wait_for_callback,
    wait_prompt,
)

TIME_SCALE = 0.05
INCOMING = (
    "[from-trunk]\nexten => support,1,Gosub(callback-queue,support,1())\n same => n,Hangup()\n"
)


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=TIME_SCALE, dialplan=KIT + INCOMING) as pbx:
        pbx.add_queue("support", ["agent1", "agent2"], handle_time=2.0)
        pbx.set_devstate("Custom:agent1", "INUSE")
        pbx.set_devstate("Custom:agent2", "INUSE")
        yield pbx


async def test_caller_accepts_with_caller_id_and_is_called_back(
    sim: SimAsterisk, redis_url: str
) -> None:
    config = service_config(sim, redis_url)
    client, store = await store_for(redis_url)
    try:
        async with running_service(config):
            caller = sim.caller_joins("support", "2025551234", "Alice")
            # held past offer_threshold (1 s): the service withdraws the caller for an offer
            await sim.wait_ami_event("QueueCallerAbandon", timeout=5)
            mark = await wait_prompt(sim, caller.id, "queue-thankyou")
            sim.press_digit(caller.id, "1")  # "1 for a callback"
            mark = await wait_prompt(sim, caller.id, "if-correct-press", since=mark)
            sim.press_digit(caller.id, "1")  # confirm the read-back caller ID
            async with asyncio.timeout(10):
                stored = await wait_for_callback(store, lambda cbs: len(cbs) == 1)
            assert stored[0].number == "2025551234"
            assert stored[0].queue == "support"
            assert stored[0].state is State.PENDING
            await sim.wait_for(lambda: caller.destroyed, timeout=10)  # confirmed, then hung up

            # nobody is dialled while no member is ready
            assert sim.originates == []
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            async with asyncio.timeout(15):
                done = await wait_for_callback(
                    store, lambda cbs: cbs and cbs[0].state is State.CONNECTED
                )
            assert done[0].attempts == 1
            originate = sim.originates[0]
            assert originate.query["endpoint"] == "PJSIP/2025551234@trunk"
            assert originate.query["channelId"] == f"cb-{done[0].id}-a1"
            continues = [r for r in sim.requests if r.path.endswith("/continue")]
            assert continues[-1].query["context"] == "callback-connect"
            assert continues[-1].query["extension"] == "support"
            await sim.wait_ami_event("AgentConnect", timeout=10)
    finally:
        await client.aclose()

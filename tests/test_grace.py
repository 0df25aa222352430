"""The grace before a first attempt: never dial a customer whose own inbound call is still up.

A callback stored from a call is held back until the service sees that call hang up, then
waits the queue's ``first_attempt_grace``; one requested over the web has no inbound call and
is due at once (tests/test_pbx_reserve.py times that on the real PBX). Store level on a
manual clock, then end to end on the simulated PBX.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from callback_ari.clock import ManualClock
from callback_ari.models import State
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore, connect_redis
from tests.harness import (
    KIT,
    running_service,
    service_config,
    store_for,
    wait_for_callback,
    wait_prompt,
)

Q = "support"
T0 = 1_800_000_000_000
HELD = T0 + 240_000  # the fallback deadline a dialogue stores with
LEASE = 60_000


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[tuple[CallbackStore, ManualClock]]:
    client: aioredis.Redis = connect_redis(redis_url)
    clock = ManualClock(T0)
    try:
        yield CallbackStore(client, clock=clock), clock
    finally:
        await client.aclose()


async def _held(store: CallbackStore) -> str:
    cb, created = await store.enqueue(
        queue=Q, number="5551001", join_time_ms=T0 - 60_000, next_attempt_ms=HELD
    )
    assert created and cb.state is State.PENDING
    return cb.id


async def test_held_callback_is_not_claimable_until_released_plus_grace(
    store: tuple[CallbackStore, ManualClock],
) -> None:
    s, clock = store
    cb_id = await _held(s)
    assert await s.claim_next(Q, owner="w1", lease_ms=LEASE) is None  # caller still on the line
    clock.set_ms(T0 + 30_000)  # hang-up seen now; grace 5 s
    assert await s.release(cb_id, T0 + 35_000) is True
    clock.set_ms(T0 + 34_999)
    assert await s.claim_next(Q, owner="w1", lease_ms=LEASE) is None
    clock.set_ms(T0 + 35_000)
    claimed = await s.claim_next(Q, owner="w1", lease_ms=LEASE)
    assert claimed is not None and claimed.id == cb_id and claimed.attempts == 1


async def test_release_is_idempotent_and_never_makes_an_attempt_later(
    store: tuple[CallbackStore, ManualClock],
) -> None:
    s, _ = store
    cb_id = await _held(s)
    assert await s.release(cb_id, T0 + 10_000) is True
    assert await s.release(cb_id, T0 + 10_000) is False  # repeated: nothing changes
    assert await s.release(cb_id, T0 + 50_000) is False  # later than already set: refused
    assert (await s.get(cb_id)).next_attempt_ms == T0 + 10_000
    assert await s.release(cb_id, T0 - 1) is True  # already past: straight to the ready set
    claimed = await s.claim_next(Q, owner="w1", lease_ms=LEASE)
    assert claimed is not None and claimed.id == cb_id
    assert await s.release(cb_id, T0) is False  # dialing now: left alone
    assert (await s.get(cb_id)).state is State.DIALING
    assert await s.release("nope", T0) is False


# --- end to end --------------------------------------------------------------------------

TIME_SCALE = 0.05
GRACE_S = 1
ROUTE = "[from-trunk]\nexten => support,1,Gosub(callback-queue,support,1())\n"
# Two ways a caller stays on the line after booking, each 3+ s here (well past the grace):
# a "goodbye" of 80 digits (67 PBX seconds) in our dialogue, or the admin's route keeping the
# call after the kit returned QUEUESTATUS=CALLBACK (60 PBX seconds), where no ARI event tells
# the service when the line goes down.
LONG_GOODBYE = "digits:" + "1" * 80
CASES = {
    "goodbye_in_dialogue": ({"prompt_goodbye": LONG_GOODBYE}, " same => n,Hangup()\n"),
    "route_keeps_the_call": ({}, " same => n,Wait(60)\n same => n,Hangup()\n"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_first_attempt_waits_for_the_inbound_hangup_plus_grace(
    redis_url: str, case: str
) -> None:
    queue_keys, route_tail = CASES[case]
    async with SimAsterisk(time_scale=TIME_SCALE, dialplan=KIT + ROUTE + route_tail) as sim:
        sim.add_queue("support", ["agent1"], handle_time=2.0)
        sim.set_devstate("Custom:agent1", "INUSE")
        config = service_config(
            sim, redis_url, queues={"support": {"first_attempt_grace": GRACE_S, **queue_keys}}
        )
        client, store = await store_for(redis_url)
        try:
            async with running_service(config):
                await _book_and_check(sim, store)
        finally:
            await client.aclose()


async def _book_and_check(sim: SimAsterisk, store: CallbackStore) -> None:
    caller = sim.caller_joins("support", "2025551234", "Alice")
    await sim.wait_ami_event("QueueCallerAbandon", timeout=5)
    mark = await wait_prompt(sim, caller.id, "queue-thankyou")
    sim.press_digit(caller.id, "1")
    mark = await wait_prompt(sim, caller.id, "if-correct-press", since=mark)
    # A member is ready from before the callback exists: only the grace holds it back.
    sim.set_devstate("Custom:agent1", "NOT_INUSE")
    sim.press_digit(caller.id, "1")
    await wait_prompt(sim, caller.id, "num-was-successfully", since=mark)  # "stored"
    stored_at = time.time()
    await sim.wait_for(lambda: caller.destroyed, timeout=15)
    hung_up_at = time.time()
    assert hung_up_at - stored_at > 2 * GRACE_S  # the call really outlasted the grace
    assert sim.originates == []  # never dialled while their own call was up
    await sim.wait_for(lambda: bool(sim.originates), timeout=GRACE_S + 10)
    first = sim.originates[0]
    assert first.query["endpoint"] == "PJSIP/2025551234@trunk"
    # the polled hang-up time is late by at most one poll: allow 0.2 s
    assert first.at - hung_up_at >= GRACE_S - 0.2, first.at - hung_up_at
    assert first.at - hung_up_at < GRACE_S + 6  # and it does come
    async with asyncio.timeout(10):
        await wait_for_callback(store, lambda cbs: cbs and cbs[0].attempts == 1)

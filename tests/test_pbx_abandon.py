"""Real PBX: a caller who hangs up while holding gets a follow-up callback (on_abandon).

The service runs in this process against the sandbox Asterisk; callers are placed and hung
up through the tests' harness, and what Asterisk reports (QueueCallerAbandon, the customer's
channel, AgentConnect) is watched over the harness's own ARI and AMI sessions.
"""

from __future__ import annotations

import asyncio

import pytest

from callback_ari.config.loader import Config, parse_config
from callback_ari.models import Callback, Origin, State
from callback_ari.sim.sandbox import Harness, Sandbox
from callback_ari.store.store import CallbackStore
from tests.harness import running_service, store_for, wait_for_callback

pytestmark = pytest.mark.asterisk

PREFIX = "cbtest"
QUEUE = {
    "offer_threshold": "0",  # no offers: these callers only hold and hang up
    "withdraw": "no",
    "on_abandon": "callback",
    "abandon_min_hold": "2",
    "ring_timeout": "8",
    "confirm_timeout": "4",
    "retry_interval": "1",
    "wrapup_time": "0",
}
GENERAL = {"lease_seconds": "5", "resync_interval": "5", "dialogue_timeout": "60"}


async def holds_then_hangs_up(
    pbx: Harness, number: str, hold_s: float, *, name: str = "Caller"
) -> dict[str, str]:
    """A caller joins the queue, holds ``hold_s`` seconds, hangs up; returns the abandon event."""
    mark = len(pbx.watch.ami)
    caller = await pbx.call_in(number, name=name)
    async with asyncio.timeout(10):
        join = await pbx.wait_ami(lambda m: m.get("Event") == "QueueCallerJoin", since=mark)
    await asyncio.sleep(hold_s)
    await pbx.hang_up(caller)
    async with asyncio.timeout(10):
        return await pbx.wait_ami(
            lambda m: (
                m.get("Event") == "QueueCallerAbandon" and m.get("Uniqueid") == join["Uniqueid"]
            ),
            since=mark,
        )


def abandon_callbacks(callbacks: list[Callback]) -> list[Callback]:
    return [cb for cb in callbacks if cb.origin is Origin.ABANDON]


async def test_abandoned_caller_is_called_back_and_reaches_an_agent(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    await pbx.device("agent1", "INUSE")  # nobody free: callers hold
    await pbx.device("agent2", "INUSE")
    await pbx.set_global("AGENT_TALK", "2")
    config = sandbox_config(sandbox, redis_url, QUEUE)
    client, store = await store_for(redis_url, PREFIX)
    try:
        async with running_service(config):
            await store.dnc_add("support", "2125551302")
            # withheld caller ID, a do-not-call number and a short hold: nothing is created
            withheld = await holds_then_hangs_up(pbx, "", 2.5, name="")
            dnc = await holds_then_hangs_up(pbx, "2125551302", 2.5)
            short = await holds_then_hangs_up(pbx, "2125551303", 0.2)
            assert int(withheld["HoldTime"]) >= 2 and int(dnc["HoldTime"]) >= 2
            assert int(short["HoldTime"]) < 2
            # the one who qualifies
            mark_ari, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
            gave_up = await holds_then_hangs_up(pbx, "2125551301", 2.5)
            async with asyncio.timeout(5):
                found = await wait_for_callback(store, lambda cbs: abandon_callbacks(cbs) != [])
            await asyncio.sleep(0.5)  # any late follow-up for the others would show by now
            made = abandon_callbacks(await store.list(limit=50))
            assert [cb.number for cb in made] == ["2125551301"], made
            cb = made[0]
            assert cb == abandon_callbacks(found)[0]
            assert cb.source_channel == gave_up["Uniqueid"]
            assert cb.state is State.PENDING
            # fairness: their turn is when they first joined, not when they hung up
            assert cb.join_time_ms <= cb.created_ms - 2000
            # an agent frees up: the customer is dialled, presses 1 and reaches the agent
            await pbx.device("agent1", "NOT_INUSE")
            channel = cb.channel_id if cb.attempts else f"cb-{cb.id}-a1"
            async with asyncio.timeout(20):
                await pbx.wait_ari(
                    lambda e: e.get("type") == "ChannelCreated" and e["channel"]["id"] == channel,
                    since=mark_ari,
                )
                connect = await pbx.wait_ami(
                    lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == channel,
                    since=mark_ami,
                )
                done = await _settles(store, cb.id, State.CONNECTED)
            assert connect["MemberName"] == "Agent One"
            assert done.origin is Origin.ABANDON and done.attempts == 1
    finally:
        await client.aclose()


async def test_caller_withdrawn_for_an_offer_is_no_abandon(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """QueueWithdrawCaller makes Asterisk 22 report QueueCallerAbandon: no follow-up for it."""
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    queue = {**QUEUE, "offer_threshold": "3", "withdraw": "yes", "abandon_min_hold": "1"}
    config = sandbox_config(sandbox, redis_url, queue)
    client, store = await store_for(redis_url, PREFIX)
    try:
        async with running_service(config):
            mark_ari, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
            caller = await pbx.call_in("2125551304")
            async with asyncio.timeout(15):
                withdrawn = await pbx.wait_ami(
                    lambda m: m.get("Event") == "QueueCallerAbandon", since=mark_ami
                )
                await pbx.wait_ari(  # the PBX's half of the caller enters the offer
                    lambda e: (
                        e.get("type") == "ChannelDialplan"
                        and e["channel"]["id"] == caller + "-pbx"
                        and e.get("dialplan_app") == "Stasis"
                    ),
                    since=mark_ari,
                )
            assert int(withdrawn["HoldTime"]) >= 1  # past abandon_min_hold: only our check stops it
            await pbx.hang_up(caller)  # they hang up in the offer: out of the queue already
            await asyncio.sleep(1.0)
            assert abandon_callbacks(await store.list(limit=50)) == []
    finally:
        await client.aclose()


def sandbox_config(sandbox: Sandbox, redis_url: str, queue: dict[str, str]) -> Config:
    text = sandbox.service_config(redis_url, general=GENERAL, queue=queue)
    text = text.replace("[redis]\n", f"[redis]\nprefix = {PREFIX}\n")
    return parse_config(text + "[http]\nenabled = no\n", env={})


async def _settles(store: CallbackStore, cb_id: str, state: State) -> Callback:
    while True:
        cb = await store.get(cb_id)
        if cb.state is state:
            return cb
        await asyncio.sleep(0.1)

"""Pre-holds on the simulated PBX: busy members paused while a due callback waits for one.

The fake app_queue connects a waiting caller the instant a member turns ready (the real one
takes ~10 ms): a reservation sent after the member frees up always loses there, so these tests
show the pre-hold taking the race away, not winning it.
"""

from __future__ import annotations

import time

from callback_ari.service.service import Service
from callback_ari.sim.simpbx.members import Member
from callback_ari.sim.simpbx.sim import SimAsterisk
from tests.harness import KIT, service_config
from tests.test_e2e_dispatch import enqueue, queue_keys, serve, set_all, store_view, until

A1 = "Local/agent1@agents/n"
A2 = "Local/agent2@agents/n"
HOLD = "callback-ari:hold"


def member(sim: SimAsterisk, interface: str) -> Member:
    q = sim.queues.get("support")
    assert q is not None
    return next(m for m in q.members if m.interface == interface)


def pause_of(sim: SimAsterisk, interface: str) -> tuple[bool, str]:
    m = member(sim, interface)
    return m.paused, m.paused_reason


def preheld(service: Service) -> list[str]:
    return sorted(h.interface for h in service.preheld_members("support") if h.paused)


async def test_busy_members_are_pre_held_and_the_first_to_free_up_is_the_callbacks(
    redis_url: str,
) -> None:
    """Both agents busy, a due callback, a live caller behind it: both are paused (hold);
    agent1 frees up and goes to the callback's customer, the live caller keeps holding, and
    agent2 is unpaused at once. agent2's own pause during the pre-hold is never undone."""
    async with (
        SimAsterisk(time_scale=0.05, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        sim.add_queue("support", ["agent1", "agent2", "agent3"])
        set_all(sim, ["agent1", "agent2", "agent3"], "INUSE")
        keys = queue_keys(max_attempts=1, retry_interval=600)
        config = service_config(sim, redis_url, queues={"support": keys})
        async with serve(config) as service:
            assert service.dispatcher is not None
            sim.set_number_behaviour("2025550101", "answer")
            cb = await enqueue(store, "support", "2025550101", int(time.time() * 1000) - 60_000)
            service.dispatcher.wake("support")
            await sim.wait_for(
                lambda: all(
                    pause_of(sim, i) == (True, HOLD) for i in (A1, A2, "Local/agent3@agents/n")
                )
            )
            # pre-held members are paused and locked, yet hold nothing for a callback: the
            # shared capacity cap must not count them as reserved
            assert await service.dispatcher.reserved_members("support") == 0
            live = sim.caller_joins("support", "3125550002")
            await sim.wait_ami_event("QueueCallerJoin", Channel=live.name)
            # agent2 pauses for lunch while pre-held: theirs from now on
            sim.pause(A2, True, queue="support", reason="lunch")
            await sim.wait_for(lambda: A2 not in preheld(service))

            mark = len(sim.pbx.ami_log)
            sim.set_devstate("Custom:agent1", "NOT_INUSE")  # app_queue rings nobody: paused
            assert [c.id for c in sim.queue_callers("support")] == [live.id]
            channel = f"cb-{cb.id}-a1"
            reserved = await sim.wait_ami_event(
                "QueueMemberPause", since=mark, Interface=A1, Paused="1"
            )
            assert reserved["PausedReason"] == f"callback-ari:{cb.id}"
            await sim.wait_for(lambda: pause_of(sim, A1) == (True, f"callback-ari:{cb.id}"))
            dispatcher = service.dispatcher

            async def one_reserved() -> bool:  # once the watcher saw the reservation's pause
                return await dispatcher.reserved_members("support") == 1

            await until(one_reserved)
            # no due callback lacks a member now: agent3 (still busy) is unpaused at once
            await sim.wait_ami_event(
                "QueueMemberPause", since=mark, Interface="Local/agent3@agents/n", Paused="0"
            )
            connect = await sim.wait_ami_event("AgentConnect", since=mark, Interface=A1)
            assert connect["Uniqueid"] == channel
            assert [c.id for c in sim.queue_callers("support")] == [live.id]  # still holds
            assert pause_of(sim, A2) == (True, "lunch")
            assert preheld(service) == []
            sim.hangup(live.id)
        assert pause_of(sim, A2) == (True, "lunch")  # shutdown did not touch it either


async def test_a_member_pre_held_through_its_wrap_up_is_the_callbacks_when_it_ends(
    redis_url: str,
) -> None:
    """app_queue rings a member when its wrap-up ends, with no AMI event: agent1, talking to
    a live caller, is pre-held through the call and the wrap-up, then reserved for the
    callback by the service's own wrap-up timer; the next live caller keeps holding."""
    async with (
        SimAsterisk(time_scale=0.05, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        sim.add_queue("support", ["agent1"])
        keys = queue_keys(max_attempts=1, retry_interval=600, wrapup_time=1)
        config = service_config(sim, redis_url, queues={"support": keys})
        async with serve(config) as service:
            assert service.dispatcher is not None
            first = sim.caller_joins("support", "3125550001")
            await sim.wait_ami_event("AgentConnect", Channel=first.name)
            sim.set_number_behaviour("2025550102", "answer")
            cb = await enqueue(store, "support", "2025550102", int(time.time() * 1000) - 60_000)
            service.dispatcher.wake("support")
            await sim.wait_for(lambda: pause_of(sim, A1) == (True, HOLD))
            live = sim.caller_joins("support", "3125550003")
            await sim.wait_ami_event("QueueCallerJoin", Channel=live.name)
            mark = len(sim.pbx.ami_log)
            hung_up = time.monotonic()
            sim.agent_hangup(first.id)  # the fake has no wrap-up: it would ring agent1 now
            reserved = await sim.wait_ami_event(
                "QueueMemberPause", since=mark, Interface=A1, Paused="1"
            )
            assert reserved["PausedReason"] == f"callback-ari:{cb.id}"
            assert time.monotonic() - hung_up >= 0.9  # the service's wrap-up (1 s) ran out
            connect = await sim.wait_ami_event("AgentConnect", since=mark, Interface=A1)
            assert connect["Uniqueid"] == f"cb-{cb.id}-a1"
            assert [c.id for c in sim.queue_callers("support")] == [live.id]
            sim.hangup(live.id)


async def test_pre_holds_end_when_the_callback_is_cancelled_and_on_shutdown(
    redis_url: str,
) -> None:
    async with (
        SimAsterisk(time_scale=0.05, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        sim.add_queue("support", ["agent1", "agent2"])
        set_all(sim, ["agent1", "agent2"], "INUSE")
        keys = queue_keys(max_attempts=1, retry_interval=600)
        config = service_config(sim, redis_url, queues={"support": keys})
        now = int(time.time() * 1000)
        async with serve(config) as service:
            assert service.dispatcher is not None
            cb = await enqueue(store, "support", "2025550103", now - 60_000)
            service.dispatcher.wake("support")
            await sim.wait_for(lambda: all(pause_of(sim, i) == (True, HOLD) for i in (A1, A2)))
            await store.cancel(cb.id)
            service.dispatcher.wake("support")
            await sim.wait_for(lambda: not any(pause_of(sim, i)[0] for i in (A1, A2)))
            assert preheld(service) == []

            await enqueue(store, "support", "2025550104", now - 30_000)
            service.dispatcher.wake("support")
            await sim.wait_for(lambda: all(pause_of(sim, i) == (True, HOLD) for i in (A1, A2)))
        # the service stopped: nobody waits for the members any more
        assert not any(pause_of(sim, i)[0] for i in (A1, A2))

"""Agent-first dialling on a real Asterisk 22: the whisper with the reason, the customer's
"press 1" before the bridge (Dial's U() gosub), and what a machine or a hang-up costs.

Each test runs the real service against the sandbox PBX (a fresh Asterisk per test) and a real
redis-server, and watches what Asterisk itself reports through the tests' own AMI session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from callback_ari.models import Callback, Origin, State
from callback_ari.service.attempt import REACHED_VAR_PREFIX
from callback_ari.sim.sandbox import AmiMessage, Harness, Sandbox
from callback_ari.store.store import CallbackStore
from tests.harness import running_service, store_for
from tests.test_pbx_reserve import AGENT1, ami_is, service_config

pytestmark = pytest.mark.asterisk

REASONS = "1:billing=sound:auth-thankyou, 2:technical=sound:tt-monkeys"
PREFIX = "cbari"  # the store prefix of test_pbx_reserve's service config


async def book(store: CallbackStore, number: str, reason: str = "") -> Callback:
    """A pending callback, as the phone dialogue stores it (with the caller's reason)."""
    cb, created = await store.enqueue(
        queue="support", number=number, caller_name="Ann", origin=Origin.PHONE,
        join_time_ms=int(time.time() * 1000), reason=reason,
    )  # fmt: skip
    assert created
    return cb


async def settled(store: CallbackStore, cb_id: str) -> Callback:
    """The record once the attempt in flight has been recorded (no longer dialing)."""
    async with asyncio.timeout(10):
        while (cb := await store.get(cb_id)).state is State.DIALING:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return cb


def runs(channel: str, app: str, context: str | None = None) -> Callable[[AmiMessage], bool]:
    """``channel`` starts dialplan application ``app`` (in ``context`` if given)."""

    def match(m: AmiMessage) -> bool:
        return (
            m.get("Event") == "Newexten"
            and m.get("Uniqueid") == channel
            and m.get("Application") == app
            and context in (None, m.get("Context"))
        )

    return match


async def test_agent_first_whispers_the_reason_and_bridges_after_the_customer_pressed_1(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """The member hears "callback" and the caller's reason (the customer-first whisper), then
    the customer hears the same "press 1" as in customer-first; only their 1 bridges the two
    (BridgeEnter of both channels), and the callback is connected."""
    await pbx.set_global("AGENT_TALK", "60")
    await pbx.device("agent2", "INUSE")
    config, _ = service_config(sandbox, redis_url, dialing_mode="agent_first", reasons=REASONS)
    client, store = await store_for(redis_url, prefix=PREFIX)
    try:
        mark = len(pbx.watch.ami)
        cb = await book(store, "2125551010", reason="billing")
        agent_leg = f"cb-{cb.id}-a1"
        async with running_service(config):
            async with asyncio.timeout(60):
                answered = await pbx.wait_ami(
                    ami_is("DialEnd", DestUniqueid=agent_leg, DialStatus="ANSWER"), since=mark
                )
                whisper = await pbx.wait_ami(
                    runs(agent_leg, "Playback", "callback-whisper"), since=mark
                )
                dial = await pbx.wait_ami(ami_is("DialBegin", Uniqueid=agent_leg), since=mark)
                customer = dial["DestUniqueid"]
                confirm = await pbx.wait_ami(runs(customer, "Read"), since=mark)
                marked = await pbx.wait_ami(runs(customer, "ExecIf", "callback-agent-confirm"),
                                            since=mark)  # fmt: skip
                entered = {
                    channel: await pbx.wait_ami(ami_is("BridgeEnter", Uniqueid=channel), since=mark)
                    for channel in (customer, agent_leg)
                }
            cb = await settled(store, cb.id)
    finally:
        await client.aclose()
    # the customer's 1 marked it as reached (a retry after a crash would not ring them
    # again); the service dropped the mark once it had recorded the outcome
    assert marked["AppData"] == f"1?Set(GLOBAL(CB_REACHED_{cb.id})={cb.created_ms})"
    assert not await pbx.getvar(REACHED_VAR_PREFIX + cb.id)
    assert whisper["AppData"] == "callback-announce&auth-thankyou"  # "callback", "billing"
    assert "queue-thankyou&vm-press&digits/1" in confirm["AppData"]  # the customer-first prompt
    assert confirm["Context"] == "callback-agent-confirm"
    assert len({m["BridgeUniqueid"] for m in entered.values()}) == 1
    t = {k: float(m["_t"]) for k, m in
         {"answered": answered, "whisper": whisper, "dial": dial, "confirm": confirm,
          "bridged": entered[agent_leg]}.items()}  # fmt: skip
    assert t["answered"] <= t["whisper"] <= t["dial"] <= t["confirm"] <= t["bridged"]
    assert (cb.state, cb.last_outcome) == (State.CONNECTED, "connected")
    print(  # the agent's time before talking, for the README
        f"\nagent-first: whisper+number {t['dial'] - t['answered']:.1f} s, customer ring+"
        f"confirm {t['bridged'] - t['dial']:.1f} s, total {t['bridged'] - t['answered']:.1f} s"
    )


async def test_agent_first_machine_is_not_connected_releases_the_agent_and_is_retried(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """A voicemail-like customer answers and never presses 1: the customer is hung up, never
    bridged to the agent, the attempt is not_confirmed (not connected), the agent hears 1 s of
    congestion tone and is released; the retry (the person this time) is connected."""
    await pbx.set_global("AGENT_TALK", "60")
    await pbx.device("agent2", "INUSE")
    number = "2125555010"
    await pbx.customer(number, "machine", "answer")  # a machine first, then the person
    config, _ = service_config(sandbox, redis_url, dialing_mode="agent_first", confirm_timeout="2")
    client, store = await store_for(redis_url, prefix=PREFIX)
    try:
        mark = len(pbx.watch.ami)
        cb = await book(store, number)
        first, second = f"cb-{cb.id}-a1", f"cb-{cb.id}-a2"
        async with running_service(config):
            async with asyncio.timeout(60):
                agent = await pbx.wait_ami(
                    ami_is("DialEnd", DestUniqueid=first, DialStatus="ANSWER"), since=mark
                )
                dial = await pbx.wait_ami(ami_is("DialBegin", Uniqueid=first), since=mark)
                answered = await pbx.wait_ami(runs(dial["DestUniqueid"], "Read"), since=mark)
                aborted = await pbx.wait_ami(ami_is("DialEnd", Uniqueid=first), since=mark)
                after_first = await settled(store, cb.id)  # recorded before the retry is due
                gone = await pbx.wait_ami(ami_is("Hangup", Uniqueid=first), since=mark)
                await pbx.wait_ami(
                    ami_is("QueueMemberPause", Interface=AGENT1, Paused="0"), since=mark
                )
                await pbx.wait_ami(ami_is("BridgeEnter", Uniqueid=second), since=mark)
            final = await settled(store, cb.id)
    finally:
        await client.aclose()
    assert aborted["DialStatus"] == "CONTINUE"  # Asterisk 22's word for GOSUB_RESULT=CONTINUE
    assert not [
        m for m in pbx.ami_events("BridgeEnter", since=mark) if m.get("Uniqueid") == first
    ], "the machine was bridged to the agent"
    assert after_first.last_outcome == "not_confirmed"
    assert after_first.state in (State.RETRY_WAIT, State.PENDING)
    held = float(gone["_t"]) - float(aborted["_t"])
    assert held < 2.0, f"the agent was held {held:.2f} s after the machine was hung up"
    # the member stays reserved while the agent hears the tone: nothing may ring it meanwhile
    early = [
        m for m in pbx.ami_events("QueueMemberPause", since=mark)
        if m.get("Interface") == AGENT1 and m.get("Paused") == "0"
        and float(aborted["_t"]) <= float(m["_t"]) < float(gone["_t"])
    ]  # fmt: skip
    assert not early, "the member was released while the agent was still on the call"
    assert (final.state, final.last_outcome, final.attempts) == (State.CONNECTED, "connected", 2)
    print(
        f"\nagent-first machine: beep+number {float(dial['_t']) - float(agent['_t']):.1f} s, "
        f"customer answer -> agent released {float(gone['_t']) - float(answered['_t']):.1f} s "
        f"(confirm_timeout 2)"
    )


async def test_agent_first_customer_hanging_up_during_press_1_is_not_connected(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    """The customer answers and hangs up before pressing 1: Dial never bridges the agent to
    the dead channel (the gosub's GOSUB_RESULT=CONTINUE stands unless a 1 clears it; without
    it Asterisk 22 bridged the agent, BridgeEnter and all, in 3 runs of 6), the agent hears
    1 s of tone and is released, and the attempt is not connected."""
    await pbx.set_global("AGENT_TALK", "60")
    await pbx.device("agent2", "INUSE")
    config, _ = service_config(sandbox, redis_url, dialing_mode="agent_first", max_attempts="1")
    client, store = await store_for(redis_url, prefix=PREFIX)
    try:
        mark = len(pbx.watch.ami)
        cb = await book(store, "2125556010")
        agent_leg = f"cb-{cb.id}-a1"
        async with running_service(config):
            async with asyncio.timeout(60):
                end = await pbx.wait_ami(ami_is("DialEnd", Uniqueid=agent_leg), since=mark)
                gone = await pbx.wait_ami(ami_is("Hangup", Uniqueid=agent_leg), since=mark)
                cb = await settled(store, cb.id)
    finally:
        await client.aclose()
    assert end["DialStatus"] == "CONTINUE"
    assert not [
        m for m in pbx.ami_events("BridgeEnter", since=mark) if m.get("Uniqueid") == agent_leg
    ]
    assert any(
        m.get("Uniqueid") == agent_leg and m.get("Application") == "PlayTones"
        for m in pbx.ami_events("Newexten", since=mark)
    ), "the agent did not hear the tone"
    assert float(gone["_t"]) - float(end["_t"]) < 2.0
    assert (cb.state, cb.last_outcome) == (State.FAILED, "not_confirmed")

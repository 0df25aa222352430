"""The sandbox PBX itself: the existing PBX it lays out behaves as the tests rely on."""

from __future__ import annotations

import asyncio

import pytest

from callback_ari.sim.sandbox import Harness

pytestmark = pytest.mark.asterisk


async def test_customers_behave_by_number_and_overrides(pbx: Harness) -> None:
    """5552... is busy by its number; an AstDB override makes it answer on the next call."""
    await pbx.customer("2125552001", "answer")
    mark = len(pbx.watch.ami)
    await pbx.ami(
        "Originate", Channel="Local/2125552001@customers", Application="Wait", Data="1",
        Async="true",
    )  # fmt: skip
    async with asyncio.timeout(10):
        answered = await pbx.wait_ami(
            lambda m: m.get("Event") == "Newstate" and m.get("ChannelStateDesc") == "Up",
            since=mark,
        )
    assert "2125552001@customers" in answered["Channel"]
    mark = len(pbx.watch.ami)
    await pbx.ami(
        "Originate", Channel="Local/2125552002@customers", Application="Wait", Data="1",
        Async="true",
    )  # fmt: skip
    async with asyncio.timeout(10):
        busy = await pbx.wait_ami(
            lambda m: m.get("Event") == "Hangup" and "2125552002" in m.get("Channel", ""),
            since=mark,
        )
    assert busy["Cause"] in {"17", "0"}


async def test_agent_phone_sets_its_device_state(pbx: Harness) -> None:
    """A live caller reaches agent1, whose Custom: device goes INUSE, then NOT_INUSE."""
    await pbx.device("agent2", "UNAVAILABLE")
    await pbx.set_global("AGENT_TALK", "1")
    mark = len(pbx.watch.ami)
    caller = await pbx.call_in("2125551001", exten="plain")
    async with asyncio.timeout(15):
        await pbx.wait_ami(lambda m: m.get("Event") == "AgentConnect", since=mark)
        await pbx.wait_ami(
            lambda m: (
                m.get("Event") == "DeviceStateChange"
                and m.get("Device") == "Custom:agent1"
                and m.get("State") == "INUSE"
            ),
            since=mark,
        )
        await pbx.wait_ami(
            lambda m: (
                m.get("Event") == "DeviceStateChange"
                and m.get("Device") == "Custom:agent1"
                and m.get("State") == "NOT_INUSE"
            ),
            since=mark,
        )
    await pbx.hang_up(caller)

"""Real PBX: the ways into the offer, the caller's dialogue, and going back to the queue.

Each test runs the real service (a child process) against the sandbox Asterisk 22 and plays
the caller through the harness. What is checked is what Asterisk reports: the Stasis()
arguments the kit passed, the prompts played to the caller (ARI playback events), queue joins
with their position (AMI QueueCallerJoin), channel variables; and the stored callback through
the service's HTTP API where Asterisk cannot tell.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callback_ari.sim.sandbox import Harness, Sandbox
from tests.pbx_service import (
    enters_app,
    gone,
    hears,
    joins_queue,
    pbx_side,
    service,
    start_with_routes,
    until,
)

# Real time on a shared 2-core machine: each step waits for what Asterisk reports, so a
# generous ceiling costs nothing when the flow works.
pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]

CALLER = "2125551001"
LATER = "2125551002"


@pytest.fixture
async def pbx(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """The sandbox with the suite's extra inbound routes (queue timeout, FastAGI)."""
    start_with_routes(sandbox, monkeypatch)
    async with Harness(sandbox) as harness:
        yield harness


async def holding(pbx: Harness, number: str, *, context: str = "incoming") -> str:
    """A caller who dialled the inbound route and now holds in the queue; their handset id."""
    mark = len(pbx.watch.ami)
    caller = await pbx.call_in(number, context=context)
    if context != "incoming-agi":
        async with asyncio.timeout(20):
            await joins_queue(pbx, pbx_side(caller), since=mark)
    return caller


async def agents_away(pbx: Harness) -> None:
    """Nobody answers the queue: callers hold until the test is done with them."""
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")


def stasis_args(event: dict[str, object]) -> list[str]:
    return str(event["dialplan_app_data"]).split(",")


async def offered(pbx: Harness, caller: str, *, since: int) -> list[str]:
    """Wait for the caller to enter the service's Stasis app and hear the offer; its args."""
    async with asyncio.timeout(15):
        entered = await enters_app(pbx, pbx_side(caller), "Stasis", since=since)
        await hears(pbx, pbx_side(caller), "sound:queue-thankyou", since=since)
    return stasis_args(entered)


async def test_exit_digit_then_confirmed_caller_id_is_stored(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await agents_away(pbx)
    async with service(sandbox, redis_url, tmp_path) as svc:
        caller = await holding(pbx, CALLER)
        side = pbx_side(caller)
        mark = len(pbx.watch.ari)
        await pbx.press(caller, "1")  # the exit digit, while holding
        args = await offered(pbx, caller, since=mark)
        assert args[:4] == ["callback-ari", "offer", "support", "digit"]
        assert args[5] == "1"  # the position it left

        await pbx.press(caller, "1")  # "press 1 for a callback"
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:vm-num-i-have", since=mark)
            await hears(pbx, side, f"digits:{CALLER}", since=mark)
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:if-correct-press", since=mark)
        await pbx.press(caller, "1")
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:num-was-successfully", since=mark)
            await gone(pbx, side, since=mark)  # the service hangs up after "goodbye"

        [cb] = await svc.callbacks()
        assert (cb["state"], cb["number"], cb["origin"]) == ("pending", "******1001", "phone")


async def test_withdrawn_after_offer_threshold_keyed_number_is_stored(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await agents_away(pbx)
    async with service(sandbox, redis_url, tmp_path, queue={"offer_threshold": "2"}) as svc:
        mark = len(pbx.watch.ari)
        ami_mark = len(pbx.watch.ami)
        caller = await holding(pbx, CALLER)
        side = pbx_side(caller)
        args = await offered(pbx, caller, since=mark)
        assert args[3] == "withdraw"
        join = next(m for m in pbx.ami_events("QueueCallerJoin", ami_mark) if m["Uniqueid"] == side)
        async with asyncio.timeout(10):  # AMI is another socket: it may trail the ARI events
            leave = await pbx.wait_ami(
                lambda m: m.get("Event") == "QueueCallerAbandon" and m.get("Uniqueid") == side,
                since=ami_mark,
            )
        assert 1.5 <= float(leave["_t"]) - float(join["_t"]) <= 5

        await pbx.press(caller, "1")
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:vm-num-i-have", since=mark)
        await pbx.press(caller, "2")  # ignored during the read-back ...
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:if-correct-press", since=mark)
        await pbx.press(caller, "2")  # ... "press 2 to enter a different number"
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:privacy-prompt", since=mark)
        step = len(pbx.watch.ari)
        await pbx.press(caller, "2125551777#")
        async with asyncio.timeout(15):
            await hears(pbx, side, "digits:2125551777", since=step)
            await hears(pbx, side, "sound:if-correct-press", since=step)
        await pbx.press(caller, "1")
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:num-was-successfully", since=mark)
            await gone(pbx, side, since=mark)

        [cb] = await svc.callbacks()
        assert (cb["state"], cb["number"]) == ("pending", "******1777")


async def test_queue_timeout_offers_and_silence_returns_the_caller(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """CB_WAIT set in the dialplan: app_queue's own timeout leads to the offer."""
    await agents_away(pbx)
    async with service(sandbox, redis_url, tmp_path) as svc:
        mark, ami_mark = len(pbx.watch.ari), len(pbx.watch.ami)
        caller = await holding(pbx, CALLER, context="incoming-timeout")
        side = pbx_side(caller)
        args = await offered(pbx, caller, since=mark)
        assert args[3] == "timeout"
        async with asyncio.timeout(15):  # nothing pressed: back after response_timeout
            await hears(pbx, side, "sound:queue-thankyou", since=len(pbx.watch.ari))
            rejoin = await joins_queue(pbx, side, since=len(pbx.watch.ami))
        assert rejoin["Position"] == "1"
        joins = [m for m in pbx.ami_events("QueueCallerJoin", ami_mark) if m["Uniqueid"] == side]
        assert len(joins) == 2
        assert await svc.callbacks() == []


async def test_invalid_and_emergency_numbers_are_refused(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """A caller without a caller ID keys 911, then 12345: both refused, then a good number."""
    await agents_away(pbx)
    async with service(sandbox, redis_url, tmp_path, queue={"max_tries": "3"}) as svc:
        mark = len(pbx.watch.ami)
        caller = await pbx.call_in("anonymous", name="Anonymous")
        side = pbx_side(caller)
        async with asyncio.timeout(20):
            await joins_queue(pbx, side, since=mark)
        mark = len(pbx.watch.ari)
        await pbx.press(caller, "1")
        await offered(pbx, caller, since=mark)
        await pbx.press(caller, "1")  # no callable caller ID: straight to keying a number
        async with asyncio.timeout(20):
            await hears(pbx, side, "sound:privacy-prompt", since=mark)
        for number in ("911", "12345"):
            step = len(pbx.watch.ari)
            await pbx.press(caller, number + "#")
            async with asyncio.timeout(20):
                await hears(pbx, side, "sound:privacy-incorrect", since=step)
        assert not [e for e in pbx.ari_events("PlaybackStarted", mark) if "digits:911" in str(e)]
        step = len(pbx.watch.ari)
        await pbx.press(caller, "2125551888#")
        async with asyncio.timeout(20):
            await hears(pbx, side, "digits:2125551888", since=step)
            await hears(pbx, side, "sound:if-correct-press", since=step)
        await pbx.press(caller, "1")
        async with asyncio.timeout(20):
            await gone(pbx, side, since=mark)
        assert [cb["number"] for cb in await svc.callbacks()] == ["******1888"]
        reasons = [e.get("reason") for e in svc.events("offer.number_rejected")]
        assert reasons[0] == "emergency", reasons

        status, body = await svc.http(
            "POST", "/api/v1/callbacks", {"queue": "support", "number": "911"}
        )
        assert (status, body["error"]["code"]) == (422, "number_rejected")


@pytest.mark.parametrize("how", ["decline", "silence", "too_many_tries"])
async def test_caller_back_at_old_position_ahead_of_later_callers(
    how: str, pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await agents_away(pbx)
    async with service(sandbox, redis_url, tmp_path, queue={"max_tries": "2"}) as svc:
        first = await holding(pbx, CALLER)
        later = await holding(pbx, LATER)
        side = pbx_side(first)
        mark = len(pbx.watch.ari)
        await pbx.press(first, "1")
        args = await offered(pbx, first, since=mark)
        assert args[5] == "1"
        ami_mark = len(pbx.watch.ami)
        if how == "decline":
            await pbx.press(first, "2")
        elif how == "too_many_tries":
            await pbx.press(first, "7")
            async with asyncio.timeout(20):
                await hears(pbx, side, "sound:privacy-incorrect", since=mark)
            await pbx.press(first, "8")
            async with asyncio.timeout(20):
                await hears(pbx, side, "sound:vm-sorry", since=mark)
        async with asyncio.timeout(20):
            rejoin = await joins_queue(pbx, side, since=ami_mark)
        assert (rejoin["Position"], rejoin["Count"]) == ("1", "2")
        assert await pbx.getvar("CB_JOIN", rejoin["Channel"]) == args[4]  # same turn kept
        status = await pbx.ami("QueueStatus", Queue="support")
        assert status["Response"] == "Success"
        async with asyncio.timeout(10):
            entry = await pbx.wait_ami(
                lambda m: m.get("Event") == "QueueEntry" and m.get("Uniqueid") == pbx_side(later),
                since=ami_mark,
            )
        assert entry["Position"] == "2"
        assert await svc.callbacks() == []


async def test_service_down_sends_the_caller_straight_back(pbx: Harness, sandbox: Sandbox) -> None:
    """No service: Stasis() fails at once and the kit puts the caller back where they were."""
    await agents_away(pbx)
    first = await holding(pbx, CALLER)
    later = await holding(pbx, LATER)
    side = pbx_side(first)
    mark = len(pbx.watch.ami)
    await pbx.press(first, "1")
    async with asyncio.timeout(10):
        failed = await pbx.wait_ami(
            lambda m: (
                m.get("Event") == "VarSet"
                and m.get("Uniqueid") == side
                and m.get("Variable") == "STASISSTATUS"
                and m.get("Value") == "FAILED"
            ),
            since=mark,
        )
        rejoin = await joins_queue(pbx, side, since=mark)
    assert float(rejoin["_t"]) - float(failed["_t"]) < 1.0
    assert (rejoin["Position"], rejoin["Count"]) == ("1", "2")
    assert later in {c["id"].removesuffix("-pbx") for c in await pbx.channels()}


async def test_calling_again_cancels_the_pending_callback(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """on_recall = cancel: the customer rang the queue again, so nobody calls them back."""
    await agents_away(pbx)
    async with service(sandbox, redis_url, tmp_path) as svc:
        cb_id = await svc.request_callback(CALLER)
        await holding(pbx, CALLER)

        async def cancelled() -> bool:
            return bool((await svc.callback(cb_id))["state"] == "cancelled")

        async with asyncio.timeout(10):
            await until(cancelled)

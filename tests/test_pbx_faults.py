"""Real PBX: the service's links dropped by Asterisk itself, and the service SIGKILLed.

The ARI WebSocket is closed with the PBX's own CLI (``ari shutdown websocket session``), the
AMI session with ``manager kick session``; the service runs as a child process and is killed
with SIGKILL. After each, what Asterisk reports must show nothing lost and nobody dialled
twice.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from callback_ari.service.attempt import REACHED_VAR_PREFIX, RESUMED_CAUSE
from callback_ari.sim.sandbox import Harness, Sandbox
from tests.pbx_service import (
    ServiceProcess,
    enters_app,
    gone,
    hears,
    joins_queue,
    pbx_side,
    service,
    until,
)
from tests.test_pbx_dispatch import attempts, created, most_in_flight, settles

# Real time on a shared 2-core machine: each step waits for what Asterisk reports, so a
# generous ceiling costs nothing when the flow works.
pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]

APP = "callback-ari"


def ari_sessions(sandbox: Sandbox) -> dict[str, str]:
    """``{session id: apps}`` from ``ari show websocket sessions``."""
    rows = {}
    for line in sandbox.cli("ari show websocket sessions").splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.fullmatch(r"[0-9a-f-]{36}", parts[0]):
            rows[parts[0]] = parts[-1]
    return rows


def ami_sessions(sandbox: Sandbox, user: str) -> list[tuple[str, str]]:
    """(file descriptor, start time) of ``user``'s AMI sessions (``manager show connected``).

    Asterisk reuses file descriptors, so a new session is told apart by when it started.
    """
    sessions = []
    for line in sandbox.cli("manager show connected").splitlines():
        parts = line.split()
        if parts and parts[0] == user:
            sessions.append((parts[4], parts[2]))
    return sessions


async def drop_ari(sandbox: Sandbox) -> None:
    """Close the service's ARI WebSocket from the PBX and wait until it is back."""
    [old] = [sid for sid, apps in ari_sessions(sandbox).items() if APP in apps]
    sandbox.cli(f"ari shutdown websocket session {old}")

    async def back() -> bool:
        return any(APP in apps and sid != old for sid, apps in ari_sessions(sandbox).items())

    async with asyncio.timeout(15):
        await until(back, 0.2)


async def wait_ready(svc: ServiceProcess) -> None:
    async with asyncio.timeout(15):
        await until(svc.ready)


async def declined_back_to_queue(pbx: Harness, caller: str) -> None:
    """The caller leaves the queue with the exit digit, hears the offer, declines, returns."""
    side = pbx_side(caller)
    mark, ami_mark = len(pbx.watch.ari), len(pbx.watch.ami)
    await pbx.press(caller, "1")
    async with asyncio.timeout(15):
        await enters_app(pbx, side, "Stasis", since=mark)
        await hears(pbx, side, "sound:queue-thankyou", since=mark)
    await pbx.press(caller, "2")
    async with asyncio.timeout(15):
        await joins_queue(pbx, side, since=ami_mark)


async def holding(pbx: Harness, number: str) -> str:
    mark = len(pbx.watch.ami)
    caller = await pbx.call_in(number)
    async with asyncio.timeout(20):
        await joins_queue(pbx, pbx_side(caller), since=mark)
    return caller


async def test_ari_socket_dropped_while_idle(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path) as svc:
        await drop_ari(sandbox)
        await wait_ready(svc)
        caller = await holding(pbx, "2125551501")
        await declined_back_to_queue(pbx, caller)
        assert svc.proc is not None and svc.proc.returncode is None


async def test_ari_socket_dropped_mid_dialogue(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """The dialogue survives the drop: the caller confirms and the callback is stored."""
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path, queue={"response_timeout": "8"}) as svc:
        caller = await holding(pbx, "2125551502")
        side = pbx_side(caller)
        mark = len(pbx.watch.ari)
        await pbx.press(caller, "1")
        async with asyncio.timeout(15):
            await hears(pbx, side, "sound:queue-thankyou", since=mark)
        await drop_ari(sandbox)
        step = len(pbx.watch.ari)
        await pbx.press(caller, "1")
        async with asyncio.timeout(15):
            await hears(pbx, side, "sound:vm-num-i-have", since=step)
            await hears(pbx, side, "sound:if-correct-press", since=step)
        await pbx.press(caller, "1")
        async with asyncio.timeout(15):
            await gone(pbx, side, since=step)
        assert [cb["state"] for cb in await svc.callbacks()] == ["pending"]


async def test_ami_dropped_a_member_freed_meanwhile_is_still_used(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    await pbx.set_global("AGENT_TALK", "1")
    async with service(sandbox, redis_url, tmp_path) as svc:
        cb_id = await svc.request_callback("2125551503")
        [old] = ami_sessions(sandbox, APP)
        await asyncio.sleep(1.1)  # a new session must be able to show a later start second
        sandbox.cli(f"manager kick session {old[0]}")
        await pbx.device("agent1", "NOT_INUSE")  # while the service has no AMI session
        async with asyncio.timeout(20):
            await created(pbx, f"cb-{cb_id}-a1")
            await pbx.wait_ami(
                lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == f"cb-{cb_id}-a1"
            )
        [new] = ami_sessions(sandbox, APP)
        assert new[1] > old[1]  # the service logged in again
        async with asyncio.timeout(10):
            await settles(svc, cb_id, "connected")


async def test_sigkill_with_a_pending_callback(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    await pbx.set_global("AGENT_TALK", "1")
    async with service(sandbox, redis_url, tmp_path) as svc:
        cb_id = await svc.request_callback("2125551504")
        svc.kill()
        assert svc.proc is not None and await svc.proc.wait() == -9
        await svc.start()
        await pbx.device("agent1", "NOT_INUSE")
        async with asyncio.timeout(20):
            await pbx.wait_ami(
                lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == f"cb-{cb_id}-a1"
            )
            cb = await settles(svc, cb_id, "connected")
        assert cb["attempts"] == 1
        assert attempts(pbx) == [f"cb-{cb_id}-a1"]


async def test_sigkill_mid_attempt_redials_once_the_old_call_is_gone(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent2", "UNAVAILABLE")
    await pbx.set_global("AGENT_TALK", "1")
    await pbx.customer("2125551505", "noanswer", "answer")  # rings on, then answers
    async with service(sandbox, redis_url, tmp_path, queue={"ring_timeout": "30"}) as svc:
        cb_id = await svc.request_callback("2125551505")
        first, second = f"cb-{cb_id}-a1", f"cb-{cb_id}-a2"
        async with asyncio.timeout(20):
            await created(pbx, first)
        await asyncio.sleep(0.5)
        svc.kill()
        assert svc.proc is not None and await svc.proc.wait() == -9
        assert first in {c["id"] for c in await pbx.channels()}  # the phone still rings
        await svc.start()
        async with asyncio.timeout(30):
            redial = await created(pbx, second)
            await pbx.wait_ami(
                lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == second
            )
            cb = await settles(svc, cb_id, "connected")
        first_gone = await gone(pbx, first)
        assert first_gone["_t"] < redial["_t"]  # never two calls to the customer at once
        assert most_in_flight(pbx.watch.ari) == 1
        assert attempts(pbx) == [first, second]
        assert cb["attempts"] == 2


async def test_sigkill_while_the_customer_talks_to_the_agent_never_calls_them_again(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """Killed once the customer reached the agent; the call ends before the service is back.
    The channel is gone, but the kit's mark (set by the agent's whisper gosub) tells the
    restarted service they were connected: recorded so, not rung again, and the mark dropped."""
    await pbx.device("agent2", "UNAVAILABLE")
    await pbx.set_global("AGENT_TALK", "14")  # from the agent's answer: whisper, then 4 s talk
    # a reason menu makes the agent hear "callback" (~10 s) after the mark, before AgentConnect
    whisper = {"reasons": "1:billing=sound:auth-thankyou"}
    async with service(sandbox, redis_url, tmp_path, queue=whisper) as svc:
        cb_id = await svc.request_callback("2125551506")
        first = f"cb-{cb_id}-a1"
        mark = REACHED_VAR_PREFIX + cb_id
        async with asyncio.timeout(30):
            # killed as the agent's whisper gosub sets the mark, 10 s before AgentConnect: the
            # instance cannot have recorded the connection (killing at AgentConnect raced it)
            await pbx.wait_ami(
                lambda m: (
                    m.get("Event") == "Newexten"
                    and m.get("Context") == "callback-whisper"
                    and f"GLOBAL({mark})" in m.get("AppData", "")
                )
            )
        svc.kill()
        assert svc.proc is not None and await svc.proc.wait() == -9
        async with asyncio.timeout(40):
            await gone(pbx, first)  # the agent hung up after AGENT_TALK: nobody watched
        assert await pbx.getvar(mark)  # set as it died, still there
        await svc.start()
        async with asyncio.timeout(30):
            cb = await settles(svc, cb_id, "connected", "failed")
        await asyncio.sleep(1.0)  # room for a wrong redial to show
        assert (cb["state"], cb["last_cause"]) == ("connected", RESUMED_CAUSE)
        assert attempts(pbx) == [first]
        assert not await pbx.getvar(mark)


async def test_service_stopped_mid_dialogue_returns_the_caller(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """SIGTERM while a caller hears the offer: they go back to the queue, not into silence."""
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path, queue={"response_timeout": "20"}) as svc:
        ahead = await holding(pbx, "2125551507")
        caller = await holding(pbx, "2125551506")
        side = pbx_side(caller)
        mark, ami_mark = len(pbx.watch.ari), len(pbx.watch.ami)
        await pbx.press(caller, "1")
        async with asyncio.timeout(15):
            await hears(pbx, side, "sound:queue-thankyou", since=mark)
        assert await svc.stop() == 0
        async with asyncio.timeout(20):
            rejoin = await joins_queue(pbx, side, since=ami_mark)
        assert rejoin["Position"] == "2"  # where they left, behind the caller ahead of them
        assert ahead in {c["id"] for c in await pbx.channels()}


async def test_sigkill_mid_dialogue_the_restarted_service_offers_again(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    """The caller waits in Stasis while the service is dead; after the restart the offer
    starts over, and declining puts them back in the queue."""
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path, queue={"response_timeout": "20"}) as svc:
        caller = await holding(pbx, "2125551508")
        side = pbx_side(caller)
        mark, ami_mark = len(pbx.watch.ari), len(pbx.watch.ami)
        await pbx.press(caller, "1")
        async with asyncio.timeout(15):
            await hears(pbx, side, "sound:queue-thankyou", since=mark)
        svc.kill()
        assert svc.proc is not None and await svc.proc.wait() == -9
        restart = len(pbx.watch.ari)
        await svc.start()
        async with asyncio.timeout(15):
            await hears(pbx, side, "sound:queue-thankyou", since=restart)
        await pbx.press(caller, "2")
        async with asyncio.timeout(15):
            rejoin = await joins_queue(pbx, side, since=ami_mark)
        assert rejoin["Position"] == "1"
        assert await svc.callbacks() == []

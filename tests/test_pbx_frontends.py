"""Real PBX: the FastAGI front end, a web request over the HTTP API, and ``check``.

FastAGI: the kit's ``[callback-offer-agi]`` reaches the service's AGI listener on the port the
sandbox's kit was laid out with; what the caller hears is seen in AMI ``AGIExecStart``.
``check`` runs as an administrator would, ``callback-ari -c CONF check``, against the sandbox,
passing and then with each fault it claims to find.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from callback_ari.sim.sandbox import AmiMessage, Harness, Sandbox
from callback_ari.sim.simpbx.redis_process import RedisProcess
from tests.pbx_service import (
    REPO,
    ServiceProcess,
    gone,
    joins_queue,
    pbx_side,
    service,
    start_with_routes,
)
from tests.test_pbx_dispatch import created

# Real time on a shared 2-core machine: each step waits for what Asterisk reports, so a
# generous ceiling costs nothing when the flow works.
pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]


@pytest.fixture
async def pbx(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """The sandbox with the suite's extra inbound routes (one goes to [callback-offer-agi])."""
    start_with_routes(sandbox, monkeypatch)
    async with Harness(sandbox) as harness:
        yield harness


def agi_command(channel: str, words: str) -> object:
    def match(m: AmiMessage) -> bool:
        return (
            m.get("Event") == "AGIExecStart"
            and m.get("Uniqueid") == channel
            and words in m.get("Command", "")
        )

    return match


async def agi_says(pbx: Harness, channel: str, words: str, *, since: int) -> AmiMessage:
    """Wait until the AGI session on ``channel`` sends a command containing ``words``."""
    return await pbx.wait_ami(agi_command(channel, words), since=since)  # type: ignore[arg-type]


async def test_fastagi_front_end_confirms_and_stores(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path, agi=True) as svc:
        mark = len(pbx.watch.ami)
        caller = await pbx.call_in("2125551701", context="incoming-agi")
        side = pbx_side(caller)
        async with asyncio.timeout(20):
            await agi_says(pbx, side, "STREAM FILE queue-thankyou", since=mark)
        await pbx.press(caller, "1")
        async with asyncio.timeout(20):
            await agi_says(pbx, side, "STREAM FILE vm-num-i-have", since=mark)
            await agi_says(pbx, side, "SAY DIGITS 2125551701", since=mark)
        async with asyncio.timeout(20):
            await agi_says(pbx, side, "STREAM FILE if-correct-press", since=mark)
        await pbx.press(caller, "1")
        async with asyncio.timeout(20):
            await agi_says(pbx, side, "STREAM FILE num-was-successfully", since=mark)
            await gone(pbx, side)
        [cb] = await svc.callbacks()
        assert (cb["state"], cb["number"], cb["origin"]) == ("pending", "******1701", "agi")


async def test_fastagi_decline_returns_the_caller_to_the_queue(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")
    async with service(sandbox, redis_url, tmp_path, agi=True) as svc:
        mark = len(pbx.watch.ami)
        caller = await pbx.call_in("2125551702", context="incoming-agi")
        side = pbx_side(caller)
        async with asyncio.timeout(20):
            await agi_says(pbx, side, "STREAM FILE queue-thankyou", since=mark)
        await pbx.press(caller, "2")
        async with asyncio.timeout(15):
            await agi_says(pbx, side, "SET CONTEXT callback-return", since=mark)
            await joins_queue(pbx, side, since=mark)
        assert await svc.callbacks() == []


async def test_fastagi_service_down_returns_the_caller_to_the_queue(pbx: Harness) -> None:
    mark = len(pbx.watch.ami)
    caller = await pbx.call_in("2125551703", context="incoming-agi")
    async with asyncio.timeout(20):
        await joins_queue(pbx, pbx_side(caller), since=mark)


async def test_web_request_is_validated_stored_and_dialled(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    async with service(sandbox, redis_url, tmp_path) as svc:
        body = {"queue": "support", "number": "+1 212-555-1601", "name": "Ann"}
        status, first = await svc.http("POST", "/api/v1/callbacks", body)
        assert (status, first["created"]) == (201, True)
        status, again = await svc.http("POST", "/api/v1/callbacks", body)
        assert (status, again["created"], again["callback"]["id"]) == (
            200,
            False,
            first["callback"]["id"],
        )
        status, refused = await svc.http(
            "POST", "/api/v1/callbacks", {"queue": "support", "number": "911"}
        )
        assert (status, refused["error"]["code"]) == (422, "number_rejected")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{svc.http_port}/api/v1/callbacks") as resp,
        ):
            assert resp.status == 401
        await pbx.device("agent1", "NOT_INUSE")
        channel = f"cb-{first['callback']['id']}-a1"
        async with asyncio.timeout(20):
            dialled = await created(pbx, channel)
        assert dialled["channel"]["name"].startswith("Local/2125551601@customers-")


# --- callback-ari check --------------------------------------------------------------------
@pytest.fixture(scope="module")
def durable_redis() -> Iterator[RedisProcess]:
    """A redis-server with the append-only file on, as the README asks of production."""
    proc = RedisProcess(appendonly=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


async def check(config: str, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "check.conf"
    path.write_text(config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callback_ari", "-c", str(path), "check", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def row(output: str, check_name: str) -> str:
    """The status and detail the table shows for one check."""
    for line in output.splitlines():
        if line.split(maxsplit=1)[:1] == [check_name]:
            return line.split(maxsplit=1)[1]
    raise AssertionError(f"no {check_name!r} row in:\n{output}")


async def test_check_passes_against_the_real_pbx(
    pbx: Harness, sandbox: Sandbox, durable_redis: RedisProcess, tmp_path: Path
) -> None:
    config = ServiceProcess(sandbox, durable_redis.url, tmp_path).config_text()
    code, out = await check(config, tmp_path)
    assert code == 0, out
    assert "0 failed, 0 warnings" in out
    assert "Asterisk 22." in row(out, "ari.login")
    for name in ("ari.app", "ari.prompts", "ami.login", "queue.support", "redis.persistence"):
        assert row(out, name).startswith("PASS"), out
    assert row(out, "dialplan.support@callback-connect").startswith("PASS")
    assert row(out, "dialplan.support@callback-return").startswith("PASS")


@pytest.mark.parametrize(
    ("fault", "edit", "check_name", "status", "words"),
    [
        ("ari password", ("password = sandbox-ari-secret", "password = wrong"),
         "ari.login", "FAIL", "refused"),
        ("ami secret", ("secret = sandbox-ami-secret", "secret = wrong"),
         "ami.login", "FAIL", "refused"),
        ("missing queue", ("[http]", "[queue:billing]\ndial_template = Local/{number}@customers\n"
                           "[http]"), "queue.billing", "FAIL", "does not know"),
        ("missing context", ("[queue:support]", "[queue:support]\nconnect_context = cb-nowhere"),
         "dialplan.support@cb-nowhere", "FAIL", ""),
        ("missing prompt", ("[queue:support]", "[queue:support]\nprompt_offer = sound:no-such"),
         "ari.prompts", "FAIL", "sound:no-such"),
    ],
    ids=["wrong-ari-password", "wrong-ami-secret", "missing-queue", "missing-context",
         "missing-prompt"],
)  # fmt: skip
async def test_check_catches_each_fault(
    fault: str,
    edit: tuple[str, str],
    check_name: str,
    status: str,
    words: str,
    pbx: Harness,
    sandbox: Sandbox,
    durable_redis: RedisProcess,
    tmp_path: Path,
) -> None:
    config = ServiceProcess(sandbox, durable_redis.url, tmp_path).config_text()
    assert edit[0] in config
    code, out = await check(config.replace(edit[0], edit[1], 1), tmp_path)
    assert code == 1, out
    assert row(out, check_name).startswith(status), out
    assert words in row(out, check_name)
    assert "fix:" in out


async def test_check_warns_about_redis_without_persistence(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    config = ServiceProcess(sandbox, redis_url, tmp_path).config_text()
    code, out = await check(config, tmp_path)
    assert row(out, "redis.persistence").startswith("WARN"), out
    assert "appendonly yes" in out
    assert "0 failed, 1 warnings" in out
    assert code == 0

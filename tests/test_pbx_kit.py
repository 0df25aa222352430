"""The dialplan kit on the real Asterisk 22: a subroutine that returns to the admin's route.

The sandbox's "existing PBX" (dialplan/sandbox/etc/extensions.conf) calls the kit's
``Gosub(callback-queue,<queue>,1(...))`` where it had ``Queue()``, followed by its own
failover; the route reports what it saw as an AMI ``UserEvent(RouteResult)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from callback_ari.config.loader import parse_config
from callback_ari.ops.doctor import run_checks
from callback_ari.sim.sandbox import Harness, JsonDict

pytestmark = pytest.mark.asterisk

REPO = Path(__file__).resolve().parent.parent
NUMBER = "2125551234"
# Short timings for the service; the dialogue itself is the README's.
QUEUE_FAST = {"offer_threshold": "0", "response_timeout": "4", "digit_timeout": "2"}


@contextlib.asynccontextmanager
async def running_service(
    pbx: Harness, redis_url: str, workdir: Path, queue: Mapping[str, str] | None = None
) -> AsyncIterator[Path]:
    """``callback-ari run`` against the sandbox until its Stasis app is registered."""
    conf = workdir / "callback_ari.conf"
    conf.write_text(
        pbx.sandbox.service_config(
            redis_url, general={"mask_numbers": "yes"}, queue={**QUEUE_FAST, **(queue or {})}
        )
        + "[http]\nenabled = no\n"
    )
    log = workdir / "service.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callback_ari", "-c", str(conf), "--log-format", "json", "run",
            cwd=REPO, stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            while not await _app_registered(pbx):
                assert proc.returncode is None, log.read_text()
                await asyncio.sleep(0.1)
        yield log
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(15):
                await proc.wait()


async def _app_registered(pbx: Harness) -> bool:
    apps = await pbx.rest("GET", "/applications")
    return any(app.get("name") == "callback-ari" for app in apps)


def asterisk_log(pbx: Harness) -> str:
    """The sandbox Asterisk's full.log (verbose 3: every dialplan line it executed)."""
    return Path(pbx.sandbox.facts()["CBPBX_LOG"], "full.log").read_text(errors="replace")


def announcement_files(pbx: Harness, lang: str) -> tuple[bytes, bytes]:
    """callback-announce.gsm in ``lang`` and the three stock files it should consist of."""
    # Debian's directories behind sounds/en and sounds/es (en links through /etc/alternatives,
    # which only resolves inside the chroot).
    folder = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison"}[lang]
    sounds = Path(pbx.sandbox.facts()["CBPBX_ROOT"], "usr/share/asterisk/sounds", folder)
    parts = ("queue-periodic-announce.gsm", "vm-press.gsm", "digits/1.gsm")
    return (
        (sounds / "callback-announce.gsm").read_bytes(),
        b"".join((sounds / part).read_bytes() for part in parts),
    )


def pbx_side(caller: str) -> str:
    return caller + "-pbx"


async def route_result(pbx: Harness, queue: str, since: int) -> dict[str, str]:
    return await pbx.wait_ami(
        lambda m: (
            m.get("Event") == "UserEvent"
            and m.get("UserEvent") == "RouteResult"
            and m.get("Queue") == queue
        ),
        since=since,
    )


def playbacks(pbx: Harness, channel: str, since: int = 0) -> list[JsonDict]:
    return [
        e["playback"]
        for e in pbx.ari_events("PlaybackStarted", since)
        if e["playback"].get("target_uri") == f"channel:{channel}"
    ]


async def hears(pbx: Harness, channel: str, media: str, since: int) -> JsonDict:
    event = await pbx.wait_ari(
        lambda e: (
            e.get("type") == "PlaybackStarted"
            and e["playback"].get("target_uri") == f"channel:{channel}"
            and media in e["playback"].get("media_uri", "")
        ),
        since=since,
    )
    playback: JsonDict = event["playback"]
    return playback


async def book_callback(pbx: Harness, queue: str = "support") -> str:
    """A caller holds in ``queue``, presses 1, keeps their caller ID and confirms it."""
    mark = len(pbx.watch.ari)
    ami_mark = len(pbx.watch.ami)
    caller = await pbx.call_in(NUMBER, exten=queue)
    side = pbx_side(caller)
    async with asyncio.timeout(10):
        await pbx.wait_ami(
            lambda m: m.get("Event") == "QueueCallerJoin" and m.get("Uniqueid") == side,
            since=ami_mark,
        )
    await pbx.press(caller, "1")  # the exit digit: callback-exit -> the offer
    async with asyncio.timeout(20):
        await hears(pbx, side, "vm-press", mark)  # the offer: "... press 1"
        await pbx.press(caller, "1")
        await hears(pbx, side, "digits:", mark)  # the caller ID read back
        await hears(pbx, side, "vm-calldiffnum", mark)  # "press 1 ... 2 for another"
        await pbx.press(caller, "1")
    return caller


async def agents_away(pbx: Harness) -> None:
    """Nobody can answer: callers wait (joinempty = yes counts unavailable members)."""
    await pbx.device("agent1", "UNAVAILABLE")
    await pbx.device("agent2", "UNAVAILABLE")


async def test_empty_queue_with_joinempty_no_reaches_the_admins_failover(pbx: Harness) -> None:
    """`sales` refuses callers when empty: the subroutine returns JOINEMPTY to the route,
    whose next priority (the failover) runs; NoOp lines never show the whole number."""
    mark = len(pbx.watch.ami)
    await pbx.call_in(NUMBER, exten="sales")
    async with asyncio.timeout(15):
        result = await route_result(pbx, "sales", mark)
        failover = await pbx.wait_ami(
            lambda m: m.get("UserEvent") == "RouteFailover" and m.get("Queue") == "sales",
            since=mark,
        )
    assert result["QueueStatus"] == "JOINEMPTY"
    assert failover["QueueStatus"] == "JOINEMPTY"
    assert await pbx.getvar("ROUTE_sales") == "JOINEMPTY"
    full_log = asterisk_log(pbx)
    assert "enters queue sales" in full_log  # the kit's NoOp ran and was logged
    assert f"***{NUMBER[-4:]} enters queue sales" in full_log
    assert NUMBER not in full_log


async def test_admin_timeout_returns_timeout_to_the_route(pbx: Harness) -> None:
    """The admin's own Queue() timeout (ARG4) still ends the wait with TIMEOUT, returned."""
    await agents_away(pbx)
    mark = len(pbx.watch.ami)
    await pbx.call_in(NUMBER, exten="support-3s")  # Queue(support,,,,3) before the kit
    async with asyncio.timeout(20):
        result = await route_result(pbx, "support", mark)
    assert result["QueueStatus"] == "TIMEOUT"


async def test_booked_callback_returns_callback_status_to_the_route(
    pbx: Harness, redis_url: str, tmp_path: Path
) -> None:
    """A caller who books a callback comes back from the subroutine with
    QUEUESTATUS=CALLBACK; the route says goodbye instead of going to its failover."""
    await agents_away(pbx)
    async with running_service(pbx, redis_url, tmp_path):
        mark = len(pbx.watch.ami)
        caller = await book_callback(pbx)
        async with asyncio.timeout(20):
            result = await route_result(pbx, "support", mark)
        assert result["QueueStatus"] == "CALLBACK"
        assert await pbx.getvar("ROUTE_support") == "CALLBACK"
        async with asyncio.timeout(20):  # the route says goodbye and hangs up
            await pbx.wait_ami(
                lambda m: m.get("Event") == "Hangup" and m.get("Uniqueid") == pbx_side(caller),
                since=mark,
            )
        events = [m.get("UserEvent") for m in pbx.ami_events("UserEvent", mark)]
        assert "RouteFailover" not in events


async def test_spanish_queue_plays_spanish_prompts(
    pbx: Harness, redis_url: str, tmp_path: Path
) -> None:
    """language = es: every sound: prompt of the dialogue is asked for in es, and Asterisk
    plays the Spanish files (its own log names the language it resolved)."""
    await agents_away(pbx)
    async with running_service(pbx, redis_url, tmp_path, queue={"language": "es"}):
        mark = len(pbx.watch.ari)
        caller = await book_callback(pbx)
        async with asyncio.timeout(20):
            await hears(pbx, pbx_side(caller), "vm-goodbye", mark)
    played = playbacks(pbx, pbx_side(caller), mark)
    assert played, "no prompts played"
    assert {p.get("language") for p in played} == {"es"}
    uris = [p["media_uri"] for p in played]
    assert any(u.startswith("sound:") for u in uris)
    assert any(u.startswith("digits:") for u in uris)  # the number, said by Asterisk in es
    full_log = asterisk_log(pbx)
    assert "Playing 'vm-press.gsm' (language 'es')" in full_log
    assert "(language 'en')" not in full_log.split("offer,support")[-1]


@pytest.mark.parametrize(("language", "status"), [("es", "pass"), ("fr", "fail")])
async def test_check_verifies_every_prompt_in_the_queue_language(
    pbx: Harness, redis_url: str, language: str, status: str
) -> None:
    """The sandbox has Debian's en and es core sounds and no French: ``check`` asks ARI
    /sounds/{id} for each prompt (and the digits) in the queue's language."""
    text = pbx.sandbox.service_config(redis_url, queue={"language": language})
    found = {f.check: f for f in await run_checks(parse_config(text, env={}))}
    assert found["ari.version"].status == "pass"  # Asterisk 22: the kit's Queue() layout
    prompts = found["ari.prompts"]
    assert prompts.status == status, prompts.detail
    if status == "fail":
        assert f"sound:vm-press in {language} (support)" in prompts.detail
        assert f"asterisk-core-sounds-{language}" in prompts.fix
    else:
        assert prompts.detail.endswith(f"present in {language}")


async def test_periodic_announcement_is_built_from_stock_sounds_in_each_language(
    pbx: Harness,
) -> None:
    """queues_callback.conf's periodic-announce = callback-announce exists in en and es
    (dialplan/callback-announce, run by the sandbox as README step 5 says) and is the stock
    announcement followed by "press" "1": its size is the sum of the three files."""
    sound = await pbx.rest("GET", "/sounds/callback-announce")
    languages = {f["language"] for f in sound["formats"] if f["format"] == "gsm"}
    assert {"en", "es"} <= languages
    for lang in ("en", "es"):
        built, parts = announcement_files(pbx, lang)
        assert built == parts

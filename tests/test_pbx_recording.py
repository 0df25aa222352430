"""Real PBX: the caller records a message; the agent hears it before the bridge; it is deleted."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from callback_ari.config.loader import parse_config
from callback_ari.models import State
from callback_ari.ops.doctor import run_checks
from callback_ari.sim.sandbox import Harness, Sandbox, SandboxError
from tests.harness import REPO, running_service, store_for, wait_for_callback
from tests.test_pbx_abandon import PREFIX, QUEUE, sandbox_config
from tests.test_pbx_position import plays

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]

# short reason prompts ("message"), used nowhere else in the dialogue: the whisper stays short
REASONS = "1:billing=sound:auth-thankyou, 2:technical=sound:vm-message"


def recording_event(e: dict[str, object], kind: str, channel: str) -> bool:
    rec = e.get("recording")
    return (
        e.get("type") == kind
        and isinstance(rec, dict)
        and rec.get("target_uri") == f"channel:{channel}"
    )


async def stored(pbx: Harness, name: str) -> bool:
    """Whether Asterisk has the stored recording (ARI GET /recordings/stored/{name})."""
    try:
        await pbx.rest("GET", f"/recordings/stored/{name}")
    except SandboxError as exc:
        if " 404 " in str(exc):
            return False
        raise
    return True


async def deleted(pbx: Harness, name: str) -> None:
    """Until Asterisk no longer has the recording (ARI has no event for it: poll)."""
    while True:
        if not await stored(pbx, name):
            return
        await asyncio.sleep(0.5)


async def test_recorded_message_is_whispered_before_agent_connect_then_deleted(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    # the agent stays on longer than the whisper: "callback" (~10 s), the reason, the message
    await pbx.set_global("AGENT_TALK", "30")
    queue = {**QUEUE, "on_abandon": "off", "offer_threshold": "2", "withdraw": "yes",
             "reasons": REASONS, "record_message": "20", "record_silence": "0"}  # fmt: skip
    config = sandbox_config(sandbox, redis_url, queue)
    assert config.general.recording_retention == 0
    spool = Path(sandbox.facts()["CBPBX_SPOOL"]) / "recording"
    client, store = await store_for(redis_url, PREFIX)
    try:
        async with running_service(config):
            mark, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
            caller = await pbx.call_in("2125551502")
            side = caller + "-pbx"
            async with asyncio.timeout(40):
                await pbx.wait_ari(lambda e: plays(e, side, "vm-press"), since=mark)
                await pbx.press(caller, "1")  # yes, call me back
                await pbx.wait_ari(lambda e: plays(e, side, "if-correct-press"), since=mark)
                await pbx.press(caller, "1")  # that number is right
                await pbx.wait_ari(lambda e: plays(e, side, "vm-message"), since=mark)
                await pbx.press(caller, "2")  # technical
                # booked at once; then "leave your message after the tone", a beep, recording
                await pbx.wait_ari(lambda e: plays(e, side, "vm-intro"), since=mark)
                started = await pbx.wait_ari(
                    lambda e: recording_event(e, "RecordingStarted", side), since=mark
                )
                # the caller speaks (a sound played into their handset), then presses #
                spoken = len(pbx.watch.ari)
                await pbx.rest("POST", f"/channels/{caller}/play", media="sound:tt-weasels",
                               playbackId=f"{caller}-says")  # fmt: skip
                await pbx.wait_ari(
                    lambda e: (
                        e.get("type") == "PlaybackFinished"
                        and e["playback"].get("id") == f"{caller}-says"
                    ),
                    since=spoken,
                )
                await pbx.press(caller, "#")
                finished = await pbx.wait_ari(
                    lambda e: recording_event(e, "RecordingFinished", side), since=mark
                )
                await pbx.wait_ari(lambda e: plays(e, side, "vm-goodbye"), since=mark)
                found = await wait_for_callback(
                    store, lambda cbs: len(cbs) == 1 and cbs[0].recording
                )
            cb = found[0]
            name = f"callback-{cb.id}"
            assert (cb.number, cb.reason, cb.recording) == ("2125551502", "technical", name)
            assert started["recording"]["name"] == finished["recording"]["name"] == name
            assert finished["recording"]["state"] == "done"
            assert await stored(pbx, name)
            # the caller's voice is in it: several seconds of tt-weasels, not a beep
            assert (spool / f"{name}.wav").stat().st_size > 16_000
            await pbx.hang_up(caller)
            # the audit stream says the message belongs to the callback
            audit = await store.audit()
            assert any(a.get("id") == cb.id and a.get("recording") == name for a in audit)

            # an agent frees up: the customer is called, presses 1 and joins the queue; the
            # member's channel plays "callback", the reason and the message before AgentConnect
            await pbx.device("agent1", "NOT_INUSE")
            channel = f"cb-{cb.id}-a1"

            def member_plays(m: dict[str, str]) -> bool:
                return (
                    m.get("Event") == "Newexten"
                    and m.get("Application") == "Playback"
                    and "agent1@agents" in m.get("Channel", "")
                )

            async with asyncio.timeout(60):
                reason = await pbx.wait_ami(member_plays, since=mark_ami)
                message = await pbx.wait_ami(
                    lambda m: member_plays(m) and m is not reason, since=mark_ami
                )
                status = await pbx.wait_ami(
                    lambda m: (
                        m.get("Event") == "VarSet"
                        and m.get("Variable") == "PLAYBACKSTATUS"
                        and m.get("Channel") == message["Channel"]
                        and float(m["_t"]) >= float(message["_t"])
                    ),
                    since=mark_ami,
                )
                connect = await pbx.wait_ami(
                    lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == channel,
                    since=mark_ami,
                )
                await wait_for_callback(store, lambda cbs: cbs[0].state is State.CONNECTED)
            assert reason["AppData"] == "callback-announce&vm-message"
            # Asterisk's own path: ${ASTSPOOLDIR}/recording (inside its chroot here)
            inside = "/" + spool.relative_to(sandbox.facts()["CBPBX_ROOT"]).as_posix()
            assert message["AppData"] == f"{inside}/{name}"
            assert message["Context"] == reason["Context"] == "callback-whisper"
            assert status["Value"] == "SUCCESS"  # the file was found and played
            assert float(reason["_t"]) < float(message["_t"]) < float(connect["_t"])

            # final: with recording_retention = 0 the next sweep deletes it
            async with asyncio.timeout(20):
                await deleted(pbx, name)
            assert not (spool / f"{name}.wav").exists()
            assert (await store.get(cb.id)).recording == name  # the record still names it
    finally:
        await client.aclose()
    conf = tmp_path / "callback_ari.conf"
    conf.write_text(sandbox.service_config(redis_url, queue=queue).replace(
        "[redis]\n", f"[redis]\nprefix = {PREFIX}\n"))  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callback_ari", "-c", str(conf), "report", "--by", "reason",
        "--json", cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    rows = {row["queue"]: row for row in json.loads(out)["queues"]}
    assert rows["technical"]["requested"] == 1
    assert rows["technical"]["finished"] == {"connected": 1}


async def test_caller_hanging_up_while_recording_keeps_callback_and_message(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    queue = {**QUEUE, "on_abandon": "off", "offer_threshold": "2", "withdraw": "yes",
             "record_message": "20", "record_silence": "0"}  # fmt: skip
    config = sandbox_config(sandbox, redis_url, queue)
    client, store = await store_for(redis_url, PREFIX)
    try:
        async with running_service(config):
            mark = len(pbx.watch.ari)
            caller = await pbx.call_in("2125551503")
            side = caller + "-pbx"
            async with asyncio.timeout(40):
                await pbx.wait_ari(lambda e: plays(e, side, "vm-press"), since=mark)
                await pbx.press(caller, "1")
                await pbx.wait_ari(lambda e: plays(e, side, "if-correct-press"), since=mark)
                await pbx.press(caller, "1")
                # no reason menu here; a key during "leave your message" starts it at once
                await pbx.wait_ari(lambda e: plays(e, side, "vm-intro"), since=mark)
                await pbx.press(caller, "5")
                await pbx.wait_ari(
                    lambda e: recording_event(e, "RecordingStarted", side), since=mark
                )
                await pbx.rest("POST", f"/channels/{caller}/play", media="sound:tt-weasels")
                await asyncio.sleep(1.5)
                await pbx.hang_up(caller)
                finished = await pbx.wait_ari(
                    lambda e: recording_event(e, "RecordingFinished", side), since=mark
                )
                found = await wait_for_callback(
                    store, lambda cbs: len(cbs) == 1 and cbs[0].recording
                )
            cb = found[0]
            assert cb.state is State.PENDING
            assert finished["recording"]["name"] == cb.recording == f"callback-{cb.id}"
            assert await stored(pbx, cb.recording)  # live callback: kept by the sweep
            await asyncio.sleep(6)  # longer than one sweep interval
            assert await stored(pbx, cb.recording)
    finally:
        await client.aclose()


@pytest.mark.parametrize("language", ["en", "es"])
async def test_check_finds_every_issue_16_prompt_and_the_recordings_directory(
    pbx: Harness, sandbox: Sandbox, redis_url: str, language: str
) -> None:
    """Reasons, position, the wait and the recorded message, in en and in es: every prompt
    they play exists on the real PBX (es has no "for": its menu says "<reason>, presione N"),
    and Asterisk lists its stored recordings from a directory it may write to."""
    queue = {"language": language, "reasons": REASONS, "record_message": "20",
             "announce_position": "yes"}  # fmt: skip
    spool = sandbox.facts()["CBPBX_SPOOL"]
    text = sandbox.service_config(
        redis_url, queue=queue, general={"recording_dir": f"{spool}/recording"}
    )
    config = parse_config(text, env={})
    assert config.queues["support"].prompts["reason_for"] == (
        () if language == "es" else ("sound:for",)
    )
    found = {f.check: f for f in await run_checks(config)}
    prompts = found["ari.prompts"]
    assert prompts.status == "pass", prompts.detail
    assert prompts.detail.endswith(f"present in {language}")
    assert found["ari.recordings"].status == "pass", found["ari.recordings"].detail
    assert found["ari.recordings.dir"].status == "pass", found["ari.recordings.dir"].detail

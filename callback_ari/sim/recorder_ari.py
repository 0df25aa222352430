"""The ARI part of the recording: offer flow, originate outcomes, websocket outages (JSONL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from callback_ari.sim.recording import Ari, JsonDict, Jsonl
from callback_ari.sim.sandbox import Sandbox

USER, PASSWORD = "cbuser", "cbpass"  # throwaway users of the recording PBX, loopback only


def is_event(kind: str, channel: str | None = None, socket: str | None = None
             ) -> Callable[[str, JsonDict], bool]:  # fmt: skip
    def match(label: str, event: JsonDict) -> bool:
        if event.get("type") != kind or (socket is not None and label != socket):
            return False
        if channel is None:
            return True
        target = event.get("playback", {}).get("target_uri", "")
        return bool(event.get("channel", {}).get("id") == channel or target.endswith(channel))

    return match


async def cli(box: Sandbox, rec: Jsonl, command: str) -> None:
    rec.note(f"CLI (out-of-band, not ARI traffic): {command}")
    output = await asyncio.to_thread(box.cli, command)
    rec.note("CLI output", cli_output=output.strip())


# -- offer_flow.jsonl ----------------------------------------------------------------------
OFFER_RUNS = {
    "offer_continue": (
        "offer1",
        "Run A: harness originates Local/support@incoming/n; ;2 half times out of "
        "Queue(support) (CB_WAIT=5) and enters Stasis(callback-ari,offer,support); prompts, "
        "DTMF 5551234#, digits playback, then POST continue. Agents Custom:agent1/2 are INUSE "
        "so no member is rung.",
    ),
    "offer_app_hangup": (
        "offer2",
        "Run B: same flow, but callback-ari hangs up the channel with DELETE /channels/{id} "
        "instead of continue.",
    ),
    "offer_caller_hangup_mid_playback": (
        "offer3",
        "Run C: caller (harness side ;1) hangs up 1.0 s into the first prompt "
        "(sound:queue-thankyou); the app then tries to play the next prompt and to continue.",
    ),
}


async def play_to_end(ari: Ari, rec: Jsonl, channel: str, **query: str) -> str:
    mark = rec.mark()
    _, body = await ari.rest("callback-ari", "POST", f"/channels/{channel}/play", **query)
    playback_id: str = body["id"]
    async with asyncio.timeout(15):
        await rec.wait(
            lambda label, e: label == "callback-ari" and e["type"] == "PlaybackFinished"
            and e["playback"]["id"] == playback_id, since=mark,
        )  # fmt: skip
    return playback_id


async def offer_run(ari: Ari, rec: Jsonl, scenario: str) -> None:
    run, text = OFFER_RUNS[scenario]
    rec.scenario = scenario
    rec.note(text)
    app = await ari.open("callback-ari", "callback-ari")
    harness = await ari.open("harness", "harness")
    await asyncio.sleep(0.3)
    caller, chan = f"{run}-h", f"{run}-c"
    mark = rec.mark()
    await ari.rest("harness", "POST", "/channels", endpoint="Local/support@incoming/n",
                   app="harness", channelId=caller, otherChannelId=chan,
                   callerId="Alice <5550100>")  # fmt: skip
    async with asyncio.timeout(15):
        await rec.wait(is_event("StasisStart", chan, "callback-ari"), since=mark)
    if scenario == "offer_continue":
        rec.note("extra REST calls an app might make: read QUEUESTATUS, an unset variable, "
                 "answer an already-answered channel")  # fmt: skip
        await ari.rest("callback-ari", "GET", f"/channels/{chan}/variable", variable="QUEUESTATUS")
        await ari.rest("callback-ari", "GET", f"/channels/{chan}/variable", variable="NO_SUCH_VAR")
        await ari.rest("callback-ari", "POST", f"/channels/{chan}/answer")
    if scenario == "offer_caller_hangup_mid_playback":
        _, body = await ari.rest("callback-ari", "POST", f"/channels/{chan}/play",
                                 media="sound:queue-thankyou")  # fmt: skip
        await asyncio.sleep(1.0)
        await ari.rest("harness", "DELETE", f"/channels/{caller}")
        await asyncio.sleep(0.5)
        await ari.rest("callback-ari", "POST", f"/channels/{chan}/play",
                       media="sound:vm-enter-num-to-call")  # fmt: skip
        await ari.rest("callback-ari", "POST", f"/channels/{chan}/continue")
        await ari.rest("callback-ari", "GET", f"/playbacks/{body['id']}")
        await asyncio.sleep(2.0)
    else:
        await play_to_end(ari, rec, chan, media="sound:queue-thankyou")
        await play_to_end(ari, rec, chan, media="sound:vm-enter-num-to-call",
                          playbackId=f"{run}-pb2")  # fmt: skip
        mark = rec.mark()
        await ari.rest("harness", "POST", f"/channels/{caller}/dtmf", dtmf="5551234#")
        digits = ""
        async with asyncio.timeout(10):
            while not digits.endswith("#"):
                event = await rec.wait(is_event("ChannelDtmfReceived", chan, "callback-ari"),
                                       since=mark)  # fmt: skip
                mark = rec.events.index(("callback-ari", event)) + 1
                digits += event["digit"]
        rec.note(f"callback-ari collected digits {digits!r}")
        await play_to_end(ari, rec, chan, media="digits:" + digits.rstrip("#"))
        if scenario == "offer_continue":
            await ari.rest("callback-ari", "POST", f"/channels/{chan}/continue")
        else:
            await ari.rest("callback-ari", "DELETE", f"/channels/{chan}")
        await asyncio.sleep(3.0)
    await ari.rest("harness", "GET", "/channels")
    await app.close()
    await asyncio.sleep(0.2)
    await harness.close()
    await asyncio.sleep(1.0)


async def record_offer_flow(box: Sandbox, path: Path) -> None:
    rec = Jsonl(path)
    try:
        async with asyncio.TaskGroup() as tg, Ari(rec, box.ari_port, USER, PASSWORD, tg) as ari:
            await cli(box, rec, "devstate change Custom:agent1 INUSE")
            await cli(box, rec, "devstate change Custom:agent2 INUSE")
            for scenario in OFFER_RUNS:
                await offer_run(ari, rec, scenario)
            rec.scenario = None
            rec.note("end")
    finally:
        rec.close()


# -- originate_outcomes.jsonl --------------------------------------------------------------
def originate(channel_id: str | None, number: str, args: str = "callback,TESTID") -> dict[str, str]:
    query = {"endpoint": f"Local/{number}@customers/n", "app": "callback-ari", "appArgs": args,
             "callerId": "Callback <5559000>", "timeout": "10"}  # fmt: skip
    if channel_id is not None:
        query |= {"channelId": channel_id, "otherChannelId": channel_id + "-2"}
    return query


async def record_originate_outcomes(box: Sandbox, path: Path) -> None:
    rec = Jsonl(path)
    try:
        async with asyncio.TaskGroup() as tg, Ari(rec, box.ari_port, USER, PASSWORD, tg) as ari:
            await originate_scenarios(box, rec, ari)
    finally:
        rec.close()


async def originate_scenarios(box: Sandbox, rec: Jsonl, ari: Ari) -> None:
    post = ari.rest
    rec.scenario = "setup"
    rec.note("Custom:agent1 and Custom:agent2 start INUSE; one websocket app=callback-ari is "
             "open for the whole file.")  # fmt: skip
    await cli(box, rec, "devstate change Custom:agent1 INUSE")
    await cli(box, rec, "devstate change Custom:agent2 INUSE")
    app = await ari.open("callback-ari", "callback-ari")

    rec.scenario = "answered"
    rec.note("Local/5551000@customers/n: Answer(), Wait(2), SendDTMF(1), Wait(30). After the "
             "DTMF, agent1 is set NOT_INUSE and the channel is continued to "
             "callback-queue,support,1 (Set(QUEUE_PRIO=10), Queue(support)). No explicit "
             "subscription is added; events after StasisEnd arrive only because POST /channels "
             "subscribed the app to both Local halves.")  # fmt: skip
    observer = await ari.open("observer", "observer", subscribe_all=True)
    rec.note("A third websocket app=observer with subscribeAll=true is opened only for this "
             "scenario, to show bridge/queue events that callback-ari does not get.")  # fmt: skip
    await asyncio.sleep(0.3)
    mark = rec.mark()
    await post("callback-ari", "POST", "/channels", **originate(None, "5551000") | {
        "channelId": "cb-ans", "otherChannelId": "cb-ans-2"})  # fmt: skip
    async with asyncio.timeout(15):
        await rec.wait(is_event("ChannelDtmfReceived", "cb-ans", "callback-ari"), since=mark)
    await post("callback-ari", "GET", "/channels/cb-ans")
    ready = "QUEUE_MEMBER(support,ready)"
    await post("callback-ari", "GET", "/channels/cb-ans/variable", variable=ready)
    await cli(box, rec, "devstate change Custom:agent1 NOT_INUSE")
    await asyncio.sleep(0.5)
    await post("callback-ari", "GET", "/channels/cb-ans/variable", variable=ready)
    mark = rec.mark()
    await post("callback-ari", "POST", "/channels/cb-ans/continue", context="callback-queue",
               extension="support", priority="1")  # fmt: skip
    async with asyncio.timeout(10):
        await rec.wait(lambda label, e: label == "callback-ari" and e["type"] == "Dial"
                       and e.get("dialstatus") == "ANSWER", since=mark)  # fmt: skip
    rec.note("bridged with agent")
    await asyncio.sleep(3.0)
    await post("callback-ari", "GET", "/channels")
    await post("callback-ari", "GET", "/bridges")
    await post("callback-ari", "DELETE", "/channels/cb-ans")
    await asyncio.sleep(2.0)
    await cli(box, rec, "devstate change Custom:agent1 INUSE")
    await post("callback-ari", "GET", "/channels")
    await asyncio.sleep(0.5)
    await observer.close()

    for scenario, channel, number, text in (
        ("busy", "cb-busy", "5552000", "Local/5552000@customers/n: Busy(5)"),
        ("congestion", "cb-cong", "5554000", "Local/5554000@customers/n: Congestion(5)"),
        ("invalid_extension", "cb-inval", "5559999",
         "Local/5559999@customers/n: no such extension in [customers]"),
    ):  # fmt: skip
        rec.scenario = scenario
        rec.note(text)
        await post("callback-ari", "POST", "/channels", **originate(channel, number))
        await asyncio.sleep(1.5)
        if scenario == "invalid_extension":
            await post("callback-ari", "GET", "/channels/cb-inval")

    rec.scenario = "no_answer"
    rec.note("Local/5553000@customers/n: Wait(120) without Answer(); originate timeout=10. "
             "While it is pending, duplicate channelId / otherChannelId originates are "
             "attempted.")  # fmt: skip
    mark = rec.mark()
    await post("callback-ari", "POST", "/channels", **originate("cb-noans", "5553000"))
    await asyncio.sleep(1.0)
    await post("callback-ari", "GET", "/channels/cb-noans")
    await post("callback-ari", "GET", "/channels")
    rec.scenario = "duplicate_channel_id"
    await post("callback-ari", "POST", "/channels", **originate("cb-noans", "5551000"))
    rec.note("same channelId as the pending call, different otherChannelId")
    await post("callback-ari", "POST", "/channels",
               **originate("cb-noans", "5551000") | {"otherChannelId": "cb-other-x"})  # fmt: skip
    rec.note("new channelId, but otherChannelId equal to the pending ;1 id")
    await post("callback-ari", "POST", "/channels",
               **originate("cb-new-x", "5551000") | {"otherChannelId": "cb-noans"})  # fmt: skip
    rec.scenario = "no_answer"
    async with asyncio.timeout(15):
        for chan in ("cb-noans", "cb-noans-2"):
            await rec.wait(is_event("ChannelDestroyed", chan, "callback-ari"), since=mark)
    await asyncio.sleep(0.5)
    await post("callback-ari", "GET", "/channels")

    rec.scenario = "busy_generated_ids"
    rec.note("Same as busy but without channelId/otherChannelId: shows generated id format")
    await post("callback-ari", "POST", "/channels", **originate(None, "5552001"))
    await asyncio.sleep(1.5)
    rec.scenario = "teardown"
    await post("callback-ari", "GET", "/channels")
    await app.close()


# -- ws_disconnect.jsonl -------------------------------------------------------------------
PROBE = ("[incoming] stasisprobe: Answer(), Stasis(callback-ari,probe), "
         "Set(GLOBAL(LAST_STASISSTATUS)=${STASISSTATUS}), UserEvent(StasisProbe,Status: "
         "${STASISSTATUS}), Wait(1), Hangup(). The harness app (its own websocket, never "
         "dropped) originates Local/stasisprobe@incoming/n with app=harness so it sees both "
         "Local halves; the ;2 half (<run>-c) enters callback-ari.")  # fmt: skip


async def probe_call(ari: Ari, run: str) -> None:
    await ari.rest("harness", "POST", "/channels", endpoint="Local/stasisprobe@incoming/n",
                   app="harness", channelId=f"{run}-h", otherChannelId=f"{run}-c",
                   callerId="Probe <5550200>")  # fmt: skip


async def outage_run(box: Sandbox, rec: Jsonl, ari: Ari, scenario: str, p: str) -> None:
    """``p``: the run's id prefix (abru, clea)."""
    rec.scenario = scenario
    rec.note(PROBE)
    app = await ari.open("callback-ari", "callback-ari")
    harness = await ari.open("harness", "harness")
    watched = {f"{p}3", f"{p}3-2"}
    observer = await ari.open(
        "observer", "observer", subscribe_all=True,
        keep=lambda e: bool(watched & {e.get(k, {}).get("id") for k in ("channel", "peer")}),
    )  # fmt: skip
    rec.note(f'socket "observer" (app=observer, subscribeAll=true): only its events about '
             f"channels {p}3/{p}3-2 are recorded")  # fmt: skip
    await asyncio.sleep(0.3)
    await ari.rest("harness", "POST", "/asterisk/variable", variable="LAST_STASISSTATUS",
                   value="unset")  # fmt: skip
    mark = rec.mark()
    await probe_call(ari, f"{p}1")
    await asyncio.sleep(0.5)
    await probe_call(ari, f"{p}0")
    async with asyncio.timeout(5):
        for run in (f"{p}1", f"{p}0"):
            await rec.wait(is_event("StasisStart", f"{run}-c", "callback-ari"), since=mark)
    await ari.rest("callback-ari", "POST", f"/channels/{p}1-c/play",
                   media="sound:vm-enter-num-to-call", playbackId=f"{p}-pb-before")  # fmt: skip
    await asyncio.sleep(0.3)
    await ari.rest("callback-ari", "GET", "/applications/callback-ari")
    dropped = time.monotonic()
    if scenario == "abrupt_drop":
        app.drop()
    else:
        await app.close()
    await asyncio.sleep(0.2)
    rec.note("--- outage begins (callback-ari has no websocket) ---")
    await ari.rest("harness", "GET", "/applications")
    await ari.rest("harness", "GET", "/applications/callback-ari")
    await ari.rest("harness", "GET", "/channels")
    await ari.rest("harness", "POST", f"/channels/{p}1-h/dtmf", dtmf="7")
    rec.note(f"caller of {p}0 hangs up during the outage")
    await ari.rest("harness", "DELETE", f"/channels/{p}0-h")
    rec.note("new Stasis(callback-ari) call during the outage")
    mark = rec.mark()
    await probe_call(ari, f"{p}2")
    async with asyncio.timeout(5):  # the dialplan has stored STASISSTATUS once it says so
        await rec.wait(is_event("ChannelUserevent", f"{p}2-c", "harness"), since=mark)
    await ari.rest("harness", "GET", "/asterisk/variable", variable="LAST_STASISSTATUS")
    rec.note("REST on a channel of the disconnected app during the outage")
    await ari.rest("callback-ari", "POST", f"/channels/{p}1-c/play", media="sound:queue-thankyou",
                   playbackId=f"{p}-pb-outage")  # fmt: skip
    rec.note("POST /channels with app=callback-ari during the outage")
    await ari.rest("callback-ari", "POST", "/channels",
                   **originate(None, "5551000", "callback,OUTAGE")
                   | {"channelId": f"{p}3", "otherChannelId": f"{p}3-2"})  # fmt: skip
    await asyncio.sleep(1.0)
    await ari.rest("harness", "GET", "/channels")
    await asyncio.sleep(max(0.0, dropped + 3.0 - time.monotonic()))
    rec.note("--- reconnect 3 s after the drop ---")
    await ari.open("callback-ari", "callback-ari")
    await asyncio.sleep(1.5)
    await ari.rest("callback-ari", "GET", "/channels")
    await ari.rest("callback-ari", "GET", "/applications/callback-ari")
    await ari.rest("callback-ari", "GET", f"/playbacks/{p}-pb-outage")
    await ari.rest("harness", "POST", f"/channels/{p}1-h/dtmf", dtmf="8")
    await asyncio.sleep(0.2)
    rec.note("new Stasis(callback-ari) call after reconnect")
    mark = rec.mark()
    await probe_call(ari, f"{p}4")
    async with asyncio.timeout(5):
        await rec.wait(is_event("StasisStart", f"{p}4-c", "callback-ari"), since=mark)
    await ari.rest("callback-ari", "POST", f"/channels/{p}4-c/continue")
    async with asyncio.timeout(5):
        await rec.wait(is_event("ChannelUserevent", f"{p}4-c", "harness"), since=mark)
    await ari.rest("harness", "GET", "/asterisk/variable", variable="LAST_STASISSTATUS")
    rec.note("clean up the channel that stayed in Stasis through the outage")
    await ari.rest("callback-ari", "DELETE", f"/channels/{p}1-c")
    await asyncio.sleep(2.5)
    await ari.rest("harness", "GET", f"/channels/{p}3")
    await ari.rest("harness", "GET", "/channels")
    for ws in (ari.sockets["callback-ari"], harness, observer):
        await ws.close()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)


async def replaced_run(rec: Jsonl, ari: Ari) -> None:
    rec.scenario = "replaced"
    rec.note(
        "A second websocket for app=callback-ari is opened while the first is still "
        "connected (e.g. a reconnect before the old TCP connection is noticed as dead)."
    )
    first = await ari.open("callback-ari#1", "callback-ari")
    harness = await ari.open("harness", "harness")
    await asyncio.sleep(0.3)
    mark = rec.mark()
    await probe_call(ari, "repl1")
    async with asyncio.timeout(5):
        await rec.wait(is_event("StasisStart", "repl1-c", "callback-ari#1"), since=mark)
    second = await ari.open("callback-ari#2", "callback-ari")
    await asyncio.sleep(1.0)
    await ari.rest("harness", "POST", "/channels/repl1-h/dtmf", dtmf="9")
    await asyncio.sleep(0.5)
    await ari.rest("callback-ari", "DELETE", "/channels/repl1-c")
    await asyncio.sleep(1.5)
    rec.note(f"socket #1 still open from the client side: {not first.done.is_set()}")
    for ws in (first, second, harness):
        await ws.close()
        await asyncio.sleep(0.2)


async def record_ws_disconnect(box: Sandbox, path: Path) -> None:
    rec = Jsonl(path)
    try:
        async with asyncio.TaskGroup() as tg, Ari(rec, box.ari_port, USER, PASSWORD, tg) as ari:
            await cli(box, rec, "devstate change Custom:agent1 INUSE")
            await cli(box, rec, "devstate change Custom:agent2 INUSE")
            await outage_run(box, rec, ari, "abrupt_drop", "abru")
            await outage_run(box, rec, ari, "clean_close", "clea")
            await replaced_run(rec, ari)
            rec.scenario = None
            rec.note("end")
    finally:
        rec.close()

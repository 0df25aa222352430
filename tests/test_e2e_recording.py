"""The recorded message over ARI against the simulated PBX: record, keep, hang up mid-way."""

from __future__ import annotations

import asyncio

from callback_ari.models import State
from callback_ari.sim.simpbx.ari_server import RequestRecord
from tests.test_e2e_offer import (
    CALLER_ID,
    CONFIRM,
    STORED,
    asks_for_callback,
    callerid_readback,
    scenario,
    until,
)

INTRO = "sound:vm-intro"
RECORDING = {"record_message": 20, "record_silence": 3}


def records(requests: list[RequestRecord], channel: str) -> list[RequestRecord]:
    path = f"/ari/channels/{channel}/record"
    return [r for r in requests if r.method == "POST" and r.path == path]


async def test_caller_records_a_message_kept_on_the_callback(redis_url: str) -> None:
    async with scenario(redis_url, queue=RECORDING) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears_out(INTRO)  # booked first: the message cannot cost the callback
        [cb] = await pbx.callbacks()
        await until(pbx.sim, lambda: bool(records(pbx.sim.requests, alice.id)))
        [req] = records(pbx.sim.requests, alice.id)
        assert req.query == {
            "name": f"callback-{cb.id}", "format": "wav", "maxDurationSeconds": "20",
            "maxSilenceSeconds": "3", "ifExists": "overwrite", "beep": "true",
            "terminateOn": "#",
        }  # fmt: skip
        alice.press("#")
        await alice.hears(STORED)
        await pbx.idle()
        [cb] = await pbx.callbacks()
        assert cb.recording == f"callback-{cb.id}"
        assert pbx.sim.pbx.stored_recordings == {cb.recording: "wav"}


async def test_hanging_up_while_recording_keeps_callback_and_message(redis_url: str) -> None:
    async with scenario(redis_url, queue=RECORDING) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(INTRO)
        alice.press("7")  # typed ahead: start recording now
        await until(pbx.sim, lambda: bool(records(pbx.sim.requests, alice.id)))
        alice.hang_up()
        await pbx.idle()
        [cb] = await pbx.callbacks()
        assert cb.state is State.PENDING and cb.recording == f"callback-{cb.id}"
        assert cb.recording in pbx.sim.pbx.stored_recordings
        assert pbx.metric("callback_offer_results_total", queue="support", result="stored") == 1


async def test_the_recording_is_deleted_when_the_callback_is_cancelled(redis_url: str) -> None:
    async with scenario(redis_url, queue=RECORDING) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears_out(INTRO)
        await until(pbx.sim, lambda: bool(records(pbx.sim.requests, alice.id)))
        alice.press("#")
        await pbx.idle()
        [cb] = await pbx.callbacks()
        assert cb.recording in pbx.sim.pbx.stored_recordings
        await pbx.store.cancel(cb.id, "test")
        # the sweeper runs every 5 s (recording_retention = 0: at the next sweep)
        async with asyncio.timeout(15):
            while True:
                if not pbx.sim.pbx.stored_recordings:
                    break
                await asyncio.sleep(0.1)

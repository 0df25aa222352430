"""The caller's recorded message: its name, the dialogue around it, the store field, the sweep."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import ManualClock
from callback_ari.config.loader import parse_config
from callback_ari.core.offer import (
    CancelTimer,
    Digit,
    Hangup,
    HangupCall,
    OfferOutcome,
    OfferResult,
    OfferSettings,
    Play,
    Record,
    RecordingDone,
    StartTimer,
    Step,
    StopPlayback,
    Store,
)
from callback_ari.core.reasons import parse_reasons, whisper_files
from callback_ari.core.recordings import (
    callback_id_of,
    is_recording_name,
    recording_name,
)
from callback_ari.models import Origin, State
from callback_ari.ops.api_schema import callback_view
from callback_ari.ops.reports import parse_audit
from callback_ari.service.intake import offer_settings
from callback_ari.service.recordings import RecordingSweeper
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore
from tests.test_offer import CALLER, PROMPTS, Call, P

# --- the name --------------------------------------------------------------------------


def test_the_name_comes_from_the_callback_id_and_nothing_else() -> None:
    assert recording_name("42") == "callback-42"
    assert callback_id_of("callback-42") == "42"
    for bad in ("", "../etc/passwd", "a/b", "1&Hangup", "1,2", "x y", "${EXTEN}", "-1",
                "1" * 65, "1\n"):  # fmt: skip
        with pytest.raises(ValueError):
            recording_name(bad)
        assert not is_recording_name("callback-" + bad)
        assert callback_id_of("callback-" + bad) is None
    # someone else's recordings are never ours
    for other in ("voicemail-1", "callback", "callback-", "Callback-1", "xcallback-1"):
        assert callback_id_of(other) is None


def test_the_whisper_names_callback_even_without_reasons_when_there_is_a_message() -> None:
    prompt = ("sound:callback-announce",)
    assert whisper_files(prompt, (), "") == ""
    assert whisper_files(prompt, (), "", recorded=True) == "callback-announce"
    reasons = parse_reasons(("1:billing",))
    assert whisper_files(prompt, reasons, "billing", recorded=True) == (
        "callback-announce&callback-reason-billing"
    )


# --- the dialogue ------------------------------------------------------------------------

RECORDING = OfferSettings(prompts=PROMPTS, record_s=20, record_silence_s=3)


def _booked(settings: OfferSettings = RECORDING) -> Call:
    """A caller who confirmed their caller ID; the callback was just stored as cb7."""
    call = Call(CALLER, settings)
    call.start()
    call.ends()
    call.press("1")
    call.ends()
    call.ends()
    assert call.press("1") == [CancelTimer(), Store(CALLER)]
    return call


def _farewell() -> tuple[str, ...]:
    return P("stored", "goodbye")


def test_after_booking_the_caller_records_a_message_then_hears_the_farewell() -> None:
    call = _booked()
    assert call.stored("cb7", created=True) == [Play(P("record_intro"), call.play or 0, True)]
    assert call.state() is Step.RECORD_PROMPT
    actions = call.ends()
    assert actions == [StartTimer(30, call.timer or 0), Record("cb7", 20, 3, actions[1].token)]
    record = actions[1]
    assert isinstance(record, Record)
    assert call.press("5#") == []  # keys while recording are Asterisk's (# ends it)
    assert call.send(RecordingDone(record.token + 99)) == []  # stale
    assert call.send(RecordingDone(record.token)) == [
        CancelTimer(),
        Play(_farewell(), call.play or 0, False),
    ]
    assert call.ends() == [HangupCall(OfferOutcome.STORED)]
    assert call.machine.result == OfferResult(OfferOutcome.STORED, CALLER, "cb7")


def test_keys_typed_ahead_during_the_record_prompt_count() -> None:
    skip = _booked()
    skip.stored("cb7")
    assert skip.press("#") == [StopPlayback(), Play(_farewell(), skip.play or 0, False)]
    assert not any(isinstance(a, Record) for a in skip.actions)
    now = _booked()
    now.stored("cb7")
    actions = now.press("3")
    assert actions[0] == StopPlayback() and isinstance(actions[-1], Record)
    assert now.state() is Step.RECORDING


def test_hanging_up_while_recording_keeps_the_callback() -> None:
    call = _booked()
    call.stored("cb7")
    call.ends()
    assert call.send(Hangup()) == []
    assert call.machine.done
    assert call.machine.result == OfferResult(OfferOutcome.STORED, CALLER, "cb7")


def test_a_lost_end_of_recording_does_not_strand_the_caller() -> None:
    call = _booked()
    call.stored("cb7")
    call.ends()
    assert call.silence() == [Play(_farewell(), call.play or 0, False)]
    assert call.state() is Step.FAREWELL


def test_no_message_without_record_message_or_for_an_existing_callback() -> None:
    off = _booked(OfferSettings(prompts=PROMPTS))
    assert off.stored("cb7") == [Play(_farewell(), off.play or 0, False)]
    existing = _booked()
    assert existing.stored("cb7", created=False) == [
        Play(P("already_pending", "goodbye"), existing.play or 0, False)
    ]
    never = _booked()
    never.stored("cb7")
    never.ends()
    # a recording that could not start ends like one that did
    token = next(a.token for a in never.actions if isinstance(a, Record))
    assert never.send(RecordingDone(token))[-1] == Play(_farewell(), never.play or 0, False)
    assert never.send(Digit("1")) == []


# --- the store and the sweep (real Redis, ARI at its wire) --------------------------------


@pytest.fixture
async def ari_sim() -> AsyncIterator[tuple[SimAsterisk, AriClient]]:
    async with (
        SimAsterisk() as sim,
        AriClient(sim.ari_url, "cbuser", "cbpass", "callback-ari") as ari,
    ):
        yield sim, ari


async def _callback(store: CallbackStore, number: str) -> str:
    cb, _ = await store.enqueue(
        queue="support", number=number, caller_name="", source_channel="",
        join_time_ms=1_800_000_000_000, origin=Origin.PHONE,
    )  # fmt: skip
    return cb.id


async def test_the_recording_is_kept_on_the_callback_and_audited(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = CallbackStore(client, prefix="rectest", clock=ManualClock())
    try:
        cb_id = await _callback(store, "5551230001")
        assert (await store.get(cb_id)).recording == ""
        assert await store.set_recording(cb_id, recording_name(cb_id))
        assert await store.set_recording(cb_id, recording_name(cb_id))  # idempotent
        assert (await store.get(cb_id)).recording == f"callback-{cb_id}"
        audited = [a for a in await store.audit() if a.get("recording")]
        assert [(a["id"], a["recording"], a["from"], a["to"]) for a in audited] == [
            (cb_id, f"callback-{cb_id}", "pending", "pending")
        ]
        assert not await store.set_recording("nope", "callback-nope")
    finally:
        await client.aclose()


async def test_sweep_deletes_ours_once_final_for_the_retention_or_gone(
    redis_url: str, ari_sim: tuple[SimAsterisk, AriClient]
) -> None:
    sim, ari = ari_sim
    clock = ManualClock()
    client = aioredis.Redis.from_url(redis_url)
    store = CallbackStore(client, prefix="sweeptest", clock=clock)
    try:
        live = await _callback(store, "5551230002")
        done = await _callback(store, "5551230003")
        await store.cancel(done, "test")
        recordings = sim.pbx.stored_recordings
        for name in (recording_name(live), recording_name(done), "callback-999",
                     "voicemail-1", "callback-../x"):  # fmt: skip
            recordings[name] = "wav"
        sweeper = RecordingSweeper(ari=ari, store=store, clock=clock, retention_s=60)
        # the orphan (no such callback) goes at once; the cancelled one waits 60 s
        assert await sweeper.sweep_once() == ["callback-999"]
        clock.advance(59)
        assert await sweeper.sweep_once() == []
        clock.advance(1)
        assert await sweeper.sweep_once() == [recording_name(done)]
        assert (await store.get(done)).state is State.CANCELLED
        # the live callback keeps its message; other applications' files are not ours
        clock.advance(86400)
        assert await sweeper.sweep_once() == []
        assert sorted(recordings) == sorted([recording_name(live), "voicemail-1",
                                             "callback-../x"])  # fmt: skip
        # a sweep that finds it already deleted (another instance) is not an error
        await store.cancel(live, "test")
        del recordings[recording_name(live)]
        assert await sweeper.sweep_once() == []
    finally:
        await client.aclose()


async def test_api_show_and_history_name_the_recording(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = CallbackStore(client, prefix="showtest", clock=ManualClock())
    try:
        cb_id = await _callback(store, "5551230004")
        await store.set_recording(cb_id, recording_name(cb_id))
        cb = await store.get(cb_id)
        assert callback_view(cb)["recording"] == f"callback-{cb_id}"
        history = [t for t in parse_audit(await store.audit()) if t.callback_id == cb_id]
        assert [t.event for t in history] == ["created", "recording"]
        assert history[1].as_dict()["recording"] == f"callback-{cb_id}"
        # the recording entry is no transition: reports count the callback once, finish nothing
        assert "recording" not in history[0].as_dict()
    finally:
        await client.aclose()


async def test_a_reload_switches_the_sweep_and_its_retention(
    redis_url: str, ari_sim: tuple[SimAsterisk, AriClient]
) -> None:
    sim, ari = ari_sim
    clock = ManualClock()
    client = aioredis.Redis.from_url(redis_url)
    store = CallbackStore(client, prefix="reloadtest", clock=clock)
    try:
        done = await _callback(store, "5551230005")
        await store.cancel(done, "test")
        sim.pbx.stored_recordings[recording_name(done)] = "wav"
        sweeper = RecordingSweeper(ari=ari, store=store, clock=clock, retention_s=0)
        base = "[ari]\npassword = x\n[ami]\nsecret = x\n[queue:support]\n"
        sweeper.reconfigure(parse_config(base, env={}))
        assert not sweeper.enabled  # no queue records: no directory is needed, none swept
        text = base.replace("[ari]", "[general]\nrecording_retention = 600\n[ari]")
        sweeper.reconfigure(parse_config(text + "record_message = 30\n", env={}))
        assert sweeper.enabled
        assert await sweeper.sweep_once() == []  # 600 s now
        clock.advance(600)
        assert await sweeper.sweep_once() == [recording_name(done)]
    finally:
        await client.aclose()


def test_only_the_ari_offer_asks_for_a_message() -> None:
    text = "[ari]\npassword = x\n[ami]\nsecret = x\n[queue:support]\nrecord_message = 30\n"
    q = parse_config(text, env={}).queues["support"]
    assert offer_settings(q).record_s == 30  # ARI: POST /channels/{id}/record
    assert offer_settings(q, records=False).record_s == 0  # FastAGI: booked without one
    assert "record_intro" not in q.unused_prompts()
    plain = parse_config(text.replace("record_message = 30\n", ""), env={}).queues["support"]
    assert {"record_intro", "whisper"} <= plain.unused_prompts()

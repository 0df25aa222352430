"""ARI event decoding against every event a real Asterisk 22 sent, checked with the ARI spec."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from callback_ari.asterisk import ari_events as ev

EXPECTED_CLASS: dict[str, type[ev.AriEvent]] = {
    "StasisStart": ev.StasisStart,
    "StasisEnd": ev.StasisEnd,
    "ChannelStateChange": ev.ChannelStateChange,
    "ChannelDtmfReceived": ev.ChannelDtmfReceived,
    "ChannelHangupRequest": ev.ChannelHangupRequest,
    "ChannelDestroyed": ev.ChannelDestroyed,
    "Dial": ev.Dial,
    "PlaybackStarted": ev.PlaybackStarted,
    "PlaybackFinished": ev.PlaybackFinished,
    "ChannelVarset": ev.ChannelVarset,
    "ApplicationReplaced": ev.ApplicationReplacedEvent,
    "DeviceStateChanged": ev.DeviceStateChanged,
    "ChannelUserevent": ev.ChannelUserevent,
}


def recorded(data: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(scenario, socket, event) for every recorded event, in file order."""
    for path in sorted((data).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["dir"] == "event":
                yield item["scenario"], item["socket"], item["event"]


def decoded(data: Path, scenario: str, socket: str = "callback-ari") -> list[ev.AriEvent]:
    out = []
    for scen, sock, raw in recorded(data):
        if scen == scenario and sock == socket:
            event = ev.decode(raw)
            assert event is not None, raw
            out.append(event)
    return out


def spec_models(data: Path) -> dict[str, Any]:
    models: dict[str, Any] = json.loads((data / "ari_models.json").read_text())["models"]
    return models


def required(models: dict[str, Any], name: str) -> set[str]:
    """Required properties of an event model, including those of Event and Message."""
    names = {"type", "timestamp", "application"}
    names |= {p for p, spec in models[name]["properties"].items() if spec.get("required")}
    return names


# --- every recorded event ------------------------------------------------------------


def test_every_recorded_event_decodes_into_its_class(asterisk_data: Path) -> None:
    seen: set[str] = set()
    with capture_logs() as logs:
        for _, _, raw in recorded(asterisk_data):
            event = ev.decode(raw)
            assert event is not None, raw
            assert type(event) is EXPECTED_CLASS.get(raw["type"], ev.OtherEvent), raw["type"]
            assert (event.type, event.timestamp, event.application) == (
                raw["type"], raw["timestamp"], raw["application"],
            )  # fmt: skip
            seen.add(raw["type"])
    assert logs == []
    assert len(seen) >= 20  # the recordings cover 21 types; a filter bug would shrink this


def test_recorded_events_carry_every_field_the_spec_requires(asterisk_data: Path) -> None:
    models = spec_models(asterisk_data)
    for _, _, raw in recorded(asterisk_data):
        assert raw["type"] in models, raw["type"]
        missing = required(models, raw["type"]) - raw.keys()
        assert not missing, (raw["type"], missing)


def test_known_event_types_are_exactly_the_spec_event_subtypes(asterisk_data: Path) -> None:
    subtypes = set(spec_models(asterisk_data)["Event"]["subTypes"])
    assert subtypes == ev.TYPED_EVENTS | ev.OTHER_EVENTS
    assert not ev.TYPED_EVENTS & ev.OTHER_EVENTS


@pytest.mark.parametrize("type_name", sorted(EXPECTED_CLASS))
def test_a_typed_event_missing_a_required_field_is_rejected(
    asterisk_data: Path, type_name: str
) -> None:
    models = spec_models(asterisk_data)
    sample = next(raw for _, _, raw in recorded(asterisk_data) if raw["type"] == type_name)
    for field in sorted(required(models, type_name)):
        broken = {k: v for k, v in sample.items() if k != field}
        with capture_logs() as logs:
            assert ev.decode(broken) is None, field
        assert [entry["event"] for entry in logs] == ["ari.bad_event"], field


# --- field semantics --------------------------------------------------------------------


def test_stasis_start_of_an_offer_carries_args_and_caller(asterisk_data: Path) -> None:
    start = decoded(asterisk_data, "offer_continue")[0]
    assert isinstance(start, ev.StasisStart)
    assert start.args == ("offer", "support")
    assert start.replace_channel_id is None
    assert start.channel_id == "offer1-c"
    ch = start.channel
    assert (ch.state, ch.caller_number, ch.caller_name) == ("Up", "5550100", "Alice")
    assert (ch.app_name, ch.app_data) == ("Stasis", "callback-ari,offer,support")
    assert (ch.context, ch.exten, ch.priority) == ("incoming", "support", 5)
    # milliseconds and "+0000" without a colon, as every ARI timestamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", ch.creationtime)
    first = ("offer_continue", "callback-ari", "StasisStart")
    raw = next(r for scen, sock, r in recorded(asterisk_data) if (scen, sock, r["type"]) == first)
    assert ch.creationtime == raw["channel"]["creationtime"]


def test_offer_digits_arrive_one_event_each(asterisk_data: Path) -> None:
    dtmf = [e for e in decoded(asterisk_data, "offer_continue")
            if isinstance(e, ev.ChannelDtmfReceived)]  # fmt: skip
    assert "".join(e.digit for e in dtmf) == "5551234#"
    assert {(e.channel_id, e.duration_ms) for e in dtmf} == {("offer1-c", 100)}


def test_app_hangup_is_soft_with_the_explicit_bitmask(asterisk_data: Path) -> None:
    events = decoded(asterisk_data, "offer_app_hangup")
    hangup = next(e for e in events if isinstance(e, ev.ChannelHangupRequest))
    assert (hangup.cause, hangup.soft, hangup.q850_cause) == (32, True, None)
    assert hangup.channel_id == "offer2-c"


def test_caller_hangup_mid_playback_is_q850_then_playback_failed(asterisk_data: Path) -> None:
    events = decoded(asterisk_data, "offer_caller_hangup_mid_playback")
    kinds = [type(e) for e in events]
    assert kinds[-3:] == [ev.ChannelHangupRequest, ev.PlaybackFinished, ev.StasisEnd]
    hangup, finished, end = events[-3:]
    assert isinstance(hangup, ev.ChannelHangupRequest)
    assert (hangup.cause, hangup.soft, hangup.q850_cause) == (16, False, 16)
    assert isinstance(finished, ev.PlaybackFinished)
    assert finished.state == "failed"
    started = next(e for e in events if isinstance(e, ev.PlaybackStarted))
    assert finished.playback_id == started.playback_id  # the id Asterisk generated (UUID4)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        finished.playback_id)  # fmt: skip
    assert finished.media_uri == "sound:queue-thankyou"
    assert finished.channel_id == end.channel_id == "offer3-c"


def test_playbacks_route_by_their_target_channel(asterisk_data: Path) -> None:
    events = decoded(asterisk_data, "offer_continue")
    started = [e for e in events if isinstance(e, ev.PlaybackStarted)]
    assert [e.playback_id for e in started][1] == "offer1-pb2"
    assert {(e.state, e.channel_id) for e in started} == {("playing", "offer1-c")}
    other_target = ev.PlaybackStarted("PlaybackStarted", "t", "a", "p", "bridge:b1", "playing")
    assert other_target.channel_id is None


@pytest.mark.parametrize(
    ("scenario", "dialstatus", "cause_1", "cause_2"),
    [
        ("busy", "BUSY", (0, "Unknown"), (17, "User busy")),
        ("congestion", "CONGESTION", (0, "Unknown"), (34, "Circuit/channel congestion")),
        ("no_answer", "", (19, "User alerting, no answer"), (19, "User alerting, no answer")),
        ("invalid_extension", None, (0, "Unknown"), (0, "Unknown")),
    ],
)
def test_originate_outcomes_decode_dialstatus_and_causes(
    asterisk_data: Path,
    scenario: str,
    dialstatus: str | None,
    cause_1: tuple[int, str],
    cause_2: tuple[int, str],
) -> None:
    events = decoded(asterisk_data, scenario)
    dials = [e for e in events if isinstance(e, ev.Dial)]
    assert (dials[-1].dialstatus if dials else None) == dialstatus
    assert all(d.caller is None for d in dials)  # originate dials have no calling channel
    channel = "cb-" + {"busy": "busy", "congestion": "cong", "no_answer": "noans",
                       "invalid_extension": "inval"}[scenario]  # fmt: skip
    assert all(d.channel_id == channel for d in dials)
    destroyed = {e.channel_id: (e.cause, e.cause_txt) for e in events
                 if isinstance(e, ev.ChannelDestroyed)}  # fmt: skip
    assert destroyed == {channel: cause_1, f"{channel}-2": cause_2}


def test_queue_member_dial_has_the_callback_channel_as_caller(asterisk_data: Path) -> None:
    dials = [e for e in decoded(asterisk_data, "answered") if isinstance(e, ev.Dial)]
    member = [d for d in dials if d.caller is not None]
    assert [d.dialstatus for d in member] == ["", "ANSWER"]
    for d in member:
        assert d.caller is not None and d.caller.id == "cb-ans"
        assert d.peer.name.startswith("Local/agent1@agents-")
        assert d.channel_id == d.peer.id == member[0].peer.id
        assert re.fullmatch(r"\d{10}\.\d+", d.channel_id)  # a generated <epoch>.<seq> id
        assert d.dialstring == "Local/agent1@agents/n"
    assert [d.dialstatus for d in dials if d.caller is None] == ["", "ANSWER"]


def test_variables_devices_and_userevents(asterisk_data: Path) -> None:
    events = [ev.decode(raw) for _, sock, raw in recorded(asterisk_data) if sock != "x"]
    varsets = {(e.channel_id, e.variable): e.value for e in events
               if isinstance(e, ev.ChannelVarset)}  # fmt: skip
    assert varsets[("offer1-c", "QUEUESTATUS")] == "TIMEOUT"
    assert varsets[("cb-ans", "QUEUE_PRIO")] == "10"
    device = next(e for e in events if isinstance(e, ev.DeviceStateChanged))
    assert (device.name, device.state, device.channel_id) == (
        "Local/5551000@customers", "INUSE", None,
    )  # fmt: skip
    user = next(e for e in events if isinstance(e, ev.ChannelUserevent))
    assert user.eventname == "StasisProbe"
    assert user.userevent["Status"] == "FAILED"
    assert user.channel_id == "abru2-c"
    replaced = next(e for e in events if isinstance(e, ev.ApplicationReplacedEvent))
    assert (replaced.application, replaced.channel_id) == ("callback-ari", None)


def test_uninteresting_events_keep_their_channel_for_routing(asterisk_data: Path) -> None:
    dialplan = next(e for e in decoded(asterisk_data, "answered")
                    if e.type == "ChannelDialplan")  # fmt: skip
    assert isinstance(dialplan, ev.OtherEvent)
    assert dialplan.channel_id == "cb-ans-2"
    assert dialplan.raw["dialplan_app"] == "Answer"
    bridge = next(e for _, _, raw in recorded(asterisk_data)
                  if raw["type"] == "BridgeCreated" and (e := ev.decode(raw)))  # fmt: skip
    assert bridge.channel_id is None


# --- malformed input ----------------------------------------------------------------


def _sample(data: Path, type_name: str) -> dict[str, Any]:
    raw = next(r for _, _, r in recorded(data) if r["type"] == type_name)
    return copy.deepcopy(raw)


def _broken(data: Path) -> Iterator[tuple[str, object]]:
    yield "a list", [{"type": "StasisEnd"}]
    yield "a string", "StasisEnd"
    yield "None", None
    yield "empty object", {}
    yield "unknown type", {"type": "FooHappened", "timestamp": "t", "application": "a"}
    yield "MissingParams message", {"type": "MissingParams", "params": ["app"]}
    yield "numeric type", {"type": 7, "timestamp": "t", "application": "a"}
    e = _sample(data, "StasisStart")
    e["args"] = "offer,support"
    yield "args not a list", e
    e = _sample(data, "StasisStart")
    e["args"] = ["offer", 3]
    yield "args not strings", e
    e = _sample(data, "StasisStart")
    del e["channel"]["caller"]
    yield "channel without caller", e
    e = _sample(data, "ChannelDtmfReceived")
    e["channel"]["dialplan"]["priority"] = "5"
    yield "priority as string", e
    e = _sample(data, "ChannelDtmfReceived")
    e["duration_ms"] = True
    yield "boolean duration", e
    e = _sample(data, "ChannelHangupRequest")
    e["soft"] = "yes"
    yield "soft not boolean", e
    e = _sample(data, "ChannelHangupRequest")
    e["cause"] = "16"
    yield "cause as string", e
    e = _sample(data, "PlaybackFinished")
    e["playback"] = "done"
    yield "playback not an object", e
    e = _sample(data, "Dial")
    e["caller"] = {"id": "x"}
    yield "half a caller", e
    e = _sample(data, "ChannelUserevent")
    e["userevent"] = ["Status", "FAILED"]
    yield "userevent not an object", e


def test_malformed_inputs_are_rejected_and_logged_never_raised(asterisk_data: Path) -> None:
    for label, bad in _broken(asterisk_data):
        with capture_logs() as logs:
            assert ev.decode(bad) is None, label  # type: ignore[arg-type]
        assert len(logs) == 1, label
        assert logs[0]["event"] == "ari.bad_event", label
        assert logs[0]["log_level"] == "warning", label
        assert len(logs[0]["preview"]) <= ev.PREVIEW_CHARS, label


def test_rejected_event_preview_masks_phone_numbers(asterisk_data: Path) -> None:
    e = _sample(asterisk_data, "StasisStart")
    e["args"] = ["callback", "5557654321"]
    e["channel"]["dialplan"]["priority"] = None
    with capture_logs() as logs:
        assert ev.decode(e) is None
    preview = logs[0]["preview"]
    assert "5557654321" not in preview
    assert "******4321" in preview
    assert logs[0]["error"] == "expected an integer, got NoneType"


def test_rest_channel_json_must_be_a_channel(asterisk_data: Path) -> None:
    raw = _sample(asterisk_data, "StasisStart")["channel"]
    assert ev.channel_from_json(raw).id == "offer1-h"
    del raw["dialplan"]
    with pytest.raises(ev.MalformedEvent):
        ev.channel_from_json(raw)
    with pytest.raises(ev.MalformedEvent):
        ev.channel_from_json(["offer1-c"])

"""The recorder against the real sandbox PBX: it still records what the committed data says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from callback_ari.sim import recorder, recorder_ari
from callback_ari.sim.sandbox import Sandbox
from tests.test_simpbx_replay import by_channel, canonical

pytestmark = pytest.mark.asterisk


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def exchanges(recording: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Every REST request with the status it got (bodies hold ids and times)."""
    out: list[tuple[Any, ...]] = []
    for item in recording:
        if item["dir"] == "request":
            out.append((item.get("scenario"), item["method"], item["path"], item["query"]))
        elif item["dir"] == "response":
            out.append((item.get("scenario"), item["status"], item["reason"]))
    return out


def app_events_per_channel(recording: list[dict[str, Any]]) -> dict[Any, Any]:
    """The app's events per scenario and channel: types, dial statuses and causes."""
    out: dict[Any, Any] = {}
    for scenario in dict.fromkeys(item.get("scenario") for item in recording):
        events = [
            item["event"]
            for item in recording
            if item["dir"] == "event"
            and item["socket"] == "callback-ari"
            and item.get("scenario") == scenario
        ]
        for chan, group in by_channel(events).items():
            out[(scenario, chan)] = [  # the races Asterisk runs either way in one order
                (e["type"], e.get("dialstatus"), e.get("cause"), e.get("soft"))
                for e in canonical(group)
            ]
    return out


@pytest.mark.timeout(120)
async def test_recorder_reproduces_the_committed_originate_outcomes(
    sandbox: Sandbox, asterisk_data: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "etc"
    extra.mkdir()
    recorder.write_config(sandbox, extra)
    await asyncio.to_thread(sandbox.start, extra)
    out = tmp_path / "originate_outcomes.jsonl"
    async with asyncio.timeout(90):
        await recorder_ari.record_originate_outcomes(sandbox, out)
    new, old = lines(out), lines(asterisk_data / "originate_outcomes.jsonl")
    assert exchanges(new) == exchanges(old)
    assert app_events_per_channel(new) == app_events_per_channel(old)
    first = next(item for item in new if item["dir"] == "response" and item["status"] == 200)
    assert first["headers"]["Server"] == "Asterisk/" + (asterisk_data / "version.txt").read_text(
    ).split()[1]  # fmt: skip

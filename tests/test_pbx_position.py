"""Real PBX: with announce_position the offer starts with the caller's position (issue 16)."""

from __future__ import annotations

import asyncio

import pytest

from callback_ari.sim.sandbox import Harness, JsonDict, Sandbox
from tests.harness import running_service
from tests.test_pbx_abandon import QUEUE, sandbox_config

pytestmark = pytest.mark.asterisk

PLAYING = ("PlaybackStarted", "PlaybackContinuing")  # a media list continues, not restarts


def media_played(pbx: Harness, channel: str, since: int = 0) -> list[str]:
    """Every media URI that started playing to ``channel``, in order.

    A media list is one playback: PlaybackStarted names the first media, each
    PlaybackContinuing the one that comes next (``next_media_uri``).
    """
    out = []
    for e in pbx.watch.ari[since:]:
        if e.get("type") in PLAYING and e["playback"].get("target_uri") == f"channel:{channel}":
            key = "media_uri" if e["type"] == "PlaybackStarted" else "next_media_uri"
            media = str(e["playback"].get(key, ""))
            if not out or out[-1] != media:  # a number is said in several files: one entry
                out.append(media)
    return out


def plays(e: JsonDict, channel: str, media: str) -> bool:
    if e.get("type") not in PLAYING or e["playback"].get("target_uri") != f"channel:{channel}":
        return False
    key = "media_uri" if e["type"] == "PlaybackStarted" else "next_media_uri"
    return media in str(e["playback"].get(key, ""))


async def test_offer_announces_position_when_switched_on(
    pbx: Harness, sandbox: Sandbox, redis_url: str
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    queue = {**QUEUE, "on_abandon": "off", "offer_threshold": "2", "withdraw": "yes",
             "announce_position": "yes"}  # fmt: skip
    async with running_service(sandbox_config(sandbox, redis_url, queue)):
        mark, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
        first = await pbx.call_in("2125551401")
        async with asyncio.timeout(20):
            # alone in the queue: "you are next", then the offer; they decline and go back
            await pbx.wait_ari(lambda e: plays(e, first + "-pbx", "vm-press"), since=mark)
            await pbx.press(first, "2")
            await pbx.wait_ami(
                lambda m: m.get("Event") == "QueueCallerJoin" and m.get("Position") == "1",
                since=mark_ami,
            )
        assert media_played(pbx, first + "-pbx", mark)[:2] == [
            "sound:queue-youarenext", "sound:queue-thankyou",
        ]  # fmt: skip
        second = await pbx.call_in("2125551402")  # behind the first, who stays holding
        async with asyncio.timeout(20):
            await pbx.wait_ari(lambda e: plays(e, second + "-pbx", "vm-press"), since=mark)
        assert media_played(pbx, second + "-pbx", mark)[:3] == [
            "sound:queue-thereare", "number:2", "sound:queue-callswaiting",
        ]  # fmt: skip
        await pbx.hang_up(first)
        await pbx.hang_up(second)

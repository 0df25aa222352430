"""Prompts as dialplan applications play them (agent-first's "press 1" runs in the dialplan)."""

from __future__ import annotations

from callback_ari.core.prompts import DEFAULT_PROMPTS, playback_files


def test_the_default_press_1_round_plays_as_one_playback_list() -> None:
    media = (*DEFAULT_PROMPTS["callback_intro"], *DEFAULT_PROMPTS["callback_press1"])
    assert playback_files(media) == "queue-thankyou&vm-press&digits/1"


def test_only_sound_files_reach_the_dialplan() -> None:
    media = ("sound:custom/cb-intro", "recording:intro", "digits:12", "number:3", "tone:busy")
    assert playback_files(media) == "custom/cb-intro"
    assert playback_files(()) == ""

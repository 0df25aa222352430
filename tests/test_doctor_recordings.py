"""``callback-ari check`` verifies Asterisk can store the callers' recorded messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from callback_ari.config.loader import parse_config
from callback_ari.ops.doctor import Finding, Status, run_checks
from callback_ari.ops.doctor_recordings import writable_by
from callback_ari.sim.simpbx.sim import SimAsterisk
from tests.test_doctor import by_check, config_text, sim

__all__ = ["sim"]  # the fixture

RECORDS: dict[str, dict[str, Any]] = {"support": {"record_message": "20"}}


async def doctor(sim: SimAsterisk, redis_url: str, directory: Path) -> dict[str, Finding]:
    text = config_text(sim, redis_url, queues=RECORDS)
    text = text.replace("[general]\n", f"[general]\nrecording_dir = {directory}\n")
    return by_check(await run_checks(parse_config(text, env={})))


async def test_nothing_is_checked_when_no_queue_records(sim: SimAsterisk, redis_url: str) -> None:
    text = config_text(sim, redis_url)
    checks = by_check(await run_checks(parse_config(text, env={})))
    assert not [name for name in checks if name.startswith("ari.recordings")]


async def test_ari_listing_and_the_local_directory_pass(
    sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "spool" / "recording"
    directory.mkdir(parents=True)
    checks = await doctor(sim, redis_url, directory)
    assert checks["ari.recordings"].status is Status.PASS
    assert checks["ari.recordings.dir"].status is Status.PASS
    # the whisper's "callback" is needed once a queue records (the fake lacks the built one)
    assert "sound:callback-announce in en" in checks["ari.prompts"].detail


async def test_missing_directory_fails_with_the_command_that_creates_it(
    sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "spool").mkdir()
    directory = tmp_path / "spool" / "recording"
    checks = await doctor(sim, redis_url, directory)
    found = checks["ari.recordings.dir"]
    assert found.status is Status.FAIL
    assert found.detail == f"{directory} does not exist"
    assert "install -d -o " in found.fix and str(directory) in found.fix


async def test_asterisk_that_cannot_list_recordings_fails(
    sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    sim.pbx.recording_dir = False  # Asterisk 22 answers 500 "Allocation failed" then
    checks = await doctor(sim, redis_url, tmp_path / "elsewhere" / "recording")
    found = checks["ari.recordings"]
    assert found.status is Status.FAIL
    assert "cannot list stored recordings" in found.detail and "support" in found.detail
    assert "astspooldir/recording" in found.fix
    assert "ari.recordings.dir" not in checks  # not on the Asterisk host: nothing local


def test_writable_by_follows_owner_group_and_others(tmp_path: Path) -> None:
    d = tmp_path / "rec"
    d.mkdir()
    st = d.stat()
    other_uid, other_gid = st.st_uid + 4242, st.st_gid + 4242
    os.chmod(d, 0o755)
    assert writable_by(d, st.st_uid, st.st_gid)
    assert not writable_by(d, other_uid, st.st_gid)  # group r-x
    assert not writable_by(d, other_uid, other_gid)
    os.chmod(d, 0o775)
    assert writable_by(d, other_uid, st.st_gid)
    assert writable_by(d, 0, other_gid)  # root writes anywhere

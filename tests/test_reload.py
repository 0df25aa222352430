"""SIGHUP reload: new queue settings for new decisions, nothing dropped, restart-only keys kept."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from structlog.testing import capture_logs

from callback_ari.cli.commands import reload_config
from callback_ari.config.loader import Config, Prompts, parse_config
from callback_ari.logs import reset_logging
from callback_ari.service.reload import plan_reload
from callback_ari.sim.simpbx.sim import SimAsterisk
from tests.harness import KIT
from tests.test_e2e_crash import config_text, reap, start_service_process
from tests.test_e2e_offer import (
    CALLER_ID,
    CONFIRM,
    OTHER,
    STORED,
    asks_for_callback,
    callerid_readback,
    scenario,
    until,
)

BASE = """
[general]
log_level = info
[ari]
password = ari-secret-1
[ami]
secret = ami-secret-2
[queue:support]
offer_threshold = 120
[queue:sales]
"""


def config(extra: str = "", base: str = BASE) -> Config:
    return parse_config(base + extra, env={})


# --- the plan: what a reload may change -----------------------------------------------------


def test_queue_settings_and_log_level_are_applied() -> None:
    running = config()
    wanted = parse_config(
        BASE.replace("offer_threshold = 120", "offer_threshold = 30\nprompt_offer = sound:x")
        .replace("log_level = info", "log_level = debug"),
        env={},
    )  # fmt: skip
    plan = plan_reload(running, wanted)
    assert plan.applied == (
        "[general] log_level",
        "[queue:support] offer_threshold",
        "[queue:support] prompt_offer",
    )
    assert plan.needs_restart == ()
    assert plan.config == wanted


def test_links_listeners_and_the_queue_set_need_a_restart_and_keep_running_values() -> None:
    running = config()
    wanted = parse_config(
        BASE.replace("[queue:sales]", "[queue:billing]")
        .replace("password = ari-secret-1", "password = other\nurl = http://10.0.0.9:8088")
        + "[http]\nport = 9999\n[general]\napp = other-app\n",
        env={},
    )  # fmt: skip
    plan = plan_reload(running, wanted)
    assert plan.needs_restart == (
        "[general] app",
        "[ari] url",
        "[ari] password",
        "[http] port",
        "[queue:sales] removed",
        "[queue:billing] added",
    )
    assert plan.applied == ()
    assert plan.config == running  # nothing half-applied: the old links, app and queues stay
    assert "other" not in repr(plan)  # names only, never values (the password)


def test_an_unchanged_file_changes_nothing() -> None:
    plan = plan_reload(config(), config())
    assert (plan.applied, plan.needs_restart) == ((), ())


# --- a running service -------------------------------------------------------------------


async def test_reload_keeps_a_live_dialogue_and_new_callers_get_the_new_settings(
    redis_url: str,
) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)  # in the middle of her dialogue
        running = pbx.service.config
        support = running.queues["support"]
        new_prompts = Prompts({**support.prompts.as_mapping(), "stored": ("sound:queue-thankyou",)})
        wanted = dataclasses.replace(
            running,
            queues={"support": dataclasses.replace(support, prompts=new_prompts)},
            ari=dataclasses.replace(running.ari, url="http://127.0.0.1:9"),
        )
        with capture_logs() as logs:
            plan = pbx.service.reload(wanted)
        assert plan.needs_restart == ("[ari] url",)
        assert pbx.service.config.ari == running.ari
        assert pbx.service.config.queues["support"].prompts["stored"] == ("sound:queue-thankyou",)
        events = {e["event"]: e for e in logs}
        assert events["config.reloaded"]["applied"] == ["[queue:support] prompt_stored"]
        assert events["config.reloaded"]["sessions_kept"] == 1
        assert events["config.restart_needed"]["settings"] == ["[ari] url"]

        # Alice's dialogue goes on with the settings it started with, and ends stored.
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(STORED)
        await until(pbx.sim, lambda: alice.ch.destroyed)

        # A caller who starts after the reload hears the new prompt.
        bob = await asks_for_callback(pbx, OTHER, "Bob")
        bob.press("1")
        await bob.hears_out(callerid_readback(OTHER))
        await bob.hears_out(CONFIRM)
        bob.press("1")
        await bob.hears("sound:queue-thankyou,sound:vm-goodbye")
        await until(pbx.sim, lambda: bob.ch.destroyed)
        assert sorted(cb.number for cb in await pbx.stored(2)) == sorted([CALLER_ID, OTHER])


@pytest.mark.expect_errors("config.reload_failed")
async def test_a_bad_file_on_reload_is_logged_and_the_running_config_stays(
    redis_url: str, tmp_path: Path
) -> None:
    async with scenario(redis_url) as pbx:
        running = pbx.service.config
        path = tmp_path / "callback_ari.conf"
        path.write_text(BASE + "[queue:support]\nmax_attempts = 0\n")
        args = argparse.Namespace(config=str(path), log_format=None, log_level=None)
        with capture_logs() as logs:
            reload_config(pbx.service, args)
        [failed] = [e for e in logs if e["event"] == "config.reload_failed"]
        assert failed["problems"] == ["[queue:support] max_attempts: must be >= 1, got '0'"]
        assert pbx.service.config is running

        path.write_text(BASE.replace("ari-secret-1", "change-me-to-a-long-random-secret"))
        with capture_logs() as logs:
            reload_config(pbx.service, args)
        assert [e["event"] for e in logs] == ["config.reload_failed"]
        assert pbx.service.config is running


@pytest.mark.parametrize("level", ["debug", "warning"])
async def test_sighup_handler_applies_the_log_level(
    redis_url: str, tmp_path: Path, level: str
) -> None:
    async with scenario(redis_url) as pbx:
        path = tmp_path / "callback_ari.conf"
        path.write_text(BASE.replace("log_level = info", f"log_level = {level}"))
        args = argparse.Namespace(config=str(path), log_format="json", log_level=None)
        try:
            reload_config(pbx.service, args)
            assert pbx.service.config.general.log_level == level
            numeric = logging.getLevelNamesMapping()[level.upper()]
            assert structlog.get_logger().bind().get_effective_level() == numeric
            # --log-level on the command line still wins over the file
            reload_config(pbx.service, argparse.Namespace(**{**vars(args), "log_level": "error"}))
            assert structlog.get_logger().bind().get_effective_level() == logging.ERROR
        finally:
            reset_logging()


async def test_sighup_makes_the_running_process_reload_and_it_keeps_running(
    redis_url: str, tmp_path: Path
) -> None:
    """What `systemctl reload` does: SIGHUP to `callback-ari run`, no restart."""
    async with SimAsterisk(time_scale=0.05, dialplan=KIT) as sim:
        sim.add_queue("support", ["agent1"])
        text = config_text(sim, redis_url, instance="hup-1", queue={"max_attempts": 3})
        path, log = tmp_path / "callback_ari.conf", tmp_path / "service.log"
        path.write_text(text)
        proc = await start_service_process(path, log)
        try:

            async def logged(event: str) -> dict[str, Any]:
                async with asyncio.timeout(20):
                    while True:
                        for line in log.read_text().splitlines():
                            if f'"event": "{event}"' in line:
                                return cast(dict[str, Any], json.loads(line))
                        assert proc.returncode is None, log.read_text()
                        await asyncio.sleep(0.05)

            await logged("service.started")
            path.write_text(text.replace("max_attempts = 3", "max_attempts = 4"))
            proc.send_signal(signal.SIGHUP)
            reloaded = await logged("config.reloaded")
            assert reloaded["applied"] == ["[queue:support] max_attempts"]
            assert proc.returncode is None
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                assert await proc.wait() == 0
            assert log.read_text().count('"event": "service.started"') == 1  # never restarted
        finally:
            await reap(proc)

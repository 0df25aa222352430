"""``callback-ari check`` against the simulated PBX: a healthy install passes, and every broken
piece an administrator can get wrong fails (or warns) with the fix printed under it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from callback_ari.cli import app as cli
from callback_ari.config.loader import parse_config
from callback_ari.logs import reset_logging
from callback_ari.ops.doctor import Doctor, Finding, Status, asterisk_major, run_checks
from callback_ari.ops.freepbx import queue_contexts
from callback_ari.sim.simpbx import ari_handlers
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.sim.simpbx.sim import SimAsterisk
from tests.harness import KIT

ARI_PASSWORD = "cbpass"
AMI_SECRET = "cbpass"


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=0.05, dialplan=KIT) as pbx:
        pbx.add_queue("support", ["agent1"])
        yield pbx


@pytest.fixture
def aof_redis() -> Iterator[RedisProcess]:
    """A redis-server with the append-only file on: what a production install should run."""
    with RedisProcess(appendonly=True) as proc:
        yield proc


def config_text(
    sim: SimAsterisk,
    redis_url: str,
    *,
    ari_password: str = ARI_PASSWORD,
    ami_secret: str = AMI_SECRET,
    queues: dict[str, dict[str, Any]] | None = None,
) -> str:
    """A callback_ari.conf pointing at ``sim`` and ``redis_url``."""
    lines = [
        "[general]", "app = callback-ari", "instance_id = doctor-test",
        "[ari]", f"url = {sim.ari_url}", "username = cbuser", f"password = {ari_password}",
        "[ami]", "host = 127.0.0.1", f"port = {sim.ami_port}", "username = cbami",
        f"secret = {ami_secret}",
        "[redis]", f"url = {redis_url}", "prefix = cbdoctor",
        "[http]", "enabled = no",
        "[agi]", "enabled = no",
    ]  # fmt: skip
    for name, keys in (queues or {"support": {}}).items():
        lines.append(f"[queue:{name}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


async def doctor(sim: SimAsterisk, redis_url: str, **kw: Any) -> list[Finding]:
    return await run_checks(parse_config(config_text(sim, redis_url, **kw), env={}))


async def check_command(tmp_path: Path, text: str, *extra: str) -> int:
    """``callback-ari -c <file> check`` as an administrator runs it (its own event loop)."""
    path = tmp_path / "callback_ari.conf"
    path.write_text(text)
    try:
        argv = ["-c", str(path), "--log-level", "error", "check", *extra]
        return await asyncio.to_thread(cli.main, argv)
    finally:
        reset_logging()


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    names = [f.check for f in findings]
    assert len(names) == len(set(names)), f"ambiguous check names: {names}"
    return {f.check: f for f in findings}


def failures(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings if f.status is not Status.PASS}


def table_rows(output: str) -> dict[str, str]:
    """The printed table: check name -> status column."""
    rows: dict[str, str] = {}
    for line in output.splitlines()[1:-1]:
        parts = line.split()
        if parts and parts[0] != "fix:":
            rows[parts[0]] = parts[1]
    return rows


# --- healthy ------------------------------------------------------------------------------


async def test_healthy_install_passes_every_check_and_exits_0(
    sim: SimAsterisk,
    aof_redis: RedisProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = await check_command(tmp_path, config_text(sim, aof_redis.url))
    out = capsys.readouterr().out
    assert status == 0, out
    rows = table_rows(out)
    assert rows == {
        "ari.login": "PASS",
        "ari.version": "PASS",
        "ari.app": "PASS",
        "ari.prompts": "PASS",  # the stock prompts, digits/1 included
        "ami.login": "PASS",
        "queue.support": "PASS",
        "dialplan.support@callback-queue": "PASS",
        "dialplan.support@callback-offer": "PASS",
        "dialplan.1@callback-exit": "PASS",
        "dialplan.support@callback-return": "PASS",
        "dialplan.support@callback-connect": "PASS",
        "dialplan.reached_mark": "PASS",
        "redis": "PASS",
        "redis.persistence": "PASS",
    }, out
    assert out.rstrip().endswith("14 checks: 0 failed, 0 warnings")
    assert "fix:" not in out
    assert ARI_PASSWORD not in out


# --- failures -----------------------------------------------------------------------------


async def test_wrong_ari_password_fails_with_the_ari_conf_fix_and_exits_1(
    sim: SimAsterisk, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config_text(sim, redis_url, ari_password="not-the-password")
    status = await check_command(tmp_path, text)
    out = capsys.readouterr().out
    assert status == 1, out
    assert table_rows(out)["ari.login"] == "FAIL"
    assert "ARI refused user 'cbuser'" in out
    assert "fix: make [ari] username/password match a user in ari.conf" in out
    assert "not-the-password" not in out  # never echo a secret
    # the same for scripts: check --json, same exit code, every finding with its fix
    assert await check_command(tmp_path, text, "--json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ok"], doc["failed"]) == (False, 1)
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["ari.login"]["status"] == "fail"
    assert checks["ari.login"]["fix"].startswith("make [ari] username/password match")
    assert checks["ami.login"]["status"] == "pass"
    assert "not-the-password" not in json.dumps(doc)
    # the rest of the install is still checked
    assert table_rows(out)["ami.login"] == "PASS"
    assert table_rows(out)["queue.support"] == "PASS"

    found = by_check(await doctor(sim, redis_url, ari_password="not-the-password"))
    assert found["ari.login"].status is Status.FAIL
    assert "ari.prompts" not in found  # nothing more can be asked without a login


async def test_wrong_ami_secret_fails_with_the_manager_conf_fix(
    sim: SimAsterisk, redis_url: str
) -> None:
    found = failures(await doctor(sim, redis_url, ami_secret="wrong"))
    assert list(found) == ["ami.login", "redis.persistence"]
    assert found["ami.login"].status is Status.FAIL
    assert "manager.conf" in found["ami.login"].fix


async def test_queue_missing_in_asterisk_fails_naming_queues_conf(
    sim: SimAsterisk, redis_url: str
) -> None:
    queues: dict[str, dict[str, Any]] = {"support": {}, "sales": {}}
    found = failures(await doctor(sim, redis_url, queues=queues))
    sales = found["queue.sales"]
    assert sales.status is Status.FAIL
    assert sales.detail == "QueueStatus does not know this queue"
    assert "define [sales] in queues.conf and `queue reload all`" in sales.fix
    assert "remove [queue:sales] from callback_ari.conf" in sales.fix
    assert "queue.support" not in found


async def test_queue_without_the_callback_connect_extension_fails(
    sim: SimAsterisk, redis_url: str
) -> None:
    # "sales" exists in app_queue, but nobody copied the kit's extensions for it
    sim.queues.add_queue("sales", ["agent2"])
    queues: dict[str, dict[str, Any]] = {"support": {}, "sales": {}}
    found = failures(await doctor(sim, redis_url, queues=queues))
    assert "queue.sales" not in found
    connect = found["dialplan.sales@callback-connect"]
    assert connect.status is Status.FAIL
    assert connect.detail == "Did not find extension sales@callback-connect"
    assert "add extension 'sales' to [callback-connect]" in connect.fix
    assert "dialplan reload" in connect.fix
    assert found["dialplan.sales@callback-return"].status is Status.FAIL
    assert not any(name.startswith("dialplan.support") for name in found)


@pytest.mark.parametrize("mode", ["customer_first", "agent_first"])
async def test_a_kit_from_before_the_crash_mark_is_a_warning_with_the_lines_to_copy(
    redis_url: str, mode: str
) -> None:
    """The lines that set CB_MARK and CB_REACHED_<id> removed, as in a kit installed before."""
    old_kit = "\n".join(
        line for line in KIT.splitlines() if "CB_MARK" not in line and "CB_REACHED_" not in line
    )
    async with SimAsterisk(time_scale=0.05, dialplan=old_kit) as old:
        old.add_queue("support", ["agent1"])
        findings = await doctor(old, redis_url, queues={"support": {"dialing_mode": mode}})
    mark = by_check(findings)["dialplan.reached_mark"]
    assert mark.status is Status.WARN
    where = "s@callback-agent-confirm" if mode == "agent_first" else "support@callback-connect"
    assert where in mark.detail and "called again" in mark.detail
    assert "extensions_callback.conf" in mark.fix
    others = {name: f.status for name, f in failures(findings).items()}
    assert others == {"dialplan.reached_mark": Status.WARN, "redis.persistence": Status.WARN}


async def test_connect_context_that_does_not_exist_fails_naming_the_key(
    sim: SimAsterisk, redis_url: str
) -> None:
    queues = {"support": {"connect_context": "callback-connect-typo"}}
    found = failures(await doctor(sim, redis_url, queues=queues))
    missing = found["dialplan.support@callback-connect-typo"]
    assert missing.status is Status.FAIL
    assert missing.detail == "Did not find context callback-connect-typo"
    assert "#include it in extensions.conf" in missing.fix
    assert "set connect_context in [queue:support]" in missing.fix
    assert "dialplan.support@callback-return" not in found


async def test_agent_first_queue_needs_the_agent_context_and_the_customer_confirm(
    sim: SimAsterisk, redis_url: str
) -> None:
    queues = {"support": {"dialing_mode": "agent_first"}}
    found = by_check(await doctor(sim, redis_url, queues=queues))
    assert found["dialplan.support@callback-agent-first"].status is Status.PASS
    assert found["dialplan.s@callback-agent-confirm"].status is Status.PASS
    assert "dialplan.s@callback-agent-confirm" not in by_check(await doctor(sim, redis_url))
    # a kit from before the customer's "press 1" in agent-first
    old_kit = KIT[: KIT.index("\n[callback-agent-confirm]\n")]
    async with SimAsterisk(time_scale=0.05, dialplan=old_kit) as old:
        old.add_queue("support", ["agent1"])
        missing = failures(await doctor(old, redis_url, queues=queues))
    confirm = missing["dialplan.s@callback-agent-confirm"]
    assert confirm.status is Status.FAIL
    assert confirm.detail == "Did not find context callback-agent-confirm"
    assert "extensions_callback.conf" in confirm.fix
    assert "dialplan.support@callback-agent-first" not in missing


async def test_dialplan_without_the_kit_fails_every_context(redis_url: str) -> None:
    async with SimAsterisk(time_scale=0.05) as bare:
        bare.queues.add_queue("support", ["agent1"])  # queues.conf only, no dialplan kit
        found = failures(await doctor(bare, redis_url))
    for context in ("callback-queue", "callback-offer", "callback-connect", "callback-return"):
        finding = found[f"dialplan.support@{context}"]
        assert finding.status is Status.FAIL
        assert finding.detail == f"Did not find context {context}"
        assert "extensions_callback.conf" in finding.fix


async def test_missing_prompt_fails_naming_the_sound_and_its_queue(
    sim: SimAsterisk, redis_url: str
) -> None:
    queues = {"support": {"prompt_offer": "sound:does-not-exist, sound:vm-press"}}
    found = failures(await doctor(sim, redis_url, queues=queues))
    prompts = found["ari.prompts"]
    assert prompts.status is Status.FAIL
    assert prompts.detail == "missing on the server: sound:does-not-exist in en (support)"
    assert "record the prompt and set prompt_<name> in the queue section" in prompts.fix


async def test_language_without_its_sounds_fails_naming_the_language_and_package(
    sim: SimAsterisk, redis_url: str
) -> None:
    """The fake has English sounds only: a French queue is missing every prompt in fr,
    including the digits Asterisk says the number with; the English queue is fine."""
    sim.queues.add_queue("ventes", ["agent2"])
    queues: dict[str, dict[str, Any]] = {"support": {}, "ventes": {"language": "fr"}}
    found = failures(await doctor(sim, redis_url, queues=queues))
    prompts = found["ari.prompts"]
    assert prompts.status is Status.FAIL
    assert "sound:vm-press in fr (ventes)" in prompts.detail
    assert "sound:digits/7 in fr (ventes)" in prompts.detail
    assert " in en " not in prompts.detail
    assert "install asterisk-core-sounds-fr" in prompts.fix


async def test_asterisk_20_is_refused_for_its_queue_argument_layout(
    sim: SimAsterisk, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ari_handlers, "VERSION", "20.11.0")
    found = failures(await doctor(sim, redis_url))
    version = found["ari.version"]
    assert version.status is Status.FAIL
    assert "Asterisk 20 is not supported" in version.detail
    assert "macro argument" in version.detail
    assert "upgrade to Asterisk 21 or later" in version.fix


@pytest.mark.parametrize(
    ("version", "major"),
    [
        ("22.10.1+dfsg+~cs6.17.60671434-1", 22),  # Debian
        ("GIT-22-22.0.0-pre1-541-g69535d4837", 22),  # a source build
        ("certified-20.7-cert1", 20),
        ("18.20.1", 18),
        ("GIT-master-1a2b3c", None),
    ],
)
def test_asterisk_major_version(version: str, major: int | None) -> None:
    assert asterisk_major(version) == major


FREEPBX_DIALPLAN = """
[from-internal]
exten => 100,1,Dial(PJSIP/100)
[ext-queues]
exten => support,1,Gosub(callback-queue,support,1())
"""
QUEUES_ADDITIONAL = """; do not edit: written by FreePBX
[support]
strategy = ringall
timeout = 15
"""


@pytest.fixture
async def freepbx_sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=0.05, dialplan=KIT + FREEPBX_DIALPLAN) as pbx:
        pbx.add_queue("support", ["agent1"])
        yield pbx


async def test_freepbx_queue_without_post_custom_context_fails_with_where_to_put_it(
    freepbx_sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    """FreePBX's generated queue has no context=: the exit digit would do nothing. check
    names the file FreePBX leaves alone; once the admin adds it there, the check passes."""
    (tmp_path / "queues_additional.conf").write_text(QUEUES_ADDITIONAL)
    config = parse_config(config_text(freepbx_sim, redis_url), env={})
    found = by_check(await Doctor(config, asterisk_etc=tmp_path).run())
    assert found["freepbx"].status is Status.PASS
    context = found["freepbx.support.context"]
    assert context.status is Status.FAIL
    assert "queue support has no context=" in context.detail
    assert f"{tmp_path / 'queues_post_custom.conf'}" in context.fix
    assert "[support](+)" in context.fix and "context = callback-exit" in context.fix
    assert "fwconsole reload" in context.fix

    (tmp_path / "queues_post_custom.conf").write_text("[support](+)\ncontext = callback-exit\n")
    found = by_check(await Doctor(config, asterisk_etc=tmp_path).run())
    assert found["freepbx.support.context"].status is Status.PASS


async def test_freepbx_break_out_menu_context_fails_and_plain_asterisk_is_not_freepbx(
    freepbx_sim: SimAsterisk, sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "queues_additional.conf").write_text(QUEUES_ADDITIONAL + "context = ivr-3\n")
    config = parse_config(config_text(freepbx_sim, redis_url), env={})
    found = by_check(await Doctor(config, asterisk_etc=tmp_path).run())
    assert found["freepbx.support.context"].status is Status.FAIL
    assert "context = ivr-3" in found["freepbx.support.context"].detail
    plain = by_check(await doctor(sim, redis_url))
    assert not any(name.startswith("freepbx") for name in plain)


def test_queue_contexts_follow_asterisk_section_rules() -> None:
    text = "[400]\ncontext = ivr-1\n[401]\nstrategy = ringall\n[400](+)\ncontext => cb-exit\n"
    assert queue_contexts(text) == {"400": "cb-exit"}
    assert queue_contexts("[400]\ncontext = a\n[400]\nstrategy = x\n") == {}


# --- Redis persistence ----------------------------------------------------------------------


async def test_redis_without_persistence_warns_but_does_not_fail(
    sim: SimAsterisk, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the test suite's redis-server runs with appendonly no and save ""
    status = await check_command(tmp_path, config_text(sim, redis_url))
    out = capsys.readouterr().out
    assert status == 0, out  # a warning is not a failure
    assert table_rows(out)["redis.persistence"] == "WARN"
    assert "no persistence: AOF and RDB are off" in out
    assert "fix: callbacks are lost when Redis restarts: set appendonly yes in redis.conf" in out

    # RDB snapshots alone lose the minutes since the last snapshot: still a warning
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.config_set("save", "900 1")
        found = by_check(await doctor(sim, redis_url))
    finally:
        await client.config_set("save", "")
        await client.aclose()
    rdb = found["redis.persistence"]
    assert rdb.status is Status.WARN
    assert rdb.detail == "RDB snapshots only (save 900 1)"
    assert "set appendonly yes" in rdb.fix


async def test_redis_with_append_only_file_passes(
    sim: SimAsterisk, aof_redis: RedisProcess
) -> None:
    found = by_check(await doctor(sim, aof_redis.url))
    assert found["redis.persistence"].status is Status.PASS
    assert found["redis.persistence"].detail == "append-only file on"


async def test_redis_unreachable_fails_with_the_url_fix(sim: SimAsterisk) -> None:
    with RedisProcess() as proc:
        url = proc.url
    found = failures(await doctor(sim, url))  # the server is gone now
    assert found["redis"].status is Status.FAIL
    assert "check [redis] url" in found["redis"].fix

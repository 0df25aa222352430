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
from callback_ari.ops.doctor import Finding, Status, run_checks
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
        "ari.app": "PASS",
        "ari.prompts": "PASS",  # the stock prompts, digits/1 included
        "ami.login": "PASS",
        "queue.support": "PASS",
        "dialplan.support@callback-return": "PASS",
        "dialplan.support@callback-connect": "PASS",
        "redis": "PASS",
        "redis.persistence": "PASS",
    }, out
    assert out.rstrip().endswith("9 checks: 0 failed, 0 warnings")
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


async def test_dialplan_without_the_kit_fails_every_context(redis_url: str) -> None:
    async with SimAsterisk(time_scale=0.05) as bare:
        bare.queues.add_queue("support", ["agent1"])  # queues.conf only, no dialplan kit
        found = failures(await doctor(bare, redis_url))
    for context in ("callback-connect", "callback-return"):
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
    assert prompts.detail == "missing on the server: sound:does-not-exist (support)"
    assert "record the prompt and set prompt_<name> in the queue section" in prompts.fix


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

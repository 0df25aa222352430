"""The operator commands against a real Redis: tables, --json, masking, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callback_ari.cli import inspect as cli_inspect
from callback_ari.clock import SystemClock
from callback_ari.config.loader import Config, load_config
from callback_ari.models import Outcome
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.store.store import CallbackStore

NUMBERS = ("2025550111", "2025550122", "2025550133")


def make_config(tmp_path: Path, redis_url: str) -> Config:
    path = tmp_path / "callback_ari.conf"
    path.write_text(
        f"[ari]\npassword = p\n[ami]\nsecret = s\n[redis]\nurl = {redis_url}\nprefix = cli\n"
        "[queue:support]\n[queue:sales]\n",
        encoding="utf-8",
    )
    return load_config(path, env={})


async def _seed(redis_url: str) -> list[str]:
    """Three support callbacks (one connected) and one sales callback; returns their ids."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = CallbackStore(redis, prefix="cli", clock=SystemClock())
        now = SystemClock().now_ms()
        ids = []
        for i, number in enumerate(NUMBERS):
            cb, _ = await store.enqueue(
                queue="support",
                number=number,
                caller_name=f"Caller {i}",
                join_time_ms=now - 100 + i,
            )
            ids.append(cb.id)
        cb, _ = await store.enqueue(queue="sales", number="2025550144", join_time_ms=now)
        ids.append(cb.id)
        claimed = await store.claim_next("support", owner="w", lease_ms=60_000)
        assert claimed is not None
        await store.record_outcome(
            claimed.id, "w", outcome=Outcome.CONNECTED, cause="", retry_at_ms=None,
            max_attempts=3,
        )  # fmt: skip
        return ids
    finally:
        await redis.aclose()


@pytest.fixture
def seeded(tmp_path: Path, redis_url: str) -> tuple[Config, list[str]]:
    return make_config(tmp_path, redis_url), asyncio.run(_seed(redis_url))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="callback-ari")
    cli_inspect.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv: list[str], config: Config) -> int:
    args = parse(argv)
    code: int = args.inspect_handler(args, config)
    return code


def test_list_prints_an_aligned_table_with_masked_numbers(
    seeded: tuple[Config, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = seeded
    assert run(["list"], config) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["ID", "QUEUE", "NUMBER", "NAME", "STATE"]
    assert len(lines) == 5
    assert "******0122" in out
    assert not any(n in out for n in NUMBERS)
    state_col = lines[0].index("STATE")
    assert {line[state_col:].split()[0] for line in lines[1:]} == {"pending", "connected"}

    assert run(["list", "--queue", "support", "--state", "pending", "--unmasked"], config) == 0
    out = capsys.readouterr().out
    assert "2025550122" in out and "2025550133" in out
    assert "sales" not in out and "2025550111" not in out

    assert run(["list", "--queue", "support", "--json", "--limit", "2"], config) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc) == 2
    assert {d["queue"] for d in doc} == {"support"}
    assert all(d["number"].startswith("******") for d in doc)


def test_show_and_cancel(
    seeded: tuple[Config, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = seeded
    assert run(["show", ids[0], "--json"], config) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "connected"
    assert [h["to"] for h in doc["history"]] == ["pending", "dialing", "connected"]

    assert run(["show", ids[1]], config) == 0
    out = capsys.readouterr().out
    assert "state" in out and "pending" in out and "Caller 1" in out and "history" in out

    assert run(["cancel", ids[1]], config) == 0
    assert f"cancelled {ids[1]}" in capsys.readouterr().out
    assert run(["cancel", ids[1]], config) == 1
    assert "already cancelled" in capsys.readouterr().err
    assert run(["cancel", "no-such-id"], config) == 1
    assert "no callback" in capsys.readouterr().err
    assert run(["show", "no-such-id"], config) == 1


def test_stats_and_report(
    seeded: tuple[Config, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = seeded
    assert run(["stats", "--json"], config) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["support"]["pending"] == 2
    assert doc["support"]["connected"] == 1
    assert doc["sales"]["pending"] == 1

    assert run(["stats"], config) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["QUEUE", "PENDING", "DIALING", "RETRY_WAIT", "CONNECTED",
                                "FAILED", "EXPIRED", "CANCELLED", "TOTAL"]  # fmt: skip
    assert lines[1].split() == ["support", "2", "0", "0", "1", "0", "0", "0", "3"]

    assert run(["report", "--since", "30m", "--json"], config) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall"]["requested"] == 4
    assert report["overall"]["finished"] == {"connected": 1}
    assert report["overall"]["success_rate"] == 1.0

    assert run(["report", "--since", "7d"], config) == 0
    assert "100.0%" in capsys.readouterr().out


def test_bad_durations_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_inspect.parse_since("30m") == 30 * 60_000
    assert cli_inspect.parse_since("24h") == 86_400_000
    assert cli_inspect.parse_since("7d") == 7 * 86_400_000
    for bad in ("", "0h", "5y", "h", "-1d"):
        with pytest.raises(SystemExit) as exc:
            parse(["report", "--since", bad])
        assert exc.value.code == 2
    assert "30m, 24h or 7d" in capsys.readouterr().err


def test_redis_down_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    for argv in (["list"], ["show", "1"], ["cancel", "1"], ["stats"], ["report"]):
        assert run(argv, config) == 3
        captured = capsys.readouterr()
        assert captured.out == ""
        err_lines = captured.err.splitlines()
        assert len(err_lines) == 1, captured.err
        assert err_lines[0].startswith("callback-ari: cannot reach Redis at redis://")
        assert "hunter2" not in captured.err
        assert "Traceback" not in captured.err


def test_with_config_reports_config_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = cli_inspect.with_config(cli_inspect.stats_handler)
    args = argparse.Namespace(config=str(tmp_path / "missing.conf"), json=False)
    assert handler(args) == 2
    assert "missing.conf: does not exist" in capsys.readouterr().err


def test_list_says_how_many_it_left_out_and_warns_on_an_unknown_queue(
    seeded: tuple[Config, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = seeded
    assert run(["list", "--limit", "2"], config) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "2 of 4 shown (--limit 2)"
    assert run(["list", "--queue", "support", "--limit", "3"], config) == 0
    assert "shown" not in capsys.readouterr().out  # all three: nothing left out
    assert run(["list", "--queue", "support", "--json", "--limit", "1"], config) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1  # the JSON stays a plain list
    assert captured.err.strip() == "1 of 3 shown (--limit 1)"

    assert run(["list", "--queue", "suport"], config) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "no callbacks"
    assert "warning: no queue 'suport'" in captured.err
    assert "known: sales, support" in captured.err


def test_show_prints_times_and_no_stale_fields_on_final_records(
    seeded: tuple[Config, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, ids = seeded
    assert run(["show", ids[0]], config) == 0  # connected: final
    fields = dict(
        line.split(None, 1) for line in capsys.readouterr().out.split("\n\n")[0].splitlines()
    )
    for stale in ("lease_owner", "lease_expires", "next_attempt"):
        assert stale not in fields
    assert "created_ms" not in fields and "join_time_ms" not in fields
    assert fields["created"].endswith("Z") and fields["created"][:2] == "20"
    assert fields["state"] == "connected"

    assert run(["show", ids[0], "--json"], config) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["lease_owner"], doc["lease_expires_ms"], doc["next_attempt_ms"]) == (
        None, None, None,
    )  # fmt: skip
    assert isinstance(doc["created_ms"], int)

    assert run(["show", ids[1]], config) == 0  # pending: live, so next_attempt is shown
    assert "next_attempt" in capsys.readouterr().out

    monkeypatch.setenv("TZ", "America/New_York")
    import time

    time.tzset()
    try:
        assert run(["show", ids[0], "--local"], config) == 0
        out = capsys.readouterr().out
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    created = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())["created"]
    assert created.endswith(("EST", "EDT")), created

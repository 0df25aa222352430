"""``callback-ari dnc add|remove|list`` against a real Redis: one entry per number, masked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callback_ari.cli.app import main
from callback_ari.clock import SystemClock
from callback_ari.store.store import CallbackStore


def write_config(tmp_path: Path, redis_url: str) -> str:
    path = tmp_path / "callback_ari.conf"
    path.write_text(
        f"[ari]\npassword = p\n[ami]\nsecret = s\n[redis]\nurl = {redis_url}\nprefix = cli\n"
        "[queue:support]\nregion = US\n[queue:sales]\n",
        encoding="utf-8",
    )
    return str(path)


async def listed(redis_url: str, queue: str) -> list[str]:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        return await CallbackStore(redis, prefix="cli", clock=SystemClock()).dnc_list(queue)
    finally:
        await redis.aclose()


def test_dnc_add_list_remove(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(tmp_path, redis_url)
    assert main(["-c", conf, "dnc", "add", "support", "(212) 555-1234"]) == 0
    assert "added: ******1234 (support)" in capsys.readouterr().out
    # the same number written another way is the same entry
    assert main(["-c", conf, "dnc", "add", "support", "+1 212 555 1234"]) == 0
    assert "already listed" in capsys.readouterr().out
    assert asyncio.run(listed(redis_url, "support")) == ["2125551234"]
    assert asyncio.run(listed(redis_url, "sales")) == []  # per queue
    assert main(["-c", conf, "dnc", "list", "support"]) == 0
    assert capsys.readouterr().out.split() == ["******1234"]
    assert main(["-c", conf, "dnc", "list", "support", "--json", "--unmasked"]) == 0
    assert json.loads(capsys.readouterr().out) == {"queue": "support", "numbers": ["2125551234"]}
    assert main(["-c", conf, "dnc", "remove", "support", "2125551234"]) == 0
    assert main(["-c", conf, "dnc", "remove", "support", "2125551234"]) == 1
    assert asyncio.run(listed(redis_url, "support")) == []
    # refused: a number the queue could never call, and an unknown queue
    assert main(["-c", conf, "dnc", "add", "support", "911"]) == 2
    assert "emergency" in capsys.readouterr().err
    assert main(["-c", conf, "dnc", "add", "nosuch", "2125551234"]) == 2

"""Shared fixtures: one real redis-server per test session, flushed before each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callback_ari.sim.sandbox import Harness, Sandbox
from callback_ari.sim.simpbx.redis_process import RedisProcess

REPO = Path(__file__).resolve().parent.parent
# What a real Asterisk 22 sent and answered, recorded by callback_ari.sim.recorder (see its README)
ASTERISK_DATA = REPO / "tests" / "data" / "asterisk-22"


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
async def redis_url(redis_process: RedisProcess) -> AsyncIterator[str]:
    """URL of the session's redis-server, emptied for this test."""
    client = aioredis.Redis.from_url(redis_process.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    yield redis_process.url


@pytest.fixture(scope="session")
def asterisk_data() -> Path:
    """The project's recordings of a real Asterisk 22 and the ARI models derived from it."""
    if not (ASTERISK_DATA / "offer_flow.jsonl").is_file():
        pytest.fail(f"recordings missing from {ASTERISK_DATA}")
    return ASTERISK_DATA


# -- the real Asterisk 22 sandbox (tests marked `asterisk`) ---------------------------------
@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The sandbox PBX named by CBPBX_* (default pbx1); CI must have it, a laptop may not."""
    box = Sandbox.from_env()
    reason = box.unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the real-PBX suite cannot run in CI: {reason}")
        pytest.skip(reason)
    yield box
    box.stop()


@pytest.fixture
async def pbx(sandbox: Sandbox) -> AsyncIterator[Harness]:
    """A freshly started sandbox Asterisk (clean AstDB, agents idle) and the tests' harness."""
    sandbox.start()
    async with Harness(sandbox) as harness:
        yield harness

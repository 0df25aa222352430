"""Shared fixtures: one real redis-server per test session, flushed before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callback_ari.simpbx.redis_process import RedisProcess

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "asterisk"


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
def shared_asterisk() -> Path:
    """The ARI 22 spec and recorded transcripts that sit beside the repository."""
    if not SHARED.is_dir():
        pytest.fail(f"ground truth not found at {SHARED}: tests need ../shared/asterisk")
    return SHARED

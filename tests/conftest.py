"""Shared fixtures: one real redis-server per test session, flushed before each test."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
import structlog.testing
from structlog.typing import EventDict

from callback_ari.sim.sandbox import Harness, Sandbox
from callback_ari.sim.simpbx.redis_process import RedisProcess

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


# -- no unexpected error-level log events ---------------------------------------------------
ERROR_LEVELS = frozenset({"error", "exception", "critical", "fatal"})


@dataclass
class _ErrorTap:
    """A structlog processor that notes every error-level event (and lets it pass on)."""

    seen: list[str] = field(default_factory=list)

    def __call__(self, _logger: object, method: str, event_dict: EventDict) -> EventDict:
        if method in ERROR_LEVELS:
            self.seen.append(str(event_dict.get("event", "?")))
        return event_dict


class _StdlibErrors(logging.Handler):
    """Error records from the standard library side (asyncio, aiohttp, redis)."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(autouse=True)
def _no_unexpected_errors(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test during which anything logged an error it did not declare.

    Declare expected ones with ``@pytest.mark.expect_errors("ari.handler_error", "offer.*")``
    (fnmatch patterns of event names; stdlib records are named ``<logger>: <message>``).
    The tap rides along every structlog configuration made during the test: the service's
    ``configure_logging`` and ``structlog.testing.capture_logs`` included.
    """
    tap = _ErrorTap()
    configure = structlog.configure

    def tapped(**kwargs: Any) -> None:
        processors = kwargs.get("processors")
        if processors is not None and tap not in processors:
            processors.insert(0, tap)  # in place: capture_logs keeps its list instance
        configure(**kwargs)

    monkeypatch.setattr(structlog, "configure", tapped)
    monkeypatch.setattr(structlog.testing, "configure", tapped, raising=False)
    tapped(processors=structlog.get_config()["processors"])
    stdlib = _StdlibErrors(tap.seen)
    logging.getLogger().addHandler(stdlib)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(stdlib)
        processors = structlog.get_config()["processors"]
        while tap in processors:
            processors.remove(tap)
    allowed = [p for m in request.node.iter_markers("expect_errors") for p in m.args]
    unexpected = [e for e in tap.seen if not any(fnmatch.fnmatchcase(e, p) for p in allowed)]
    if unexpected:
        pytest.fail(
            "error-level log events the test does not expect (mark it "
            f"@pytest.mark.expect_errors(...) if they are the point): {unexpected}",
            pytrace=False,
        )

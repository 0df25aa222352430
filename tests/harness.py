"""End-to-end harness: the real Service against the simulated PBX and a real redis-server.

Nothing of ours is faked: the service talks ARI/AMI over real sockets to ``SimAsterisk`` and
Redis over a real socket. Helpers here play the caller's part (press keys when a prompt plays).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from callback_ari.clock import SystemClock
from callback_ari.config.loader import Config, parse_config
from callback_ari.models import Callback
from callback_ari.ops.web import http_front_end
from callback_ari.service.service import Service
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore

REPO = Path(__file__).resolve().parent.parent
KIT = (REPO / "dialplan" / "extensions_callback.conf").read_text()

QUEUE_DEFAULTS: dict[str, Any] = {
    "offer_threshold": 1,
    "dial_template": "PJSIP/{number}@trunk",
    "ring_timeout": 5,
    "confirm_timeout": 2,
    "retry_interval": 1,
    "max_attempts": 3,
    "digit_timeout": 1,
    "response_timeout": 2,
    "first_attempt_grace": 0,  # the grace has its own tests (test_grace.py); others dial at once
}


def service_config(
    sim: SimAsterisk,
    redis_url: str,
    *,
    prefix: str = "cbtest",
    instance: str = "test-1",
    http_port: int = 0,
    token: str = "",
    queues: dict[str, dict[str, Any]] | None = None,
    general: dict[str, Any] | None = None,
    redis: dict[str, Any] | None = None,
) -> Config:
    """A config pointing at ``sim`` and ``redis_url``; queue keys override QUEUE_DEFAULTS."""
    general_keys = {"lease_seconds": 5, "resync_interval": 30, "dialogue_timeout": 60}
    general_keys.update(general or {})
    lines = ["[general]", "app = callback-ari", f"instance_id = {instance}"]
    lines += [f"{k} = {v}" for k, v in general_keys.items()]
    lines += [
        "[ari]", f"url = {sim.ari_url}", "username = cbuser", "password = cbpass",
        "[ami]", "host = 127.0.0.1", f"port = {sim.ami_port}", "username = cbami",
        "secret = cbpass", "ping_interval = 1", "ping_timeout = 1",
        "[redis]", f"url = {redis_url}", f"prefix = {prefix}",
        *(f"{k} = {v}" for k, v in (redis or {}).items()),
        "[http]", f"enabled = {'yes' if http_port else 'no'}", "bind = 127.0.0.1",
        f"port = {http_port or 8090}", f"token = {token}",
        "[agi]", "enabled = no",
    ]  # fmt: skip
    for name, keys in (queues or {"support": {}}).items():
        lines.append(f"[queue:{name}]")
        merged = {**QUEUE_DEFAULTS, **keys}
        lines += [f"{k} = {v}" for k, v in merged.items()]
    return parse_config("\n".join(lines) + "\n", env={})


@contextlib.asynccontextmanager
async def running_service(config: Config) -> AsyncIterator[Service]:
    """Run the service until the block ends; fails the test if it dies early."""
    service = Service(config, front_ends=[http_front_end])
    task = asyncio.create_task(service.run(), name="service-under-test")
    try:
        async with asyncio.timeout(10):
            while not (service.started.is_set() and all(service.readiness().values())):
                if task.done():
                    task.result()  # raise what killed it
                await asyncio.sleep(0.01)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def store_for(redis_url: str, prefix: str = "cbtest") -> tuple[aioredis.Redis, CallbackStore]:
    """An independent view of the service's store, for assertions."""
    client = aioredis.Redis.from_url(redis_url)
    return client, CallbackStore(client, prefix=prefix, clock=SystemClock())


async def wait_prompt(sim: SimAsterisk, channel_id: str, media: str, *, since: int = 0) -> int:
    """Wait until a playback containing ``media`` starts on the channel; returns a log mark.

    The caller bounds the wait with ``asyncio.timeout`` when it needs a tighter bound than the
    fake's own 30 s ceiling.
    """

    def started() -> bool:
        for event in sim.events(app="callback-ari", kind="PlaybackStarted", since=since):
            playback = event.get("playback", {})
            if playback.get("target_uri") == f"channel:{channel_id}" and media in str(
                playback.get("media_uri", "")
            ):
                return True
        return False

    await sim.wait_for(started, 30.0)
    return sim.mark()


async def wait_for_callback(store: CallbackStore, predicate: Any) -> list[Callback]:
    """Poll the store (it has no events) until ``predicate(callbacks)`` is true.

    Unbounded by design: wrap it in ``asyncio.timeout`` (the per-test timeout is the backstop).
    """
    while True:
        callbacks = await store.list(limit=500)
        if predicate(callbacks):
            return callbacks
        await asyncio.sleep(0.02)

"""The real service as a child process against the sandbox PBX, and the caller's part in it.

Used by the real-PBX suite (``tests/test_pbx_*.py``): ``callback-ari run`` runs as a
subprocess (so it can be SIGKILLed) with short timeouts, and the helpers here wait on what
Asterisk itself reports through the tests' ``Harness`` (ARI events of every channel, AMI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from callback_ari.sim.sandbox import Harness, JsonDict, Sandbox
from callback_ari.sim.simpbx.redis_process import free_port

REPO = Path(__file__).resolve().parent.parent
TOKEN = "pbx-suite-token-0123456789"
PREFIX = "cbpbx"

# Short enough that the suite stays well under 10 minutes, long enough for 2 busy cores.
QUEUE_FAST: dict[str, str] = {
    "offer_threshold": "0",  # tests that want the withdraw path set it
    "ring_timeout": "5",
    "confirm_timeout": "3",
    "retry_interval": "1",
    "max_attempts": "3",
    "digit_timeout": "2",
    "response_timeout": "3",
    "max_tries": "3",
    "wrapup_time": "0",
    "first_attempt_grace": "0",  # the grace has its own tests (test_grace.py); dial at once here
}
GENERAL_FAST: dict[str, str] = {
    "instance_id": "pbx-suite",
    "lease_seconds": "5",
    "resync_interval": "5",
    "dialogue_timeout": "60",
    "log_level": "debug",
    "mask_numbers": "yes",
}


@dataclass
class ServiceProcess:
    """``python -m callback_ari -c CONF run`` against one sandbox, its log kept for the test."""

    sandbox: Sandbox
    redis_url: str
    workdir: Path
    queue: Mapping[str, str] = field(default_factory=dict)
    general: Mapping[str, str] = field(default_factory=dict)
    agi: bool = False
    http_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "callback_ari.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"service-{self.runs}.log"

    def config_text(self) -> str:
        general = {**GENERAL_FAST, **self.general}
        queue = {**QUEUE_FAST, **self.queue}
        extra = (
            f"[http]\nenabled = yes\nbind = 127.0.0.1\nport = {self.http_port}\n"
            f"token = {TOKEN}\n"
            f"[agi]\nenabled = {'yes' if self.agi else 'no'}\nbind = 127.0.0.1\n"
            f"port = {self.sandbox.agi_port}\n"
        )
        text = self.sandbox.service_config(self.redis_url, general=general, queue=queue)
        return text.replace("[redis]\n", f"[redis]\nprefix = {PREFIX}\n") + extra

    async def start(self) -> None:
        """Start the service and return once /readyz says ARI, AMI and Redis are all up."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        self.runs += 1
        with self.log_path.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callback_ari", "-c", str(self.config_path),
                "--log-format", "json", "run", cwd=REPO, stdout=out, stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        async with asyncio.timeout(20):
            while not await self.ready():
                if self.proc.returncode is not None:
                    raise AssertionError(f"service exited {self.proc.returncode}:\n{self.log()}")
                await asyncio.sleep(0.05)

    async def ready(self) -> bool:
        try:
            status, _ = await self.http("GET", "/readyz")
        except aiohttp.ClientError:
            return False
        return status == 200

    async def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request to the service's HTTP API with the bearer token."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = f"http://127.0.0.1:{self.http_port}{path}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def request_callback(self, number: str, **fields: str) -> str:
        """A web callback request over the HTTP API; returns the callback id."""
        status, body = await self.http(
            "POST", "/api/v1/callbacks", {"queue": "support", "number": number, **fields}
        )
        assert status == 201, (status, body)
        return str(body["callback"]["id"])

    async def callback(self, callback_id: str) -> JsonDict:
        status, body = await self.http("GET", f"/api/v1/callbacks/{callback_id}")
        assert status == 200, (status, body)
        result: JsonDict = body["callback"]
        return result

    async def callbacks(self) -> list[JsonDict]:
        status, body = await self.http("GET", "/api/v1/callbacks?limit=100")
        assert status == 200, (status, body)
        items: list[JsonDict] = body["callbacks"]
        return items

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("service-*.log"))
        )

    def entries(self) -> list[JsonDict]:
        """Every JSON log line the service wrote, across restarts."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    found.append(entry)
        return found

    def events(self, name: str) -> list[JsonDict]:
        """The service's own log events called ``name``."""
        return [e for e in self.entries() if e.get("event") == name]


@contextlib.asynccontextmanager
async def service(
    sandbox: Sandbox, redis_url: str, workdir: Path, **options: Any
) -> AsyncIterator[ServiceProcess]:
    """A started service that is stopped when the block ends, its log printed on failure."""
    svc = ServiceProcess(sandbox, redis_url, workdir, **options)
    try:
        await svc.start()
        yield svc
        code = await svc.stop()
        assert code == 0, f"service exited {code}"
        errors = [e for e in svc.entries() if e.get("level") in {"error", "critical"}]
        assert not errors, f"the service logged errors: {errors}"
    except BaseException:
        print(svc.log()[-20000:])
        raise
    finally:
        await svc.stop()


async def until(check: Callable[[], Awaitable[bool]], interval: float = 0.1) -> None:
    """Poll what has no event to wait on (CLI output, the HTTP API); the caller bounds it."""
    while True:
        if await check():
            return
        await asyncio.sleep(interval)


# --- what the caller hears and does, seen through the harness ------------------------------
def pbx_side(caller: str) -> str:
    """The PBX's end of a caller placed by ``Harness.call_in`` (the channel the kit runs)."""
    return caller + "-pbx"


def is_playback(event: JsonDict, channel: str, media: str, kind: str = "PlaybackStarted") -> bool:
    playback = event.get("playback", {})
    return (
        event.get("type") == kind
        and playback.get("target_uri") == f"channel:{channel}"
        and media in str(playback.get("media_uri", ""))
    )


async def hears(pbx: Harness, channel: str, media: str, *, since: int = 0) -> JsonDict:
    """Wait until a prompt containing ``media`` starts playing to ``channel``."""
    return await pbx.wait_ari(lambda e: is_playback(e, channel, media), since=since)


async def heard(pbx: Harness, channel: str, media: str, *, since: int = 0) -> JsonDict:
    """Wait until a prompt containing ``media`` finished playing to ``channel``."""
    return await pbx.wait_ari(
        lambda e: is_playback(e, channel, media, "PlaybackFinished"), since=since
    )


async def enters_app(pbx: Harness, channel: str, app: str, *, since: int = 0) -> JsonDict:
    """Wait until ``channel`` runs dialplan application ``app`` (ARI ChannelDialplan)."""
    return await pbx.wait_ari(
        lambda e: (
            e.get("type") == "ChannelDialplan"
            and e.get("channel", {}).get("id") == channel
            and e.get("dialplan_app") == app
        ),
        since=since,
    )


async def gone(pbx: Harness, channel: str, *, since: int = 0) -> JsonDict:
    """Wait until ``channel`` is destroyed."""
    return await pbx.wait_ari(
        lambda e: e.get("type") == "ChannelDestroyed" and e.get("channel", {}).get("id") == channel,
        since=since,
    )


async def joins_queue(pbx: Harness, channel: str, *, since: int = 0) -> dict[str, str]:
    """Wait for the AMI QueueCallerJoin of ``channel`` (its Uniqueid is the ARI id)."""
    return await pbx.wait_ami(
        lambda m: m.get("Event") == "QueueCallerJoin" and m.get("Uniqueid") == channel,
        since=since,
    )


def queue_joins(pbx: Harness, since: int = 0) -> list[tuple[str, int]]:
    """(Uniqueid, Position) of every QueueCallerJoin since ``since``."""
    return [(m["Uniqueid"], int(m["Position"])) for m in pbx.ami_events("QueueCallerJoin", since)]


ROUTES = Path(__file__).resolve().parent / "pbx_routes"


def start_with_routes(sandbox: Sandbox, monkeypatch: Any) -> None:
    """Restart the sandbox with the suite's extra inbound routes (``tests/pbx_routes``)."""
    monkeypatch.setenv("CBPBX_EXTRA", str(ROUTES))
    sandbox.start()

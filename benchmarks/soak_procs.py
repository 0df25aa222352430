"""The service under test as a real subprocess: its config, start, SIGKILL, restart, RSS/fds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from soak_settings import PREFIX, SoakSettings

from callback_ari.sim.simpbx.sim import SimAsterisk


def config_text(
    settings: SoakSettings, sim: SimAsterisk, redis_url: str, *, app: str, instance: str
) -> str:
    """A complete callback_ari.conf pointing at the fake and the soak's redis-server."""
    s = settings
    lines = [
        "[general]",
        f"app = {app}",
        f"instance_id = {instance}",
        f"lease_seconds = {s.lease_seconds}",
        f"resync_interval = {s.resync_interval}",
        f"dialogue_timeout = {s.dialogue_timeout}",
        "log_format = json",
        f"log_level = {s.log_level}",
        "[ari]", f"url = {sim.ari_url}", "username = cbuser", "password = cbpass",
        "[ami]", "host = 127.0.0.1", f"port = {sim.ami_port}", "username = cbami",
        "secret = cbpass", "ping_interval = 2", "ping_timeout = 2",
        "[redis]", f"url = {redis_url}", f"prefix = {PREFIX}",
        "[http]", "enabled = no",
        "[agi]", "enabled = no",
    ]  # fmt: skip
    for q in s.queues:
        lines += [
            f"[queue:{q.name}]",
            f"offer_threshold = {s.offer_threshold}",
            "dial_template = PJSIP/{number}@trunk",
            f"ring_timeout = {s.ring_timeout}",
            f"confirm_timeout = {s.confirm_timeout}",
            f"retry_interval = {s.retry_interval}",
            f"max_attempts = {s.max_attempts}",
            "max_pending = 5000",
            "digit_timeout = 1",
            "response_timeout = 2",
            f"wrapup_time = {s.wrapup}",
            f"priority_boost = {q.priority_boost}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of /proc for a service process."""

    t: float  # seconds since the soak started
    instance: str
    pid: int
    rss_kb: int
    fds: int
    threads: int


def read_proc(pid: int) -> tuple[int, int, int] | None:
    """(VmRSS kB, open fds, threads) of a live process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = threads = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, fds, threads


class ServiceProcess:
    """``python -m callback_ari -c <cfg> run`` with its output appended to a log file."""

    def __init__(
        self,
        name: str,
        app: str,
        config_path: Path,
        log_path: Path,
        on_start: Callable[[str], None] = lambda _app: None,
    ) -> None:
        self.name = name
        self.app = app
        self._on_start = on_start
        self.config_path = config_path
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.incarnations = 0
        self.unexpected_exits: list[tuple[float, int]] = []  # (wall time, exit status)
        self.exit_statuses: list[int] = []  # statuses of stops we asked for (SIGTERM)
        self.lock = asyncio.Lock()  # one kill/start sequence at a time
        self._expect_exit = False

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Spawn the service (no wait for readiness: the caller watches the fake for that)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBACK_ARI_")}
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callback_ari", "-c", str(self.config_path), "run",
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            )  # fmt: skip
        self.started_at = time.time()
        self.incarnations += 1
        self._expect_exit = False
        self._on_start(self.app)

    async def kill(self) -> None:
        """SIGKILL: no clean-up at all, like a crash or the OOM killer."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> int | None:
        """SIGTERM and wait (10 s, then SIGKILL); returns the exit status."""
        if not self.running:
            return None if self.proc is None else self.proc.returncode
        status = await self._signal(signal.SIGTERM)
        self.exit_statuses.append(-999 if status is None else status)  # -999: had to SIGKILL
        return status

    async def _signal(self, sig: int) -> int | None:
        """Send ``sig`` and wait for the exit (SIGKILL after 10 s); None if it had to."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        self._expect_exit = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            async with asyncio.timeout(10.0):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None

    def check_alive(self) -> bool:
        """False (and the exit recorded) if it died without being told to."""
        proc = self.proc
        if proc is None or proc.returncode is None or self._expect_exit:
            return True
        self.unexpected_exits.append((time.time(), proc.returncode))
        self._expect_exit = True  # recorded once
        return False


async def wait_app(sim: SimAsterisk, app: str, within: float = 30.0) -> bool:
    """Wait until the service has its ARI events socket open for ``app`` (False: not in time)."""
    try:
        await sim.wait_for(lambda: sim.app_connected(app), within)
    except TimeoutError:
        return False
    return True

"""The real-PBX benchmarks' rig: the sandbox Asterisk, a private redis-server, the service.

The service runs as its own process, as in production, with a loop-lag probe beside it (the
same 10 ms sleep overshoot as offer_bench.py). The probe stamps each sample with
``time.monotonic()``, which is the system-wide CLOCK_MONOTONIC on Linux, so the driver can
cut the samples into the windows it measured. Its CPU and Asterisk's are read from
/proc/PID/stat, so a benchmark can say whose CPU runs out first.

    python benchmarks/pbx_rig.py serve CONFIG LAGFILE    (what ServiceProcess starts)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from offer_bench import PROBE_S, Lag

from callback_ari.config.loader import parse_config
from callback_ari.logs import configure_logging
from callback_ari.ops.web import http_front_end
from callback_ari.service.service import Service
from callback_ari.sim.sandbox import Sandbox

TICK_S = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime, stime (fields 14, 15)


def asterisk_pid(box: Sandbox) -> int:
    facts = box.facts()
    root = Path(facts.get("CBPBX_ROOT", "/var/cache/callback-ari/pbx-rootfs"))
    pid_file = root / f"srv/callback-ari-{box.name}/run/asterisk.pid"
    return int(pid_file.read_text().split()[0])


def renice(pid: int, nice: int) -> None:
    """Set the nice value of every thread of a process (Linux nice is per thread; threads
    started later inherit it from the thread that starts them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def asterisk_version(box: Sandbox) -> str:
    return box.cli("core show version").split(" built")[0].strip()


def machine() -> list[str]:
    """What the figures were measured on, for the table's header."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    keep = ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Core(s) per socket")
    lines = [line.strip() for line in lscpu.splitlines() if line.split(":")[0] in keep]
    load = Path("/proc/loadavg").read_text().split()[:3]
    return [
        *lines,
        f"Python {platform.python_version()}, Linux {platform.release()}",
        f"load average at start {' '.join(load)} (other engineers' work shares the 2 cores)",
    ]


def lag_between(samples: list[tuple[float, float]], start: float, end: float) -> Lag:
    """The probe's samples taken between two monotonic moments."""
    return Lag(tuple(ms for at, ms in samples if start <= at <= end))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# --- the service process ---------------------------------------------------------------


def service_config(box: Sandbox, redis_url: str, http_port: int, log_path: Path,
                   **queue: str) -> str:  # fmt: skip
    """callback_ari.conf for the sandbox: JSON logs to a file, the HTTP API for readiness."""
    text = box.service_config(
        redis_url,
        general={
            "app": "callback-ari",
            "instance_id": "bench",
            "dialogue_timeout": "120",
            "log_format": "json",
            "log_level": "info",
        },
        queue=queue,
    )
    return (
        text + f"[http]\nenabled = yes\nbind = 127.0.0.1\nport = {http_port}\n[agi]\nenabled = no\n"
    )


@dataclass
class ServiceProcess:
    """``python pbx_rig.py serve`` as a child process: start, wait ready, stop, lag samples."""

    config_text: str
    http_port: int
    workdir: Path
    nice: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "service.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> subprocess.Popen[bytes]:
        conf = self.workdir / "callback_ari.conf"
        conf.write_text(self.config_text)
        lag = self.workdir / "lag.json"
        lag.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, __file__, "serve", str(conf), str(lag)], stdout=log, stderr=log
            )

    async def start(self) -> None:
        """Start the service and wait until its /readyz says ARI, AMI and Redis are up."""
        self.proc = await asyncio.to_thread(self.launch)
        if self.nice:
            renice(self.proc.pid, self.nice)
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"the service exited; see {self.log_path}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url) as resp:
                            if resp.status == 200:
                                return
                    await asyncio.sleep(0.1)

    async def stop(self) -> list[tuple[float, float]]:
        """SIGTERM, wait, and the probe's (monotonic time, lag ms) samples."""
        assert self.proc is not None
        return await stopped(self.proc, self.workdir / "lag.json")

    def log_entries(self) -> list[dict[str, object]]:
        """The service's JSON log lines, parsed."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def errors(self) -> list[str]:
        """The events the service logged at error level or above (none in a clean run)."""
        return [
            str(entry.get("event"))
            for entry in self.log_entries()
            if entry.get("level") in ("error", "critical")
        ]


async def stopped(proc: subprocess.Popen[bytes], lag: Path) -> list[tuple[float, float]]:
    """SIGTERM a probing child, wait for it, and read its (monotonic time, lag ms) samples."""
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 30)
    text = await asyncio.to_thread(lambda: lag.read_text() if lag.exists() else "[]")
    return [(at, ms) for at, ms in json.loads(text)]


@dataclass
class ControlProbe:
    """The same probe alone in a process of its own: the lag the machine's load causes."""

    workdir: Path
    nice: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        lag = self.workdir / "control.json"
        self.proc = subprocess.Popen([sys.executable, __file__, "control", str(lag)])
        if self.nice:
            renice(self.proc.pid, self.nice)

    async def stop(self) -> list[tuple[float, float]]:
        assert self.proc is not None
        return await stopped(self.proc, self.workdir / "control.json")


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="cb-pbxbench-"))


# --- inside the service process ----------------------------------------------------------


async def _probe(samples: list[tuple[float, float]]) -> None:
    """Sleep 10 ms again and again; record (when, overshoot ms): the loop's lag."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(PROBE_S)
        samples.append((time.monotonic(), (loop.time() - start - PROBE_S) * 1000))


async def _serve(config_path: Path, lag_path: Path) -> None:
    config = parse_config(await asyncio.to_thread(config_path.read_text), env={})
    configure_logging(fmt="json", level="info", stream=sys.stdout)
    service = Service(config, front_ends=[http_front_end])  # as `callback-ari run` does
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    samples: list[tuple[float, float]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            service_task = tg.create_task(service.run(), name="service")
            probe_task = tg.create_task(_probe(samples), name="lag-probe")
            await stop.wait()
            service_task.cancel()
            probe_task.cancel()
    finally:
        await asyncio.to_thread(lag_path.write_text, json.dumps(samples))


async def _control(lag_path: Path) -> None:
    """The probe alone in its own process: what the machine's load does to any loop."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    samples: list[tuple[float, float]] = []
    async with asyncio.TaskGroup() as tg:
        probe_task = tg.create_task(_probe(samples), name="lag-probe")
        await stop.wait()
        probe_task.cancel()
    await asyncio.to_thread(lag_path.write_text, json.dumps(samples))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        asyncio.run(_serve(Path(sys.argv[2]), Path(sys.argv[3])))
    elif len(sys.argv) == 3 and sys.argv[1] == "control":
        asyncio.run(_control(Path(sys.argv[2])))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve CONFIG LAGFILE | control LAGFILE")

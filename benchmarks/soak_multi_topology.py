"""The multi-PBX soak's topology: sandbox PBXs with their own queues, a Sentinel set, services.

Each PBX is an instance of the CI sandbox (``dialplan/sandbox/pbx``) started with an extra
config folder (CBPBX_EXTRA) that replaces its queues with two of its own: one
``customer_first`` and one ``agent_first`` queue, two agents each. The agents are Local
channels into ``[soakagents]``: they answer at once, set their Custom: device RINGING then
INUSE, talk 20-30 s and hang up (device NOT_INUSE), so the PBX runs its agents by itself and a
``core restart now`` keeps them (Custom: states live in the AstDB). The kit's per-queue blocks
are copied for every queue, as the README tells an administrator.

The service instances run as child processes of ``soak_multi_topology.py serve`` (the real
``Service`` with its HTTP front end, as ``callback-ari run`` builds it), which also writes the
number of asyncio tasks every 2 s to a stats file: the soak reads memory from /proc and tasks
from that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from callback_ari.config.loader import parse_config
from callback_ari.logs import configure_logging
from callback_ari.ops.web import http_front_end
from callback_ari.service.service import Service
from callback_ari.sim.sandbox import Sandbox
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.sim.simpbx.redis_sentinel import MASTER_NAME, SentinelSet

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "dialplan" / "extensions_callback.conf"
PREFIX = "soakm"
STATS_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class QueueDef:
    name: str
    mode: str  # customer_first | agent_first
    agents: tuple[str, ...]

    def interface(self, agent: str) -> str:
        return f"Local/{agent}@soakagents/n"


@dataclass(frozen=True, slots=True)
class PbxDef:
    """One sandbox instance and the queues it hosts."""

    box: Sandbox
    queues: tuple[QueueDef, ...]

    @property
    def name(self) -> str:
        return self.box.name

    def queue(self, mode: str) -> QueueDef:
        return next(q for q in self.queues if q.mode == mode)


def pbx_defs(boxes: list[Sandbox]) -> list[PbxDef]:
    """Queues alpha/bravo on the first PBX, charlie/delta on the second, and so on."""
    names = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
    out = []
    for i, box in enumerate(boxes):
        cf, af = names[2 * i], names[2 * i + 1]
        out.append(
            PbxDef(
                box,
                (
                    QueueDef(cf, "customer_first", (f"{cf}1", f"{cf}2")),
                    QueueDef(af, "agent_first", (f"{af}1", f"{af}2")),
                ),
            )
        )
    return out


def kit_blocks(queue: str) -> str:
    """The kit's ``support`` blocks of every context, renamed for ``queue``."""
    out: list[str] = []
    context = ""
    on = False
    for line in KIT.read_text().splitlines():
        if line.startswith("["):
            context, on = line, False
            continue
        if line.startswith("exten => support,"):
            on = True
            out += ["", context]
            out.append(line.replace("exten => support,", f"exten => {queue},", 1))
        elif line.startswith("exten => "):
            on = False
        elif on and line.startswith(" same =>"):
            out.append(line)
    return "\n".join(out) + "\n"


def extra_config(pbx: PbxDef, directory: Path) -> Path:
    """The CBPBX_EXTRA folder for one PBX: its queues, routes and agents."""
    directory.mkdir(parents=True, exist_ok=True)
    queues = ["[general]", "persistentmembers = no", "shared_lastcall = yes", ""]
    for q in pbx.queues:
        queues += [
            f"[{q.name}]", "strategy = rrmemory", "timeout = 15", "retry = 1",
            "wrapuptime = 0", "joinempty = yes", "leavewhenempty = no", "ringinuse = no",
            "announce-position = no", "context = callback-exit",
        ]  # fmt: skip
        queues += [f"member => {q.interface(a)},0,{a},Custom:{a}" for a in q.agents] + [""]
    (directory / "queues.conf").write_text("\n".join(queues))
    ext = ["; the soak's queues (soak_multi_topology.py)", "[incoming]"]
    for q in pbx.queues:
        ext += [
            f"exten => {q.name},1,Answer()",
            f" same => n,Gosub(callback-queue,{q.name},1())",
            " same => n,Goto(route-after-queue,${EXTEN},1)",
        ]
    ext += [
        "",
        "[soakagents]",
        "exten => _[a-z].,1,Set(CHANNEL(hangup_handler_push)=soakagents-onhook,s,1(${EXTEN}))",
        # RINGING first, as a phone does: app_queue then always hears the change to INUSE
        " same => n,Set(DEVICE_STATE(Custom:${EXTEN})=RINGING)",
        " same => n,Answer()",
        " same => n,Set(DEVICE_STATE(Custom:${EXTEN})=INUSE)",
        " same => n,Wait($[20 + ${STRFTIME(,,%3q)} % 11])",
        " same => n,Hangup()",
        "[soakagents-onhook]",
        "exten => s,1,Set(DEVICE_STATE(Custom:${ARG1})=NOT_INUSE)",
        " same => n,Return()",
    ]
    for q in pbx.queues:
        ext.append(kit_blocks(q.name))
    (directory / "extensions_extra.conf").write_text("\n".join(ext) + "\n")
    return directory


def start_pbx(pbx: PbxDef, workdir: Path) -> None:
    pbx.box.start(extra=extra_config(pbx, workdir / f"pbx-{pbx.name}"))
    agents_ready(pbx)


def agents_ready(pbx: PbxDef) -> None:
    """Every agent's phone idle after a start or a restart that cut their calls, except an
    agent already on a call again (the services redial within a second of the restart).

    Two passes, because a call can start between looking and resetting: an idle agent is set
    NOT_INUSE, then every agent on a call by now is set RINGING and INUSE again. A single
    look-then-reset showed agents on an agent-first callback call as free, and app_queue gave
    them live callers (the third 30-minute soak: 7 capacity excesses after restarts)."""
    agents = [a for q in pbx.queues for a in q.agents]
    for a in agents_on_call(pbx, agents, talking=False):
        pbx.box.cli(f"devstate change Custom:{a} NOT_INUSE")
    for a in agents_on_call(pbx, agents, talking=True):
        pbx.box.cli(f"devstate change Custom:{a} RINGING")
        pbx.box.cli(f"devstate change Custom:{a} INUSE")


def agents_on_call(pbx: PbxDef, agents: list[str], *, talking: bool) -> list[str]:
    """The ``agents`` that have (``talking``) or have not a call, from one channel listing."""
    channels = pbx.box.cli("core show channels concise")
    return [a for a in agents if (f"Local/{a}@soakagents-" in channels) == talking]


def wait_booted(box: Sandbox, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "fully booted" in box.cli("core waitfullybooted").lower():
                return True
        except Exception:
            pass
        time.sleep(0.3)
    return False


# --- Redis Sentinel ---------------------------------------------------------------------


class Sentinels:
    """The Sentinel set, with a failover that brings the old master back as a replica."""

    def __init__(self) -> None:
        self.set = SentinelSet(replicas=1)

    def start(self) -> None:
        self.set.start()

    def close(self, keep: Path | None = None) -> None:
        """Stop everything; first copy the sentinels' and nodes' logs to ``keep``."""
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for log in Path(self.set._dir.name).glob("*.log"):
                shutil.copy(log, keep / log.name)
            for node in self.set.nodes:
                log = node.data_dir / "redis.log"
                if log.exists():
                    shutil.copy(log, keep / f"redis-{node.port}.log")
        self.set.close()

    @property
    def addresses(self) -> str:
        return ", ".join(self.set.sentinel_addresses)

    def master_url(self) -> str:
        return f"redis://127.0.0.1:{self.set.current_master_port()}/0"

    def failover(self) -> str:
        """SIGKILL the master, wait for the promotion, restart the old one, wait for its sync."""
        t0 = time.monotonic()
        old = self.set.kill_master()
        new = self.set.wait_promoted(old, timeout=60.0)
        promoted = time.monotonic() - t0
        # Back empty, so never promotable before its sync is done (``revive``): with
        # down-after 1 s on a loaded machine the sentinels may fail over again meanwhile, and an
        # empty replica promoted wipes every callback (the first long soak lost 132 promises
        # that way, at its second failover).
        try:
            self.set.revive(old, timeout=60.0)
            synced = True
        except RuntimeError:
            synced = False
        return (
            f"{old}->{new} promoted in {promoted:.1f} s, old master back as replica "
            f"{'in ' + format(time.monotonic() - t0, '.1f') + ' s' if synced else 'NOT synced'}"
        )


# --- the service processes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueTiming:
    offer_threshold: int = 3
    ring_timeout: int = 10
    confirm_timeout: int = 6
    retry_interval: int = 3
    max_attempts: int = 6
    first_attempt_grace: int = 2
    priority_boost: int = 0


def service_config(pbx: PbxDef, sentinels: Sentinels, *, app: str, instance: str,
                   http_port: int, timing: QueueTiming) -> str:  # fmt: skip
    box = pbx.box
    lines = [
        "[general]", f"app = {app}", f"instance_id = {instance}", "lease_seconds = 6",
        "resync_interval = 10", "dialogue_timeout = 60", "log_format = json",
        "log_level = info", "mask_numbers = yes",
        "[ari]", f"url = {box.ari_url}", f"username = {box.ari_user}",
        f"password = {box.ari_password}",
        "[ami]", "host = 127.0.0.1", f"port = {box.ami_port}", f"username = {box.ami_user}",
        f"secret = {box.ami_secret}", "ping_interval = 2", "ping_timeout = 2",
        "[redis]", "url = redis://127.0.0.1:6379/0", f"prefix = {PREFIX}",
        f"sentinel_master = {MASTER_NAME}", f"sentinels = {sentinels.addresses}",
        "min_replicas = 1", "min_replicas_timeout = 1.0",
        "[http]", "enabled = yes", "bind = 127.0.0.1", f"port = {http_port}",
        "[agi]", "enabled = no",
    ]  # fmt: skip
    t = timing
    for q in pbx.queues:
        lines += [
            f"[queue:{q.name}]", f"dialing_mode = {q.mode}",
            "dial_template = Local/{number}@customers",
            f"offer_threshold = {t.offer_threshold}", f"ring_timeout = {t.ring_timeout}",
            f"confirm_timeout = {t.confirm_timeout}", f"retry_interval = {t.retry_interval}",
            f"max_attempts = {t.max_attempts}", f"first_attempt_grace = {t.first_attempt_grace}",
            "max_pending = 5000", "digit_timeout = 2", "response_timeout = 4",
            "wrapup_time = 0", f"priority_boost = {t.priority_boost}", "announce_wait = no",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


@dataclass
class ServiceNode:
    """One service instance (a child process), restarted under the same name after a kill."""

    name: str  # e.g. s1a
    pbx: PbxDef
    app: str
    config_text: str
    http_port: int
    workdir: Path
    proc: asyncio.subprocess.Process | None = None
    incarnations: int = 0
    pids: list[int] = field(default_factory=list)
    unexpected_exits: list[tuple[float, int]] = field(default_factory=list)
    stop_statuses: list[int] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _expect_exit: bool = False

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def stats_path(self) -> Path:
        return self.workdir / f"{self.name}.stats"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        conf = self.workdir / f"{self.name}.conf"
        conf.write_text(self.config_text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBACK_ARI_")}
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "serve", str(conf), str(self.stats_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            )  # fmt: skip
        self.incarnations += 1
        self.pids.append(self.proc.pid)
        self._expect_exit = False

    async def ready(self, within: float = 30.0) -> bool:
        """Until /readyz says 200 (ARI, AMI and Redis up), or False after ``within``."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if not self.running:
                    return False
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return True
                await asyncio.sleep(0.2)
        return False

    async def kill(self) -> None:
        await self._signal(signal.SIGKILL)

    async def stop(self) -> int | None:
        if not self.running:
            return None
        status = await self._signal(signal.SIGTERM)
        self.stop_statuses.append(-999 if status is None else status)
        return status

    async def _signal(self, sig: int) -> int | None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None
        self._expect_exit = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            async with asyncio.timeout(15.0):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None

    def check_alive(self) -> bool:
        proc = self.proc
        if proc is None or proc.returncode is None or self._expect_exit:
            return True
        self.unexpected_exits.append((time.time(), proc.returncode))
        self._expect_exit = True
        return False

    def errors(self) -> list[str]:
        """Events logged at error level or above, over every incarnation."""
        found = []
        if not self.log_path.exists():
            return found
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and re.search(r'"level": ?"(error|critical)"', line):
                with contextlib.suppress(ValueError):
                    found.append(str(json.loads(line).get("event")))
        return found


def read_tasks(path: Path) -> list[tuple[float, int, int]]:
    """(wall time, pid, asyncio tasks) lines a ``serve`` process wrote."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            t, pid, tasks = line.split()
            out.append((float(t), int(pid), int(tasks)))
    return out


# --- inside a service process ---------------------------------------------------------------


async def _stats(path: Path) -> None:
    pid = os.getpid()
    while True:
        line = f"{time.time():.1f} {pid} {len(asyncio.all_tasks())}\n"
        await asyncio.to_thread(_append, path, line)
        await asyncio.sleep(STATS_EVERY_S)


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line)


async def _serve(config_path: Path, stats_path: Path) -> None:
    config = parse_config(await asyncio.to_thread(config_path.read_text), env={})
    configure_logging(fmt="json", level="info", stream=sys.stdout)
    service = Service(config, front_ends=[http_front_end])  # as `callback-ari run` does
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with asyncio.TaskGroup() as tg:
        service_task = tg.create_task(service.run(), name="service")
        stats_task = tg.create_task(_stats(stats_path), name="soak-stats")
        await stop.wait()
        service_task.cancel()
        stats_task.cancel()


def free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        asyncio.run(_serve(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve CONFIG STATSFILE")

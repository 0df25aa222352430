"""A site of several sandbox PBXs, each with its own queues and service instances, one Sentinel set.

The topology the README's "Several PBXs and instances" section describes, made of real parts:

    PBX x1 (queue support) <-- service x1-a, x1-b --\\
                                                     >-- Redis via 3 sentinels (one prefix)
    PBX x2 (queue sales)   <-- service x2-a, x2-b --/

Each PBX is an instance of the sandbox (``dialplan/sandbox/pbx``) that hosts only its own
queues, each with the sandbox's two agents (queue names are unique across the site: the store
keys queues by name, and numbers are deduplicated site-wide, so every instance shares one
Redis prefix). Each service is ``python -m callback_ari -c CONF run`` as a child process, with
its own ``instance_id`` and Stasis app; its config lists only the queues its PBX hosts. The
first instance of a PBX uses the kit's Stasis app (``callback-ari``), so it is the one that
runs the callers' offer dialogues; the others dispatch callbacks.

Used by ``tests/test_pbx_multi.py`` and the soak. ``site_from_env`` reads CBSITE_PBXS
(``name:ari:ami:agi[:queue+queue],...``) so a run can use the PBX names and ports it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from callback_ari.sim.sandbox import SCRIPT, Sandbox
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.sim.simpbx.redis_sentinel import MASTER_NAME, SentinelSet
from callback_ari.store.store import CallbackStore, connect_redis

REPO = SCRIPT.parents[2]
TEMPLATE_QUEUES = SCRIPT.parent / "etc" / "queues.conf"
SANDBOX_QUEUES = ("support", "sales")  # the queues the sandbox's dialplan and kit blocks know
KIT_APP = "callback-ari"  # the app of Stasis(...) in the kit's dialplan: offers go there
TOKEN = "site-token-0123456789abcdef"
PREFIX = "cbsite"
ENV = "CBSITE_PBXS"
START_TIMEOUT_S = 30.0  # a service that cannot reach its PBX never gets ready
STOP_TIMEOUT_S = 15.0  # SIGTERM, then SIGKILL
# Two instance names and port sets that collide neither with pbx1 nor with each other.
DEFAULT_SITE = "site1:18188:15138:14673,site2:18288:15238:14773"


@dataclass(frozen=True, slots=True)
class PbxPlan:
    """One PBX of the site and the queues it hosts."""

    sandbox: Sandbox
    queues: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.sandbox.name


def site_from_env(
    env: Mapping[str, str] | None = None, default: str = DEFAULT_SITE
) -> list[PbxPlan]:
    """The PBXs named by CBSITE_PBXS, ``name:ari:ami:agi[:q1+q2]`` comma-separated.

    Without queues, PBX number i hosts the sandbox's i-th queue (support, sales).
    """
    spec = (os.environ if env is None else env).get(ENV, "") or default
    plans = []
    for i, item in enumerate(part.strip() for part in spec.split(",") if part.strip()):
        fields = item.split(":")
        if len(fields) not in (4, 5) or not all(f.isdigit() for f in fields[1:4]):
            raise ValueError(f"{ENV}: expected name:ari:ami:agi[:queue+queue], got {item!r}")
        name, ari, ami, agi = fields[0], *map(int, fields[1:4])
        if i >= len(SANDBOX_QUEUES) and len(fields) == 4:
            raise ValueError(f"{ENV}: {name} needs its queues (name:ari:ami:agi:queue+queue)")
        queues = tuple(fields[4].split("+")) if len(fields) == 5 else (SANDBOX_QUEUES[i],)
        plans.append(PbxPlan(Sandbox(name, ari, ami, agi), queues))
    check_plans(plans)
    return plans


def check_plans(plans: Sequence[PbxPlan]) -> None:
    """Every queue hosted by exactly one PBX, and only queues the sandbox's dialplan has."""
    seen: dict[str, str] = {}
    for plan in plans:
        for queue in plan.queues:
            if queue not in SANDBOX_QUEUES:
                raise ValueError(f"{plan.name}: the sandbox has no queue {queue!r}")
            if queue in seen:
                raise ValueError(f"queue {queue!r} is hosted by {seen[queue]} and {plan.name}")
            seen[queue] = plan.name


def queues_conf(hosted: Sequence[str]) -> str:
    """The sandbox's queues.conf with only ``hosted`` queues, each with both agents.

    Every hosted queue gets the settings and members of the template's ``support`` (two
    agents, rrmemory, joinempty), and the kit's lines for its own name.
    """
    sections = _sections(TEMPLATE_QUEUES.read_text())
    out = [sections["general"]]
    body = sections["support"]
    for queue in hosted:
        kit = "queues_kit.conf" if queue == "support" else f"queues_kit_{queue}.conf"
        out.append(f"[{queue}]\n" + body.replace("#include queues_kit.conf", f"#include {kit}"))
    return "\n".join(out)


def _sections(text: str) -> dict[str, str]:
    """``[name]`` -> that section's lines (comments dropped), header excluded."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        head = re.match(r"^\[([^\]]+)\]", line)
        if head:
            current = found.setdefault(head.group(1), [])
        elif current is not None and line.strip() and not line.lstrip().startswith(";"):
            current.append(line)
    out = {name: "\n".join(lines) + "\n" for name, lines in found.items()}
    out["general"] = "[general]\n" + out.get("general", "")
    return out


# --- one service instance ---------------------------------------------------------------


@dataclass
class SiteService:
    """``python -m callback_ari -c CONF run`` for one PBX: config, start, SIGKILL, restart, logs."""

    name: str  # e.g. "x1-a": its instance_id
    plan: PbxPlan
    app: str
    sentinels: tuple[str, ...]
    workdir: Path
    queue: Mapping[str, str] = field(default_factory=dict)
    general: Mapping[str, str] = field(default_factory=dict)
    redis: Mapping[str, str] = field(default_factory=dict)
    prefix: str = PREFIX
    http_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "callback_ari.conf"

    @property
    def log_path(self) -> Path:
        """The log of the current (or last) run; every run has its own file."""
        return self.workdir / f"service-{self.runs}.log"

    @property
    def log_paths(self) -> list[Path]:
        return sorted(self.workdir.glob("service-*.log"), key=lambda p: int(p.stem.split("-")[1]))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config_text(self) -> str:
        box = self.plan.sandbox
        general = {"app": self.app, "instance_id": self.name, **self.general}
        redis = {
            # with Sentinel only credentials and db come from the url
            "url": "redis://127.0.0.1:6379/0",
            "prefix": self.prefix,
            "sentinel_master": MASTER_NAME,
            "sentinels": ", ".join(self.sentinels),
            **self.redis,
        }
        sections: dict[str, Mapping[str, object]] = {
            "general": general,
            "ari": {"url": box.ari_url, "username": box.ari_user, "password": box.ari_password},
            "ami": {
                "port": box.ami_port,
                "username": box.ami_user,
                "secret": box.ami_secret,
                "ping_interval": 2,
                "ping_timeout": 2,
            },
            "redis": redis,
            "http": {
                "enabled": "yes",
                "bind": "127.0.0.1",
                "port": self.http_port,
                "token": TOKEN,
            },
            "agi": {"enabled": "no"},
        }
        for queue in self.plan.queues:
            sections[f"queue:{queue}"] = {"dial_template": "Local/{number}@customers", **self.queue}
        return "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
            for name, keys in sections.items()
        )

    async def start(self) -> None:
        """Start the process and return once its /readyz says ARI, AMI and Redis are up.

        Gives up after START_TIMEOUT_S (a service that cannot reach its PBX never gets ready).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        self.runs += 1
        with self.log_path.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callback_ari", "-c", str(self.config_path),
                "--log-format", "json", "run", cwd=REPO, stdout=out, stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        async with asyncio.timeout(START_TIMEOUT_S):
            while not await self.ready():
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited {self.proc.returncode}; see {self.log_path}"
                    )
                await asyncio.sleep(0.1)

    async def ready(self) -> bool:
        try:
            status, _ = await self.http("GET", "/readyz")
        except aiohttp.ClientError:
            return False
        return status == 200

    async def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request to this instance's HTTP API, with the bearer token."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base_url + path, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, (json.loads(text) if text else None)
            except ValueError:
                return resp.status, text

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as in a crash: no clean-up of any kind (its leases expire)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after STOP_TIMEOUT_S); the exit code, None if never started."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def entries(self) -> list[dict[str, Any]]:
        """Every JSON log line of every run."""
        found = []
        for path in self.log_paths:
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        found.append(entry)
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("event") == name]

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("level") in ("error", "critical")]


# --- the site ---------------------------------------------------------------------------


class Site:
    """N sandbox PBXs, ``per_pbx`` services each, one Sentinel set; ``async with`` runs it all.

    ``queue`` / ``general`` / ``redis``: keys for every service's ``[queue:*]``, ``[general]``
    and ``[redis]`` sections. Logs and configs live under ``workdir`` (one folder per
    service), kept after the run.
    """

    def __init__(
        self,
        plans: Sequence[PbxPlan],
        *,
        per_pbx: int = 2,
        workdir: Path | None = None,
        queue: Mapping[str, str] | None = None,
        general: Mapping[str, str] | None = None,
        redis: Mapping[str, str] | None = None,
        replicas: int = 1,
    ) -> None:
        check_plans(plans)
        self.plans = list(plans)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="cb-site-"))
        self.sentinels = SentinelSet(replicas=replicas)
        self.services: dict[str, SiteService] = {}
        for plan in self.plans:
            for i in range(per_pbx):
                letter = "abcdefghijklmnopqrstuvwxyz"[i]
                name = f"{plan.name}-{letter}"
                self.services[name] = SiteService(
                    name=name,
                    plan=plan,
                    app=KIT_APP if i == 0 else f"{KIT_APP}-{letter}",
                    sentinels=self.sentinels.sentinel_addresses,
                    workdir=self.workdir / name,
                    queue=dict(queue or {}),
                    general=dict(general or {}),
                    redis=dict(redis or {}),
                )

    def pbx(self, name: str) -> PbxPlan:
        return next(p for p in self.plans if p.name == name)

    def hosting(self, queue: str) -> PbxPlan:
        """The PBX that hosts ``queue``."""
        return next(p for p in self.plans if queue in p.queues)

    def services_of(self, pbx: str) -> list[SiteService]:
        return [s for s in self.services.values() if s.plan.name == pbx]

    def store(self) -> tuple[Redis, CallbackStore]:
        """A view of the site's store on the master the Sentinels name now, for assertions.

        Close the client when done. (Blocking: asks a sentinel.)
        """
        client = connect_redis(f"redis://127.0.0.1:{self.sentinels.current_master_port()}/0")
        return client, CallbackStore(client, prefix=PREFIX)

    def start_pbx(self, plan: PbxPlan) -> None:
        """(Re)start one PBX with only its own queues (blocking: run it in a thread)."""
        extra = self.workdir / f"pbx-{plan.name}"
        extra.mkdir(parents=True, exist_ok=True)
        (extra / "queues.conf").write_text(queues_conf(plan.queues))
        plan.sandbox.start(extra=extra)

    async def start(self) -> None:
        """Sentinels and PBXs (in parallel), then every service; each ready when this returns."""
        await asyncio.gather(
            asyncio.to_thread(self.sentinels.start),
            *(asyncio.to_thread(self.start_pbx, plan) for plan in self.plans),
        )
        await asyncio.gather(*(s.start() for s in self.services.values()))

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every service, stop the PBXs and the Redis set; the services' exit codes."""
        codes: dict[str, int | None] = {}
        results = await asyncio.gather(
            *(s.stop() for s in self.services.values()), return_exceptions=True
        )
        for name, result in zip(self.services, results, strict=True):
            codes[name] = result if not isinstance(result, BaseException) else -1
        await asyncio.gather(*(asyncio.to_thread(p.sandbox.stop) for p in self.plans))
        await asyncio.to_thread(self.sentinels.close)
        return codes

    async def __aenter__(self) -> Site:
        try:
            await self.start()
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())

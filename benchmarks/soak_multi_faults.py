"""Faults of the multi-PBX soak, on a seeded schedule, one at a time.

- sentinel_failover: SIGKILL the Redis master; the sentinels promote the replica; the old
  master comes back empty and becomes the new replica (the next failover needs it);
- pbx_restart: ``core restart now`` on one PBX (alternating) while calls are up: every call
  on it ends; the harness reconnects and the agents' phones report idle again;
- ari_drop: the PBX closes one instance's ARI WebSocket (``ari shutdown websocket session``);
- ami_drop: the PBX kicks one of the services' AMI sessions (``manager kick session``);
- service_kill: SIGKILL one service instance, restart it 0.5-2.5 s later.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from soak_multi_load import Link
from soak_multi_topology import PbxDef, Sentinels, ServiceNode, agents_ready, wait_booted

FAULT_TYPES = ("sentinel_failover", "pbx_restart", "ari_drop", "ami_drop", "service_kill")


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the load started
    kind: str


def fault_schedule(duration: float, per_type: int, seed: int, kill_before: float) -> list[Fault]:
    """``per_type`` of each kind, one per slot of the run, random within the slot."""
    rng = random.Random(seed * 7919 + 13)
    lo, hi = max(5.0, 0.06 * duration), 0.9 * duration
    out = []
    for kind in FAULT_TYPES:
        top = kill_before * duration if kind == "service_kill" else hi
        span = (top - lo) / per_type
        out += [Fault(lo + span * (k + rng.uniform(0.1, 0.9)), kind) for k in range(per_type)]
    return sorted(out, key=lambda f: f.at)


def ari_sessions(pbx: PbxDef) -> dict[str, str]:
    """``{session id: apps}`` from ``ari show websocket sessions``."""
    rows = {}
    for line in pbx.box.cli("ari show websocket sessions").splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.fullmatch(r"[0-9a-f-]{36}", parts[0]):
            rows[parts[0]] = parts[-1]
    return rows


def ami_sessions(pbx: PbxDef) -> list[str]:
    """File descriptors of the services' AMI sessions (``manager show connected``)."""
    out = []
    for line in pbx.box.cli("manager show connected").splitlines():
        parts = line.split()
        if parts and parts[0] == pbx.box.ami_user and len(parts) > 4:
            out.append(parts[4])
    return out


class FaultInjector:
    def __init__(self, *, pbxs: list[PbxDef], links: dict[str, Link], sentinels: Sentinels,
                 nodes: list[ServiceNode], seed: int,
                 on_restart: Callable[[str, float], None]) -> None:  # fmt: skip
        self.pbxs = pbxs
        self.links = links
        self.sentinels = sentinels
        self.nodes = nodes
        self.rng = random.Random(seed * 31 + 7)
        self._on_restart = on_restart
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []
        self.failures: list[str] = []
        self._restarts = 0

    async def run(self, schedule: list[Fault], start: float) -> None:
        for fault in schedule:
            await asyncio.sleep(max(0.0, start + fault.at - time.time()))
            t0 = time.time()
            try:
                detail = await self.inject(fault.kind)
            except Exception as exc:
                self.failures.append(f"{fault.kind} at {t0 - start:.0f} s: {exc!r}")
                continue
            self.counts[fault.kind] += 1
            self.log.append((t0 - start, fault.kind, f"{detail} ({time.time() - t0:.1f} s)"))
            print(f"[{t0 - start:6.0f} s] fault {fault.kind}: {detail}", flush=True)

    async def inject(self, kind: str) -> str:
        if kind == "sentinel_failover":
            return await asyncio.to_thread(self.sentinels.failover)
        if kind == "pbx_restart":
            pbx = self.pbxs[self._restarts % len(self.pbxs)]
            self._restarts += 1
            return await self.restart_pbx(pbx)
        if kind == "ari_drop":
            node = self.rng.choice(self.nodes)
            return await self._ari_drop(node)
        if kind == "ami_drop":
            pbx = self.rng.choice(self.pbxs)
            sessions = await asyncio.to_thread(ami_sessions, pbx)
            if not sessions:
                raise RuntimeError(f"no service AMI session on {pbx.name}")
            fd = self.rng.choice(sessions)
            await asyncio.to_thread(pbx.box.cli, f"manager kick session {fd}")
            return f"{pbx.name} fd {fd} of {len(sessions)} sessions"
        if kind == "service_kill":
            node = self.rng.choice(self.nodes)
            down = self.rng.uniform(0.5, 2.5)
            async with node.lock:
                await node.kill()
                await asyncio.sleep(down)
                await node.start()
            ok = await node.ready(45.0)
            if not ok:
                self.failures.append(f"{node.name} not ready 45 s after its SIGKILL restart")
            return f"{node.name} down {down:.1f} s, ready again: {ok}"
        raise ValueError(kind)

    async def _ari_drop(self, node: ServiceNode) -> str:
        sessions = await asyncio.to_thread(ari_sessions, node.pbx)
        old = [sid for sid, apps in sessions.items() if node.app in apps.split(",")]
        if not old:
            raise RuntimeError(f"no ARI session of {node.app} on {node.pbx.name}")
        await asyncio.to_thread(node.pbx.box.cli, f"ari shutdown websocket session {old[0]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            now = await asyncio.to_thread(ari_sessions, node.pbx)
            if any(node.app in apps.split(",") and sid != old[0] for sid, apps in now.items()):
                return f"{node.name} ({node.app} on {node.pbx.name}) back"
        self.failures.append(f"{node.name}: ARI not back within 30 s after the drop")
        return f"{node.name}: not back within 30 s"

    async def restart_pbx(self, pbx: PbxDef) -> str:
        link = self.links[pbx.name]
        link.up = False
        t0 = time.time()
        await asyncio.to_thread(pbx.box.cli, "core restart now")
        await link.close()
        self._on_restart(pbx.name, t0)
        booted = await asyncio.to_thread(wait_booted, pbx.box, 90.0)
        if not booted:
            raise RuntimeError(f"{pbx.name} did not boot within 90 s of core restart now")
        await asyncio.to_thread(agents_ready, pbx)
        await link.open()
        ready = [await n.ready(60.0) for n in self.nodes if n.pbx is pbx]
        return f"{pbx.name} back in {time.time() - t0:.1f} s, services ready {ready}"

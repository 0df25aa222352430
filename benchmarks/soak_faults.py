"""Seeded fault schedule and its injection: Redis restarts, socket drops, SIGKILL, 2nd instance."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from soak_procs import ServiceProcess, wait_app
from soak_settings import APP_A, APP_B, FAULT_TYPES, SoakSettings

from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.sim.simpbx.sim import SimAsterisk


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the load started
    kind: str


def fault_schedule(settings: SoakSettings) -> list[Fault]:
    """``faults_per_type`` of each kind, stratified over the run (one per slot, random within).

    SIGKILLs happen only in the first ``kill_before`` of the run so that the last incarnation
    of the service lives long enough to judge its memory; a second instance stops before the
    load does.
    """
    rng = random.Random(settings.seed * 7919 + 13)
    d = settings.duration
    lo, hi = max(3.0, 0.08 * d), 0.92 * d
    out: list[Fault] = []
    for kind in FAULT_TYPES:
        top = hi
        if kind == "service_kill":
            top = settings.kill_before * d
        elif kind == "second_instance":
            top = min(hi, d - settings.second_instance_s[1] - 2.0)
        n = settings.faults_per_type
        span = (top - lo) / n
        out += [Fault(lo + span * (k + rng.uniform(0.1, 0.9)), kind) for k in range(n)]
    return sorted(out, key=lambda f: f.at)


class FaultInjector:
    """Executes the schedule; counts and logs what it did."""

    def __init__(
        self,
        *,
        sim: SimAsterisk,
        redis: RedisProcess,
        service: ServiceProcess,
        second: ServiceProcess,
        settings: SoakSettings,
        on_ami_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.sim = sim
        self._on_ami_drop = on_ami_drop
        self.redis = redis
        self.service = service
        self.second = second
        self.settings = settings
        self.rng = random.Random(settings.seed * 31 + 7)
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []  # (wall time, kind, detail)
        self.failures: list[str] = []  # a fault that could not be carried out as planned
        self._second_until: float | None = None
        self._second_kill = False

    async def run(self, schedule: list[Fault], start: float) -> None:
        """Inject each fault at its time (loop clock, ``start`` = load start), in order."""
        loop = asyncio.get_running_loop()
        for fault in schedule:
            await asyncio.sleep(max(0.0, start + fault.at - loop.time()))
            await self.inject(fault.kind)

    async def inject(self, kind: str) -> None:
        detail = ""
        if kind == "redis_restart":
            down = self.rng.uniform(0.2, 2.0)
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.redis.start)
            detail = f"down {down:.1f} s"
        elif kind == "ari_drop":
            clean = self.rng.random() < 0.3
            await wait_app(self.sim, APP_A, 10.0)
            detail = f"{self.sim.drop_ari_sockets(clean=clean)} sockets, clean={clean}"
        elif kind == "ami_drop":
            await self._wait_ami()
            detail = f"{self.sim.drop_ami_connections()} connections"
            self._on_ami_drop()
        elif kind == "service_kill":
            down = self.rng.uniform(0.5, 2.5)
            async with self.service.lock:
                await self.service.kill()
                await asyncio.sleep(down)
                await self.service.start()
                if not await wait_app(self.sim, APP_A):
                    self.failures.append("service did not come back within 30 s after SIGKILL")
            detail = f"down {down:.1f} s"
        elif kind == "second_instance":
            if self.second.running:
                self.failures.append("second instance still running when the next one was due")
                return
            lo, hi = self.settings.second_instance_s
            window = self.rng.uniform(lo, hi)
            self._second_kill = self.rng.random() < 0.5
            await self.second.start()
            if not await wait_app(self.sim, APP_B):
                self.failures.append("second instance did not connect within 30 s")
            self._second_until = asyncio.get_running_loop().time() + window
            detail = (
                f"for {window:.0f} s, ends with {'SIGKILL' if self._second_kill else 'SIGTERM'}"
            )
        self.counts[kind] += 1
        self.log.append((time.time(), kind, detail))

    async def tend_second(self) -> None:
        """Stop the second instance when its window is over (runs until cancelled)."""
        while True:
            await asyncio.sleep(0.5)
            if (
                self._second_until is not None
                and asyncio.get_running_loop().time() >= self._second_until
            ):
                await self.stop_second()

    async def stop_second(self) -> None:
        self._second_until = None
        async with self.second.lock:
            if not self.second.running:
                return
            if self._second_kill:
                await self.second.kill()
            else:
                await self.second.stop()

    async def _wait_ami(self) -> None:
        try:
            await self.sim.wait_for(lambda: any(c.authed for c in self.sim.ami.connections), 10.0)
        except TimeoutError:
            self.failures.append("no AMI connection to drop within 10 s")

"""The soak at scale: 2 real Asterisk 22 PBXs x 2 service instances, one Redis Sentinel set.

    python benchmarks/soak.py --topology multi --duration 1800 [--rate 0.4] [--seed 1]

(as root, the sandbox chroot built; PBX instances and ports from --pbx NAME:ARI:AMI:AGI, twice).
What runs: two sandbox PBXs, each with its own two queues (customer_first and agent_first, two
self-driving agents each; soak_multi_topology.py), a Redis master + replica + three sentinels,
and four service processes (two per PBX, each PBX's own queues, ``min_replicas = 1``). The
harness places callers on both PBXs (soak_multi_load.py) and watches both PBXs' AMI
(soak_multi_observer.py). Faults at seeded times (soak_multi_faults.py): Sentinel failovers,
``core restart now`` of a PBX, ARI and AMI socket drops, SIGKILL + restart of a service. Then
arrivals stop, the load drains, and the invariants are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from pbx_rig import machine
from redis.asyncio import Redis
from soak_checks import read_store
from soak_multi_faults import FaultInjector, fault_schedule
from soak_multi_load import Link, Load
from soak_multi_observer import Observer
from soak_multi_report import MultiReport, build_report
from soak_multi_topology import (
    PREFIX,
    PbxDef,
    QueueTiming,
    Sentinels,
    ServiceNode,
    pbx_defs,
    service_config,
    start_pbx,
)
from soak_procs import ProcSample, read_proc

from callback_ari.errors import StoreError
from callback_ari.models import State
from callback_ari.sim.sandbox import Sandbox
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.store.store import CallbackStore

APPS = ("callback-ari", "callback-ari-b")  # the kit's Stasis app takes the offers


@dataclass(frozen=True, slots=True)
class MultiSettings:
    boxes: tuple[Sandbox, ...]
    duration: float = 1800.0
    rate: float = 0.4  # inbound calls per second, all queues of all PBXs together
    seed: int = 1
    faults_per_type: int = 4
    kill_before: float = 0.6
    patience_mean: float = 60.0
    max_inbound: int = 40
    drain_timeout: float = 300.0
    sample_interval: float = 5.0
    timing: QueueTiming = field(default_factory=QueueTiming)
    workdir: Path | None = None
    progress: bool = True


async def run_multi(s: MultiSettings) -> MultiReport:
    workdir = s.workdir or Path(tempfile.mkdtemp(prefix="cbari-soakm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pbxs = pbx_defs(list(s.boxes))
    sentinels = Sentinels()
    await asyncio.to_thread(sentinels.start)
    try:
        for pbx in pbxs:
            await asyncio.to_thread(start_pbx, pbx, workdir)
        try:
            return await _run(s, pbxs, sentinels, workdir)
        finally:
            for pbx in pbxs:
                await asyncio.to_thread(pbx.box.stop)
    finally:
        await asyncio.to_thread(sentinels.close, workdir / "redis")


def _nodes(s: MultiSettings, pbxs: list[PbxDef], sentinels: Sentinels,
           workdir: Path) -> list[ServiceNode]:  # fmt: skip
    nodes = []
    for pbx in pbxs:
        for app, suffix in zip(APPS, "ab", strict=True):
            name = f"{pbx.name}{suffix}"
            port = free_port()
            text = service_config(pbx, sentinels, app=app, instance=name, http_port=port,
                                  timing=s.timing)  # fmt: skip
            nodes.append(ServiceNode(name, pbx, app, text, port, workdir))
    return nodes


async def _pump(link: Link, observer: Observer, load: Load) -> None:
    """Feed one PBX's harness events, in the order the harness read them, to the checks."""
    offset = time.time() - time.monotonic()
    name = link.pbx.name
    while True:
        h = link.harness
        if h is None or not link.up:
            await asyncio.sleep(0.2)
            continue
        watch = h.watch
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async with watch.changed:
                    await watch.changed.wait_for(lambda w=watch: bool(w.ari or w.ami))
        ari, ami = list(watch.ari), list(watch.ami)
        watch.ari.clear()
        watch.ami.clear()
        items = [(float(e["_t"]), 0, e) for e in ari] + [(float(m["_t"]), 1, m) for m in ami]
        items.sort(key=lambda x: (x[0], x[1]))
        for at, is_ami, item in items:
            t = at + offset
            try:
                if is_ami:
                    observer.on_ami(name, item, t)
                    if item.get("Event") == "UserEvent" and item.get("QueueStatus") == "CALLBACK":
                        load.on_promise(item.get("Uniqueid", ""), t)
                else:
                    load.on_ari(name, item)
            except Exception as exc:  # a bug of the soak's own: reported, the run goes on
                observer.harness_error(f"{name} {item.get('Event') or item.get('type')}: {exc!r}")
        observer.judge(time.time())


async def _sample(s: MultiSettings, nodes: list[ServiceNode], out: list[ProcSample],
                  wall0: float) -> None:  # fmt: skip
    """/proc of every instance; an instance that died on its own is restarted (and reported)."""
    while True:
        for node in nodes:
            async with node.lock:
                if not node.check_alive():
                    await node.start()
                pid = node.proc.pid if node.running and node.proc is not None else None
                reading = read_proc(pid) if pid is not None else None
            if reading is not None and pid is not None:
                out.append(ProcSample(time.time() - wall0, node.name, pid, *reading))
        await asyncio.sleep(s.sample_interval)


async def _progress(load: Load, observer: Observer, injector: FaultInjector,
                    wall0: float) -> None:  # fmt: skip
    while True:
        await asyncio.sleep(60)
        faults = " ".join(f"{k}={v}" for k, v in sorted(injector.counts.items()))
        print(
            f"[{time.time() - wall0:6.0f} s] calls {load.stats['calls']} promised "
            f"{load.stats['promised']} attempts {observer.counts['attempts']} bridged "
            f"{observer.counts['customer_first_bridged']}+{observer.counts['agent_first_bridged']}"
            f" violations {len(observer.violations)} | {faults}",
            flush=True,
        )


async def _store(sentinels: Sentinels) -> tuple[Redis, CallbackStore]:
    url = await asyncio.to_thread(sentinels.master_url)
    client = Redis.from_url(url, decode_responses=True)
    return client, CallbackStore(client, prefix=PREFIX)


async def _drain(s: MultiSettings, sentinels: Sentinels, observer: Observer) -> tuple[float, str]:
    t0 = time.time()
    while True:
        live = -1
        with contextlib.suppress(StoreError, OSError, RuntimeError):
            client, store = await _store(sentinels)
            try:
                counts = await store.counts()
                live = sum(n for per in counts.values() for st, n in per.items()
                           if State(st).is_live)  # fmt: skip
            finally:
                await client.aclose()
        calls = observer.live_calls()
        if live == 0 and calls == 0:
            return time.time() - t0, ""
        if time.time() - t0 >= s.drain_timeout:
            return time.time() - t0, f"{live} live callbacks, {calls} calls up"
        await asyncio.sleep(2.0)


async def _run(s: MultiSettings, pbxs: list[PbxDef], sentinels: Sentinels,
               workdir: Path) -> MultiReport:  # fmt: skip
    queues = {q.name: (p.name, q.mode, len(q.agents)) for p in pbxs for q in p.queues}
    links = {p.name: Link(p) for p in pbxs}
    origin: dict[str, float] = {}
    observer = Observer(queues, origin)
    observer.trace = (workdir / "ami-trace.txt").open("a")
    load = Load(links, observer, rate=s.rate, seed=s.seed, patience_mean=s.patience_mean,
                max_inbound=s.max_inbound)  # fmt: skip
    load.origin = origin
    nodes = _nodes(s, pbxs, sentinels, workdir)
    injector = FaultInjector(pbxs=pbxs, links=links, sentinels=sentinels, nodes=nodes,
                             seed=s.seed, on_restart=observer.pbx_restarted)  # fmt: skip
    procs: list[ProcSample] = []
    wall0 = time.time()
    for link in links.values():
        await link.open()
    try:
        for node in nodes:
            await node.start()
        for node in nodes:
            if not await node.ready(60.0):
                raise RuntimeError(f"{node.name} not ready within 60 s: see {node.log_path}")
        start = time.time()
        async with asyncio.TaskGroup() as tg:
            background = [tg.create_task(_pump(link, observer, load)) for link in links.values()]
            background.append(tg.create_task(_sample(s, nodes, procs, wall0)))
            if s.progress:
                background.append(tg.create_task(_progress(load, observer, injector, wall0)))
            schedule = fault_schedule(s.duration, s.faults_per_type, s.seed, s.kill_before)
            faults = tg.create_task(injector.run(schedule, start))
            await load.arrivals(start + s.duration)
            load_end = time.time() - wall0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(180):
                    await asyncio.shield(faults)
            if not faults.done():
                injector.failures.append("fault schedule still running 180 s after the load")
                faults.cancel()
            drain_s, left = await _drain(s, sentinels, observer)
            observer.finish()
            client, store = await _store(sentinels)
            try:
                view = await read_store(client, store)
            finally:
                await client.aclose()
            await load.cancel_all()
            for task in background:
                task.cancel()
    finally:
        statuses = [await node.stop() for node in nodes]
        observer.trace.close()
        for link in links.values():
            await link.close()
    return build_report(s, workdir, pbxs, load, observer, injector, procs, view,
                        (load_end, drain_s, left), nodes, statuses)  # fmt: skip


def main_multi(a: argparse.Namespace, argv: list[str]) -> int:
    """``soak.py --topology multi``: run, print (and write) the report; 0 when clean."""
    boxes = []
    for spec in a.pbx:
        name, ari, ami, agi = spec.split(":")
        boxes.append(Sandbox(name, int(ari), int(ami), int(agi)))
    if len(boxes) < 2:
        print("soak --topology multi: give two sandbox instances with --pbx", file=sys.stderr)
        return 2
    if (reason := boxes[0].unavailable()) is not None:
        print(f"soak --topology multi: {reason}", file=sys.stderr)
        return 2
    changes: dict[str, object] = {
        k: v
        for k, v in {
            "duration": a.duration,
            "rate": a.rate,
            "seed": a.seed,
            "faults_per_type": a.faults_per_type,
            "patience_mean": a.patience_mean,
            "drain_timeout": a.drain_timeout,
            "workdir": a.workdir,
        }.items()
        if v is not None
    }
    settings = replace(MultiSettings(tuple(boxes)), **changes)  # type: ignore[arg-type]
    words = argv[1:] if argv and argv[0].endswith(".py") else argv
    command = "python benchmarks/soak.py " + " ".join(words)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"soak (multi): {settings.duration:.0f} s, rate {settings.rate}/s, seed "
          f"{settings.seed}, started {started}", flush=True)  # fmt: skip
    report = asyncio.run(run_multi(settings))
    text = "\n".join([f"command: {command}", f"started: {started}", *machine(), "",
                      report.render()])  # fmt: skip
    print(text, flush=True)
    if a.out is not None:
        a.out.write_text(text + "\n")
    return 0 if report.violations == 0 else 1

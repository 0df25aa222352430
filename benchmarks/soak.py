"""Soak test: the real service under a generated call load and injected faults, then invariants.

    python benchmarks/soak.py --duration 1800 --seed 1 [--rate 3.2] [--agents 12] [--short]
    python benchmarks/soak.py --topology multi --pbx s1:28688:25638:25173 \
        --pbx s2:28788:25738:25273 --duration 1800 --rate 0.4     (real PBXs: soak_multi.py)

What runs where: this process hosts the simulated Asterisk (``SimAsterisk``, our dialplan kit
loaded) and a private ``redis-server`` with AOF on; the service runs as a real subprocess
(``python -m callback_ari -c <generated config> run``) so it can be SIGKILLed, and for a while
a second instance (its own instance_id and Stasis app, same Redis) runs beside it. Calls arrive
as a Poisson process; agents talk for exponential times and have a wrap-up; callers accept,
decline, hang up mid-dialogue or mistype their number. Faults come at seeded random times:
redis-server restart, ARI socket drop, AMI socket drop, service SIGKILL + restart, second
instance. Then arrivals stop, the load drains, and the invariants are checked and printed as a
table (check | value | violations). Exit status 0 when nothing was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from redis.asyncio import Redis
from soak_checks import read_store
from soak_faults import FaultInjector, fault_schedule
from soak_load import Load, Scheduler
from soak_observer import Observer
from soak_procs import ProcSample, ServiceProcess, config_text, read_proc, wait_app
from soak_report import SoakReport, build_report
from soak_settings import APP_A, APP_B, FAULT_TYPES, PREFIX, QueueSpec, SoakSettings, short_settings

from callback_ari.errors import StoreError
from callback_ari.models import State
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore

REPO = Path(__file__).resolve().parent.parent
KIT = (REPO / "dialplan" / "extensions_callback.conf").read_text()


def kit_text(settings: SoakSettings) -> str:
    """Our dialplan kit, its ``support`` blocks copied for every queue, plus the inbound route."""
    parts = [KIT.replace("support", q.name) for q in settings.queues]
    parts.append("[from-trunk]")
    parts += [f"exten => {q.name},1,Goto(callback-queue,{q.name},1)" for q in settings.queues]
    return "\n".join(parts) + "\n"


async def run_soak(settings: SoakSettings) -> SoakReport:
    """Run the whole soak and return its report."""
    workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="cbari-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    redis = RedisProcess(appendonly=True)
    await asyncio.to_thread(redis.start)
    try:
        async with SimAsterisk(time_scale=settings.time_scale, dialplan=kit_text(settings)) as sim:
            return await _run(settings, sim, redis, workdir)
    finally:
        await asyncio.to_thread(redis.close)


async def _run(
    settings: SoakSettings, sim: SimAsterisk, redis: RedisProcess, workdir: Path
) -> SoakReport:
    s = settings
    for q in s.queues:
        members = [f"{q.name}{i}" for i in range(1, q.agents + 1)]
        sim.add_queue(q.name, members, wrapup=s.wrapup / s.time_scale, handle_time=None)
    sched = Scheduler()
    load = Load(sim, s, sched)
    observer = Observer(
        sim,
        s,
        apps=(APP_A, APP_B),
        queue_of=load.queue_of,
        on_prompt=load.on_prompt,
        on_agent_connect=load.on_agent_connect,
    )
    load.observer = observer
    services = []
    for name, app in (("a", APP_A), ("b", APP_B)):
        cfg = workdir / f"service-{name}.conf"
        cfg.write_text(config_text(s, sim, redis.url, app=app, instance=f"soak-{name}"))
        log_path = workdir / f"service-{name}.log"
        services.append(ServiceProcess(name, app, cfg, log_path, on_start=observer.new_epoch))
    svc_a, svc_b = services
    sim.pbx.ami_listeners.append(observer.on_ami)
    injector = FaultInjector(
        sim=sim,
        redis=redis,
        service=svc_a,
        second=svc_b,
        settings=s,
        on_ami_drop=observer.note_resync,
    )
    procs: list[ProcSample] = []
    client = Redis.from_url(redis.url, decode_responses=True)
    store = CallbackStore(client, prefix=PREFIX)
    wall0 = time.time()
    try:
        await svc_a.start()
        if not await wait_app(sim, APP_A):
            raise RuntimeError(f"the service did not connect within 30 s: see {svc_a.log_path}")
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.TaskGroup() as tg:
            background = [
                tg.create_task(sim.wait_for(observer.poll, 10.0**9)),
                tg.create_task(sched.run()),
                tg.create_task(_sample(s, sim, (svc_a, svc_b), procs, wall0)),
                tg.create_task(injector.tend_second()),
                tg.create_task(_compact(observer)),
            ]
            if s.progress:
                background.append(
                    tg.create_task(_progress(s, load, observer, injector, procs, wall0))
                )
            faults = tg.create_task(injector.run(fault_schedule(s), start))
            await load.arrivals(start + s.duration)
            load_end = time.time() - wall0
            with contextlib.suppress(TimeoutError):  # the last fault is due before the end
                async with asyncio.timeout(120):
                    await asyncio.shield(faults)
            if not faults.done():
                injector.failures.append("fault schedule still running 120 s after the load")
                faults.cancel()
            await injector.stop_second()
            drain_s, left = await _drain(s, store, observer)
            view = await read_store(client, store)
            observer.finish()
            for task in background:
                task.cancel()
    finally:
        await client.aclose()
        final_status = await svc_a.stop()
        await svc_b.stop()
    return build_report(
        s,
        workdir,
        load,
        observer,
        injector,
        procs,
        view,
        (load_end, drain_s, left),
        (svc_a, svc_b),
        final_status,
    )


async def _sample(
    s: SoakSettings,
    sim: SimAsterisk,
    services: tuple[ServiceProcess, ...],
    out: list[ProcSample],
    wall0: float,
) -> None:
    """Read /proc of every running instance; restart the main one if it died on its own."""
    while True:
        for svc in services:
            async with svc.lock:
                if not svc.check_alive() and svc.name == "a":
                    await svc.start()
                    await wait_app(sim, APP_A)
                pid = svc.pid
                reading = read_proc(pid) if svc.running and pid is not None else None
            if reading is not None and pid is not None:
                out.append(ProcSample(time.time() - wall0, svc.name, pid, *reading))
        await asyncio.sleep(s.sample_interval)


async def _compact(observer: Observer) -> None:
    while True:
        await asyncio.sleep(30)
        observer.compact()


async def _progress(
    s: SoakSettings,
    load: Load,
    observer: Observer,
    injector: FaultInjector,
    procs: list[ProcSample],
    wall0: float,
) -> None:
    while True:
        await asyncio.sleep(60)
        rss = next((p.rss_kb for p in reversed(procs) if p.instance == "a"), 0)
        faults = " ".join(f"{k}={injector.counts[k]}" for k in FAULT_TYPES)
        print(
            f"[{time.time() - wall0:6.0f} s] calls {load.stats['calls']} confirmations "
            f"{load.stats['confirmations']} originates {observer.counts['originates']} "
            f"violations {len(observer.violations)} rss(a) {rss / 1024:.1f} MB | {faults}",
            flush=True,
        )


async def _drain(s: SoakSettings, store: CallbackStore, observer: Observer) -> tuple[float, str]:
    """Wait until no callback is live and no call is up (or the drain timeout)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        try:
            counts = await store.counts()
            live = sum(n for per in counts.values() for st, n in per.items() if State(st).is_live)
        except StoreError:
            live = -1
        calls, callbacks = observer.live("inbound"), observer.live("callback")
        if live == 0 and calls == 0 and callbacks == 0:
            return loop.time() - t0, ""
        if loop.time() - t0 >= s.drain_timeout:
            return (
                loop.time() - t0,
                f"{live} live callbacks, {calls} callers, {callbacks} callback calls",
            )
        await asyncio.sleep(0.5)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--topology", choices=("sim", "multi"), default="sim",
        help="sim: the simulated PBX (default); multi: 2 real sandbox PBXs x 2 instances + "
        "Sentinel (soak_multi.py)",
    )  # fmt: skip
    p.add_argument(
        "--pbx", action="append", default=[], metavar="NAME:ARI:AMI:AGI",
        help="multi: a sandbox instance and its ports (give it twice)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="multi: also write the report to this file")
    p.add_argument("--short", action="store_true", help="the CI variant (about a minute)")
    p.add_argument("--duration", type=float, help="seconds of arrivals (default 1800)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, help="calls per second (default 3.2)")
    p.add_argument("--agents", type=int, help="agents in all, split by queue share (default 12)")
    p.add_argument("--handle-mean", type=float, help="mean agent talk time, s (default 2)")
    p.add_argument("--patience-mean", type=float, help="mean patience while holding, s")
    p.add_argument("--time-scale", type=float, help="fake PBX time scale (default 0.1)")
    p.add_argument("--faults-per-type", type=int, help="injections of each fault type (default 6)")
    p.add_argument("--drain-timeout", type=float)
    p.add_argument("--log-level", choices=("debug", "info", "warning"))
    p.add_argument("--workdir", type=Path, help="where configs and service logs go")
    return p


def parse_args(argv: list[str] | None = None) -> SoakSettings:
    a = _parser().parse_args(argv)
    base = short_settings(a.seed) if a.short else SoakSettings(seed=a.seed)
    changes: dict[str, object] = {
        k: v
        for k, v in {
            "duration": a.duration,
            "rate": a.rate,
            "handle_mean": a.handle_mean,
            "patience_mean": a.patience_mean,
            "time_scale": a.time_scale,
            "faults_per_type": a.faults_per_type,
            "drain_timeout": a.drain_timeout,
            "log_level": a.log_level,
            "workdir": a.workdir,
        }.items()
        if v is not None
    }
    if a.agents is not None:
        changes["queues"] = _split_agents(base.queues, a.agents)
    return replace(base, **changes)  # type: ignore[arg-type]


def _split_agents(queues: tuple[QueueSpec, ...], total: int) -> tuple[QueueSpec, ...]:
    counts = [max(1, round(total * q.share)) for q in queues]
    counts[-1] = max(1, total - sum(counts[:-1]))
    return tuple(replace(q, agents=n) for q, n in zip(queues, counts, strict=True))


def main(argv: list[str] | None = None) -> int:
    if _parser().parse_args(argv).topology == "multi":
        from soak_multi import main_multi  # imported only here: it needs the real sandbox

        return main_multi(_parser().parse_args(argv), sys.argv if argv is None else argv)
    settings = parse_args(argv)
    print(
        f"soak: {settings.duration:.0f} s, seed {settings.seed}, rate {settings.rate}/s", flush=True
    )
    report = asyncio.run(run_soak(settings))
    print(report.render(), flush=True)
    return 0 if report.violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

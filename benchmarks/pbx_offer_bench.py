"""Real PBX: how many concurrent offer dialogues Asterisk plus the service carry, and whose CPU.

Run (as root, the sandbox built): CBPBX_NAME=... CBPBX_ARI_PORT=... CBPBX_AMI_PORT=...
    python benchmarks/pbx_offer_bench.py [--ramp 50,100,200,300,400]

For each N of the ramp: a freshly started sandbox Asterisk 22, an emptied redis-server and the
service as its own process (pbx_rig.py, with its loop-lag probe). Both agents are busy, so no
callback is dialled. N callers ring the inbound route (support@incoming, through the kit) over
``--spread`` seconds (10 s; a dialogue lasts 25-50 s, so they all talk at once), hold past
``offer_threshold`` (1 s), are withdrawn and offered a callback, and play the dialogue on real
prompts: 70 % accept their caller ID, 20 % key another number, 10 % decline and go back to the
queue. Like a person, each caller answers the prompt it has just heard (KEYS: what it presses
when a prompt's last sound ends, seen on the harness's ARI link), so a prompt played again
after a slow key is answered again rather than derailing the script.

A dialogue fails unless it ends as planned before the deadline: a callback stored for the
right number and the caller hung up by the service, or (declined) the caller back in the queue
with nothing stored. Loop lag: the service's probe samples during the load. CPU: Asterisk,
the service and this driver (the callers' phones, which in real life are not on this box),
from /proc/PID/stat, as a share of one core over the load window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field

import aiohttp
from offer_bench import Lag, behaviour, cpu_s
from pbx_rig import (
    ControlProbe,
    ServiceProcess,
    asterisk_pid,
    asterisk_version,
    cpu_of,
    free_port,
    lag_between,
    machine,
    new_workdir,
    pct,
    renice,
    service_config,
)

from callback_ari.config.loader import parse_config
from callback_ari.sim.sandbox import AmiMessage, Harness, JsonDict, Sandbox, SandboxError
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.store.store import CallbackStore, connect_redis

QUEUE = "support"
DEADLINE_S = 180.0  # per ramp step, from the first caller placed
PLACING = 20  # callers placed at once (ARI POSTs in flight)
IDLE_S = 2.0


# The last sound of a prompt (dialogue defaults, offer_prompts.py) -> what each plan presses.
KEYS: dict[str, dict[str, str]] = {
    "sound:digits/1": {"accept": "1", "other": "1", "decline": "2"},  # the offer
    "sound:vm-calldiffnum": {"accept": "1", "other": "2"},  # confirm, or 2: another number
    "sound:vm-then-pound": {"other": "#"},  # enter the number, then pound
}


def caller_number(i: int) -> str:
    return f"20255{i:05d}"


def keyed_number(i: int) -> str:
    return f"31255{i:05d}"


@dataclass(slots=True)
class Call:
    index: int
    plan: str
    handset: str  # the harness's end (;1): keys are pressed here
    placed: float
    offered: float = 0.0
    ended: float = 0.0
    keyed: bool = False
    queue_joins: int = 0
    hung_up: bool = False
    error: str = ""  # a request of this caller's phone that Asterisk refused


@dataclass(slots=True)
class Step:
    """One ramp step's measurements."""

    callers: int
    failed: list[str] = field(default_factory=list)
    results: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    idle: Lag = field(default_factory=lambda: Lag(()))
    load: Lag = field(default_factory=lambda: Lag(()))
    control: Lag = field(default_factory=lambda: Lag(()))  # the probe alone, same window
    window_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core over the window
    dialogue_s: list[float] = field(default_factory=list)
    peak: int = 0  # the most dialogues under way at the same moment

    @property
    def ok(self) -> bool:
        return not self.failed and self.load.pct(0.99) < 50


class Callers:
    """Plays N callers through the kit's offer path, reading the harness's event logs once."""

    def __init__(self, h: Harness, count: int, tag: str, spread_s: float) -> None:
        self.h = h
        self.count = count
        self.tag = tag
        self.spread_s = spread_s
        self.calls: dict[str, Call] = {}  # by the PBX-side channel id (;2, runs the dialplan)
        self._ari = len(h.watch.ari)
        self._ami = len(h.watch.ami)
        self._open = count

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._place_all())
            while self._open:
                async with self.h.watch.changed:
                    await self.h.watch.changed.wait_for(self._news)
                for event in self._new_ari():
                    self._on_ari(event, tg)
                for message in self._new_ami():
                    self._on_ami(message, tg)

    async def _place_all(self) -> None:
        gate = asyncio.Semaphore(PLACING)

        async def place(i: int) -> None:
            await asyncio.sleep(i * self.spread_s / self.count)
            async with gate:
                handset = f"{self.tag}-{i}"
                self.calls[handset + "-pbx"] = Call(i, behaviour(i), handset, time.monotonic())
                call = self.calls[handset + "-pbx"]
                await self._act(call, self.h.call_in(caller_number(i), channel_id=handset,
                                                     name=f"Caller {i}"))  # fmt: skip
                if not self.h.subscribe_all and not call.error:
                    await self._act(call, self.h.subscribe(handset + "-pbx"))

        async with asyncio.TaskGroup() as tg:
            for i in range(self.count):
                tg.create_task(place(i))

    async def _act(self, call: Call, request: Awaitable[object]) -> None:
        """One request of a caller's phone; a refusal fails that caller, not the run."""
        try:
            await request
        except (SandboxError, aiohttp.ClientError) as exc:
            call.error = call.error or repr(exc)
            self._finish(call)

    def _news(self) -> bool:
        return len(self.h.watch.ari) > self._ari or len(self.h.watch.ami) > self._ami

    def _new_ari(self) -> list[JsonDict]:
        new: list[JsonDict] = self.h.watch.ari[self._ari :]
        self._ari += len(new)
        return new

    def _new_ami(self) -> list[AmiMessage]:
        new: list[AmiMessage] = self.h.watch.ami[self._ami :]
        self._ami += len(new)
        return new

    def _finish(self, call: Call) -> None:
        if not call.ended:
            call.ended = time.monotonic()
            self._open -= 1

    def _on_ari(self, event: JsonDict, tg: asyncio.TaskGroup) -> None:
        kind = event.get("type")
        if kind == "PlaybackStarted":
            call = self.calls.get(event["playback"]["target_uri"].removeprefix("channel:"))
            if call is not None and not call.offered:
                call.offered = event["_t"]
        elif kind == "PlaybackFinished" and event["playback"]["state"] == "done":
            call = self.calls.get(event["playback"]["target_uri"].removeprefix("channel:"))
            if call is None:
                return
            keys = KEYS.get(event["playback"]["media_uri"], {}).get(call.plan)
            if keys == "2" and call.keyed:
                keys = "1"  # the number read back is the one this caller keyed: confirm it
            elif keys == "#":
                keys = keyed_number(call.index) + "#"
                call.keyed = True
            if keys is not None:
                tg.create_task(self._act(call, self.h.press(call.handset, keys)))
        elif kind == "ChannelDestroyed":
            call = self.calls.get(event["channel"]["id"])
            if call is not None:
                call.hung_up = True
                self._finish(call)

    def _on_ami(self, message: AmiMessage, tg: asyncio.TaskGroup) -> None:
        if message.get("Event") != "QueueCallerJoin":
            return
        call = self.calls.get(message.get("Uniqueid", ""))
        if call is None:
            return
        call.queue_joins += 1
        if call.queue_joins == 2:  # back in the queue after the offer: this caller is done
            self._finish(call)
            tg.create_task(self._act(call, self.h.hang_up(call.handset)))


async def check(calls: dict[str, Call], store: CallbackStore) -> list[str]:
    """Why each dialogue that did not end as planned failed."""
    failed = []
    for channel, call in calls.items():
        wanted = (
            None if call.plan == "decline"
            else keyed_number(call.index) if call.plan == "other"
            else caller_number(call.index)
        )  # fmt: skip
        stored = await store.find_live(QUEUE, wanted or caller_number(call.index))
        if call.error:
            failed.append(f"{channel} ({call.plan}): {call.error}")
        elif not call.ended:
            failed.append(f"{channel} ({call.plan}): still open at the deadline")
        elif wanted is None and (call.queue_joins < 2 or stored is not None):
            failed.append(f"{channel} (decline): joins {call.queue_joins}, stored {stored}")
        elif wanted is not None and (stored is None or call.queue_joins != 1):
            failed.append(f"{channel} ({call.plan}): stored {stored}, joins {call.queue_joins}")
    return failed


def peak(calls: list[Call]) -> int:
    """The most callers in their dialogue (first prompt heard, not yet done) at one moment."""
    edges = sorted(
        [(c.offered, 1) for c in calls if c.offered] + [(c.ended, -1) for c in calls if c.offered]
    )
    most = now = 0
    for _at, change in edges:
        now += change
        most = max(most, now)
    return most


@dataclass(frozen=True, slots=True)
class Options:
    subscribe_all: bool
    spread_s: float
    nice: int


async def step(box: Sandbox, redis_url: str, n: int, opts: Options) -> Step:
    box.start()
    work = new_workdir()
    text = service_config(box, redis_url, free_port(), work / "service.log",
                          offer_threshold="1", max_pending="100000", response_timeout="8",
                          digit_timeout="3", announce_wait="no")  # fmt: skip
    config = parse_config(text, env={})
    service = ServiceProcess(text, config.http.port, work, nice=opts.nice)
    client = connect_redis(redis_url)
    await client.flushall()
    store = CallbackStore(client, prefix=config.redis.prefix)
    result = Step(n)
    ast = asterisk_pid(box)
    if opts.nice:
        renice(ast, opts.nice)
    samples: list[tuple[float, float]] = []
    control: list[tuple[float, float]] = []
    probe = ControlProbe(work, nice=opts.nice)
    probe.start()
    try:
        # The harness is the callers' phones: with subscribeAll and every AMI class it costs
        # Asterisk more than the calls do, so by default it watches only what it needs.
        events = "on" if opts.subscribe_all else "agent"
        async with Harness(
            box, subscribe_all=opts.subscribe_all, ami_classes=events, http_connections=20
        ) as h:
            await h.device("agent1", "INUSE")
            await h.device("agent2", "INUSE")
            await service.start()
            idle_from = time.monotonic()
            await asyncio.sleep(IDLE_S)
            callers = Callers(h, n, f"bench{n}x{int(time.time()) % 10**6}", opts.spread_s)
            start = time.monotonic()
            cpu0 = (cpu_of(ast), cpu_of(service.pid), cpu_s())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DEADLINE_S):
                    await callers.run()
            end = time.monotonic()
            cpu1 = (cpu_of(ast), cpu_of(service.pid), cpu_s())
            result.window_s = end - start
            result.cpu = {
                name: (b - a) / result.window_s
                for name, a, b in zip(("asterisk", "service", "driver"), cpu0, cpu1, strict=True)
            }
            result.failed = await check(callers.calls, store)
            result.dialogue_s = [c.ended - c.offered for c in callers.calls.values() if c.ended]
            result.peak = peak(list(callers.calls.values()))
            for call in callers.calls.values():
                if not call.hung_up:
                    await h.hang_up(call.handset)
    finally:
        with contextlib.suppress(Exception):
            samples = await service.stop()
        control = await probe.stop()
        await client.aclose()
    result.idle = lag_between(samples, idle_from, idle_from + IDLE_S)
    result.load = lag_between(samples, start, end)
    result.control = lag_between(control, start, end)
    entries = service.log_entries()
    result.results = Counter(
        str(e.get("result")).removeprefix("continued:")
        for e in entries
        if e.get("event") == "offer.finished"
    )
    result.errors = service.errors()
    return result


def report_header(version: str, opts: Options) -> None:
    print(f"\npbx_offer_bench against the sandbox PBX, {version}")
    print(f"  callers ring in over {opts.spread_s:g} s; nice {opts.nice} for Asterisk, the "
          f"service and the control probe; harness subscribeAll {opts.subscribe_all}")  # fmt: skip
    for line in machine():
        print(f"  {line}")
    print(
        f"\n{'callers':>7} {'peak':>5} {'failed':>6} {'stored':>6} {'declined':>8} {'errors':>6}"
        f" {'lag p50':>7} {'lag p99':>7} {'lag max':>7} {'ctl p99':>7} {'window s':>8}"
        f" {'dlg p50 s':>9} {'ast CPU':>7} {'svc CPU':>7} {'drv CPU':>7}  result"
    )


def report_row(s: Step) -> None:
    verdict = "PASS" if s.ok else "FAIL"
    print(
        f"{s.callers:>7} {s.peak:>5} {len(s.failed):>6} {s.results['stored']:>6}"
        f" {s.results['declined']:>8} {len(s.errors):>6}"
        f" {s.load.pct(0.5):>7.2f} {s.load.pct(0.99):>7.2f} {max(s.load.samples, default=0):>7.2f}"
        f" {s.control.pct(0.99):>7.2f}"
        f" {s.window_s:>8.1f} {pct(s.dialogue_s, 0.5):>9.1f}"
        f" {s.cpu.get('asterisk', 0):>7.0%} {s.cpu.get('service', 0):>7.0%}"
        f" {s.cpu.get('driver', 0):>7.0%}  {verdict}",
        flush=True,
    )


async def bench(ramp: list[int], redis_url: str, opts: Options) -> int:
    box = Sandbox.from_env()
    if (reason := box.unavailable()) is not None:
        print(f"pbx_offer_bench: {reason}", file=sys.stderr)
        return 2
    box.start()
    report_header(asterisk_version(box), opts)
    steps = []
    try:
        for n in ramp:
            s = await step(box, redis_url, n, opts)
            steps.append(s)
            report_row(s)
            for line in s.failed[:5]:
                print(f"          failed: {line}")
            if s.errors:
                print(f"          service errors: {Counter(s.errors).most_common(5)}")
            if len(s.failed) > n // 2:
                break  # far past the limit: the next step would only say so again
    finally:
        box.stop()
    print(f"\nidle loop lag before the load (last step): p50 {steps[-1].idle.pct(0.5):.2f} ms, "
          f"p99 {steps[-1].idle.pct(0.99):.2f} ms")  # fmt: skip
    passing = [s.callers for s in steps if s.ok]
    print(f"largest N with 0 failed dialogues and loop lag p99 < 50 ms: "
          f"{max(passing) if passing else 'none'} (target >= 200)")  # fmt: skip
    print("peak: the most dialogues under way at one moment (first prompt heard, not yet done)")
    print("lag: the service's probe during the load; ctl: the same probe alone in its own process")
    print("CPU: share of one core over the load window (2 cores = 200 %)")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--ramp", default="50,100,200,300,400")
    parser.add_argument(
        "--nice", type=int, default=0,
        help="nice value for Asterisk, the service and the control probe (e.g. -10 on a machine "
        "shared with other work; the driver keeps its own)",
    )  # fmt: skip
    parser.add_argument(
        "--spread", type=float, default=10.0,
        help="seconds over which the N callers ring in (0: all in the same instant)",
    )  # fmt: skip
    parser.add_argument(
        "--subscribe-all", action="store_true",
        help="the harness watches everything (ARI subscribeAll, every AMI class), as the tests do",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ramp = [int(n) for n in args.ramp.split(",")]
    redis = RedisProcess()
    redis.start()
    try:
        opts = Options(args.subscribe_all, args.spread, args.nice)
        status = asyncio.run(bench(ramp, redis.url, opts))
    finally:
        redis.close()
    sys.exit(status)


if __name__ == "__main__":
    main()

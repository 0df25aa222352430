"""Benchmark dispatch latency: member-ready AMI event written -> originate request at the fake ARI.

    python benchmarks/dispatch_bench.py [--sizes 1000,10000,100000] [--reps 500]

Three processes, so no two of them share an event loop: a private redis-server, the simulated
PBX (this script with ``--fake``, driven over its stdin/stdout) and the service under test (the
real ``Service`` in this process, JSON logging at info into /dev/null as in production).

For each size the queue is filled with that many pending callbacks and the service started.
One repetition: the fake turns agent1 NOT_INUSE and timestamps the QueueMemberStatus it writes
to the service's AMI socket; the service claims the first callback in Redis and originates; an
aiohttp middleware in the fake timestamps the POST /ari/channels as it arrives and at once turns
agent1 INUSE again (so exactly one callback is dialled). The dialled number does not exist: the
call fails at once and the callback leaves the queue (max_attempts = 1). Both timestamps come from
one clock in the fake process.

The floor, measured in the same run between repetitions from this process: one Redis PING on a
fresh-from-the-pool connection plus one POST /ari/channels (the same request the service sends)
to the fake over a kept-alive loopback connection, answer included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

import aiohttp

QUEUE = "support"
AGENT = "Custom:agent1"
PREFIX = "dbench"
SELF = os.path.abspath(__file__)
KIT = os.path.join(os.path.dirname(SELF), "..", "dialplan", "extensions_callback.conf")


# --- the fake, in its own process ---------------------------------------------------------


async def run_fake(kit: str) -> None:
    """Serve the simulated PBX; commands on stdin, one JSON answer per line on stdout."""
    import structlog
    from aiohttp import web

    from callback_ari.sim.simpbx.sim import SimAsterisk

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    sim = SimAsterisk(time_scale=0.01, dialplan=kit)
    state: dict[str, Any] = {"t0": None, "waiter": None, "strays": 0}

    def on_ami(name: str, fields: list[tuple[str, str]]) -> None:
        wanted = name == "QueueMemberStatus" and ("Status", "1") in fields
        if wanted and state["waiter"] is not None and state["t0"] is None:
            state["t0"] = time.perf_counter()  # after the AMI server wrote it (listed first)

    @web.middleware
    async def stamp(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/ari/channels":
            t1 = time.perf_counter()
            if request.query.get("app") != "bench-floor":
                waiter = state["waiter"]
                if waiter is not None and not waiter.done():
                    waiter.set_result(t1)
                else:
                    state["strays"] += 1
                sim.set_devstate(AGENT, "INUSE")  # one member, one callback
        return await handler(request)

    sim.ari.app.middlewares.append(stamp)
    sim.pbx.ami_listeners.append(on_ami)
    async with sim:
        sim.add_queue(QUEUE, ["agent1"])
        sim.set_devstate(AGENT, "INUSE")
        reply({"ari_url": sim.ari_url, "ami_port": sim.ami_port})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line == "quit":
                break
            if line == "ready":
                state["t0"] = None
                state["waiter"] = loop.create_future()
                sim.set_devstate(AGENT, "NOT_INUSE")
                try:
                    async with asyncio.timeout(5):
                        t1 = await state["waiter"]
                    reply({"dt_us": (t1 - state["t0"]) * 1e6, "strays": state["strays"]})
                except TimeoutError:
                    sim.set_devstate(AGENT, "INUSE")
                    reply({"error": "no originate within 5 s", "strays": state["strays"]})
                state["waiter"] = None


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the service side ------------------------------------------------------------------------


class Fake:
    """The fake PBX child process and its command pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.ari_url = str(info["ari_url"])
        self.ami_port = int(info["ami_port"])

    async def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the fake PBX process died")
        result: dict[str, Any] = json.loads(answer)
        return result


@contextlib.asynccontextmanager
async def fake_process() -> AsyncIterator[Fake]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, SELF, "--fake",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = await proc.stdout.readline()
        yield Fake(proc, json.loads(first))
        with contextlib.suppress(ConnectionError):
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            await proc.stdin.drain()
        async with asyncio.timeout(10):
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def config_text(fake: Fake, redis_url: str) -> str:
    lines = [
        "[general]", "app = callback-ari", "instance_id = bench", "lease_seconds = 60",
        "resync_interval = 3600", "log_level = info", "log_format = json",
        "[ari]", f"url = {fake.ari_url}", "username = cbuser", "password = cbpass",
        "[ami]", "host = 127.0.0.1", f"port = {fake.ami_port}", "username = cbami",
        "secret = cbpass", "ping_interval = 30", "ping_timeout = 5",
        "[redis]", f"url = {redis_url}", f"prefix = {PREFIX}",
        "[http]", "enabled = no", "[agi]", "enabled = no",
        f"[queue:{QUEUE}]", "offer_threshold = 0", "withdraw = no",
        "dial_template = PJSIP/{number}@trunk", "allow_patterns = _NXXNXXXXXX",
        "max_attempts = 1", "ring_timeout = 5", "max_age = 2592000", "max_pending = 1000000",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


async def fill(redis_url: str, n: int) -> float:
    """Flush Redis and enqueue ``n`` pending callbacks (numbers the fake does not know)."""
    from callback_ari.store.store import CallbackStore, connect_redis

    client = connect_redis(redis_url)
    try:
        await client.flushall()
        store = CallbackStore(client, prefix=PREFIX)
        t0 = time.perf_counter()
        base = 1_700_000_000_000
        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    store.enqueue(
                        queue=QUEUE, number=f"312{6000000 + i:07d}", join_time_ms=base + i
                    )
                    for i in range(start, min(n, start + 500))
                )
            )
        return time.perf_counter() - t0
    finally:
        await client.aclose()


async def wait_until(predicate: Any, what: str, limit: float = 10.0) -> None:
    try:
        async with asyncio.timeout(limit):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise RuntimeError(f"timed out waiting for {what}") from None


async def measure_size(
    fake: Fake, redis_url: str, size: int, reps: int, warmup: int
) -> dict[str, Any]:
    from callback_ari.config.loader import parse_config
    from callback_ari.service.service import Service
    from callback_ari.store.store import connect_redis

    fill_s = await fill(redis_url, size)
    log(f"size {size}: filled in {fill_s:.1f} s")
    service = Service(parse_config(config_text(fake, redis_url), env={}))
    task = asyncio.create_task(service.run())
    latencies: list[float] = []
    floors: list[float] = []
    pings: list[float] = []
    posts: list[float] = []
    strays = 0
    floor_redis = connect_redis(redis_url)
    auth = {"Authorization": "Basic " + base64.b64encode(b"cbuser:cbpass").decode()}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            await wait_until(
                lambda: (
                    service.started.is_set()
                    and all(service.readiness().values())
                    and bool(service.watcher.members(QUEUE))
                ),
                "the service to connect",
            )
            dispatcher = service.dispatcher
            assert dispatcher is not None
            for i in range(warmup + reps):
                answer = await fake.command("ready")
                if "error" in answer:
                    raise RuntimeError(f"rep {i}: {answer['error']}")
                strays = int(answer["strays"])
                # the attempt ends at once (no such number); the member is busy again
                await wait_until(
                    lambda: (
                        dispatcher.in_flight(QUEUE) == 0
                        and service.watcher.ready_members(QUEUE) == 0
                    ),
                    "the attempt to end",
                )
                await asyncio.sleep(0.005)  # let the pass that follows a released attempt finish
                t0 = time.perf_counter()
                await floor_redis.ping()
                t1 = time.perf_counter()
                params = {
                    "endpoint": "PJSIP/3120000000@trunk",
                    "app": "bench-floor",
                    "timeout": "5",
                    "channelId": f"floor-{size}-{i}",
                }
                async with http.post(
                    f"{fake.ari_url}/ari/channels",
                    params=params,
                    json={"variables": {"CB_ID": "x", "CB_PRIO": "10"}},
                ) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                t2 = time.perf_counter()
                if i >= warmup:
                    latencies.append(answer["dt_us"])
                    pings.append((t1 - t0) * 1e6)
                    posts.append((t2 - t1) * 1e6)
                    floors.append((t2 - t0) * 1e6)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await floor_redis.aclose()
    return {
        "size": size,
        "lat": latencies,
        "floor": floors,
        "ping": pings,
        "post": posts,
        "strays": strays,
    }


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(results: list[dict[str, Any]], out: TextIO) -> None:
    out.write(
        "pending   reps  ready->originate µs    floor µs (PING+POST)   PING p50  POST p50"
        "   p50/floor  p99<10ms  strays\n"
        "                   p50      p99          p50      p99\n"
    )
    for r in results:
        lat, floor = r["lat"], r["floor"]
        ratio = statistics.median(lat) / statistics.median(floor)
        out.write(
            f"{r['size']:>7}  {len(lat):>5}  {pct(lat, 50):>7.0f}  {pct(lat, 99):>7.0f}"
            f"      {pct(floor, 50):>7.0f}  {pct(floor, 99):>7.0f}"
            f"     {pct(r['ping'], 50):>7.0f}  {pct(r['post'], 50):>7.0f}"
            f"   {ratio:>8.2f}x  {'yes' if pct(lat, 99) < 10_000 else 'NO':>8}  {r['strays']:>6}\n"
        )
    out.flush()


async def main(sizes: list[int], reps: int, warmup: int) -> list[dict[str, Any]]:
    from callback_ari.sim.simpbx.redis_process import RedisProcess

    redis = RedisProcess()
    redis.start()
    results = []
    try:
        async with fake_process() as fake:
            for size in sizes:
                results.append(await measure_size(fake, redis.url, size, reps, warmup))
                r = results[-1]
                log(
                    f"size {size}: p50 {pct(r['lat'], 50):.0f} µs, "
                    f"floor p50 {pct(r['floor'], 50):.0f} µs"
                )
    finally:
        redis.close()
    return results


def bench(sizes: list[int], reps: int, warmup: int) -> None:
    """Run every size and print the table; the service's JSON log lines go to /dev/null."""
    from callback_ari.logs import configure_logging

    configure_logging("json", "info")
    real_stdout = sys.stdout
    with open(os.devnull, "w") as devnull:
        sys.stdout = devnull  # produced as in production, written nowhere
        try:
            results = asyncio.run(main(sizes, reps, warmup))
        finally:
            sys.stdout = real_stdout
    table(results, sys.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake:
        with open(KIT) as kit_file:
            kit_text = kit_file.read()
        asyncio.run(run_fake(kit_text))
    else:
        bench([int(s) for s in args.sizes.split(",")], args.reps, args.warmup)

"""Benchmark the callback store: enqueue/claim throughput and latency, memory per pending callback.

    python benchmarks/store_bench.py [--sizes 1000,10000,100000] [--samples 2000]

Starts its own redis-server (never a shared one). For each size it fills the queue to that many
pending callbacks (64 concurrent enqueues: throughput), records Redis ``used_memory`` per pending
callback with the audit stream and after deleting it, then times ``--samples`` sequential
enqueue + claim pairs at that level (each claimed callback is then marked connected, so the level
stays put), and finally drains with 16 concurrent claimers (throughput). A plain PING round trip
on the same client, measured in the same run, is the floor every latency is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from callback_ari.models import Outcome
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.store.store import CallbackStore, connect_redis

Q = "bench"
BASE_MS = 1_800_000_000_000


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (0..100) in microseconds of samples in seconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1e6


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def used_memory(client: Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def concurrently(n: int, width: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Run op(0..n-1) with ``width`` in flight; returns ops per second."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await op(i)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(width):
            tg.create_task(lane())
    return n / (time.perf_counter() - t0)


async def run_size(client: Redis, n: int, samples: int) -> dict[str, float]:
    await client.flushall()
    store = CallbackStore(client, prefix="bench")
    serial = iter(range(10**9))

    async def enqueue(i: int) -> object:
        k = next(serial)
        join = BASE_MS + (k * 7919) % 3_600_000  # join times not in insertion order
        return await store.enqueue(
            queue=Q, number=f"+1555{k:07d}", caller_name="Bench Caller",
            source_channel=f"PJSIP/trunk-{k:08x}", join_time_ms=join,
        )  # fmt: skip

    await store.enqueue(queue=Q, number="+10000000000", join_time_ms=BASE_MS)  # create the indexes
    await concurrently(640, 64, lambda i: client.ping())  # open the pool's connections first:
    await client.memory_purge()  # each client costs Redis memory that is not per callback
    before = await used_memory(client)
    enq_rate = await concurrently(n, 64, enqueue)
    with_audit = await used_memory(client)
    await client.delete(store.key("audit"))
    without_audit = await used_memory(client)

    enq_lat: list[float] = []
    claim_lat: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await enqueue(0)
        t1 = time.perf_counter()
        cb = await store.claim_next(Q, owner="bench", lease_ms=60_000)
        t2 = time.perf_counter()
        assert cb is not None
        await store.record_outcome(
            cb.id, "bench", outcome=Outcome.CONNECTED, retry_at_ms=None, max_attempts=1
        )
        enq_lat.append(t1 - t0)
        claim_lat.append(t2 - t1)
    ping_lat = await timed(client.ping, samples)

    async def claim(i: int) -> object:
        return await store.claim_next(Q, owner="bench", lease_ms=60_000)

    claim_rate = await concurrently(min(n, 20_000), 16, claim)
    return {
        "n": n,
        "enq_rate": enq_rate,
        "enq_p50": pct(enq_lat, 50),
        "enq_p99": pct(enq_lat, 99),
        "claim_rate": claim_rate,
        "claim_p50": pct(claim_lat, 50),
        "claim_p99": pct(claim_lat, 99),
        "ping_p50": pct(ping_lat, 50),
        "ping_p99": pct(ping_lat, 99),
        "claim_mean": statistics.fmean(claim_lat) * 1e6,
        "mem_audit": (with_audit - before) / n,
        "mem_plain": (without_audit - before) / n,
    }


def print_table(rows: list[dict[str, float]]) -> None:
    head = (
        f"{'pending':>8} | {'enq/s':>7} {'enq p50':>8} {'enq p99':>8} | {'claim/s':>7} "
        f"{'clm p50':>8} {'clm p99':>8} | {'ping p50':>8} {'ping p99':>8} | "
        f"{'clm/ping p50':>12} {'clm/ping p99':>12} | {'B/pend+audit':>12} {'B/pend':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{int(r['n']):>8} | {r['enq_rate']:>7.0f}"
            f" {r['enq_p50']:>6.0f}us {r['enq_p99']:>6.0f}us"
            f" | {r['claim_rate']:>7.0f} {r['claim_p50']:>6.0f}us {r['claim_p99']:>6.0f}us"
            f" | {r['ping_p50']:>6.0f}us {r['ping_p99']:>6.0f}us"
            f" | {r['claim_p50'] / r['ping_p50']:>11.2f}x {r['claim_p99'] / r['ping_p99']:>11.2f}x"
            f" | {r['mem_audit']:>12.0f} {r['mem_plain']:>7.0f}"
        )
    first, last = rows[0], rows[-1]
    print()
    print(
        f"flatness {int(first['n'])} -> {int(last['n'])} pending: claim p50 x"
        f"{last['claim_p50'] / first['claim_p50']:.2f}, claim p99 x"
        f"{last['claim_p99'] / first['claim_p99']:.2f}, enqueue p50 x"
        f"{last['enq_p50'] / first['enq_p50']:.2f} (target <= 1.5)"
    )
    print(
        "targets: claim p99 < 1000us on loopback; <= 700 bytes per pending callback "
        "(B/pend+audit includes the audit stream entry of its enqueue)"
    )


async def main(sizes: list[int], samples: int) -> None:
    with RedisProcess() as proc:
        client = connect_redis(proc.url)
        try:
            info = await client.info("server")
            print(f"redis-server {info['redis_version']} on 127.0.0.1, {samples} samples per size")
            print()
            rows = [await run_size(client, n, samples) for n in sizes]
        finally:
            await client.aclose()
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="pending levels, comma separated"
    )
    parser.add_argument("--samples", type=int, default=2000, help="timed operations per size")
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.samples))

"""Measure the loss window of a Redis failover: promised callbacks a promoted replica lacks.

    python benchmarks/replica_loss.py [--rounds 5] [--writers 16] [--seconds 2]

Per round: a private master and replica (redis-server on free loopback ports); ``--writers``
concurrent clients enqueue callbacks through ``CallbackStore`` as fast as they can; after a
random moment in ``--seconds`` the master is SIGKILLed, the replica is promoted (REPLICAOF NO
ONE, what Sentinel does) and every callback the store acknowledged ("stored" for a caller) is
looked up on it. Each round runs with ``min_replicas`` 0 and 1. Printed: acknowledged writes,
lost ones, the enqueue latency (p50/p99), and for 0 the window in ms (lost / write rate).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callback_ari.errors import StoreError
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.sim.simpbx.redis_sentinel import info
from callback_ari.store.store import CallbackStore, connect_redis


async def one_round(min_replicas: int, writers: int, seconds: float) -> dict[str, float]:
    master = RedisProcess()
    replica = RedisProcess(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    master.start()
    replica.start()
    try:
        while info(replica.port).get("master_link_status") != "up":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        client = connect_redis(master.url)
        store = CallbackStore(client, min_replicas=min_replicas, replica_timeout_ms=1000)
        acked: list[str] = []
        latencies: list[float] = []
        refused = 0

        async def writer(w: int) -> None:
            nonlocal refused
            n = 0
            while True:
                n += 1
                started = time.perf_counter()
                try:
                    cb, _ = await store.enqueue(
                        queue="support", number=f"+1202555{w:02d}{n:05d}"[-12:], join_time_ms=1
                    )
                except StoreError:
                    refused += 1  # the caller would go back to the queue: no promise
                    await asyncio.sleep(0.01)
                    continue
                latencies.append(time.perf_counter() - started)
                acked.append(cb.id)

        kill_after = random.uniform(seconds / 2, seconds)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(writer(w)) for w in range(writers)]
            await asyncio.sleep(kill_after)
            master.stop(kill=True)
            killed_at = len(acked)
            await asyncio.sleep(0.2)  # let in-flight calls fail
            for task in tasks:
                task.cancel()
        with contextlib.suppress(Exception):
            await client.aclose()
        promoted = connect_redis(replica.url)
        await promoted.replicaof("NO", "ONE")
        pipe = promoted.pipeline(transaction=False)
        for cb_id in acked:
            pipe.exists(f"{{cbari}}:cb:{cb_id}")
        present = await pipe.execute()
        await promoted.aclose()
        lost = sum(1 for p in present if not p)
        rate = killed_at / kill_after if kill_after else 0.0
        return {
            "acked": len(acked),
            "lost": lost,
            "refused": refused,
            "rate": rate,
            "window_ms": 1000 * lost / rate if rate else 0.0,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
            "p99_ms": 1000 * statistics.quantiles(latencies, n=100)[98]
            if len(latencies) > 100
            else 0.0,
        }
    finally:
        replica.close()
        master.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print("min_replicas round  acked  lost refused  writes/s  window_ms  p50_ms  p99_ms")
    for min_replicas in (0, 1):
        for r in range(args.rounds):
            res = await one_round(min_replicas, args.writers, args.seconds)
            print(
                f"{min_replicas:12d} {r:5d} {res['acked']:6.0f} {res['lost']:5.0f} "
                f"{res['refused']:7.0f} {res['rate']:9.0f} {res['window_ms']:10.2f} "
                f"{res['p50_ms']:7.2f} {res['p99_ms']:7.2f}"
            )


if __name__ == "__main__":
    asyncio.run(main())

"""Many workers in several processes claim from one store: no double claims, no lost callbacks."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callback_ari.models import Outcome, State
from callback_ari.store.store import CallbackStore, connect_redis

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
Q = "support"
LEASE_MS = 60_000
Claim = tuple[str, int, int]  # id, attempt, join_time_ms


# --- the worker process ---------------------------------------------------------------------


def worker_main(argv: list[str]) -> None:
    """Entry point of a worker process: ``url name workers mode hold``.

    ``drain``: every asyncio worker claims until the queue is empty, marking each connected, then
    one JSON line per worker lists its claims in order. ``hold``: every worker claims ``hold``
    callbacks, the process prints ``HOLDING <ids>`` and waits to be killed.
    """
    url, name, workers, mode, hold = argv[0], argv[1], int(argv[2]), argv[3], int(argv[4])
    print("READY", flush=True)
    sys.stdin.readline()  # "GO": every process starts together
    asyncio.run(_worker_process(url, name, workers, mode, hold))


async def _worker_process(url: str, name: str, workers: int, mode: str, hold: int) -> None:
    client = connect_redis(url)
    store = CallbackStore(client)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(_worker(store, f"{name}-w{i}", mode, hold)) for i in range(workers)
            ]
        if mode == "hold":
            held = [cb_id for t in tasks for cb_id, _, _ in t.result()]
            print("HOLDING " + json.dumps(held), flush=True)
            await asyncio.Event().wait()  # until SIGKILL
        for i, t in enumerate(tasks):
            print(json.dumps({"worker": f"{name}-w{i}", "claims": t.result()}), flush=True)
    finally:
        await client.aclose()


async def _worker(store: CallbackStore, owner: str, mode: str, hold: int) -> list[Claim]:
    claims: list[Claim] = []
    while mode == "drain" or len(claims) < hold:
        cb = await store.claim_next(Q, owner=owner, lease_ms=LEASE_MS)
        if cb is None:
            break
        claims.append((cb.id, cb.attempts, cb.join_time_ms))
        if mode == "drain":
            await store.record_outcome(
                cb.id, owner, outcome=Outcome.CONNECTED, retry_at_ms=None, max_attempts=3,
                attempt=cb.attempts,
            )  # fmt: skip
    return claims


# --- the tests --------------------------------------------------------------------------------


async def _spawn(
    url: str, name: str, workers: int, mode: str, hold: int = 0
) -> asyncio.subprocess.Process:
    code = "import sys; from tests.test_store_concurrency import worker_main as m; m(sys.argv[1:])"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url, name, str(workers), mode, str(hold),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert line.strip() == b"READY", line
    return proc


async def _finish(proc: asyncio.subprocess.Process) -> dict[str, list[Claim]]:
    out, err = await proc.communicate(b"GO\n")
    assert proc.returncode == 0, err.decode()[-3000:]
    rows = [json.loads(line) for line in out.decode().splitlines()]
    return {r["worker"]: [tuple(c) for c in r["claims"]] for r in rows}


async def _fill(store: CallbackStore, joins: list[int]) -> set[str]:
    ids: set[str] = set()
    for start in range(0, len(joins), 50):
        batch = await asyncio.gather(*(
            store.enqueue(queue=Q, number=f"+1555{start + i:07d}", join_time_ms=j)
            for i, j in enumerate(joins[start:start + 50])
        ))  # fmt: skip
        ids.update(cb.id for cb, _ in batch)
    return ids


async def test_eight_workers_in_two_processes_claim_each_callback_exactly_once(
    redis_url: str,
) -> None:
    client = connect_redis(redis_url)
    store = CallbackStore(client)
    try:
        rng = random.Random(7)
        base = time.time_ns() // 1_000_000 - 3_600_000
        joins = [base + rng.randrange(3_000_000) for _ in range(10_000)]
        enqueued = await _fill(store, joins)
        assert len(enqueued) == 10_000
        async with asyncio.timeout(40):
            procs = [await _spawn(redis_url, f"p{n}", 4, "drain") for n in range(2)]
            results = await asyncio.gather(*(_finish(p) for p in procs))
        per_worker = {w: c for r in results for w, c in r.items()}
        assert len(per_worker) == 8
        all_claims = [c for claims in per_worker.values() for c in claims]
        assert len(all_claims) == 10_000
        assert {cb_id for cb_id, _, _ in all_claims} == enqueued  # each exactly once, none lost
        assert {attempt for _, attempt, _ in all_claims} == {1}
        for worker, claims in per_worker.items():
            assert claims, f"{worker} claimed nothing: no contention was tested"
            order = [join for _, _, join in claims]
            assert order == sorted(order), f"{worker} claimed out of join-time order"
        assert (await store.counts())[Q]["connected"] == 10_000
    finally:
        await client.aclose()


async def test_sigkilled_worker_loses_nothing_and_its_attempts_stay_counted(
    redis_url: str,
) -> None:
    client: aioredis.Redis = connect_redis(redis_url)
    store = CallbackStore(client)
    try:
        base = time.time_ns() // 1_000_000 - 600_000
        enqueued = await _fill(store, [base + i for i in range(500)])
        async with asyncio.timeout(40):
            victim = await _spawn(redis_url, "victim", 4, "hold", hold=10)
            assert victim.stdin is not None and victim.stdout is not None
            victim.stdin.write(b"GO\n")
            await victim.stdin.drain()
            line = await victim.stdout.readline()
            assert line.startswith(b"HOLDING "), line
            held = set(json.loads(line.removeprefix(b"HOLDING ")))
            victim.kill()  # SIGKILL: no finally blocks, no lease release
            await victim.communicate()
        assert len(held) == 40
        assert {(await store.get(i)).state for i in held} == {State.DIALING}
        now = time.time_ns() // 1_000_000
        assert await store.reclaim_expired_leases(now_ms=now) == []  # leases still running
        reclaimed = await store.reclaim_expired_leases(now_ms=now + LEASE_MS + 1000)
        assert set(reclaimed) == held
        for cb_id in held:
            cb = await store.get(cb_id)
            assert (cb.state, cb.attempts, cb.lease_owner) == (State.PENDING, 1, "")
        async with asyncio.timeout(40):
            claims = await _finish(await _spawn(redis_url, "rescuer", 4, "drain"))
        after = [c for cs in claims.values() for c in cs]
        assert {cb_id for cb_id, _, _ in after} == enqueued
        assert len({(cb_id, attempt) for cb_id, attempt, _ in after}) == len(after) == 500
        assert {cb_id for cb_id, attempt, _ in after if attempt == 2} == held
    finally:
        await client.aclose()

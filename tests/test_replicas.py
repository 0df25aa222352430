"""No promise on one copy: ``[redis] min_replicas`` against a real master and replica.

The store answers "stored" only after ``WAIT`` saw a replica take the write; otherwise it
raises NotReplicated and cancels the record, so nothing half-promised is ever dialled. The
last test kills the master right after a write the replica never got, with and without the
setting: that is the loss window the README documents.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from callback_ari.errors import NotReplicated
from callback_ari.models import State
from callback_ari.sim.simpbx.redis_process import RedisProcess, free_port
from callback_ari.sim.simpbx.redis_sentinel import info
from callback_ari.store.store import CallbackStore, connect_redis

Q = "support"
JOIN = 1_800_000_000_000


@pytest.fixture
def pair() -> Iterator[tuple[RedisProcess, RedisProcess]]:
    master = RedisProcess()
    replica = RedisProcess(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    try:
        master.start()
        replica.start()
        _wait_link(replica)
        yield master, replica
    finally:
        if replica.pid is not None:
            os.kill(replica.pid, signal.SIGCONT)  # a frozen replica would not stop
        replica.close()
        master.close()


def _wait_link(replica: RedisProcess) -> None:
    import time

    deadline = time.monotonic() + 10
    while info(replica.port).get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica did not sync"
        time.sleep(0.02)


@pytest.fixture
async def clients(
    pair: tuple[RedisProcess, RedisProcess],
) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    master, replica = pair
    m, r = connect_redis(master.url), connect_redis(replica.url)
    try:
        yield m, r
    finally:
        await m.aclose()
        await r.aclose()


async def _enqueue(store: CallbackStore, number: str) -> tuple[str, bool]:
    cb, created = await store.enqueue(queue=Q, number=number, join_time_ms=JOIN)
    return cb.id, created


async def test_stored_means_the_replica_has_it(
    clients: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    m, r = clients
    store = CallbackStore(m, min_replicas=1, replica_timeout_ms=2000)
    for i in range(20):
        cb_id, created = await _enqueue(store, f"55510{i:02d}")
        assert created
        # read the replica at once: WAIT already saw it take the write
        assert await r.hget(f"{{cbari}}:cb:{cb_id}", "s") == "pending"


async def test_no_replica_means_no_promise_and_the_record_is_cancelled(
    pair: tuple[RedisProcess, RedisProcess], clients: tuple[aioredis.Redis, aioredis.Redis]
) -> None:
    _, replica = pair
    m, _ = clients
    store = CallbackStore(m, min_replicas=1, replica_timeout_ms=200)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)  # alive for the master, but confirms nothing
    with pytest.raises(NotReplicated) as caught:
        await _enqueue(store, "5551234")
    assert (caught.value.wanted, caught.value.confirmed) == (1, 0)
    [cb] = await store.list()
    assert cb.state is State.CANCELLED
    assert (await store.audit())[-1]["cause"] == "not_replicated"
    assert await store.find_live(Q, "5551234") is None  # the caller may ask again later
    os.kill(replica.pid, signal.SIGCONT)
    cb_id, created = await _enqueue(store, "5551234")
    assert created and cb_id != cb.id


@pytest.mark.parametrize("min_replicas", [0, 1])
async def test_master_killed_right_after_an_unreplicated_write(
    pair: tuple[RedisProcess, RedisProcess],
    clients: tuple[aioredis.Redis, aioredis.Redis],
    min_replicas: int,
) -> None:
    """The loss window: with 0, "stored" was said and the promoted replica never had it."""
    master, _ = pair
    m, r = clients
    store = CallbackStore(m, min_replicas=min_replicas, replica_timeout_ms=200)
    before_id, _ = await _enqueue(store, "5550001")  # replicated before the cut
    await m.wait(1, 2000)
    # The replica falls behind: pointed at a port where nobody listens, it keeps its data but
    # gets nothing more from the master (what a lagging or cut-off replica looks like).
    await r.replicaof("127.0.0.1", free_port())
    promised: list[str] = [before_id]
    try:
        cb_id, _ = await _enqueue(store, "5550002")
        promised.append(cb_id)  # the caller heard "stored"
    except NotReplicated:
        pass  # the caller went back to the queue: nothing was promised
    master.stop(kill=True)
    await r.replicaof("NO", "ONE")  # what Sentinel would do
    survivors = {str(k).rsplit(":", 1)[1] for k in await r.keys("{cbari}:cb:*")}
    lost = [cb_id for cb_id in promised if cb_id not in survivors]
    if min_replicas:
        assert lost == []
        assert promised == [before_id]
    else:
        assert lost == promised[1:] and len(lost) == 1  # promised, then gone with the master

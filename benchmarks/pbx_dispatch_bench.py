"""Real PBX: latency from a member becoming ready to the customer's channel, against a floor.

Run (as root, the sandbox built): CBPBX_NAME=... CBPBX_ARI_PORT=... CBPBX_AMI_PORT=...
    python benchmarks/pbx_dispatch_bench.py [--reps 200]

The sandbox Asterisk 22 (dialplan/sandbox/pbx), a private redis-server and the service as its
own process (pbx_rig.py). Each repetition stores one pending callback to a customer who never
answers, with both agents busy; the harness then sets ``Custom:agent1`` NOT_INUSE over AMI, as
the agent's phone would. Measured from the harness's own ARI and AMI connections:

- ready: the AMI DeviceStateChange NOT_INUSE of Custom:agent1 reaches the harness;
- member: app_queue's QueueMemberStatus for that member (the event the service acts on);
- created: ARI ChannelCreated of the service's ``cb-<id>-a1`` channel reaches the harness.

The harness then hangs the customer up (``max_attempts = 1``: the callback fails) and sets the
agent busy again. Floor, in the same run and interleaved with the repetitions: the harness's own
bare ARI originate of the same kind of channel (POST /channels -> ChannelCreated).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pbx_rig import (
    ServiceProcess,
    asterisk_version,
    free_port,
    machine,
    new_workdir,
    pct,
    service_config,
)

from callback_ari.config.loader import parse_config
from callback_ari.sim.sandbox import AmiMessage, Harness, JsonDict, Sandbox
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.store.store import CallbackStore, connect_redis

QUEUE = "support"
STEP_TIMEOUT_S = 10.0


def device_is(agent: str, state: str) -> Callable[[AmiMessage], bool]:
    return lambda m: (
        m.get("Event") == "DeviceStateChange"
        and m.get("Device") == f"Custom:{agent}"
        and m.get("State") == state
    )


def member_is(agent: str, status: str) -> Callable[[AmiMessage], bool]:
    return lambda m: (
        m.get("Event") == "QueueMemberStatus"
        and m.get("Interface") == f"Local/{agent}@agents/n"
        and m.get("Status") == status
    )


def created(prefix: str) -> Callable[[JsonDict], bool]:
    return lambda e: e.get("type") == "ChannelCreated" and e["channel"]["id"].startswith(prefix)


async def until_terminal(store: CallbackStore, cb_id: str) -> None:
    # the store has no events: look every 10 ms
    while not (await store.get(cb_id)).state.is_terminal:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def one_rep(h: Harness, store: CallbackStore, rep: int) -> tuple[float, float, float]:
    """(ready -> created, member -> created, ready -> member) in ms for one callback."""
    number = f"202555{3000 + rep % 1000}"  # 5553xxx: rings and never answers
    cb, _new = await store.enqueue(
        queue=QUEUE, number=number, join_time_ms=int(time.time() * 1000) - 60_000
    )
    ami, ari = len(h.watch.ami), len(h.watch.ari)
    await h.device("agent1", "NOT_INUSE")
    async with asyncio.timeout(STEP_TIMEOUT_S):
        ready = await h.wait_ami(device_is("agent1", "NOT_INUSE"), since=ami)
        member = await h.wait_ami(member_is("agent1", "1"), since=ami)
        channel = await h.wait_ari(created(f"cb-{cb.id}-a"), since=ari)
    t_ready, t_member = float(ready["_t"]), float(member["_t"])
    t_created = float(channel["_t"])
    ami = len(h.watch.ami)
    await h.device("agent1", "INUSE")
    await h.hang_up(channel["channel"]["id"])
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await h.wait_ami(member_is("agent1", "2"), since=ami)
        await until_terminal(store, cb.id)
    return (
        (t_created - t_ready) * 1000,
        (t_created - t_member) * 1000,
        (t_member - t_ready) * 1000,
    )


async def one_floor(h: Harness, rep: int) -> float:
    """A bare ARI originate from this process: POST /channels -> ChannelCreated, in ms."""
    channel_id = f"floor-{rep}-{int(time.time() * 1000) % 10**8}"
    ari = len(h.watch.ari)
    start = time.monotonic()
    await h.rest("POST", "/channels", endpoint=f"Local/202555{3000 + rep % 1000}@customers",
                 app="harness", channelId=channel_id)  # fmt: skip
    async with asyncio.timeout(STEP_TIMEOUT_S):
        event = await h.wait_ari(created(channel_id), since=ari)
    ms = (float(event["_t"]) - start) * 1000
    await h.hang_up(channel_id)
    return ms


async def bench(reps: int, redis_url: str) -> int:
    box = Sandbox.from_env()
    if (reason := box.unavailable()) is not None:
        print(f"pbx_dispatch_bench: {reason}", file=sys.stderr)
        return 2
    box.start()
    version = asterisk_version(box)
    work = new_workdir()
    text = service_config(box, redis_url, free_port(), work / "service.log",
                          max_attempts="1", ring_timeout="30")  # fmt: skip
    config = parse_config(text, env={})
    service = ServiceProcess(text, config.http.port, work)
    client = connect_redis(redis_url)
    store = CallbackStore(client, prefix=config.redis.prefix)
    rows: list[tuple[float, float, float]] = []
    floors: list[float] = []
    try:
        async with Harness(box) as h:
            await h.device("agent1", "INUSE")
            await h.device("agent2", "INUSE")
            await service.start()
            for warm in range(5):  # connections, code paths and caches warm
                await one_rep(h, store, reps + warm)
                await one_floor(h, reps + warm)
            started = time.monotonic()
            for rep in range(reps):
                rows.append(await one_rep(h, store, rep))
                floors.append(await one_floor(h, rep))
            took = time.monotonic() - started
    finally:
        with contextlib.suppress(Exception):
            await service.stop()
        await client.aclose()
        box.stop()
    report(version, reps, rows, floors, took, service.errors(), work)
    return 0


def report(version: str, reps: int, rows: list[tuple[float, float, float]], floors: list[float],
           took: float, errors: list[str], work: Path) -> None:  # fmt: skip
    print(f"\npbx_dispatch_bench: {reps} repetitions in {took:.1f} s against the sandbox PBX")
    print(f"{version}; service log {work / 'service.log'}")
    for line in machine():
        print(f"  {line}")
    columns = (
        ("member ready -> customer channel created", [r[0] for r in rows]),
        ("  of which ready -> QueueMemberStatus (PBX)", [r[2] for r in rows]),
        ("  QueueMemberStatus -> channel created", [r[1] for r in rows]),
        ("floor: bare ARI originate -> created", floors),
    )
    print(f"\n{'ms (seen by the harness)':<44} {'reps':>5} {'p50':>7} {'p99':>7} {'max':>7}")
    for name, values in columns:
        print(f"{name:<44} {len(values):>5} {pct(values, 0.5):>7.2f} {pct(values, 0.99):>7.2f}"
              f" {max(values):>7.2f}")  # fmt: skip
    latency = [r[0] for r in rows]
    print(f"\nratio vs floor: p50 {pct(latency, 0.5) / pct(floors, 0.5):.2f}x, "
          f"p99 {pct(latency, 0.99) / pct(floors, 0.99):.2f}x; "
          f"service error events: {len(errors)} {sorted(set(errors))}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    redis = RedisProcess()
    redis.start()
    try:
        status = asyncio.run(bench(args.reps, redis.url))
    finally:
        redis.close()
    sys.exit(status)


if __name__ == "__main__":
    main()

"""Issue 5 acceptance: dispatching callbacks against the simulated PBX and a real redis-server.

The real Service dials through ``SimAsterisk`` (ARI + AMI on real sockets, our dialplan kit);
callbacks are put straight into Redis with ``CallbackStore.enqueue`` to set up each scenario.
Where a test needs exact times the service runs on a ``ManualClock``: the retry time stored is
read off that clock, and nothing falls due until the test moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from callback_ari.clock import Clock, ManualClock, SystemClock
from callback_ari.config.loader import Config
from callback_ari.models import Callback, Outcome, State
from callback_ari.service.service import Service
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore
from tests.harness import KIT, service_config

PREFIX = "cbtest"
# The tests below own the queue's dispatch: no service-initiated offers get in the way.
NO_OFFERS: dict[str, Any] = {
    "offer_threshold": 0,
    "withdraw": "no",
    "allow_patterns": "_NXXNXXXXXX",
    "max_age": 86400,
}


# --- helpers shared with test_e2e_crash.py -------------------------------------------------


def queue_keys(**keys: Any) -> dict[str, Any]:
    """Queue settings for these tests: ``NO_OFFERS`` plus the test's own."""
    return {**NO_OFFERS, **keys}


@contextlib.asynccontextmanager
async def serve(config: Config, clock: Clock | None = None) -> AsyncIterator[Service]:
    """Run a Service until the block ends, once it is connected and knows every queue."""
    service = Service(config, clock=clock)
    task = asyncio.create_task(service.run(), name=f"service:{config.general.instance_id}")
    try:
        async with asyncio.timeout(10):
            while not (
                service.started.is_set()
                and service.dispatcher is not None
                and all(service.readiness().values())
                and all(service.watcher.members(q) for q in config.queues)
            ):
                if task.done():
                    task.result()  # raise what killed it
                await asyncio.sleep(0.01)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def store_view(
    redis_url: str, clock: Clock | None = None, prefix: str = PREFIX
) -> AsyncIterator[CallbackStore]:
    """An independent store client for setting up and checking scenarios."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield CallbackStore(client, prefix=prefix, clock=clock or SystemClock())
    finally:
        await client.aclose()


async def until(check: Callable[[], Awaitable[bool]], interval: float = 0.02) -> None:
    """Poll ``check`` until it holds (the store has no events to await).

    Unbounded: the caller bounds it with ``asyncio.timeout`` (the per-test timeout is the
    backstop).
    """
    while True:
        if await check():
            return
        await asyncio.sleep(interval)


async def settled(store: CallbackStore, ids: Iterable[str]) -> list[Callback]:
    """Wait until none of ``ids`` is dialing or pending; return them in the given order."""
    wanted = list(ids)
    result: list[Callback] = []

    async def done() -> bool:
        nonlocal result
        result = [await store.get(i) for i in wanted]
        return all(cb.state not in (State.DIALING, State.PENDING) for cb in result)

    await until(done)
    return result


def dialled(sim: SimAsterisk) -> list[str]:
    """Channel ids the service originated, in order (``cb-<id>-a<n>``)."""
    return [r.query.get("channelId", "") for r in sim.originates]


def dialled_ids(sim: SimAsterisk) -> list[str]:
    """Callback ids in originate order."""
    return [cid[3:].rsplit("-a", 1)[0] for cid in dialled(sim)]


async def enqueue(
    store: CallbackStore, queue: str, number: str, join_time_ms: int, **kw: Any
) -> Callback:
    cb, created = await store.enqueue(
        queue=queue, number=number, caller_name="", join_time_ms=join_time_ms, **kw
    )
    assert created
    return cb


def agents(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(1, n + 1)]


def set_all(sim: SimAsterisk, names: Iterable[str], state: str) -> None:
    for name in names:
        sim.set_devstate(f"Custom:{name}", state)


async def wait_watcher(predicate: Callable[[], bool]) -> None:
    """The service's queue model is fed by AMI: wait until it reflects what the fake did."""

    async def check() -> bool:
        return predicate()

    await until(check, interval=0.005)


# --- fair order against live callers ------------------------------------------------------

FAIR_SCALE = 0.02


def _fair_setup(sim: SimAsterisk) -> list[str]:
    # The fake connects a waiting caller the instant a member frees up, as app_queue does once
    # the agent answers. To keep a live caller holding while the service sees a ready member
    # (the window in which an agent's phone rings for that caller) the fake queue has a
    # wrap-up the service is not told about: the service counts agent1 ready at once after a
    # call, the fake rings nobody for 20 s.
    sim.add_queue("support", ["agent1"], wrapup=1000)
    return ["agent1"]


async def _live_caller_holding(sim: SimAsterisk, service: Service) -> tuple[str, str, int]:
    """Agent1 talks to caller 0; caller L holds. Returns (caller0 id, L id, L's join ms)."""
    first = sim.caller_joins("support", "3125550001")
    await sim.wait_ami_event("AgentConnect", Channel=first.name)
    live = sim.caller_joins("support", "3125550002")
    await wait_watcher(lambda: len(service.watcher.callers("support")) == 1)
    join = service.watcher.oldest_join_ms("support")
    assert join is not None
    return first.id, live.id, join


async def test_callbacks_before_the_oldest_live_caller_go_first_in_join_order(
    redis_url: str,
) -> None:
    async with (
        SimAsterisk(time_scale=FAIR_SCALE, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        _fair_setup(sim)
        config = service_config(
            sim, redis_url, queues={"support": queue_keys(max_attempts=1, retry_interval=600)}
        )
        async with serve(config) as service:
            first, live, live_join = await _live_caller_holding(sim, service)
            # Everybody's number is busy: each attempt ends at once and frees the member.
            late = await enqueue(store, "support", "2025550103", live_join + 5_000)
            early = await enqueue(store, "support", "2025550101", live_join - 60_000)
            middle = await enqueue(store, "support", "2025550102", live_join - 30_000)
            for number in ("2025550101", "2025550102", "2025550103"):
                sim.set_number_behaviour(number, "busy")
            assert sim.originates == []

            sim.agent_hangup(first)  # agent1 is free: the service sees a ready member
            done = await settled(store, [early.id, middle.id])
            assert [cb.last_outcome for cb in done] == ["busy", "busy"]
            assert dialled_ids(sim) == [early.id, middle.id]  # earliest join first

            # The live caller still holds and joined before `late`: virtual hold keeps it.
            assert [c.id for c in sim.queue_callers("support")] == [live]
            assert await service.dispatcher.run_once("support") == 0  # type: ignore[union-attr]
            assert (await store.get(late.id)).state is State.PENDING
            assert late.id not in dialled_ids(sim)

            sim.hangup(live)  # the live caller gives up: nobody is ahead of `late` now
            await wait_watcher(lambda: service.watcher.oldest_join_ms("support") is None)
            service.dispatcher.wake()  # type: ignore[union-attr]
            (after,) = await settled(store, [late.id])
            assert after.attempts == 1
            assert dialled_ids(sim) == [early.id, middle.id, late.id]


async def test_priority_boost_lets_callbacks_overtake_recent_live_callers(redis_url: str) -> None:
    async with (
        SimAsterisk(time_scale=FAIR_SCALE, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        _fair_setup(sim)
        keys = queue_keys(max_attempts=1, retry_interval=600, priority_boost=60)
        config = service_config(sim, redis_url, queues={"support": keys})
        async with serve(config) as service:
            first, _live, live_join = await _live_caller_holding(sim, service)
            within = await enqueue(store, "support", "2025550111", live_join + 10_000)
            plain = await enqueue(store, "support", "2025550112", live_join + 40_000)
            # A callback's own priority (seconds) moves it ahead among callbacks: L+50 s - 30 s.
            boosted = await enqueue(store, "support", "2025550113", live_join + 50_000, priority=30)
            beyond = await enqueue(store, "support", "2025550114", live_join + 120_000)
            for n in ("2025550111", "2025550112", "2025550113", "2025550114"):
                sim.set_number_behaviour(n, "busy")

            sim.agent_hangup(first)
            await settled(store, [within.id, boosted.id, plain.id])
            # Joined up to 60 s after the live caller: dialled, in boosted join-time order.
            assert dialled_ids(sim) == [within.id, boosted.id, plain.id]
            # Joined 120 s after: the live caller keeps precedence.
            assert await service.dispatcher.run_once("support") == 0  # type: ignore[union-attr]
            assert (await store.get(beyond.id)).state is State.PENDING


# --- capacity ---------------------------------------------------------------------------


async def test_never_more_callbacks_in_flight_than_ready_members(redis_url: str) -> None:
    async with (
        SimAsterisk(time_scale=0.02, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        names = agents("agent", 5)
        sim.add_queue("support", names)
        set_all(sim, names, "INUSE")
        keys = queue_keys(max_attempts=1, retry_interval=600, ring_timeout=5)
        config = service_config(sim, redis_url, queues={"support": keys})
        async with serve(config) as service:
            assert service.dispatcher is not None
            dispatcher = service.dispatcher
            ids = []
            for i in range(10):
                number = f"20255502{i:02d}"
                # rings out (5 s at 1/50 speed) or busy: attempts overlap, then end
                sim.set_number_behaviour(number, "no_answer" if i % 3 else "busy")
                cb = await enqueue(store, "support", number, 1_000_000 + i)
                ids.append(cb.id)

            peaks = {"channels": 0, "in_flight": 0, "samples": 0}

            def sample() -> bool:
                live = [c for c in sim.channels() if c.id.startswith("cb-")]
                peaks["channels"] = max(peaks["channels"], len(live))
                peaks["in_flight"] = max(peaks["in_flight"], dispatcher.in_flight("support"))
                peaks["samples"] += 1
                return len(sim.originates) == 10 and not live

            set_all(sim, names[:3], "NOT_INUSE")  # 3 ready members, 2 on the phone
            await sim.wait_for(sample, timeout=20)
            final = await settled(store, ids)
            assert {cb.state for cb in final} == {State.FAILED}
            assert sorted(dialled_ids(sim)) == sorted(ids)
            assert peaks["channels"] == 3  # the capacity was used, and never exceeded
            assert peaks["in_flight"] <= 3
            assert peaks["samples"] > 50


# --- outcomes ------------------------------------------------------------------------------

BEHAVIOURS = ("answer", "busy", "no_answer", "congestion", "invalid", "machine", "answer_hangup")

PJSIP_EXPECTED = {
    "answer": (Outcome.CONNECTED, "agent/answered"),
    "busy": (Outcome.BUSY, "BUSY/17 User busy"),
    "no_answer": (Outcome.NO_ANSWER, "-/19 User alerting, no answer"),
    "congestion": (Outcome.CONGESTION, "CONGESTION/34 Circuit/channel congestion"),
    "invalid": (Outcome.REJECTED, "CHANUNAVAIL/1 Unallocated (unassigned) number"),
    "machine": (Outcome.NOT_CONFIRMED, "answered/no-confirmation"),
    "answer_hangup": (Outcome.HANGUP, "hangup/before-confirm"),
}
# Local channels: no Dial event at all for a missing extension, both halves cause 0.
LOCAL_EXPECTED = {**PJSIP_EXPECTED, "invalid": (Outcome.REJECTED, "-/0 Unknown")}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param("PJSIP/{number}@trunk", PJSIP_EXPECTED, id="pjsip"),
        pytest.param("Local/{number}@customers/n", LOCAL_EXPECTED, id="local"),
    ],
)
@pytest.mark.slow  # waits out ring and confirm timers
async def test_each_outcome_is_recorded_with_cause_and_retry_time(
    redis_url: str, template: str, expected: dict[str, tuple[Outcome, str]]
) -> None:
    clock = ManualClock(1_800_000_000_000)
    async with (
        SimAsterisk(time_scale=0.1, dialplan=KIT) as sim,
        store_view(redis_url, clock) as store,
    ):
        names = agents("agent", len(BEHAVIOURS))
        sim.add_queue("support", names, handle_time=5)
        set_all(sim, names, "INUSE")
        keys = queue_keys(
            dial_template=template,
            max_attempts=2,
            retry_interval=90,
            ring_timeout=5,
            confirm_timeout=1,
        )
        config = service_config(sim, redis_url, queues={"support": keys})
        async with serve(config, clock) as service:
            by_behaviour: dict[str, Callback] = {}
            for i, behaviour in enumerate(BEHAVIOURS):
                number = f"20255503{i:02d}"
                sim.set_number_behaviour(number, behaviour)
                by_behaviour[behaviour] = await enqueue(store, "support", number, 1_000 + i)
            set_all(sim, names, "NOT_INUSE")  # one ready member per callback: all at once
            ids = [cb.id for cb in by_behaviour.values()]
            async with asyncio.timeout(30):
                results = dict(zip(BEHAVIOURS, await settled(store, ids), strict=True))

            endpoints = {r.query["endpoint"] for r in sim.originates}
            assert endpoints == {template.format(number=cb.number) for cb in by_behaviour.values()}
            now = clock.now_ms()
            for behaviour, (outcome, cause) in expected.items():
                cb = results[behaviour]
                assert (behaviour, cb.last_outcome, cb.last_cause) == (
                    behaviour,
                    outcome.value,
                    cause,
                )
                assert cb.attempts == 1
                if outcome is Outcome.CONNECTED:
                    assert cb.state is State.CONNECTED
                else:
                    assert cb.state is State.RETRY_WAIT, behaviour
                    assert cb.next_attempt_ms == now + 90_000, behaviour
            # The connected customer reached an agent through the queue.
            await sim.wait_ami_event("AgentConnect", Queue="support")
            assert service.dispatcher is not None


# --- retries with an injected clock ---------------------------------------------------------


async def test_retry_waits_for_the_interval_then_fails_after_max_attempts(redis_url: str) -> None:
    clock = ManualClock(1_800_000_000_000)
    async with (
        SimAsterisk(time_scale=0.02, dialplan=KIT) as sim,
        store_view(redis_url, clock) as store,
    ):
        sim.add_queue("support", ["agent1"])
        keys = queue_keys(max_attempts=3, retry_interval=120)
        config = service_config(sim, redis_url, queues={"support": keys})
        sim.set_number_behaviour("2025550401", "busy")
        async with serve(config, clock) as service:
            assert service.dispatcher is not None
            dispatcher = service.dispatcher
            cb = await enqueue(store, "support", "2025550401", clock.now_ms())
            dispatcher.wake()
            for attempt in (1, 2):
                (rec,) = await settled(store, [cb.id])
                assert (rec.state, rec.attempts) == (State.RETRY_WAIT, attempt)
                assert rec.next_attempt_ms == clock.now_ms() + 120_000
                # Not due yet: a pass dials nobody, at the due time minus 1 ms as well.
                assert await dispatcher.run_once("support") == 0
                clock.advance(119.999)
                assert await dispatcher.run_once("support") == 0
                assert len(sim.originates) == attempt
                clock.advance(0.001)
                dispatcher.wake()
                await sim.wait_for(lambda: len(sim.originates) == attempt + 1)  # noqa: B023
            (rec,) = await settled(store, [cb.id])
            assert (rec.state, rec.attempts, rec.last_outcome) == (State.FAILED, 3, "busy")
            assert dialled(sim) == [f"cb-{cb.id}-a1", f"cb-{cb.id}-a2", f"cb-{cb.id}-a3"]
            clock.advance(3600)
            assert await dispatcher.run_once("support") == 0
            assert len(sim.originates) == 3


async def test_a_due_retry_waits_quietly_until_a_member_is_free(redis_url: str) -> None:
    clock = ManualClock(1_800_000_000_000)
    async with (
        SimAsterisk(time_scale=0.02, dialplan=KIT) as sim,
        store_view(redis_url, clock) as store,
    ):
        sim.add_queue("support", ["agent1"])
        sim.set_devstate("Custom:agent1", "INUSE")
        config = service_config(sim, redis_url, queues={"support": queue_keys()})
        sim.set_number_behaviour("2025550451", "busy")
        async with serve(config, clock) as service:
            assert service.dispatcher is not None
            cb = await enqueue(
                store, "support", "2025550451", clock.now_ms(), next_attempt_ms=clock.now_ms() + 1
            )
            clock.advance(1)
            service.dispatcher.wake()  # due now, but agent1 is on the phone
            client = aioredis.Redis.from_url(redis_url)
            try:
                before = (await client.info("stats"))["total_commands_processed"]
                await asyncio.sleep(0.5)  # a measuring window, not a wait for something
                after = (await client.info("stats"))["total_commands_processed"]
            finally:
                await client.aclose()
            assert after - before < 20  # no busy loop of Redis round trips
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            # dialled on the member-ready event, well before the 5 s safety pass
            await sim.wait_for(lambda: dialled_ids(sim) == [cb.id], timeout=2)


async def test_housekeeping_expires_callbacks_past_max_age(redis_url: str) -> None:
    clock = ManualClock(1_800_000_000_000)
    async with (
        SimAsterisk(time_scale=0.02, dialplan=KIT) as sim,
        store_view(redis_url, clock) as store,
    ):
        sim.add_queue("support", ["agent1"])
        sim.set_devstate("Custom:agent1", "INUSE")  # nobody free: callbacks just wait
        config = service_config(sim, redis_url, queues={"support": queue_keys(max_age=600)})
        async with serve(config, clock) as service:
            assert service.dispatcher is not None
            old = await enqueue(store, "support", "2025550501", clock.now_ms())
            clock.advance(300)
            young = await enqueue(store, "support", "2025550502", clock.now_ms())
            clock.advance(299)
            await service.dispatcher.housekeeping()
            assert (await store.get(old.id)).state is State.PENDING  # 599 s old
            clock.advance(1)
            await service.dispatcher.housekeeping()
            assert (await store.get(old.id)).state is State.EXPIRED
            assert (await store.get(young.id)).state is State.PENDING
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            await settled(store, [young.id])
            assert dialled_ids(sim) == [young.id]  # the expired one is never dialled


# --- business hours -----------------------------------------------------------------------

NEW_YORK = ZoneInfo("America/New_York")


def _ny_ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=NEW_YORK).timestamp() * 1000)


# "fri 22:00-02:00" in New York; 2026-11-20 is a Friday (EST, UTC-5).
@pytest.mark.parametrize(
    ("instant", "open_now"),
    [
        pytest.param(_ny_ms(2026, 11, 20, 23, 30), True, id="fri-23:30-open"),
        pytest.param(_ny_ms(2026, 11, 21, 1, 30), True, id="sat-01:30-after-midnight-open"),
        pytest.param(_ny_ms(2026, 11, 21, 2, 30), False, id="sat-02:30-closed"),
        pytest.param(_ny_ms(2026, 11, 20, 18, 0), False, id="fri-18:00-closed-though-open-in-utc"),
        pytest.param(_ny_ms(2026, 11, 19, 23, 30), False, id="thu-23:30-closed"),
    ],
)
async def test_business_hours_across_midnight_in_the_queue_time_zone(
    redis_url: str, instant: int, open_now: bool
) -> None:
    clock = ManualClock(instant)
    async with (
        SimAsterisk(time_scale=0.02, dialplan=KIT) as sim,
        store_view(redis_url, clock) as store,
    ):
        sim.add_queue("support", ["agent1"])
        keys = queue_keys(hours="fri 22:00-02:00", timezone="America/New_York")
        config = service_config(sim, redis_url, queues={"support": keys})
        sim.set_number_behaviour("2025550601", "busy")
        async with serve(config, clock) as service:
            assert service.dispatcher is not None
            cb = await enqueue(store, "support", "2025550601", clock.now_ms() - 1000)
            if open_now:
                service.dispatcher.wake()
                await settled(store, [cb.id])
                assert dialled_ids(sim) == [cb.id]
            else:
                assert await service.dispatcher.run_once("support") == 0
                assert (await store.get(cb.id)).state is State.PENDING
                assert sim.originates == []


# --- cancel on re-call ----------------------------------------------------------------------


async def test_calling_again_cancels_the_pending_callback_unless_keep(redis_url: str) -> None:
    async with (
        SimAsterisk(time_scale=0.02, dialplan=KIT) as sim,
        store_view(redis_url) as store,
    ):
        sim.add_queue("support", ["agent1"])
        sim.add_queue("sales", ["agent2"])
        set_all(sim, ["agent1", "agent2"], "INUSE")
        config = service_config(
            sim,
            redis_url,
            queues={"support": queue_keys(), "sales": queue_keys(on_recall="keep")},
        )
        async with serve(config) as service:
            number = "2025550701"
            kept = await enqueue(store, "sales", number, 1_000)
            cancelled = await enqueue(store, "support", number, 1_000)
            other = await enqueue(store, "support", "2025550702", 1_000)
            sim.caller_joins("sales", number, "Alice")
            await wait_watcher(lambda: bool(service.watcher.callers("sales")))
            sim.caller_joins("support", number, "Alice")

            async def is_cancelled() -> bool:
                return (await store.get(cancelled.id)).state is State.CANCELLED

            await until(is_cancelled)
            assert (await store.get(kept.id)).state is State.PENDING  # on_recall = keep
            assert (await store.get(other.id)).state is State.PENDING  # another number
            assert sim.originates == []

"""Two real PBXs, two service instances each, one Redis Sentinel set: one site.

PBX 1 hosts queue ``support``, PBX 2 hosts ``sales`` (``callback_ari/sim/topology.py``); each
PBX has its own two agents and its own two service processes (``callback-ari run``), and every
instance shares one Redis prefix through the Sentinels. Callbacks are booked over the HTTP API
while every agent is busy, then the agents free up and the site works through them while the
Redis master is SIGKILLed. What Asterisk itself reports (AMI of each PBX, the tests' own
session) must show:

* each callback dialled through the PBX that hosts its queue, and only there;
* a number with a live callback in both queues never dialled twice at once;
* on each PBX, never more callbacks dialing or waiting in the queue for an agent than members
  not on a call (the capacity, across both instances of the PBX);
* each queue's callbacks first dialled in the order they joined (fairness across instances);
* dispatching going on after the failover, every callback connected.

PBX names and ports: CBSITE_PBXS (see topology.py), by default two instances that collide
with nobody's pbx1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from callback_ari.sim.sandbox import AmiMessage, Harness
from callback_ari.sim.topology import Site, SiteService, site_from_env
from tests.pbx_service import until

pytestmark = [pytest.mark.asterisk, pytest.mark.slow, pytest.mark.timeout(240)]

QUEUE = {
    "offer_threshold": "0",
    "withdraw": "no",
    "ring_timeout": "10",
    "confirm_timeout": "5",
    "retry_interval": "1",
    "max_attempts": "3",
    "first_attempt_grace": "0",
    "wrapup_time": "0",
}
GENERAL = {"lease_seconds": "10", "resync_interval": "5", "log_level": "info"}
AGENTS = ("agent1", "agent2")
PER_QUEUE = 5  # callbacks with a number of their own, per queue
SHARED = "2025551999"  # a customer with a live callback in both queues (5551: answers, presses 1)
# Error events a failover may cause in a service (the master is gone for a second or two): an
# outcome write or a member's release that failed; the lease retries the callback, and every
# callback must still end connected (asserted below).
FAILOVER_ERRORS = frozenset({"callback.record_failed", "reservation.release_error"})


@contextlib.asynccontextmanager
async def running_site(per_pbx: int, pbxs: int = 2, **queue: str) -> AsyncIterator[Site]:
    """The first ``pbxs`` PBXs of CBSITE_PBXS, ``per_pbx`` services each, started."""
    plans = site_from_env()[:pbxs]
    reason = plans[0].sandbox.unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the real-PBX suite cannot run in CI: {reason}")
        pytest.skip(reason)
    async with Site(plans, per_pbx=per_pbx, queue={**QUEUE, **queue}, general=GENERAL) as site:
        yield site


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with running_site(per_pbx=2) as running:
        yield running


@dataclass
class PbxTimeline:
    """One PBX's AMI events, in Asterisk's order, replayed into the facts the test checks."""

    hosted: tuple[str, ...]
    dialled: list[str] = field(default_factory=list)  # callback ids, first attempts, in order
    channels: dict[str, str] = field(default_factory=dict)  # attempt channel -> callback id
    violations: list[str] = field(default_factory=list)
    dialing: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # channel ->
    # (created, ended dialing: AgentConnect or hangup)
    up: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # whole channel life
    connected: set[str] = field(default_factory=set)  # callback ids an agent answered
    max_load: int = 0


def replay(messages: list[AmiMessage], hosted: tuple[str, ...], members: int) -> PbxTimeline:
    """Check capacity on one PBX: callbacks in flight + agents on a call <= members, always."""
    tl = PbxTimeline(hosted)
    in_flight: set[str] = set()  # attempt channels created, not yet with an agent, not gone
    on_call: set[str] = set()  # members between AgentConnect and AgentComplete
    for m in messages:
        event, uid, at = m.get("Event"), m.get("Uniqueid", ""), float(m["_t"])
        ours = uid.startswith("cb-") and not uid.endswith("-2")  # the ;1 half of an attempt
        if event == "Newchannel" and ours:
            cb_id, attempt = uid[3:].rsplit("-a", 1)
            tl.channels[uid] = cb_id
            if attempt == "1":
                tl.dialled.append(cb_id)
            in_flight.add(uid)
            tl.dialing[uid] = (at, None)
            tl.up[uid] = (at, None)
            load = len(in_flight) + len(on_call)
            tl.max_load = max(tl.max_load, load)
            if load > members:
                tl.violations.append(
                    f"{uid}: {len(in_flight)} callbacks in flight + {len(on_call)} members on "
                    f"a call > {members} members"
                )
        elif event == "AgentConnect":
            on_call.add(m.get("Interface") or m.get("MemberName", ""))
            if uid in in_flight:
                in_flight.discard(uid)
                tl.dialing[uid] = (tl.dialing[uid][0], at)
                tl.connected.add(tl.channels[uid])
        elif event == "AgentComplete":
            on_call.discard(m.get("Interface") or m.get("MemberName", ""))
        elif event == "Hangup" and uid in tl.up:
            if uid in in_flight:
                in_flight.discard(uid)
                tl.dialing[uid] = (tl.dialing[uid][0], at)
            tl.up[uid] = (tl.up[uid][0], at)
    return tl


def overlaps(a: tuple[float, float | None], b: tuple[float, float | None]) -> bool:
    end_a, end_b = a[1] or float("inf"), b[1] or float("inf")
    return a[0] < end_b and b[0] < end_a


async def book(svc: SiteService, queue: str, number: str) -> str:
    status, body = await svc.http("POST", "/api/v1/callbacks", {"queue": queue, "number": number})
    assert status == 201, (svc.name, status, body)
    return str(body["callback"]["id"])


async def states(site: Site) -> dict[str, str]:
    """Callback id -> state, asked of any instance that answers (the master may be moving)."""
    for svc in site.services.values():
        with contextlib.suppress(OSError):
            status, body = await svc.http("GET", "/api/v1/callbacks?limit=100")
            if status == 200:
                return {str(c["id"]): str(c["state"]) for c in body["callbacks"]}
    return {}


async def test_two_pbxs_two_instances_each_share_capacity_fairness_and_numbers(
    site: Site,
) -> None:
    started = time.monotonic()
    pbx1, pbx2 = site.plans
    async with contextlib.AsyncExitStack() as stack:
        harness = {p.name: await stack.enter_async_context(Harness(p.sandbox)) for p in site.plans}
        for h in harness.values():
            await h.set_global("AGENT_TALK", "1")
            for agent in AGENTS:
                await h.device(agent, "INUSE")  # busy while the callbacks are booked

        # An instance serves the queues of its own PBX only, and says so.
        svc1 = site.services_of(pbx1.name)[0]
        status, body = await svc1.http(
            "POST", "/api/v1/callbacks", {"queue": pbx2.queues[0], "number": "2025551000"}
        )
        assert status == 422 and body["error"]["reason"] == "unknown_queue", body
        assert pbx1.queues[0] in body["error"]["message"], body

        # Book: each queue's callbacks spread over its PBX's two instances, in join order.
        queue_of: dict[str, str] = {}
        number_of: dict[str, str] = {}
        for i in range(PER_QUEUE + 1):
            for plan in site.plans:
                queue = plan.queues[0]
                svc = site.services_of(plan.name)[i % 2]
                number = SHARED if i == 1 else f"202555{1100 + 100 * site.plans.index(plan) + i}"
                cb_id = await book(svc, queue, number)
                queue_of[cb_id], number_of[cb_id] = queue, number
                await asyncio.sleep(0.005)  # distinct join times
        assert len(queue_of) == 2 * (PER_QUEUE + 1)

        marks = {name: len(h.watch.ami) for name, h in harness.items()}
        for h in harness.values():
            for agent in AGENTS:
                await h.device(agent, "NOT_INUSE")

        def connected(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return sum(s == "connected" for s in (await states(site)).values()) >= count

            return check

        # The Redis master dies while the site is busy; the Sentinels promote the replica.
        async with asyncio.timeout(60):
            await until(connected(3), interval=0.2)
        old = await asyncio.to_thread(site.sentinels.kill_master)
        await asyncio.to_thread(site.sentinels.wait_promoted, old)
        failed_over = time.monotonic()
        async with asyncio.timeout(90):
            await until(connected(len(queue_of)), interval=0.2)
        finished = time.monotonic()
        await asyncio.sleep(0.5)  # the last hangups reach the harness

        client, store = await asyncio.to_thread(site.store)
        try:
            audit = await store.audit(count=10_000)
        finally:
            await client.aclose()

    lines = {p.name: replay(harness[p.name].watch.ami[marks[p.name] :], p.queues, len(AGENTS))
             for p in site.plans}  # fmt: skip

    # Dialled through the hosting PBX only, each callback at least once, connected there.
    for plan in site.plans:
        tl = lines[plan.name]
        foreign = {c for c in tl.channels.values() if queue_of.get(c) not in plan.queues}
        assert not foreign, f"{plan.name} dialled callbacks of other queues: {foreign}"
        mine = {c for c, q in queue_of.items() if q in plan.queues}
        assert set(tl.dialled) == mine, (plan.name, tl.dialled, mine)
        assert tl.connected == mine, (plan.name, tl.connected, mine)

    # Capacity, across the two instances of each PBX.
    for plan in site.plans:
        assert not lines[plan.name].violations, lines[plan.name].violations
        assert lines[plan.name].max_load == len(AGENTS)  # both members were used

    # A number is never dialled twice at once: dialing = from the channel to AgentConnect.
    shared = [
        (name, uid, tl.dialing[uid], tl.up[uid])
        for name, tl in lines.items()
        for uid, cb_id in tl.channels.items()
        if number_of[cb_id] == SHARED
    ]
    assert {name for name, *_ in shared} == {pbx1.name, pbx2.name}
    for i, (_, uid_a, dial_a, _) in enumerate(shared):
        for _, uid_b, dial_b, _ in shared[i + 1 :]:
            assert not overlaps(dial_a, dial_b), f"{SHARED} dialled twice: {uid_a}, {uid_b}"
    talk_overlap = any(overlaps(a[3], b[3]) for i, a in enumerate(shared) for b in shared[i + 1 :])

    # Fairness: each queue's first attempts claimed in join order, whichever instance claimed.
    for plan in site.plans:
        queue = plan.queues[0]
        firsts = [
            e["id"] for e in audit
            if e.get("queue") == queue and e.get("to") == "dialing" and e.get("attempt") == "1"
        ]  # fmt: skip
        # the shared number may wait while the other queue dials it: that is the rule
        order = [c for c in firsts if number_of.get(c) != SHARED]
        assert order == sorted(order, key=int), (queue, firsts)
        assert len(order) == PER_QUEUE, (queue, firsts)

    # No instance logged an error beyond what the failover explains.
    for svc in site.services.values():
        unexpected = [e for e in svc.errors() if e.get("event") not in FAILOVER_ERRORS]
        assert not unexpected, (svc.name, unexpected)
    dialers = {svc.name for svc in site.services.values() if svc.events("callback.dialing")}
    print(
        f"site: {len(queue_of)} callbacks connected in {finished - started:.1f} s "
        f"({finished - failed_over:.1f} s after the failover); dialled by {sorted(dialers)}; "
        f"the shared number talked to one queue while dialled by the other: {talk_overlap}"
    )


async def test_a_callback_waiting_for_an_agent_counts_once_against_capacity() -> None:
    """Without reservations: a customer who pressed 1 and waits in the queue takes one of the
    two ready members, not two, so the other callback's retry is dialled as soon as it is due.
    """
    # the retry falls due 5 s after the busy, when the other customer is waiting in the queue
    async with running_site(per_pbx=1, pbxs=1, reserve_member="no", retry_interval="5") as site:
        plan = site.plans[0]
        queue, svc = plan.queues[0], site.services_of(plan.name)[0]
        async with Harness(plan.sandbox) as h:
            for agent in AGENTS:  # they ring and never answer: the customer waits in the queue
                await h.db_put("cbtest/agent", agent, "noanswer")
            retried = "2025551302"
            await h.customer(retried, "busy", "answer")
            # joined first (so no gate holds it back), busy at once
            second = await book(svc, queue, retried)
            first = await book(svc, queue, "2025551301")
            async with asyncio.timeout(20):
                await h.wait_ami(
                    lambda m: (
                        m.get("Event") == "QueueCallerJoin"
                        and m.get("Uniqueid") == f"cb-{first}-a1"
                    )
                )
                await h.wait_ami(
                    lambda m: m.get("Event") == "Hangup" and m.get("Uniqueid") == f"cb-{second}-a1"
                )
            assert (await states(site))[first] == "dialing"  # waiting for an agent
            # counted twice, the retry would wait until the first customer had an agent
            async with asyncio.timeout(10):
                await h.wait_ami(
                    lambda m: (
                        m.get("Event") == "Newchannel" and m.get("Uniqueid") == f"cb-{second}-a2"
                    )
                )
            assert (await states(site))[first] == "dialing"  # still waiting: both were out

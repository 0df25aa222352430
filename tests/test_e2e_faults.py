"""Issue 3 acceptance at the service level: links drop, freeze, get replaced or talk garbage.

The real Service runs against the simulated PBX (our dialplan kit, real sockets) and a real
redis-server. Faults are injected by the fake: the ARI events socket is aborted or closed
cleanly, AMI sessions are aborted or frozen (half-open), a second socket takes the Stasis app,
garbage is written on the wire. Outages that must outlast an event are made deterministic by
refusing new connections until the event has happened, then measuring how fast the service
is back (tests/data/asterisk-22/README.md, facts 26-30: Asterisk keeps our channels but
drops our events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from callback_ari.clock import SystemClock
from callback_ari.core.backoff import Backoff
from callback_ari.core.queue_model import DeviceStatus
from callback_ari.errors import AmiUnavailable, ApplicationReplaced
from callback_ari.models import Callback, Origin, State
from callback_ari.service.attempt import REACHED_VAR_PREFIX
from callback_ari.service.service import Service
from callback_ari.sim.simpbx.model import Channel
from callback_ari.sim.simpbx.redis_process import RedisProcess, free_port
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore, connect_redis
from tests.harness import KIT, REPO, running_service, service_config, store_for, wait_prompt

TIME_SCALE = 0.05
INCOMING = (
    "[from-trunk]\nexten => support,1,Gosub(callback-queue,support,1())\n same => n,Hangup()\n"
)
WAIT = 10.0  # ceiling for one wait; a healthy run takes milliseconds
SLACK_S = 1.0  # connect + login + resync on a loaded machine, on top of the backoff delay
APP = "callback-ari"
NUMBER = "2025551234"

# Callers enter the dialogue with the exit digit (instant, no withdraw timing involved).
DIGIT_ENTRY: dict[str, Any] = {
    "offer_threshold": 0,
    "withdraw": "no",
    "response_timeout": 3,
    "announce_wait": "no",
}


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=TIME_SCALE, dialplan=KIT + INCOMING) as pbx:
        pbx.add_queue("support", ["agent1", "agent2"], handle_time=2.0)
        pbx.set_devstate("Custom:agent1", "INUSE")
        pbx.set_devstate("Custom:agent2", "INUSE")
        yield pbx


# --- helpers ------------------------------------------------------------------------------


async def until(sim: SimAsterisk, predicate: Callable[[], bool]) -> None:
    """Wait for a state of the fake (it re-checks on every event), bounded."""
    await sim.wait_for(predicate, WAIT)


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a state of the service (it has no events to await), bounded."""
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():  # noqa: ASYNC110 -- the service exposes no event for this
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {WAIT} s: {what}")


async def state_leaves(store: CallbackStore, cb_id: str, *states: State) -> Callback:
    """The callback once its state is none of ``states`` (Redis has no events: poll)."""
    async with asyncio.timeout(WAIT):
        while (cb := await store.get(cb_id)).state in states:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return cb


def reconnect_bound(outage_s: float) -> float:
    """Worst case from the link being back to the service being reconnected.

    Every backoff sleep lasts at least base/2, so at most outage/(base/2) connection attempts
    failed while the fake refused us; the sleep in progress is capped by the next ceiling.
    """
    b = Backoff()
    failed = int(outage_s / (b.base / 2))
    return min(b.cap, b.base * 2.0**failed) + SLACK_S


def ws_connects(sim: SimAsterisk) -> list[int]:
    """Indexes in sim.requests of every accepted /ari/events upgrade."""
    return [i for i, r in enumerate(sim.requests) if r.path == "/ari/events" and r.status == 101]


def logins(sim: SimAsterisk) -> list[int]:
    """Indexes in sim.ami_actions of every AMI Login."""
    return [i for i, a in enumerate(sim.ami_actions) if a.action.lower() == "login"]


async def enter_offer(sim: SimAsterisk, number: str = NUMBER) -> Channel:
    """A caller joins the queue, presses the exit digit and reaches our Stasis app."""
    caller = sim.caller_joins("support", number, "Alice")
    await until(sim, lambda: caller in sim.queue_callers("support"))
    sim.press_digit(caller.id, "1")
    await sim.wait_event("StasisStart", app=APP, channel_id=caller.id, timeout=WAIT)
    return caller


async def ari_outage(sim: SimAsterisk, *, clean: bool) -> float:
    """Drop our events socket and keep it down (new connections refused); returns when."""
    assert sim.drop_ari_sockets(clean=clean) == 1
    await sim.refuse_connections(True)  # the service's first retry is >= 0.25 s away
    return time.time()


async def ari_back(sim: SimAsterisk, down_since: float) -> int:
    """Accept connections again; returns the index of the reconnect in sim.requests."""
    before = len(ws_connects(sim))
    await sim.refuse_connections(False)
    back = time.time()
    await until(sim, lambda: len(ws_connects(sim)) > before)
    index = ws_connects(sim)[-1]
    took = sim.requests[index].at - back
    assert took <= reconnect_bound(back - down_since), f"ARI reconnect took {took:.2f} s"
    return index


def requests_after(sim: SimAsterisk, index: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in sim.requests[index + 1 :]]


def delivered(sim: SimAsterisk, event: dict[str, Any]) -> bool:
    return next(r.delivered for r in sim.pbx.stasis.log if r.event is event)


def problems(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["log_level"] in ("error", "critical") or e.get("exc_info")]


def leftover_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t not in before and t is not me}


async def assert_no_leaked_tasks(before: set[asyncio.Task[Any]]) -> None:
    """Every task started since ``before`` ends (the fake's connection handlers need a moment
    to see our sockets close)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while leftover_tasks(before):  # noqa: ASYNC110 -- tasks have no "all done" event
                await asyncio.sleep(0.02)
    assert not leftover_tasks(before), [
        t.get_name() + repr(t.get_coro()) for t in leftover_tasks(before)
    ]


# --- ARI outage ------------------------------------------------------------------------------


@pytest.mark.parametrize("clean", [False, True], ids=["tcp-reset", "close-frame"])
async def test_ari_drop_mid_offer_reconnects_resyncs_and_dialogue_completes(
    sim: SimAsterisk, redis_url: str, clean: bool
) -> None:
    client, store = await store_for(redis_url)
    try:
        async with running_service(service_config(sim, redis_url, queues={"support": DIGIT_ENTRY})):
            caller = await enter_offer(sim)
            mark = await wait_prompt(sim, caller.id, "queue-thankyou")
            down = await ari_outage(sim, clean=clean)
            # The offer prompt ends while we are away: its PlaybackFinished is lost (fact 27).
            finished = await sim.wait_event(
                "PlaybackFinished", app=APP, channel_id=caller.id, since=mark, timeout=WAIT
            )
            assert not delivered(sim, finished)
            reconnect = await ari_back(sim, down)
            # Resync: list channels, check the caller and the playback we were waiting for.
            playback = f"/ari/playbacks/{finished['playback']['id']}"
            await until(sim, lambda: ("GET", playback) in requests_after(sim, reconnect))
            assert ("GET", "/ari/channels") in requests_after(sim, reconnect)
            # The recovered PlaybackDone moved the dialogue on: the caller is not stranded.
            sim.press_digit(caller.id, "1")
            mark = await wait_prompt(sim, caller.id, "if-correct-press", since=mark)
            sim.press_digit(caller.id, "1")
            await until(sim, lambda: caller.destroyed)  # stored, thanked, hung up
            stored = await store.list()
            assert [(cb.number, cb.state) for cb in stored] == [(NUMBER, State.PENDING)]
    finally:
        await client.aclose()


async def test_stasis_while_ari_is_down_fails_and_caller_keeps_holding(
    sim: SimAsterisk, redis_url: str
) -> None:
    async with running_service(
        service_config(sim, redis_url, queues={"support": DIGIT_ENTRY})
    ) as service:
        down = await ari_outage(sim, clean=False)
        caller = sim.caller_joins("support", NUMBER, "Alice")
        await until(sim, lambda: caller in sim.queue_callers("support"))
        sim.press_digit(caller.id, "1")
        # Stasis() finds no socket (fact 28); the kit sends the caller back into the queue.
        await until(
            sim,
            lambda: (
                caller.variables.get("STASISSTATUS") == "FAILED"
                and caller in sim.queue_callers("support")
            ),
        )
        reconnect = await ari_back(sim, down)
        await until(sim, lambda: ("GET", "/ari/channels") in requests_after(sim, reconnect))
        await eventually(lambda: service.readiness()["ari"], "ARI ready again")
        assert not caller.destroyed
        assert caller in sim.queue_callers("support")
        assert service.sessions == {}
        touched = [r for r in sim.requests if caller.id in r.path]
        assert touched == [], "the service must leave a holding caller alone"


async def test_caller_hanging_up_during_outage_ends_session_quietly(
    sim: SimAsterisk, redis_url: str
) -> None:
    client, store = await store_for(redis_url)
    try:
        async with running_service(
            service_config(sim, redis_url, queues={"support": DIGIT_ENTRY})
        ) as service:
            caller = await enter_offer(sim)
            await wait_prompt(sim, caller.id, "queue-thankyou")
            with capture_logs() as logs:
                down = await ari_outage(sim, clean=False)
                sim.hangup(caller.id)
                await until(sim, lambda: caller.destroyed)
                assert caller.id in service.sessions  # nothing told the service (fact 27)
                reconnect = await ari_back(sim, down)
                await eventually(lambda: caller.id not in service.sessions, "session ended")
                name = f"offer:{caller.id}"
                await eventually(
                    lambda: all(t.get_name() != name for t in asyncio.all_tasks()),
                    "offer task finished",
                )
            assert problems(logs) == []
            finished = [e for e in logs if e["event"] == "offer.finished"]
            assert [e["channel_id"] for e in finished] == [caller.id]
            after = [(m, p) for m, p in requests_after(sim, reconnect) if caller.id in p]
            assert all(method == "GET" for method, _ in after), after  # no play/continue
            assert await store.list() == []
    finally:
        await client.aclose()


async def test_callback_attempt_in_flight_during_outage_is_recorded_and_retried_once(
    sim: SimAsterisk, redis_url: str
) -> None:
    client, store = await store_for(redis_url)
    try:
        cb, _ = await store.enqueue(
            queue="support",
            number=NUMBER,
            caller_name="Alice",
            source_channel="earlier",
            join_time_ms=int(time.time() * 1000) - 60_000,
            origin=Origin.PHONE,
        )
        sim.set_number_behaviour(NUMBER, "answer")
        async with running_service(service_config(sim, redis_url)):
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            first = f"cb-{cb.id}-a1"
            await wait_prompt(sim, first, "vm-press")  # "... press 1"
            down = await ari_outage(sim, clean=True)
            sim.hangup(first)  # the customer hangs up while we hear nothing
            await until(sim, lambda: all(c.id != first for c in sim.channels()))
            assert (await store.get(cb.id)).state is State.DIALING
            await ari_back(sim, down)
            recorded = await state_leaves(store, cb.id, State.DIALING)
            assert (recorded.state, recorded.attempts, recorded.last_outcome) == (
                State.RETRY_WAIT,
                1,
                "hangup",
            )
            # The retry dials the next attempt's own channel id, never the same call twice.
            second = f"cb-{cb.id}-a2"
            await wait_prompt(sim, second, "vm-press")
            sim.press_digit(second, "1")
            done = await state_leaves(store, cb.id, State.RETRY_WAIT, State.DIALING)
            assert (done.state, done.attempts) == (State.CONNECTED, 2)
            assert [r.query["channelId"] for r in sim.originates] == [first, second]
    finally:
        await client.aclose()


async def test_a_channel_list_taken_while_an_originate_is_in_flight_does_not_end_it(
    sim: SimAsterisk, redis_url: str
) -> None:
    """An ARI resync lists the channels after the attempt began but before Asterisk made its
    call (seen in the multi-PBX soak: the customer answered and was recorded as a hang-up,
    then rung again). The missing call must not end the attempt."""
    client, store = await store_for(redis_url)
    try:
        cb, _ = await store.enqueue(
            queue="support", number=NUMBER, caller_name="Alice", source_channel="earlier",
            join_time_ms=int(time.time() * 1000) - 60_000, origin=Origin.PHONE,
        )  # fmt: skip
        sim.set_number_behaviour(NUMBER, "answer")
        async with running_service(service_config(sim, redis_url)):
            sim.hold_originates()
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            await state_leaves(store, cb.id, State.PENDING)  # claimed: the originate is next
            await asyncio.sleep(0.3)  # ... and held by the PBX
            listed = len([r for r in sim.requests if r.path == "/ari/channels"])
            down = await ari_outage(sim, clean=False)
            await ari_back(sim, down)  # the reconnect lists the channels: ours is not there
            await until(
                sim, lambda: len([r for r in sim.requests if r.path == "/ari/channels"]) > listed
            )
            sim.hold_originates(False)
            first = f"cb-{cb.id}-a1"
            await wait_prompt(sim, first, "vm-press")
            sim.press_digit(first, "1")
            done = await state_leaves(store, cb.id, State.DIALING)
        assert (done.state, done.attempts, done.last_outcome) == (State.CONNECTED, 1, "connected")
        assert [r.query["channelId"] for r in sim.originates] == [first]
    finally:
        await client.aclose()


async def test_outcome_reached_while_redis_is_down_is_recorded_once_it_is_back(
    sim: SimAsterisk,
) -> None:
    """Redis goes away after the customer answered and comes back after AgentConnect: the
    "connected" is stored on a retry, never lost to the lease (which would ring them again)."""
    with RedisProcess(appendonly=True) as redis:
        client, store = await store_for(redis.url)
        cb, _ = await store.enqueue(
            queue="support", number=NUMBER, caller_name="Alice", source_channel="earlier",
            join_time_ms=int(time.time() * 1000) - 60_000, origin=Origin.PHONE,
        )  # fmt: skip
        await client.aclose()
        sim.set_number_behaviour(NUMBER, "answer")
        config = service_config(sim, redis.url, general={"lease_seconds": 20})
        with capture_logs() as logs:
            async with running_service(config):
                sim.set_devstate("Custom:agent1", "NOT_INUSE")
                first = f"cb-{cb.id}-a1"
                await wait_prompt(sim, first, "vm-press")
                redis.stop()
                sim.press_digit(first, "1")
                await sim.wait_ami_event("AgentConnect", Channel=sim.pbx.channels[first].name)
                await asyncio.sleep(1.0)  # the outcome is known and cannot be stored
                redis.start()
                client, store = await store_for(redis.url)
                try:
                    done = await state_leaves(store, cb.id, State.DIALING)
                finally:
                    await client.aclose()
    assert (done.state, done.attempts, done.last_outcome) == (State.CONNECTED, 1, "connected")
    assert [r.query["channelId"] for r in sim.originates] == [first]
    events = [e["event"] for e in logs]
    assert "callback.record_retry" in events and "callback.record_failed" not in events
    assert REACHED_VAR_PREFIX + cb.id not in sim.pbx.globals  # recorded: the mark is dropped


# --- AMI outage ------------------------------------------------------------------------------


def watcher_matches(service: Service, sim: SimAsterisk) -> bool:
    queue = sim.queues.get("support")
    assert queue is not None
    callers = [c.uniqueid for c in service.watcher.callers("support")]
    members = {m.interface: (m.status, m.paused) for m in service.watcher.members("support")}
    truth = {m.interface: (DeviceStatus[m.devstate].value, m.paused) for m in queue.members}
    return callers == [c.id for c in sim.queue_callers("support")] and members == truth


async def test_ami_drop_resyncs_queue_state_and_resends_nothing(
    sim: SimAsterisk, redis_url: str
) -> None:
    config = service_config(sim, redis_url, queues={"support": {"withdraw": "no"}})
    async with running_service(config) as service:
        first = sim.caller_joins("support", NUMBER, "Alice")
        await eventually(lambda: watcher_matches(service, sim), "watcher sees the first caller")
        assert service.ami is not None
        # An action in flight when the link dies fails; it is never repeated by itself.
        sim.freeze_ami(True)
        probe = asyncio.create_task(service.ami.getvar("CB_PROBE"))
        await asyncio.sleep(0)  # let it write its action on the frozen link
        await sim.refuse_connections(True)
        assert sim.drop_ami_connections() >= 1
        down = time.time()
        sim.freeze_ami(False)
        with pytest.raises(AmiUnavailable):
            await probe
        # What happens while we are away is lost: a caller leaves, one joins, an agent pauses.
        sim.hangup(first.id)
        second = sim.caller_joins("support", "2025550143", "Bob")
        await until(sim, lambda: second in sim.queue_callers("support"))
        sim.pause("Local/agent2@agents/n", True, reason="lunch")
        assert not watcher_matches(service, sim)
        before = len(logins(sim))
        await sim.refuse_connections(False)
        back = time.time()
        await until(sim, lambda: len(logins(sim)) > before)
        login = logins(sim)[-1]
        took = sim.ami_actions[login].at - back
        assert took <= reconnect_bound(back - down), f"AMI reconnect took {took:.2f} s"
        await until(
            sim, lambda: any(a.action == "QueueStatus" for a in sim.ami_actions[login + 1 :])
        )
        await eventually(lambda: watcher_matches(service, sim), "watcher matches the PBX again")
        await eventually(lambda: service.readiness()["ami"], "AMI ready again")
        assert {a.action for a in sim.ami_actions[login:]} <= {"Login", "QueueStatus", "Ping"}
        assert all(a.action != "Getvar" for a in sim.ami_actions)


@pytest.mark.slow  # waits out AMI ping timeouts
async def test_half_open_ami_is_detected_by_ping_and_reconnected(
    sim: SimAsterisk, redis_url: str
) -> None:
    async with running_service(service_config(sim, redis_url)) as service:
        assert service.ami is not None
        cfg = service.config.ami
        assert (cfg.ping_interval, cfg.ping_timeout) == (1, 1)
        sim.freeze_ami(True)  # the socket stays up; nothing is answered
        frozen = time.monotonic()
        await eventually(lambda: not service.readiness()["ami"], "half-open AMI detected")
        took = time.monotonic() - frozen
        assert took <= cfg.ping_interval + cfg.ping_timeout + SLACK_S, f"detected after {took:.2f}"
        before = len(logins(sim))
        sim.freeze_ami(False)  # before the first retry (>= 0.25 s) logs in
        back = time.time()
        await until(sim, lambda: len(logins(sim)) > before)
        login = logins(sim)[-1]
        assert sim.ami_actions[login].at - back <= reconnect_bound(0)
        await until(
            sim, lambda: any(a.action == "QueueStatus" for a in sim.ami_actions[login + 1 :])
        )
        await eventually(lambda: service.readiness()["ami"], "AMI ready again")


# --- garbage on the wire ---------------------------------------------------------------------

ARI_GARBAGE = [
    "{not json",
    "[1, 2, 3]",
    '"a string"',
    json.dumps({"type": "NoSuchEvent", "application": APP, "timestamp": "x"}),
    json.dumps({"type": "StasisStart", "application": APP, "timestamp": "x", "channel": 7}),
    json.dumps({"type": "ChannelDtmfReceived", "application": APP}),
]
AMI_GARBAGE = [
    b"\x00\xff\xfe binary noise\r\n\r\n",
    b"a line without a colon\r\nanother one\r\n\r\n",
    b"Response: Success\r\nActionID: nobody-asked\r\n\r\n",
    b"Event: NoSuchEvent\r\nWhatever: 1\r\n\r\n",
]


async def test_garbage_on_both_links_is_logged_skipped_and_service_keeps_working(
    sim: SimAsterisk, redis_url: str
) -> None:
    client, store = await store_for(redis_url)
    try:
        async with running_service(
            service_config(sim, redis_url, queues={"support": DIGIT_ENTRY})
        ) as service:
            with capture_logs() as logs:
                for frame in ARI_GARBAGE:
                    assert sim.send_ari_raw(frame)
                for data in AMI_GARBAGE:
                    assert sim.send_ami_raw(data) == 1
                await eventually(
                    lambda: sum(e["event"] == "ari.bad_event" for e in logs) >= len(ARI_GARBAGE),
                    "every bad ARI frame logged",
                )
                await eventually(
                    lambda: any(e["event"] == "ami.bad_message" for e in logs),
                    "bad AMI bytes logged",
                )
                # Both links stay up and the service still works: a whole offer, end to end.
                caller = await enter_offer(sim)
                mark = await wait_prompt(sim, caller.id, "queue-thankyou")
                sim.press_digit(caller.id, "1")
                await wait_prompt(sim, caller.id, "if-correct-press", since=mark)
                sim.press_digit(caller.id, "1")
                await until(sim, lambda: caller.destroyed)
            assert [cb.number for cb in await store.list()] == [NUMBER]
            assert len(ws_connects(sim)) == 1 and len(logins(sim)) == 1  # no reconnects
            # the stored callback pre-holds both busy agents: their pause events may be on the way
            await eventually(lambda: watcher_matches(service, sim), "the watcher matches the PBX")
            assert problems(logs) == []
    finally:
        await client.aclose()


async def test_queue_events_without_their_ids_are_skipped(sim: SimAsterisk, redis_url: str) -> None:
    config = service_config(sim, redis_url, queues={"support": {"withdraw": "no"}})
    async with running_service(config) as service:
        sim.send_ami_raw(b"Event: QueueCallerJoin\r\nQueue: support\r\nPosition: 1\r\n\r\n")
        sim.send_ami_raw(b"Event: QueueMemberStatus\r\nQueue: support\r\nStatus: 1\r\n\r\n")
        caller = sim.caller_joins("support", NUMBER, "Alice")  # a real event after the bad ones
        await eventually(
            lambda: caller.id in {c.uniqueid for c in service.watcher.callers("support")},
            "the real caller is seen",
        )
        assert watcher_matches(service, sim)


# --- ApplicationReplaced, start-up failures, task hygiene ------------------------------------


async def startup_settled(sim: SimAsterisk) -> None:
    """Both resyncs done and a keepalive Ping sent: the start-up passes are over.

    Taking the app while a start-up Redis call is in flight trips the swallowed-cancellation
    bug below (the service then never stops); that bug has its own test.
    """

    def settled() -> bool:
        actions = [a.action for a in sim.ami_actions]
        resynced = "QueueStatus" in actions and "Ping" in actions[actions.index("QueueStatus") :]
        return resynced and any(r.path == "/ari/channels" for r in sim.requests)

    await sim.wait_for(settled, 20.0)


async def second_socket(sim: SimAsterisk, session: aiohttp.ClientSession) -> Any:
    return await session.ws_connect(
        f"{sim.ari_url}/ari/events?app={APP}",
        headers={"Authorization": aiohttp.encode_basic_auth("cbuser", "cbpass")},
        protocols=("ari",),
    )


@pytest.mark.expect_errors("ari.application_replaced")
async def test_application_replaced_stops_the_service_with_a_clear_message(
    sim: SimAsterisk, redis_url: str
) -> None:
    before = set(asyncio.all_tasks())
    service = Service(service_config(sim, redis_url))
    task = asyncio.create_task(service.run())
    await eventually(lambda: service.started.is_set() and all(service.readiness().values()), "up")
    await startup_settled(sim)
    async with aiohttp.ClientSession() as session:
        ws = await second_socket(sim, session)
        try:
            with capture_logs() as logs, pytest.raises(ExceptionGroup) as caught:
                async with asyncio.timeout(WAIT):
                    await task
        finally:
            await ws.close()
    replaced = caught.value.subgroup(ApplicationReplaced)
    assert replaced is not None, caught.value
    assert APP in str(replaced.exceptions[0])
    hint = [e for e in logs if e["event"] == "ari.application_replaced"]
    assert hint and "another client" in hint[0]["hint"]
    await assert_no_leaked_tasks(before)


def config_file(tmp_path: Path, ari_url: str, ami_port: int, redis_url: str) -> Path:
    path = tmp_path / "callback_ari.conf"
    path.write_text(
        "[general]\napp = callback-ari\ninstance_id = cli-1\n"
        f"[ari]\nurl = {ari_url}\nusername = cbuser\npassword = cbpass\n"
        f"[ami]\nhost = 127.0.0.1\nport = {ami_port}\nusername = cbami\nsecret = cbpass\n"
        "ping_interval = 1\nping_timeout = 1\n"
        f"[redis]\nurl = {redis_url}\nprefix = clitest\n"
        "[http]\nenabled = no\n[agi]\nenabled = no\n[queue:support]\n"
    )
    return path


@contextlib.asynccontextmanager
async def cli_run(
    config: Path, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path, Path]]:
    """``python -m callback_ari -c config run`` with its output in files; killed if left."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callback_ari", "-c", str(config), "--log-format", "json",
            "run", stdout=stdout, stderr=stderr, cwd=REPO,
        )  # fmt: skip
    try:
        yield proc, out, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow  # the CLI in a subprocess
async def test_cli_run_exits_4_when_another_socket_takes_the_app(
    sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    config = config_file(tmp_path, sim.ari_url, sim.ami_port, redis_url)
    async with cli_run(config, tmp_path) as (proc, _out, err), aiohttp.ClientSession() as session:
        await sim.wait_for(lambda: sim.app_connected(APP), 20.0)
        await startup_settled(sim)
        ws = await second_socket(sim, session)
        try:
            async with asyncio.timeout(WAIT):
                status = await proc.wait()
        finally:
            await ws.close()
    message = err.read_text()
    assert status == 4, message
    assert "another program took the Stasis app 'callback-ari'" in message
    assert "Traceback" not in message


@pytest.mark.slow  # the CLI in a subprocess
async def test_cli_run_without_redis_prints_one_line_and_exits_3(
    sim: SimAsterisk, tmp_path: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = config_file(tmp_path, sim.ari_url, sim.ami_port, dead)
    async with cli_run(config, tmp_path) as (proc, out, err):
        async with asyncio.timeout(20):
            status = await proc.wait()
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert status == 3, lines
    assert len(lines) == 1 and "cannot reach Redis" in lines[0] and dead in lines[0], lines
    assert "Traceback" not in out.read_text()
    assert not sim.app_connected(APP)  # it never got as far as Asterisk


async def test_no_task_outlives_the_service_after_faults(sim: SimAsterisk, redis_url: str) -> None:
    before = set(asyncio.all_tasks())
    async with running_service(
        service_config(sim, redis_url, queues={"support": DIGIT_ENTRY})
    ) as service:
        caller = await enter_offer(sim)
        await wait_prompt(sim, caller.id, "queue-thankyou")
        sim.drop_ari_sockets(clean=False)
        sim.drop_ami_connections()
        await until(sim, lambda: len(ws_connects(sim)) == 2 and len(logins(sim)) == 2)
        await eventually(lambda: all(service.readiness().values()), "both links back")
        sim.hangup(caller.id)
        await eventually(lambda: service.sessions == {}, "session ended")
    await assert_no_leaked_tasks(before)


async def test_cancellation_during_a_store_call_is_not_swallowed(redis_url: str) -> None:
    client = connect_redis(redis_url)  # as the service connects: with socket timeouts
    store = CallbackStore(client, prefix="cbtest", clock=SystemClock())
    try:
        await store.ping()  # a pooled connection: calls go straight to writing their command
        lost = 0
        for _ in range(20):
            call = asyncio.create_task(store.counts())
            await asyncio.sleep(0)  # the call is writing its command
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            lost += not call.cancelled()
        assert lost == 0, f"{lost}/20 cancellations swallowed by the store call"
    finally:
        await client.aclose()


async def test_member_ready_during_the_ami_snapshot_is_not_rolled_back(
    sim: SimAsterisk, redis_url: str
) -> None:
    client, store = await store_for(redis_url)
    try:
        cb, _ = await store.enqueue(
            queue="support",
            number=NUMBER,
            caller_name="Alice",
            source_channel="earlier",
            join_time_ms=int(time.time() * 1000) - 60_000,
            origin=Origin.PHONE,
        )
        service = Service(service_config(sim, redis_url))  # resync_interval 30 s
        task = asyncio.create_task(service.run())
        try:
            # The agent frees up just after the PBX answered QueueStatus: the event is newer
            # than the snapshot and must win over it.
            await until(sim, lambda: any(a.action == "QueueStatus" for a in sim.ami_actions))
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            await until(sim, lambda: bool(sim.originates))
            assert sim.originates[0].query["channelId"] == f"cb-{cb.id}-a1"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await client.aclose()

"""Issue 4 acceptance over ARI: every path of the caller's offer dialogue, end to end.

The real Service talks to the simulated PBX (running our dialplan kit) over real sockets and
to a real redis-server. Each test plays the caller -- press keys when a prompt plays, hang up
-- then checks the exact ARI requests the service made for that caller (plays with their
media, playback stops, CB_POSITION, continue targets, hang-ups) and what Redis holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from callback_ari.models import Callback, Origin, State
from callback_ari.service.service import Service
from callback_ari.sim.simpbx.ari_server import RequestRecord
from callback_ari.sim.simpbx.model import Channel
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.sim.simpbx.sim import SimAsterisk
from callback_ari.store.store import CallbackStore
from tests.harness import KIT, running_service, service_config, store_for, wait_for_callback

T = TypeVar("T")
WAIT = 10.0  # ceiling for any single wait; a healthy run takes milliseconds

# The default prompts (core.prompts.DEFAULT_PROMPTS) as the service sends them to ARI.
OFFER = "sound:queue-thankyou,sound:vm-press,sound:digits/1"
CONFIRM = "sound:if-correct-press,sound:digits/1,sound:vm-calldiffnum"
ENTRY = "sound:privacy-prompt,sound:vm-then-pound"
INVALID = "sound:privacy-incorrect"
STORED = "sound:num-was-successfully,sound:added,sound:vm-goodbye"
ALREADY = "sound:auth-thankyou,sound:vm-goodbye"
RETURNING = "sound:queue-thankyou"
TOO_MANY = "sound:vm-sorry," + RETURNING
SORRY = "sound:sorry," + RETURNING
RETURN = "continue callback-return/support/1"

CALLER_ID = "2025551234"
OTHER = "2025550143"


def callerid_readback(number: str) -> str:
    return f"sound:vm-num-i-have,digits:{number}"


def number_readback(number: str) -> str:
    return f"sound:you-entered,digits:{number}"


async def until(sim: SimAsterisk, predicate: Callable[[], bool]) -> None:
    """The fake's condition wait, bounded."""
    async with asyncio.timeout(WAIT):
        await sim.wait_for(predicate)


async def eventually(check: Callable[[], bool]) -> None:
    """Poll service-side state that has no event to wait on, bounded."""
    async with asyncio.timeout(WAIT):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def within(awaitable: Awaitable[T]) -> T:
    """Any wait on the fake, bounded."""
    async with asyncio.timeout(WAIT):
        return await awaitable


# The caller's silences: response_timeout and digit_timeout of every scenario. Short, so the
# silence paths take a fraction of a second; raise it (CB_E2E_SILENCE_S) on a very slow machine.
SILENCE_S = float(os.environ.get("CB_E2E_SILENCE_S", "0.3"))
# How fast the fake plays prompts and runs the queue (1.0: real time).
TIME_SCALE = float(os.environ.get("CB_E2E_TIME_SCALE", "0.02"))

# Dialogue tests enter by the exit digit (instant); the entry tests cover timeout and withdraw.
DIGIT_ENTRY: dict[str, Any] = {
    "offer_threshold": 0,
    "withdraw": "no",
    "response_timeout": SILENCE_S,
    "digit_timeout": SILENCE_S,
    "announce_wait": "no",
}


@dataclass
class Pbx:
    """One scenario: the fake PBX, the running service and a view of its store."""

    sim: SimAsterisk
    service: Service
    store: CallbackStore

    def metric(self, name: str, **labels: str) -> float:
        value = self.service.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def idle(self) -> None:
        """Wait until the service has no dialogue left (the session is really over)."""
        await eventually(lambda: not self.service.sessions)

    async def callbacks(self) -> list[Callback]:
        return await self.store.list(limit=100)

    async def stored(self, count: int = 1) -> list[Callback]:
        async with asyncio.timeout(WAIT):
            return await wait_for_callback(self.store, lambda cbs: len(cbs) >= count)


@contextlib.asynccontextmanager
async def scenario(
    redis_url: str,
    *,
    time_scale: float = TIME_SCALE,
    dialplan: str = KIT,
    queue: dict[str, Any] | None = None,
    sim_timeout: int | None = None,
    before_start: Callable[[CallbackStore], Any] | None = None,
) -> AsyncIterator[Pbx]:
    """SimAsterisk with a `support` queue whose agents are all busy, and the service on it."""
    async with SimAsterisk(time_scale=time_scale, dialplan=dialplan) as sim:
        sim.add_queue("support", ["agent1", "agent2"], handle_time=2.0, timeout=sim_timeout)
        sim.set_devstate("Custom:agent1", "INUSE")
        sim.set_devstate("Custom:agent2", "INUSE")
        config = service_config(
            sim, redis_url, queues={"support": {**DIGIT_ENTRY, **(queue or {})}}
        )
        client, store = await store_for(redis_url)
        try:
            if before_start is not None:
                await before_start(store)
            async with running_service(config) as service:
                await service.refresh_gauges()  # the pending-cap cache, deterministically
                yield Pbx(sim, service, store)
        finally:
            await client.aclose()


class Person:
    """The caller's side: hears prompts (ARI play requests on their channel), presses keys."""

    def __init__(self, pbx: Pbx, channel: Channel) -> None:
        self.pbx = pbx
        self.sim = pbx.sim
        self.ch = channel
        self.heard = 0

    @property
    def id(self) -> str:
        return self.ch.id

    def _plays(self) -> list[RequestRecord]:
        path = f"/ari/channels/{self.ch.id}/play"
        return [r for r in self.sim.requests if r.method == "POST" and r.path == path]

    async def hears(self, media: str) -> str:
        """The next prompt the service plays to this caller is ``media``; its playback id."""
        index = self.heard
        await until(self.sim, lambda: len(self._plays()) > index)
        record = self._plays()[index]
        self.heard += 1
        assert record.query["media"] == media, f"prompt {index}"
        return record.query["playbackId"]

    async def hears_out(self, media: str) -> None:
        """Hear ``media`` to its end (keys pressed after this hit the menu, not the prompt)."""
        playback_id = await self.hears(media)

        def finished() -> bool:
            return any(
                e["playback"]["id"] == playback_id
                for e in self.sim.events(app="callback-ari", kind="PlaybackFinished")
            )

        await until(self.sim, finished)

    def press(self, digit: str) -> None:
        self.sim.press_digit(self.ch.id, digit)

    def keys(self, digits: str) -> None:
        self.sim.send_dtmf(self.ch.id, digits)

    def hang_up(self) -> None:
        self.sim.hangup(self.ch.id)

    def transcript(self) -> list[str]:
        """What the service asked ARI to do to this caller, in order (GETs left out)."""
        chan = f"/ari/channels/{self.ch.id}"
        ours: set[str] = set()
        lines: list[str] = []
        for r in self.sim.requests:
            q = r.query
            if r.method == "POST" and r.path == f"{chan}/play":
                ours.add(q["playbackId"])
                lines.append(f"play {q['media']}")
            elif r.method == "DELETE" and r.path.removeprefix("/ari/playbacks/") in ours:
                lines.append("stop")
            elif r.method == "POST" and r.path == f"{chan}/variable":
                lines.append(f"set {q['variable']}={q['value']}")
            elif r.method == "POST" and r.path == f"{chan}/continue":
                target = f" {q['context']}/{q['extension']}/{q['priority']}" if q else ""
                lines.append(f"continue{target}")
            elif r.method == "DELETE" and r.path == chan:
                lines.append("hangup")
        return lines

    def join_ms(self) -> int:
        return int(self.ch.variables["CB_JOIN"])

    def in_queue(self) -> bool:
        return self.ch in self.sim.queue_callers("support")

    async def back_in_queue(self) -> None:
        """Holding in the queue, as the fake has it and as the service's watcher saw it.

        Waiting for the watcher too keeps the join from reaching a service being shut down.
        """
        await until(self.sim, self.in_queue)
        watcher = self.pbx.service.watcher
        await eventually(lambda: any(c.uniqueid == self.id for c in watcher.callers("support")))


async def holding(pbx: Pbx, number: str, name: str = "Alice") -> Person:
    """A caller dials in and waits in the support queue."""
    person = Person(pbx, pbx.sim.caller_joins("support", number, name))
    await person.back_in_queue()
    return person


async def asks_for_callback(pbx: Pbx, number: str = CALLER_ID, name: str = "Alice") -> Person:
    """A holding caller presses the exit digit and hears the whole offer."""
    person = await holding(pbx, number, name)
    person.press("1")
    await person.hears_out(OFFER)
    return person


def assert_record(cb: Callback, person: Person, number: str) -> None:
    assert cb.number == number
    assert cb.queue == "support"
    assert cb.state is State.PENDING
    assert cb.origin is Origin.PHONE
    assert cb.join_time_ms == person.join_ms()
    assert cb.source_channel == person.id
    assert cb.caller_name == "Alice"


# --- storing a callback ---------------------------------------------------------------------------


async def test_accept_with_caller_id_stores_it_and_returns_callback_status(
    redis_url: str,
) -> None:
    """The kit's subroutine returns QUEUESTATUS=CALLBACK to the route, which hangs up."""
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(STORED)
        await until(pbx.sim, lambda: alice.ch.destroyed)
        await pbx.idle()

        [cb] = await pbx.callbacks()
        assert_record(cb, alice, CALLER_ID)
        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {callerid_readback(CALLER_ID)}",
            f"play {CONFIRM}",
            f"play {STORED}",
            "set CB_RESULT=CALLBACK",
            "continue",
        ]
        assert alice.ch.variables["QUEUESTATUS"] == "CALLBACK"
        assert alice.ch.gosub_stack == []  # returned from the subroutine into the route
        assert pbx.metric("callback_offers_total", queue="support", entry="digit") == 1
        assert pbx.metric("callback_offer_results_total", queue="support", result="stored") == 1
        assert pbx.sim.originates == []  # every agent is busy: nobody is dialled yet


async def test_queue_language_is_asked_for_on_every_prompt(redis_url: str) -> None:
    """language = fr: every play of the dialogue (sounds, the read-back digits, the wait
    estimate) carries lang=fr, so Asterisk picks sounds/fr and its French say-number."""
    async with scenario(redis_url, queue={"language": "fr"}) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(STORED)
        await pbx.idle()
        plays = [
            r.query
            for r in pbx.sim.requests
            if r.method == "POST" and r.path == f"/ari/channels/{alice.id}/play"
        ]
        assert len(plays) == 4
        assert {q.get("lang") for q in plays} == {"fr"}


async def test_channel_language_is_left_alone_without_a_queue_language(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        await asks_for_callback(pbx)  # the offer is playing
        plays = [r.query for r in pbx.sim.requests if r.path.endswith("/play")]
        assert plays and all("lang" not in q for q in plays)


async def test_press_2_at_caller_id_menu_enters_another_number(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("2")
        await alice.hears(ENTRY)
        alice.keys(f"{OTHER}#")  # typing over the prompt stops it; the first key counts
        await alice.hears_out(number_readback(OTHER))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(STORED)
        [cb] = await pbx.stored()
        await pbx.idle()

        assert_record(cb, alice, OTHER)
        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {callerid_readback(CALLER_ID)}",
            f"play {CONFIRM}",
            f"play {ENTRY}",
            "stop",
            f"play {number_readback(OTHER)}",
            f"play {CONFIRM}",
            f"play {STORED}",
            "set CB_RESULT=CALLBACK",
            "continue",
        ]


@pytest.mark.parametrize("caller_id", ["", "anonymous", "+442079460000"])
async def test_caller_id_withheld_or_not_callable_goes_straight_to_entry(
    redis_url: str, caller_id: str
) -> None:
    """Withheld, garbage, or international (refused by default): no read-back, key a number."""
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx, caller_id)
        alice.press("1")
        await alice.hears_out(ENTRY)
        alice.keys(f"{OTHER}#")
        await alice.hears_out(number_readback(OTHER))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(STORED)
        [cb] = await pbx.stored()
        await pbx.idle()

        assert_record(cb, alice, OTHER)
        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {ENTRY}",
            f"play {number_readback(OTHER)}",
            f"play {CONFIRM}",
            f"play {STORED}",
            "set CB_RESULT=CALLBACK",
            "continue",
        ]


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param("19005550100", id="premium"),
        pytest.param("01133142685300", id="international"),
        pytest.param("911", id="emergency"),
    ],
)
async def test_refused_number_is_not_read_back_and_caller_can_retry(
    redis_url: str, refused: str
) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx, "")
        alice.press("1")
        await alice.hears_out(ENTRY)
        alice.keys(f"{refused}#")
        await alice.hears_out(f"{INVALID},{ENTRY}")
        assert await pbx.callbacks() == []
        alice.keys(f"{OTHER}#")
        await alice.hears_out(number_readback(OTHER))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        await alice.hears(STORED)
        [cb] = await pbx.stored()
        await pbx.idle()

        assert cb.number == OTHER
        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {ENTRY}",
            f"play {INVALID},{ENTRY}",
            f"play {number_readback(OTHER)}",
            f"play {CONFIRM}",
            f"play {STORED}",
            "set CB_RESULT=CALLBACK",
            "continue",
        ]


async def test_emergency_numbers_three_times_sends_caller_back_to_queue(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx, "")
        alice.press("1")
        await alice.hears_out(ENTRY)
        alice.keys("911#")
        await alice.hears_out(f"{INVALID},{ENTRY}")
        alice.keys("112#")
        await alice.hears_out(f"{INVALID},{ENTRY}")
        alice.keys("999#")
        await alice.hears(TOO_MANY)
        await alice.back_in_queue()
        await pbx.idle()

        assert await pbx.callbacks() == []
        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {ENTRY}",
            f"play {INVALID},{ENTRY}",
            f"play {INVALID},{ENTRY}",
            f"play {TOO_MANY}",
            "set CB_POSITION=1",
            RETURN,
        ]


# --- back to the queue ----------------------------------------------------------------------------


async def test_three_invalid_keys_apologise_and_return_to_the_same_position(
    redis_url: str,
) -> None:
    async with scenario(redis_url) as pbx:
        bob = await holding(pbx, "2025559876", "Bob")
        alice = await asks_for_callback(pbx)  # second in line
        for _ in range(2):
            alice.press("5")
            await alice.hears_out(f"{INVALID},{OFFER}")
        alice.press("5")
        await alice.hears(TOO_MANY)
        await alice.back_in_queue()
        await pbx.idle()

        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {INVALID},{OFFER}",
            f"play {INVALID},{OFFER}",
            f"play {TOO_MANY}",
            "set CB_POSITION=2",
            RETURN,
        ]
        assert alice.ch.variables["CB_POSITION"] == "2"
        assert pbx.sim.queue_callers("support") == [bob.ch, alice.ch]
        assert await pbx.callbacks() == []
        result = "too_many_tries"
        assert pbx.metric("callback_offer_results_total", queue="support", result=result) == 1


@pytest.mark.parametrize("key", [None, "2"], ids=["silence", "declined"])
async def test_silence_or_2_at_the_offer_returns_to_queue(redis_url: str, key: str | None) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        if key is not None:
            alice.press(key)
        await alice.hears(RETURNING)  # silence: after response_timeout (SILENCE_S)
        await alice.back_in_queue()
        await pbx.idle()

        assert alice.transcript() == [
            f"play {OFFER}",
            f"play {RETURNING}",
            "set CB_POSITION=1",
            RETURN,
        ]
        assert await pbx.callbacks() == []


@pytest.mark.expect_errors("offer.store_failed")
async def test_redis_down_plays_sorry_and_returns_to_queue() -> None:
    redis = RedisProcess()
    redis.start()
    try:
        async with scenario(redis.url) as pbx:
            alice = await asks_for_callback(pbx)
            redis.stop()  # Redis dies while the caller is in the dialogue
            alice.press("1")
            await alice.hears_out(callerid_readback(CALLER_ID))
            await alice.hears_out(CONFIRM)
            alice.press("1")
            await alice.hears(SORRY)
            await alice.back_in_queue()
            await pbx.idle()

            assert alice.transcript() == [
                f"play {OFFER}",
                f"play {callerid_readback(CALLER_ID)}",
                f"play {CONFIRM}",
                f"play {SORRY}",
                "set CB_POSITION=1",
                RETURN,
            ]
            assert pbx.metric("callback_errors_total", area="store") >= 1
    finally:
        redis.close()


async def test_duplicate_number_hears_already_pending_and_one_record_is_kept(
    redis_url: str,
) -> None:
    # on_recall=keep: with the default (cancel) a caller dialling in again cancels the
    # pending callback as they join the queue, so there would be nothing to duplicate.
    async with scenario(redis_url, queue={"on_recall": "keep"}) as pbx:
        first = await asks_for_callback(pbx)
        first.press("1")
        await first.hears_out(callerid_readback(CALLER_ID))
        await first.hears_out(CONFIRM)
        first.press("1")
        await first.hears(STORED)
        [kept] = await pbx.stored()

        second = await asks_for_callback(pbx)
        second.press("1")
        await second.hears_out(callerid_readback(CALLER_ID))
        await second.hears_out(CONFIRM)
        second.press("1")
        await second.hears(ALREADY)
        await until(pbx.sim, lambda: second.ch.destroyed)
        await pbx.idle()

        # the same record; only its first attempt moved, to when the first call hung up
        [again] = await pbx.callbacks()
        assert again == dataclasses.replace(kept, next_attempt_ms=again.next_attempt_ms)
        assert second.transcript() == [
            f"play {OFFER}",
            f"play {callerid_readback(CALLER_ID)}",
            f"play {CONFIRM}",
            f"play {ALREADY}",
            "set CB_RESULT=CALLBACK",
            "continue",
        ]
        assert pbx.metric("callback_offer_results_total", queue="support", result="existing") == 1


# --- hang-ups -------------------------------------------------------------------------------------

# The longest path through the dialogue: (prompt heard, keys pressed once it has played).
LONG_PATH: list[tuple[str, str, str | None]] = [
    ("offer", OFFER, "1"),
    ("callerid_readback", callerid_readback(CALLER_ID), None),
    ("callerid_confirm", CONFIRM, "2"),
    ("entry", ENTRY, f"{OTHER}#"),
    ("number_readback", number_readback(OTHER), None),
    ("number_confirm", CONFIRM, "1"),
    ("stored", STORED, None),
]


@pytest.mark.parametrize("stage", [name for name, _, _ in LONG_PATH])
async def test_hangup_during_a_prompt_stores_nothing_unless_confirmed(
    redis_url: str, stage: str
) -> None:
    async with scenario(redis_url) as pbx:
        alice = await holding(pbx, CALLER_ID)
        alice.press("1")
        heard: list[str] = []
        for name, media, keys in LONG_PATH:
            heard.append(f"play {media}")
            if name == stage:
                await alice.hears(media)
                alice.hang_up()
                break
            await alice.hears_out(media)
            if keys is not None:
                alice.keys(keys)
        await until(pbx.sim, lambda: alice.ch.destroyed)
        await pbx.idle()

        callbacks = await pbx.callbacks()
        if stage == "stored":
            [cb] = callbacks
            assert_record(cb, alice, OTHER)
        else:
            assert callbacks == []
        assert alice.transcript() == heard  # no continue, no hang-up, nothing after
        result = "stored" if stage == "stored" else "abandoned"
        assert pbx.metric("callback_offer_results_total", queue="support", result=result) == 1


async def test_number_confirmed_just_before_hangup_is_kept(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        alice.press("1")
        alice.hang_up()  # in the same instant: the confirmation was given
        [cb] = await pbx.stored()
        await pbx.idle()

        assert_record(cb, alice, CALLER_ID)
        assert not any(line.startswith("continue") for line in alice.transcript())
        assert pbx.metric("callback_offer_results_total", queue="support", result="stored") == 1


async def test_caller_gone_before_its_stasis_end_is_abandoned_not_an_error(
    redis_url: str,
) -> None:
    # The caller's channel leaves our app and we have not heard it yet: the next request
    # for it answers 409 (res/ari: "Channel not in Stasis application").
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        alice.ch.stasis_app = None  # silently: no StasisEnd reaches the service
        alice.press("1")
        await pbx.idle()

        assert await pbx.callbacks() == []
        assert not any(line.startswith("continue") for line in alice.transcript())
        assert pbx.metric("callback_errors_total", area="flow") == 0
        assert pbx.metric("callback_offer_results_total", queue="support", result="abandoned") == 1


# --- barge-in and read-backs ----------------------------------------------------------------------


async def test_key_during_offer_stops_the_playback_and_is_used(redis_url: str) -> None:
    # time_scale 0.2: the offer plays 0.53 s, ample time for the key to land mid-prompt
    async with scenario(redis_url, time_scale=0.2) as pbx:
        alice = await holding(pbx, CALLER_ID)
        alice.press("1")
        offer_id = await alice.hears(OFFER)
        await within(pbx.sim.wait_event("PlaybackStarted", channel_id=alice.id))
        alice.press("1")
        await alice.hears(callerid_readback(CALLER_ID))

        stops = [r for r in pbx.sim.requests if r.method == "DELETE" and offer_id in r.path]
        assert [(s.path, s.status) for s in stops] == [(f"/ari/playbacks/{offer_id}", 204)]
        finished = await within(pbx.sim.wait_event("PlaybackFinished", channel_id=alice.id))
        assert finished["playback"]["id"] == offer_id
        assert finished["playback"]["media_uri"] != "sound:digits/1"  # cut before its end
        assert alice.transcript() == [
            f"play {OFFER}",
            "stop",
            f"play {callerid_readback(CALLER_ID)}",
        ]
        alice.hang_up()
        await pbx.idle()


async def test_keys_during_a_read_back_are_not_a_confirmation(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears(callerid_readback(CALLER_ID))
        alice.press("1")  # during the read-back: ignored, it is not interruptible
        alice.press("1")
        await alice.hears_out(CONFIRM)
        assert await pbx.callbacks() == []
        assert "stop" not in alice.transcript()
        alice.press("1")  # now, at the menu, it confirms
        await alice.hears(STORED)
        [cb] = await pbx.stored()
        assert cb.number == CALLER_ID
        await pbx.idle()


async def test_silence_at_confirm_reads_the_number_back_again(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)
        alice.press("1")
        await alice.hears_out(callerid_readback(CALLER_ID))
        await alice.hears_out(CONFIRM)
        await alice.hears_out(callerid_readback(CALLER_ID))  # after response_timeout
        await alice.hears_out(CONFIRM)
        assert await pbx.callbacks() == []
        alice.press("1")
        await alice.hears(STORED)
        await pbx.stored()
        await pbx.idle()


# --- how callers reach the dialogue ---------------------------------------------------------------


def stasis_args(pbx: Pbx, person: Person) -> list[str]:
    starts = pbx.sim.events(app="callback-ari", kind="StasisStart")
    [start] = [e for e in starts if e["channel"]["id"] == person.id]
    args: list[str] = start["args"]
    return args


async def finish_with_caller_id(pbx: Pbx, person: Person) -> Callback:
    person.press("1")
    await person.hears_out(callerid_readback(CALLER_ID))
    await person.hears_out(CONFIRM)
    person.press("1")
    await person.hears(STORED)
    [cb] = await pbx.stored()
    await pbx.idle()
    return cb


async def test_queue_timeout_entry_reaches_the_offer(redis_url: str) -> None:
    # The admin sets CB_WAIT in [callback-queue] (the kit's documented knob): 10 s scaled.
    kit = KIT.replace(" same => n,Set(CB_WAIT=)\n", " same => n,Set(CB_WAIT=10)\n", 1)
    assert kit != KIT
    async with scenario(redis_url, dialplan=kit) as pbx:
        alice = await holding(pbx, CALLER_ID)
        await alice.hears_out(OFFER)  # nobody pressed anything: Queue() timed out

        assert alice.ch.variables["QUEUESTATUS"] == "TIMEOUT"
        assert stasis_args(pbx, alice) == ["offer", "support", "timeout", str(alice.join_ms()), "1"]
        cb = await finish_with_caller_id(pbx, alice)
        assert_record(cb, alice, CALLER_ID)
        assert pbx.metric("callback_offers_total", queue="support", entry="timeout") == 1
        assert not any(a.action == "QueueWithdrawCaller" for a in pbx.sim.ami_actions)


async def test_service_withdraw_entry_reaches_the_offer(redis_url: str) -> None:
    async with scenario(redis_url, queue={"offer_threshold": 1, "withdraw": "yes"}) as pbx:
        alice = await holding(pbx, CALLER_ID)
        await alice.hears_out(OFFER)  # held past offer_threshold: withdrawn by the service

        assert alice.ch.variables["QUEUESTATUS"] == "WITHDRAW"
        withdraws = [a for a in pbx.sim.ami_actions if a.action == "QueueWithdrawCaller"]
        assert len(withdraws) == 1
        assert stasis_args(pbx, alice)[:3] == ["offer", "support", "withdraw"]
        cb = await finish_with_caller_id(pbx, alice)
        assert_record(cb, alice, CALLER_ID)
        assert pbx.metric("callback_offers_total", queue="support", entry="withdraw") == 1


async def test_exit_digit_entry_reaches_the_offer(redis_url: str) -> None:
    async with scenario(redis_url) as pbx:
        alice = await asks_for_callback(pbx)

        assert stasis_args(pbx, alice) == ["offer", "support", "digit", str(alice.join_ms()), "1"]
        cb = await finish_with_caller_id(pbx, alice)
        assert_record(cb, alice, CALLER_ID)
        assert pbx.metric("callback_offers_total", queue="support", entry="digit") == 1


def closed_hours() -> str:
    """Business hours on a day two days from now (UTC): closed today whatever the time."""
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%a").lower()
    return f"{day} 09:00-10:00"


async def _one_pending(store: CallbackStore) -> None:
    await store.enqueue(
        queue="support",
        number="2025550000",
        caller_name="Earlier",
        source_channel="earlier",
        join_time_ms=1,
        origin=Origin.WEB,
    )


@pytest.mark.parametrize("closed", ["hours", "max_pending"])
async def test_closed_queue_returns_caller_without_an_offer(redis_url: str, closed: str) -> None:
    keys = {"hours": closed_hours()} if closed == "hours" else {"max_pending": 1}
    before = _one_pending if closed == "max_pending" else None
    async with scenario(redis_url, queue=keys, before_start=before) as pbx:
        alice = await holding(pbx, CALLER_ID)
        alice.press("1")
        await within(pbx.sim.wait_event("StasisStart", channel_id=alice.id))
        await within(pbx.sim.wait_event("StasisEnd", channel_id=alice.id))
        await alice.back_in_queue()
        await pbx.idle()

        assert alice.transcript() == ["set CB_POSITION=1", RETURN]
        assert len(await pbx.callbacks()) == (1 if closed == "max_pending" else 0)
        assert pbx.metric("callback_offer_results_total", queue="support", result="closed") == 1

"""The FastAGI offer over a real socket, against an in-test peer answering like Asterisk 22."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeAlias

import pytest
import redis.asyncio as aioredis

from callback_ari.asterisk import agi
from callback_ari.asterisk.agi import AgiChannel, AgiServer
from callback_ari.clock import ManualClock
from callback_ari.config.loader import Config, parse_config
from callback_ari.errors import AgiError, AgiHangup
from callback_ari.metrics import Metrics
from callback_ari.models import Callback, Origin, State
from callback_ari.service.intake import HeldCallback
from callback_ari.service.offer_agi import entry_from_env, offer_server
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.store.store import CallbackStore

NOW_MS = 1_800_000_000_000
JOIN_MS = NOW_MS - 150_000
SCRIPT = f"offer?queue=support&entry=timeout&join={JOIN_MS}&position=3"
UNIQUEID = "1800000000.42"
CONFIG = """
[ari]
password = ari-secret-1
[ami]
secret = ami-secret-2
[queue:support]
"""

# --- the Asterisk side: res_agi's replies, and a scripted caller ---------------------------

Rule: TypeAlias = tuple[str | int, str]  # (command kind, "PLAY" or the n-th command; reaction)

USAGE = (
    "520-Invalid command syntax.  Proper usage follows:\n"
    " Usage: STREAM FILE <filename> <escape_digits> [sample offset]\n"
    "     Send the given file, allowing playback to be interrupted by the given digits, if any.\n"
    "520 End of proper usage.\n"
)
REPLIES = {
    "510": "510 Invalid or unknown command\n",
    "520": USAGE,
    "520 short": "520 Invalid command syntax.  Proper usage not available.\n",
}
DEAD = "511 Command Not Permitted on a dead channel or intercept routine\n"
PLAYS = ("STREAM FILE", "SAY DIGITS", "SAY NUMBER")
# command -> (min, max) argument count, as res_agi's handlers check it
ARGC = {
    "STREAM FILE": (4, 5), "SAY DIGITS": (4, 4), "SAY NUMBER": (4, 5), "WAIT FOR DIGIT": (4, 4),
    "SET CONTEXT": (3, 3), "SET EXTENSION": (3, 3), "SET PRIORITY": (3, 3),
    "SET VARIABLE": (4, 4), "HANGUP": (1, 1),
}  # fmt: skip


def agi_env(port: int, *, callerid: str, script: str) -> dict[str, str]:
    """What Asterisk 22 sends first on a FastAGI connection (launch_netscript + setup_env)."""
    return {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": "PJSIP/trunk-00000007",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": UNIQUEID,
        "agi_version": "22.1.0",
        "agi_callerid": callerid,
        "agi_calleridname": "Pat Doe" if callerid != "unknown" else "unknown",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "8005550100",
        "agi_rdnis": "unknown",
        "agi_context": "callback-offer",
        "agi_extension": "support",
        "agi_priority": "6",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140234",
    }


@dataclass
class AsteriskPeer:
    """Asterisk's end of one FastAGI connection. The caller is silent unless a rule says else.

    Rules are taken in order, only the first at any time: ``("PLAY", "1")`` presses 1 during
    the next STREAM FILE / SAY (lost if 1 is not an escape digit), ``("WAIT FOR DIGIT", "2")``
    keys 2 there, ``(3, "hangup")`` hangs up during the third command; other reactions:
    ``hangup_after`` (between commands), ``missing`` (sound file not found), ``stall`` (never
    answer), and the error replies of ``REPLIES``.
    """

    port: int
    rules: list[Rule]
    env: dict[str, str]
    commands: list[str] = field(default_factory=list)
    dead: bool = False

    async def run(self) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(("".join(f"{k}: {v}\n" for k, v in self.env.items()) + "\n").encode())
            await writer.drain()
            while line := await reader.readline():
                self.commands.append(line.decode().removesuffix("\n"))
                writer.write(self.answer(self.commands[-1]).encode())
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return self.commands

    def answer(self, command: str) -> str:
        argv = shlex.split(command)
        kind = next(
            (k for k in ARGC if [w.upper() for w in argv[: k.count(" ") + 1]] == k.split()), ""
        )
        if self.dead and kind != "SET VARIABLE":
            return DEAD if kind else REPLIES["510"]
        what = self._rule(kind)
        if what in REPLIES:
            return REPLIES[what]
        if not kind:
            return REPLIES["510"]
        low, high = ARGC[kind]
        numeric = {"SAY DIGITS": 2, "SAY NUMBER": 2, "WAIT FOR DIGIT": 3}.get(kind)
        if not low <= len(argv) <= high or (numeric and not argv[numeric].isdecimal()):
            return USAGE
        if what == "stall":
            return ""
        notice = "HANGUP\n" if what in ("hangup", "hangup_after") or kind == "HANGUP" else ""
        self.dead = self.dead or bool(notice)
        if kind == "HANGUP":
            return "200 result=1\n" + notice
        if kind.startswith("SET"):
            return ("200 result=1\n" if kind == "SET VARIABLE" else "200 result=0\n") + notice
        result = -1 if what in ("hangup", "missing") else 0
        if kind == "WAIT FOR DIGIT" and what and len(what) == 1:
            result = ord(what)
        if kind in PLAYS and what and len(what) == 1 and what in argv[3]:
            result = ord(what)  # a key that is no escape digit is lost, as in Asterisk
        endpos = f" endpos={0 if result < 0 else 16000}" if kind == "STREAM FILE" else ""
        return f"200 result={result}{endpos}\n{notice}"

    def _rule(self, kind: str) -> str:
        if not self.rules:
            return ""
        when, what = self.rules[0]
        hit = when == len(self.commands) or when == kind or (when == "PLAY" and kind in PLAYS)
        if hit:
            self.rules.pop(0)
            return what
        return ""


def keys(typed: str) -> list[Rule]:
    """The caller keys ``typed`` one digit per WAIT FOR DIGIT."""
    return [("WAIT FOR DIGIT", d) for d in typed]


# --- what the caller hears, as AGI commands --------------------------------------------------

ANY, NONE = '"0123456789*#"', '""'
OFFER = [f"STREAM FILE {f} {ANY}" for f in ("queue-thankyou", "vm-press", "digits/1")]
MENU = ["WAIT FOR DIGIT 8000"]
CONFIRM = [f"STREAM FILE {f} {ANY}" for f in ("if-correct-press", "digits/1", "vm-calldiffnum")]
ENTER = [f"STREAM FILE {f} {ANY}" for f in ("privacy-prompt", "vm-then-pound")]
INVALID = [f"STREAM FILE privacy-incorrect {ANY}"]
# A booked caller goes back to the kit, whose subroutine returns QUEUESTATUS=CALLBACK.
BOOKED = "SET VARIABLE CB_RESULT CALLBACK"
STORED = [
    *(f"STREAM FILE {f} {NONE}" for f in ("num-was-successfully", "added", "queue-holdtime")),
    f"SAY NUMBER 4 {NONE}",  # the 240 s wait estimate, in minutes
    *(f"STREAM FILE {f} {NONE}" for f in ("queue-minutes", "vm-goodbye")),
    BOOKED,
]
SETS = [
    "SET VARIABLE CB_POSITION 3", "SET CONTEXT callback-return", "SET EXTENSION support",
    "SET PRIORITY 1",
]  # fmt: skip
RETURN = [f"STREAM FILE queue-thankyou {NONE}", *SETS]


def heard_callerid(number: str) -> list[str]:
    return [f"STREAM FILE vm-num-i-have {NONE}", f"SAY DIGITS {number} {NONE}"]


def heard_entered(number: str) -> list[str]:
    return [f"STREAM FILE you-entered {NONE}", f"SAY DIGITS {number} {NONE}"]


def typed(digits: str) -> list[str]:
    """The waits while keying: the menu timeout first, then the inter-digit timeout."""
    return MENU + ["WAIT FOR DIGIT 5000"] * (len(digits) - 1)


# --- the service side: real config, store, metrics and server --------------------------------


@dataclass
class Rig:
    server: AgiServer
    store: CallbackStore
    metrics: Metrics
    booked: list[HeldCallback]  # what the service is told to release once the line is down

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    async def call(
        self, *rules: Rule, callerid: str = "2025550143", script: str = SCRIPT
    ) -> AsteriskPeer:
        """One caller's whole session; returns when the server has closed the connection."""
        peer = AsteriskPeer(
            self.port, list(rules), agi_env(self.port, callerid=callerid, script=script)
        )
        async with asyncio.timeout(10):
            await peer.run()
        assert peer.rules == [], "the scripted caller did not get to do everything"
        return peer

    def results(self) -> dict[str, float]:
        """How offer dialogues ended, from the metrics."""
        return {
            s.labels["result"]: s.value
            for metric in self.metrics.registry.collect()
            if metric.name == "callback_offer_results"
            for s in metric.samples
            if s.name.endswith("_total") and s.value
        }

    async def records(self) -> list[Callback]:
        return await self.store.list(queue="support")


@contextlib.asynccontextmanager
async def serving(server: AgiServer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(server.serve("127.0.0.1", 0))
    try:
        async with asyncio.timeout(5):
            await server.listening.wait()
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def config_general_timeout() -> int:
    return parse_config(CONFIG, {}).general.dialogue_timeout


@contextlib.asynccontextmanager
async def rig_on(url: str, config: Config) -> AsyncIterator[Rig]:
    clock = ManualClock(NOW_MS)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    store = CallbackStore(client, clock=clock)
    metrics = Metrics()
    booked: list[HeldCallback] = []
    server = offer_server(
        store=store, config=config, metrics=metrics, clock=clock, wait_estimate=lambda _q: 240.0,
        on_booked=booked.append,
    )  # fmt: skip
    try:
        async with serving(server):
            yield Rig(server, store, metrics, booked)
    finally:
        await client.aclose()


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    async with rig_on(redis_url, parse_config(CONFIG, {})) as r:
        yield r


# --- accepting -------------------------------------------------------------------------------


async def test_accepting_caller_id_stores_the_callback_and_hands_back_booked(rig: Rig) -> None:
    peer = await rig.call(("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "1"))
    assert peer.commands == (OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU + STORED)
    [cb] = await rig.records()
    assert (cb.number, cb.queue, cb.join_time_ms, cb.origin) == (
        "2025550143", "support", JOIN_MS, Origin.AGI,
    )  # fmt: skip
    assert (cb.state, cb.caller_name, cb.source_channel) == (State.PENDING, "Pat Doe", UNIQUEID)
    # the caller is handed back to their route, still on the line: held until the service
    # sees the channel gone (at most dialogue_timeout + first_attempt_grace from now)
    until = NOW_MS + (config_general_timeout() + 5) * 1000
    assert cb.next_attempt_ms == until
    assert rig.booked == [HeldCallback("support", cb.id, UNIQUEID, until)]
    assert rig.results() == {"stored": 1}
    held = rig.metrics.registry.get_sample_value(
        "callback_hold_at_offer_seconds_sum", {"queue": "support"}
    )
    assert held == 150.0


async def test_unknown_caller_id_keys_a_number_confirms_and_is_stored(rig: Rig) -> None:
    rules = [("PLAY", "1"), *keys("3125550199#"), ("WAIT FOR DIGIT", "1")]
    peer = await rig.call(*rules, callerid="unknown")
    assert peer.commands == (
        OFFER[:1] + ENTER + typed("3125550199#") + heard_entered("3125550199") + CONFIRM
        + MENU + STORED
    )  # fmt: skip
    [cb] = await rig.records()
    assert (cb.number, cb.caller_name, cb.origin) == ("3125550199", "", Origin.AGI)


async def test_caller_id_rejected_pressing_2_enters_another_number(rig: Rig) -> None:
    rules = [("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "2"), *keys("3125550199#")]
    peer = await rig.call(*rules, ("WAIT FOR DIGIT", "1"))
    assert peer.commands == (
        OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU + ENTER
        + typed("3125550199#") + heard_entered("3125550199") + CONFIRM + MENU + STORED
    )  # fmt: skip
    assert [cb.number for cb in await rig.records()] == ["3125550199"]


async def test_three_refused_numbers_apologise_and_return_to_the_queue(rig: Rig) -> None:
    rules = [("WAIT FOR DIGIT", "1"), *keys("911#"), *keys("112#"), *keys("999#")]
    peer = await rig.call(*rules, callerid="unknown")
    assert peer.commands == (
        OFFER + MENU + ENTER + typed("911#") + INVALID + ENTER + typed("112#") + INVALID
        + ENTER + typed("999#") + [f"STREAM FILE vm-sorry {NONE}"] + RETURN
    )  # fmt: skip
    assert await rig.records() == []
    assert rig.results() == {"too_many_tries": 1}


@pytest.mark.parametrize(
    "number",
    ["911#", "112#", "999#", "9005551234#", "011442079460018"],  # 15 digits submit themselves
    ids=["911", "112", "999", "premium", "international"],
)
async def test_refused_number_is_never_stored(rig: Rig, number: str) -> None:
    rules = [("WAIT FOR DIGIT", "1"), *keys(number), ("WAIT FOR DIGIT", "hangup")]
    peer = await rig.call(*rules, callerid="unknown")
    assert peer.commands == OFFER + MENU + ENTER + typed(number) + INVALID + ENTER + MENU
    assert await rig.records() == []
    assert rig.results() == {"abandoned": 1}


async def test_international_number_is_read_back_when_the_queue_allows_it(redis_url: str) -> None:
    config = parse_config(CONFIG + "allow_international = yes\n", {})
    async with rig_on(redis_url, config) as rig:
        rules = [("WAIT FOR DIGIT", "1"), *keys("011442079460018"), ("WAIT FOR DIGIT", "1")]
        peer = await rig.call(*rules, callerid="unknown")
        assert peer.commands[-len(STORED) - 6 :] == (
            heard_entered("442079460018") + CONFIRM + MENU + STORED
        )
        assert [cb.number for cb in await rig.records()] == ["+442079460018"]


async def test_queue_language_is_set_on_the_channel_before_anything_plays(
    redis_url: str,
) -> None:
    """STREAM FILE and SAY DIGITS use the channel's language: the session sets it first."""
    async with rig_on(redis_url, parse_config(CONFIG + "language = es\n", {})) as rig:
        peer = await rig.call(("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "hangup"))
        assert peer.commands[0] == "SET VARIABLE CHANNEL(language) es"
        assert peer.commands[1:3] == OFFER[:2]


async def test_emergency_caller_id_is_not_offered_for_confirmation(rig: Rig) -> None:
    peer = await rig.call(("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "hangup"), callerid="911")
    assert peer.commands == OFFER + MENU + ENTER + MENU


# --- going back to the queue -----------------------------------------------------------------


async def test_silence_at_the_offer_returns_the_caller_to_the_queue(rig: Rig) -> None:
    peer = await rig.call()
    assert peer.commands == OFFER + MENU + RETURN
    assert rig.results() == {"silence": 1}


async def test_declining_returns_the_caller_to_the_queue(rig: Rig) -> None:
    peer = await rig.call(("WAIT FOR DIGIT", "2"))
    assert peer.commands == OFFER + MENU + RETURN
    assert await rig.records() == []


async def test_no_position_means_no_cb_position_variable(rig: Rig) -> None:
    peer = await rig.call(script="offer?queue=support")
    assert peer.commands == OFFER + MENU + RETURN[:1] + SETS[1:]


@pytest.mark.expect_errors("offer.store_failed")
async def test_redis_down_says_sorry_and_returns_to_the_queue() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with rig_on(closed, parse_config(CONFIG, {})) as rig:
        peer = await rig.call(("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "1"))
        assert peer.commands == (
            OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU
            + [f"STREAM FILE sorry {NONE}"] + RETURN
        )  # fmt: skip
        assert rig.results() == {"store_failed": 1}
        errors = rig.metrics.registry.get_sample_value("callback_errors_total", {"area": "store"})
        assert errors == 1


async def test_duplicate_number_is_told_already_pending_and_not_stored_twice(rig: Rig) -> None:
    first, _ = await rig.store.enqueue(
        queue="support", number="2025550143", join_time_ms=JOIN_MS - 1, origin=Origin.PHONE
    )
    peer = await rig.call(("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "1"))
    farewell = [f"STREAM FILE auth-thankyou {NONE}", f"STREAM FILE vm-goodbye {NONE}", BOOKED]
    assert peer.commands == OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU + farewell
    assert await rig.records() == [first]
    assert rig.results() == {"existing": 1}


# --- keys during prompts -----------------------------------------------------------------


async def test_barge_in_is_used_but_keys_during_read_backs_are_lost(rig: Rig) -> None:
    # 1 cuts the offer short; 2 ("another number") during both read-back parts cannot be
    # pressed (no escape digits); 1 cuts the confirmation short and stores the caller ID.
    rules = [("PLAY", "1"), ("PLAY", "2"), ("PLAY", "2"), ("PLAY", "1")]
    peer = await rig.call(*rules)
    assert peer.commands == OFFER[:1] + heard_callerid("2025550143") + CONFIRM[:1] + STORED
    assert [cb.number for cb in await rig.records()] == ["2025550143"]


async def test_an_invalid_key_repeats_the_offer(rig: Rig) -> None:
    peer = await rig.call(("WAIT FOR DIGIT", "3"))
    assert peer.commands == OFFER + MENU + INVALID + OFFER + MENU + RETURN


async def test_a_result_that_is_no_key_keeps_waiting_on_the_same_timer(rig: Rig) -> None:
    peer = await rig.call(("WAIT FOR DIGIT", "x"))  # result=120: not DTMF, ignored
    assert peer.commands == OFFER + MENU + MENU + RETURN


async def test_a_missing_sound_file_does_not_end_the_dialogue(rig: Rig) -> None:
    peer = await rig.call((1, "missing"))
    assert peer.commands == OFFER + MENU + RETURN


# --- hang-ups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        # result=-1 then the notice: the next command learns the channel is dead (511)
        ([(1, "hangup")], OFFER[:2]),
        ([("WAIT FOR DIGIT", "hangup")], OFFER + MENU),
        (
            [("WAIT FOR DIGIT", "1"), ("SAY DIGITS", "hangup")],
            OFFER + MENU + heard_callerid("2025550143") + CONFIRM[:1],
        ),
        (
            [("WAIT FOR DIGIT", "1"), ("SAY DIGITS", "hangup_after")],
            OFFER + MENU + heard_callerid("2025550143") + CONFIRM[:1],
        ),
        (
            [("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "hangup")],
            OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU,
        ),
        (
            [
                ("WAIT FOR DIGIT", "1"),
                ("WAIT FOR DIGIT", "2"),
                *keys("312"),
                ("WAIT FOR DIGIT", "hangup"),
            ],
            OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU + ENTER + typed("3120"),
        ),
        ([(4, "hangup_after")], OFFER + MENU + RETURN[:1]),
    ],
    ids=["offer", "offer-wait", "read-back", "between", "confirm-wait", "keying", "menu-end"],
)
async def test_hangup_during_a_prompt_stores_nothing(
    rig: Rig, rules: list[Rule], expected: list[str]
) -> None:
    peer = await rig.call(*rules)
    assert peer.commands == expected
    assert not any(c.startswith(("SET", "HANGUP")) for c in peer.commands)
    assert await rig.records() == []
    assert rig.results() == {"abandoned": 1}


async def test_hangup_during_the_farewell_keeps_the_stored_callback(rig: Rig) -> None:
    rules = [("WAIT FOR DIGIT", "1"), ("WAIT FOR DIGIT", "1"), ("STREAM FILE", "hangup")]
    peer = await rig.call(*rules)
    assert peer.commands == (
        OFFER + MENU + heard_callerid("2025550143") + CONFIRM + MENU + STORED[:2]
    )
    assert [cb.number for cb in await rig.records()] == ["2025550143"]
    assert rig.results() == {"stored": 1}


# --- protocol errors -------------------------------------------------------------------------


@pytest.mark.expect_errors("agi.command_failed")
@pytest.mark.parametrize("reply", ["510", "520", "520 short"])
async def test_error_reply_sends_the_caller_back_to_the_queue(rig: Rig, reply: str) -> None:
    peer = await rig.call((1, reply))
    assert peer.commands == OFFER[:1] + SETS
    assert rig.results() == {"error": 1}
    assert rig.metrics.registry.get_sample_value("callback_errors_total", {"area": "agi"}) == 1


@pytest.mark.parametrize(
    "script",
    ["", "other?queue=support", "offer?queue=sales", "offer"],
    ids=["none", "other-path", "unknown-queue", "no-queue"],
)
async def test_unknown_script_closes_without_commands(rig: Rig, script: str) -> None:
    peer = await rig.call(script=script)
    assert peer.commands == []
    assert rig.results() == {}


async def raw_session(port: int, data: bytes) -> bytes:
    """Send ``data`` as the environment; everything the server sends before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            writer.write_eof()
            await writer.drain()
            async with asyncio.timeout(10):
                received = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: callback\r\n\r\n",
        b"agi_network: yes\nagi_network_script: " + b"o" * 20_000 + b"\n\n",
        b"agi_network: yes\n" + b"agi_x: y\n" * 300 + b"\n",
        b"\xff\xfe\x00\x01\n\n",
        b"agi_network: yes\nagi_network_script: offer?queue=support",  # closed mid-environment
    ],
    ids=["http", "oversized-line", "too-many-lines", "binary", "truncated"],
)
async def test_malformed_environment_ends_the_session_and_the_server_lives_on(
    rig: Rig, data: bytes
) -> None:
    assert await raw_session(rig.port, data) == b""
    # a bad peer is turned away, not counted as a crash of ours
    assert rig.metrics.registry.get_sample_value("callback_errors_total", {"area": "agi"}) == 0
    peer = await rig.call()  # the next caller is served as usual
    assert peer.commands == OFFER + MENU + RETURN


async def test_a_silent_peer_is_dropped(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agi, "ENV_TIMEOUT_S", 0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    try:
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.expect_errors("agi.continue_failed")
async def test_dialogue_timeout_closes_a_session_that_gets_no_reply(redis_url: str) -> None:
    base = parse_config(CONFIG, {})
    config = dataclasses.replace(
        base, general=dataclasses.replace(base.general, dialogue_timeout=0)
    )
    async with rig_on(redis_url, config) as rig:
        peer = await rig.call((1, "stall"))
        assert peer.commands == OFFER[:1]  # nothing more: the unanswered reply is still owed
        assert rig.results() == {"dialogue_timeout": 1}


async def test_server_cancellation_leaves_no_tasks_and_closes_calls(redis_url: str) -> None:
    before = asyncio.all_tasks()
    async with rig_on(redis_url, parse_config(CONFIG, {})) as rig:
        await rig.call()
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        env = agi_env(rig.port, callerid="2025550143", script=SCRIPT)
        writer.write(("".join(f"{k}: {v}\n" for k, v in env.items()) + "\n").encode())
        assert await reader.readline() == f"STREAM FILE queue-thankyou {ANY}\n".encode()
        # the server is cancelled (rig_on's exit) while this call waits for its reply
    try:
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
    assert asyncio.all_tasks() == before


# --- the channel: argument safety and reply parsing --------------------------------------


@contextlib.asynccontextmanager
async def channel_pair() -> AsyncIterator[
    tuple[AgiChannel, asyncio.StreamReader, asyncio.StreamWriter]
]:
    """An AgiChannel on a real socket, and the Asterisk end of it."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    channel = AgiChannel(*await accepted)
    try:
        yield channel, reader, writer
    finally:
        await channel.close()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "word",
    ["x\nHANGUP", "sound\n", "two words", '"a"b"', "back\\slash", "", "tab\there", "\x00", "é"],
)
async def test_no_argument_can_inject_a_command(word: str) -> None:
    async with channel_pair() as (channel, reader, writer):
        with pytest.raises(AgiError, match="unsafe"):
            await channel.command("STREAM", "FILE", word, '""')
        # nothing was sent: the next command is the first line Asterisk reads
        writer.write(b"200 result=0 endpos=100\n")
        assert await channel.command("STREAM", "FILE", "custom/hi-en_2", '"0123456789*#"') == (
            0,
            "",
        )
        assert await reader.readline() == b'STREAM FILE custom/hi-en_2 "0123456789*#"\n'


async def test_channel_reads_notices_usage_texts_and_dead_channels() -> None:
    async with channel_pair() as (channel, reader, writer):
        writer.write(USAGE.encode() + b"200 result=1 (some data)\n")
        with pytest.raises(AgiError, match="520"):
            await channel.command("SAY", "DIGITS", "12", '""')
        assert await channel.command("GET", "VARIABLE", "X") == (1, "some data")  # still in step
        writer.write(b"HANGUP\n200 result=1\n")
        assert await channel.command("SET", "VARIABLE", "CB_POSITION", "3") == (1, "")
        assert channel.hung_up
        with pytest.raises(AgiHangup):
            await channel.command("SET", "CONTEXT", "callback-return")
        sent = [await reader.readline() for _ in range(3)]
        assert sent == [b'SAY DIGITS 12 ""\n', b"GET VARIABLE X\n", b"SET VARIABLE CB_POSITION 3\n"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"agi_network_script": SCRIPT}, ("support", "timeout", JOIN_MS, 3)),
        (
            {
                "agi_network_script": "offer",
                "agi_arg_1": "support",
                "agi_arg_2": "digit",
                "agi_arg_3": str(JOIN_MS),
                "agi_arg_4": "7",
            },
            ("support", "digit", JOIN_MS, 7),
        ),
        (
            {"agi_network_script": "offer?queue=support&join=99999999999999"},
            ("support", "timeout", NOW_MS, 0),
        ),
        ({"agi_network_script": "offer?entry=digit"}, None),
    ],
    ids=["query", "stasis-style-args", "future-join", "no-queue"],
)
def test_entry_from_env(env: dict[str, str], expected: tuple[str, str, int, int] | None) -> None:
    entry = entry_from_env(env, NOW_MS)
    got = None if entry is None else (entry.queue, entry.entry, entry.join_time_ms, entry.position)
    assert got == expected

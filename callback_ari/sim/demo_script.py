"""The demo's scripted scenario: who calls, what they press, and what happens on the PBX.

Durations are PBX ("story") seconds; the simulated PBX runs ``speed`` times faster than real
time and every scripted pause is divided by the speed. The service's own thresholds are whole
real seconds (see ``demo.demo_config``), derived from the same story durations.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from callback_ari.masking import mask
from callback_ari.models import State
from callback_ari.sim.demo_stage import Stage
from callback_ari.store.store import CallbackStore

QUEUE = "support"
AGENTS = ("agent1", "agent2")

# Story durations, PBX seconds.
ARRIVAL_GAP_S = 30.0  # between two callers dialling in
OFFER_HOLD_S = 90.0  # offer_threshold: held this long, a caller is offered a callback
RETRY_S = 40.0  # retry_interval after a busy line
TALK_S = 25.0  # an agent's handle time (simulated customers hang up 30 s after pressing 1)
THINK_S = 1.5  # a caller's pause before pressing a key
BREAK_S = 20.0  # between the acts of the play
POLL_S = 0.05  # real seconds between looks at the store (it has no events)


class Choice(StrEnum):
    """What a caller does when offered a callback."""

    CALLER_ID = "caller ID"
    OTHER_NUMBER = "keyed number"
    DECLINE = "declined"


@dataclass(frozen=True, slots=True)
class Caller:
    """One person in the play. Numbers are national US digits."""

    name: str
    number: str  # the caller ID they ring from
    choice: Choice
    keyed: str = ""  # the number they key in (Choice.OTHER_NUMBER)
    behaviours: tuple[str, ...] = ()  # what their callback number does, one per call
    expected: tuple[str, ...] = ()  # the outcome of each callback attempt we expect

    @property
    def callback_number(self) -> str | None:
        """The number the service should call back, or None if they declined."""
        if self.choice is Choice.DECLINE:
            return None
        return self.keyed if self.choice is Choice.OTHER_NUMBER else self.number


def make_cast(seed: int) -> tuple[Caller, ...]:
    """Four callers; the seed picks their line numbers (the simulator keys on 555-1/2/3xxx)."""
    rng = random.Random(seed)
    used: set[str] = set()

    def number(block: int) -> str:  # 202-555-<block>xxx; 1 answers, 2 busy, 3 no answer
        while True:
            candidate = f"202555{block}{rng.randrange(100, 1000)}"
            if candidate not in used:
                used.add(candidate)
                return candidate

    return (
        Caller("Dave Patel", number(1), Choice.DECLINE),
        Caller("Alice Johnson", number(1), Choice.CALLER_ID, expected=("connected",)),
        Caller(
            "Bob Martinez",
            number(2),
            Choice.CALLER_ID,
            behaviours=("busy", "answer"),  # on another call the first time we ring
            expected=("busy", "connected"),
        ),
        Caller(
            "Carol Nguyen",
            number(3),  # her desk phone, which nobody answers
            Choice.OTHER_NUMBER,
            keyed=number(1),  # her mobile
            expected=("connected",),
        ),
    )


class DemoFailed(Exception):
    """A scripted expectation did not come true in time."""


E = TypeVar("E", bound=BaseException)


def leaf_exceptions(group: BaseExceptionGroup[E]) -> list[E]:
    """The exceptions inside nested task-group exception groups, in order."""
    found: list[E] = []
    for exc in group.exceptions:
        found += leaf_exceptions(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


@dataclass(slots=True)
class AgentCall:
    """A caller connected to an agent, as the PBX reported it (AMI AgentConnect)."""

    agent: str
    at: float  # time.monotonic()
    done: bool = False


@dataclass(slots=True)
class Ledger:
    """What the audience saw happen, for the summary."""

    joined: dict[str, float] = field(default_factory=dict)  # caller name -> monotonic
    channels: dict[str, str] = field(default_factory=dict)  # caller name -> inbound leg id
    agent_calls: dict[str, AgentCall] = field(default_factory=dict)  # channel id -> call
    outcomes: dict[str, list[str]] = field(default_factory=dict)  # callback id -> per attempt
    states: dict[str, State] = field(default_factory=dict)  # callback id -> latest state
    numbers: dict[str, str] = field(default_factory=dict)  # callback id -> number

    def callback_of(self, number: str) -> str | None:
        return next((cid for cid, n in self.numbers.items() if n == number), None)

    def served(self, channel_prefix: str) -> AgentCall | None:
        """The agent call of the channel with this id (or id prefix)."""
        return next(
            (c for cid, c in self.agent_calls.items() if cid.startswith(channel_prefix)), None
        )


class Scenario:
    """Plays the script against a running service and narrates it; ``problems`` says why not."""

    def __init__(
        self,
        stage: Stage,
        cast: tuple[Caller, ...],
        *,
        speed: float,
        deadline_s: float,
        narrate: Callable[[str], None],
    ) -> None:
        self.stage = stage
        self.store: CallbackStore | None = None  # the running service's, from run()
        self.cast = cast
        self.speed = speed
        self.ledger = Ledger()
        self.problems: list[str] = []
        self._say = narrate
        self._t0 = time.monotonic()
        self._deadline = self._t0 + deadline_s
        self._audit_after: str | None = None
        self._held_back: list[tuple[str, str]] = []  # (callback id, line) until it connects
        self._changed = asyncio.Condition()  # notified after every look at the store and PBX

    # --- narration and waiting ----------------------------------------------------

    def narrate(self, text: str) -> None:
        """One ``demo:`` line, stamped with the story clock (PBX mm:ss since the start)."""
        story = int((time.monotonic() - self._t0) * self.speed)
        self._say(f"[{story // 60:02d}:{story % 60:02d}] {text}")

    def story_s(self, since: float) -> int:
        """Story seconds elapsed since a monotonic moment."""
        return int((time.monotonic() - since) * self.speed)

    async def pause(self, story_s: float) -> None:
        await asyncio.sleep(story_s / self.speed)

    @contextmanager
    def _step(self, what: str) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            raise DemoFailed(f"timed out waiting for {what}") from None

    def _left(self) -> float:
        return max(0.01, self._deadline - time.monotonic())

    async def until_pbx(self, what: str, condition: Awaitable[None]) -> None:
        """Wait for a PBX condition (one of the stage's waits) before the deadline."""
        with self._step(what):
            async with asyncio.timeout(self._left()):
                await condition

    async def until_seen(self, what: str, predicate: Callable[[], bool]) -> None:
        """Wait for a condition on the ledger (the observer updates it) before the deadline."""
        with self._step(what):
            async with asyncio.timeout(self._left()), self._changed:
                await self._changed.wait_for(predicate)

    async def prompt(self, caller: Caller, media: str, since: int) -> int:
        """Wait until the caller hears a prompt containing ``media``; returns an event mark."""
        channel = self.ledger.channels[caller.name]
        await self.until_pbx(
            f"{caller.name} to hear {media!r}", self.stage.heard(channel, media, since)
        )
        return self.stage.mark()

    async def press(self, caller: Caller, digits: str) -> None:
        await self.pause(THINK_S)
        await self.stage.press(self.ledger.channels[caller.name], digits)

    # --- the play -------------------------------------------------------------------

    async def prepare(self) -> None:
        """The queue, its agents busy on other calls, and how each callback number behaves."""
        behaviours = {
            c.callback_number: c.behaviours for c in self.cast if c.behaviours and c.callback_number
        }
        await self.stage.setup(QUEUE, AGENTS, TALK_S, behaviours)

    async def run(self, store: CallbackStore) -> None:
        """The whole scenario; failures end up in ``problems``, never raised."""
        self.store = store
        try:
            async with asyncio.TaskGroup() as tg:
                observer = tg.create_task(self._observe(), name="demo-observer")
                try:
                    await self._play()
                finally:
                    observer.cancel()
        except* DemoFailed as group:
            self.problems += [str(exc) for exc in leaf_exceptions(group)]
        await self._look()  # the last word of the store and the PBX, for the summary

    async def _play(self) -> None:
        self._t0 = time.monotonic()
        agents = " and ".join(AGENTS)
        self.narrate(f"queue {QUEUE!r}: {agents} are both busy on other calls")
        async with asyncio.TaskGroup() as tg:
            for i, caller in enumerate(self.cast):
                if i:
                    await self.pause(ARRIVAL_GAP_S)
                channel = await self.stage.call_in(QUEUE, caller.number, caller.name)
                self.ledger.channels[caller.name] = channel
                self.ledger.joined[caller.name] = time.monotonic()
                self.narrate(f"{caller.name} calls {QUEUE} from {mask(caller.number)} and holds")
                tg.create_task(self._dialogue(caller), name=f"demo-caller-{i}")
        waiting = sum(1 for c in self.cast if c.callback_number)
        holding = [c.name for c in self.cast if c.choice is Choice.DECLINE]
        self.narrate(f"{waiting} callbacks wait in Redis; still holding: {', '.join(holding)}")
        await self.pause(BREAK_S)
        first, *rest = AGENTS
        self.narrate(f"{first} hangs up and is free (devstate Custom:{first} NOT_INUSE)")
        await self.stage.set_agent(first, "NOT_INUSE")
        for caller in self.cast:
            if caller.choice is Choice.DECLINE:
                await self.until_seen(
                    f"{caller.name} (still holding) to reach an agent",
                    self._served_check(self.ledger.channels[caller.name]),
                )
        await self.pause(BREAK_S)
        for agent in rest:
            self.narrate(f"{agent} is free too (devstate Custom:{agent} NOT_INUSE)")
            await self.stage.set_agent(agent, "NOT_INUSE")
        await self.until_seen("every callback to finish", self._callbacks_done)
        try:
            await self.until_seen("the agents to finish their calls", self._calls_done)
        except DemoFailed as exc:
            talking = [f"{c.agent} on {cid}" for cid, c in self.ledger.agent_calls.items()
                       if not c.done]  # fmt: skip
            raise DemoFailed(f"{exc}; still talking: {', '.join(talking)}") from None
        self.narrate("every callback has finished; the agents are free")

    async def _dialogue(self, caller: Caller) -> None:
        """What one caller does when the service offers a callback."""
        channel = self.ledger.channels[caller.name]
        mark = await self.prompt(caller, "queue-thankyou", 0)
        self.narrate(f"{caller.name} is offered a callback (held past offer_threshold)")
        if caller.choice is Choice.DECLINE:
            await self.press(caller, "2")
            self.narrate(f"{caller.name} presses 2: no thanks, keeps holding")
            await self.until_pbx(
                f"{caller.name} to be back in the queue", self.stage.back_in_queue(QUEUE, channel)
            )
            self.narrate(f"{caller.name} is back in the queue, at the same place")
            return
        await self.press(caller, "1")
        mark = await self.prompt(caller, "if-correct-press", mark)
        if caller.choice is Choice.OTHER_NUMBER:
            self.narrate(f"{caller.name} hears the caller ID read back, presses 2 (other number)")
            await self.press(caller, "2")
            mark = await self.prompt(caller, "privacy-prompt", mark)
            self.narrate(f"{caller.name} keys {mask(caller.keyed)} and #")
            await self.stage.press(channel, caller.keyed + "#")
            mark = await self.prompt(caller, "if-correct-press", mark)
            self.narrate(f"{caller.name} hears {mask(caller.keyed)} read back and presses 1")
        else:
            self.narrate(f"{caller.name} presses 1, hears the caller ID read back, presses 1")
        await self.press(caller, "1")
        await self.until_pbx(f"{caller.name} to hang up", self.stage.hung_up(channel))

    # --- watching the service at work ------------------------------------------------

    def _expected_numbers(self) -> dict[str, Caller]:
        return {c.callback_number: c for c in self.cast if c.callback_number}

    def _served_check(self, channel_id: str) -> Callable[[], bool]:
        return lambda: self.ledger.served(channel_id) is not None

    def _callbacks_done(self) -> bool:
        numbers = set(self._expected_numbers())
        done = {
            self.ledger.numbers[cid]
            for cid, state in self.ledger.states.items()
            if state.is_terminal and self.ledger.numbers.get(cid) in numbers
        }
        return done == numbers

    def _calls_done(self) -> bool:
        return all(c.done for c in self.ledger.agent_calls.values())

    def _name(self, number: str) -> str:
        caller = self._expected_numbers().get(number)
        return caller.name if caller else mask(number)

    async def _observe(self) -> None:
        """Narrate what the service does (its audit stream) and what the agents do (AMI)."""
        while True:
            await self._look(narrate=True)
            async with self._changed:
                self._changed.notify_all()
            await asyncio.sleep(POLL_S)

    async def _look(self, *, narrate: bool = False) -> None:
        assert self.store is not None
        say = self.narrate if narrate else (lambda _text: None)
        for entry in await self.store.audit(after_id=self._audit_after, count=500):
            self._audit_after = entry["event_id"]
            cid, to = entry.get("id", ""), entry.get("to", "")
            if cid not in self.ledger.numbers:
                self.ledger.numbers[cid] = (await self.store.get(cid)).number
            who = self._name(self.ledger.numbers[cid])
            self.ledger.states[cid] = State(to)
            if entry.get("from") == "dialing" and entry.get("outcome"):
                self.ledger.outcomes.setdefault(cid, []).append(entry["outcome"])
            attempt = entry.get("attempt", "?")
            if to == State.PENDING and not entry.get("from"):
                say(f"callback for {who} stored in Redis (pending): hangs up, keeps the place")
            elif to == State.DIALING:
                say(f"service calls {who} back at {mask(self.ledger.numbers[cid])} "
                    f"(attempt {attempt})")  # fmt: skip
            elif to == State.RETRY_WAIT:
                cb = await self.store.get(cid)
                wait = max(0, cb.next_attempt_ms - int(time.time() * 1000)) * self.speed / 1000
                say(f"attempt {attempt} to {who}: {entry.get('outcome')}; retry in {wait:.0f} s")
            elif to == State.CONNECTED:
                say(f"{who} answers, presses 1 and joins the queue at the head")
            elif State(to).is_terminal:
                say(f"callback for {who} ended {to} ({entry.get('cause', '')})")
        self._look_at_agents(say)
        for item in list(self._held_back):
            if self.ledger.states.get(item[0]) is State.CONNECTED:
                self._held_back.remove(item)
                say(item[1])

    def _look_at_agents(self, say: Callable[[str], None]) -> None:
        names = {channel: name for name, channel in self.ledger.channels.items()}
        for event, values in self.stage.agent_events():
            channel_id = values.get("Uniqueid", "")
            if event == "AgentConnect":
                agent = values.get("MemberName", "?")
                self.ledger.agent_calls[channel_id] = AgentCall(agent, time.monotonic())
                if channel_id in names:
                    name = names[channel_id]
                    held = self.story_s(self.ledger.joined[name])
                    say(f"{agent} answers {name} after {held // 60}:{held % 60:02d} on hold")
                elif channel_id.startswith("cb-"):  # cb-<callback id>-a<attempt>
                    cb_id = channel_id.removeprefix("cb-").rsplit("-a", 1)[0]
                    who = self._name(self.ledger.numbers.get(cb_id, ""))
                    self._held_back.append((cb_id, f"{agent} talks to {who} (callback)"))
            elif event == "AgentComplete" and channel_id in self.ledger.agent_calls:
                self.ledger.agent_calls[channel_id].done = True

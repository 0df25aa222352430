"""The generated call load: Poisson arrivals, scripted callers, agents with exponential talk time.

Every caller follows a script chosen at arrival (accept the caller ID, give another number,
mistype first, press a wrong key, decline, stay silent, hang up at the offer / the read-back /
the number entry); some press the queue's exit digit instead of waiting for the offer, and
anyone still waiting in Queue() gives up after an exponential patience. Callers react to the
prompts they hear (PlaybackStarted on their channel), after a short reaction time.

Randomness comes from two seeded streams: ``arrivals`` (times, queues, customers, scripts,
patience: drawn in a fixed order, so the offered load is the same for a seed) and ``reactions``
(reaction delays, talk times, callback outcomes: their order follows the run's timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from soak_observer import Observer
from soak_settings import SoakSettings

from callback_ari.core.phone import NumberPolicy, validate_number
from callback_ari.errors import NumberRejected
from callback_ari.sim.simpbx.sim import SimAsterisk

SCRIPTS = (
    ("accept", 38),
    ("accept_alt", 7),
    ("mistype", 7),
    ("wrong_key", 5),
    ("decline", 14),
    ("silence", 6),
    ("hangup_offer", 9),
    ("hangup_confirm", 7),
    ("hangup_entry", 4),
    ("accept_slow", 3),
)
EXIT_DIGIT_SHARE = 0.1  # callers who press 1 while holding instead of waiting for the offer
INVALID_ENTRIES = ("12345", "911", "5551", "0")
# What a customer's phone does on successive callback attempts (the last one sticks).
CALLBACK_OUTCOMES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("answer",), 62),
    (("busy", "answer"), 8),
    (("no_answer", "answer"), 7),
    (("congestion", "answer"), 4),
    (("answer_hangup", "answer"), 5),
    (("machine",), 4),
    (("busy",), 3),
    (("no_answer", "no_answer", "answer"), 4),
    (("invalid",), 1),
    (("answer_hangup",), 2),
)
AREA_CODES = ("202", "212", "213", "305", "312", "404", "415", "503", "602", "617", "702", "713")


class Scheduler:
    """Runs plain callables at given delays from one task (cheaper than a task per timer)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self.errors: Counter[str] = Counter()

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        due = asyncio.get_running_loop().time() + max(0.0, delay)
        heapq.heappush(self._heap, (due, next(self._seq), fn))
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._heap and self._heap[0][0] <= loop.time():
                _, _, fn = heapq.heappop(self._heap)
                try:
                    fn()
                except KeyError:
                    self.errors["channel_gone"] += 1  # the caller hung up meanwhile: fine
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
            self._wake.clear()
            timeout = self._heap[0][0] - loop.time() if self._heap else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()


@dataclass(frozen=True, slots=True)
class Person:
    """A customer of one queue: the line they call from and another number they may give."""

    queue: str
    number: str  # caller ID
    alt: str  # the other number they may key in
    name: str


@dataclass(slots=True)
class Confirmation:
    """A caller pressed 1 to confirm a read-back number."""

    queue: str
    number: str
    channel_id: str
    t: float
    heard: str = ""  # stored | existing | sorry (what the service said next)
    heard_t: float = 0.0


@dataclass(slots=True)
class Caller:
    """One inbound call and how far its script got."""

    person: Person
    channel_id: str
    script: str
    offers: int = 0
    entries: int = 0
    entered: bool = False
    candidate: str = ""
    confirmations: list[Confirmation] = field(default_factory=list)


class Load:
    """Arrivals, caller scripts and agents; records what callers were promised."""

    def __init__(self, sim: SimAsterisk, settings: SoakSettings, scheduler: Scheduler) -> None:
        self.sim = sim
        self.settings = settings
        self.sched = scheduler
        self.arrivals_rng = random.Random(settings.seed)
        self.react_rng = random.Random(settings.seed * 1_000_003 + 1)
        self._taken: set[str] = set()
        self.persons = {q.name: self._make_persons(q.name) for q in settings.queues}
        self.by_number = {
            n: p for ps in self.persons.values() for p in ps for n in (p.number, p.alt)
        }
        self.callers: dict[str, Caller] = {}
        self.confirmations: list[Confirmation] = []
        self.stats: Counter[str] = Counter()
        self.observer: Observer | None = None

    # --- people ------------------------------------------------------------------------

    def _make_persons(self, queue: str) -> list[Person]:
        rng = random.Random(f"{self.settings.seed}-{queue}")
        policy = NumberPolicy(
            region="US", allow_international=False, allow_patterns=(), deny_patterns=()
        )
        taken = self._taken
        people: list[Person] = []
        while len(people) < self.settings.persons_per_queue:
            pair: list[str] = []
            while len(pair) < 2:
                raw = f"{rng.choice(AREA_CODES)}{rng.randint(201, 998)}{rng.randint(0, 9999):04d}"
                try:
                    number = validate_number(raw, policy)
                except NumberRejected:
                    continue
                if number not in taken and "555" not in number[3:6]:
                    taken.add(number)
                    pair.append(number)
            people.append(Person(queue, pair[0], pair[1], f"{queue[:2].upper()}{len(people)}"))
        return people

    def queue_of(self, number: str) -> str | None:
        person = self.by_number.get(number)
        return None if person is None else person.queue

    # --- arrivals ----------------------------------------------------------------------

    async def arrivals(self, stop_at: float) -> None:
        """Poisson arrivals (loop time) until ``stop_at``."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.arrivals_rng.expovariate(self.settings.rate)
            if due >= stop_at:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            self._arrive()

    def _arrive(self) -> None:
        rng, s = self.arrivals_rng, self.settings
        spec = rng.choices(s.queues, weights=[q.share for q in s.queues])[0]
        people = self.persons[spec.name]
        candidates = [people[rng.randrange(len(people))] for _ in range(8)]
        script = rng.choices([n for n, _ in SCRIPTS], weights=[w for _, w in SCRIPTS])[0]
        exit_digit = rng.random() < EXIT_DIGIT_SHARE
        exit_after = rng.uniform(0.2, 0.8)
        patience = rng.expovariate(1.0 / s.patience_mean)
        assert self.observer is not None
        obs = self.observer
        person = next((p for p in candidates if not (obs.busy(p.number) or obs.busy(p.alt))), None)
        if person is None:
            self.stats["arrivals_skipped_all_busy"] += 1
            return
        ch = self.sim.caller_joins(spec.name, person.number, person.name)
        obs.add_inbound(ch.id, person.number, spec.name)
        self.callers[ch.id] = Caller(person, ch.id, script)
        self.stats["calls"] += 1
        self.stats[f"script_{script}"] += 1
        if exit_digit:
            self.stats["exit_digit"] += 1
            self.sched.after(exit_after, lambda: self._press_if_waiting(ch.id))
        self.sched.after(patience, lambda: self._patience(ch.id))

    def _waiting(self, channel_id: str) -> bool:
        """Is this caller waiting in Queue() (not talking, not in a dialogue)?"""
        ch = self.sim.pbx.channels.get(channel_id)
        if ch is None or not ch.alive or ch.in_queue is None:
            return False
        q = self.sim.queues.get(ch.in_queue)
        return q is not None and any(e.ch is ch for e in q.entries)

    def _press_if_waiting(self, channel_id: str) -> None:
        if self._waiting(channel_id):
            self.sim.press_digit(channel_id, "1")

    def _patience(self, channel_id: str) -> None:
        ch = self.sim.pbx.channels.get(channel_id)
        if ch is None or not ch.alive:
            return
        if self._waiting(channel_id):
            self.stats["abandoned_in_queue"] += 1
            self.sim.hangup(channel_id)
        elif ch.agent_for is None and not self._talking(channel_id):
            self.sched.after(3.0, lambda: self._patience(channel_id))  # in a dialogue: later

    def _talking(self, channel_id: str) -> bool:
        return any(
            e.ch.id == channel_id for q in self.sim.queues.queues.values() for e in q.talking
        )

    # --- agents ------------------------------------------------------------------------

    def on_agent_connect(self, queue: str, caller_id: str) -> None:
        talk = max(0.2, self.react_rng.expovariate(1.0 / self.settings.handle_mean))
        self.sched.after(talk, lambda: self._agent_hangs_up(caller_id))

    def _agent_hangs_up(self, caller_id: str) -> None:
        if self.sim.agent_hangup(caller_id):
            self.stats["agent_hangups"] += 1

    # --- callers reacting to prompts ---------------------------------------------------

    def on_prompt(self, channel_id: str, media: str) -> None:
        c = self.callers.get(channel_id)
        if c is None:
            return  # a callback channel: the fake's number behaviour answers those
        if media.startswith("digits:") and len(media) > 13:
            c.candidate = media[7:]
        elif media == "sound:vm-press":
            self._offer(c)
        elif media == "sound:if-correct-press":
            self._confirm(c)
        elif media == "sound:privacy-prompt":
            self._entry(c)
        elif media in ("sound:num-was-successfully", "sound:auth-thankyou", "sound:sorry"):
            heard = {"sound:num-was-successfully": "stored", "sound:auth-thankyou": "existing"}
            self._heard(c, heard.get(media, "sorry"))
        elif media == "sound:vm-sorry":
            self.stats["too_many_tries_heard"] += 1

    def _offer(self, c: Caller) -> None:
        c.offers += 1
        self.stats["offers_heard"] += 1
        assert self.observer is not None
        p = c.person
        if self.observer.has_live_callback(p.number) or self.observer.has_live_callback(p.alt):
            self.stats["declined_being_called"] += 1
            self._press(c, "2")  # one phone call at a time
            return
        script = c.script
        if script == "decline":
            self.stats["declined"] += 1
            self._press(c, "2")
        elif script == "silence":
            self.stats["silent"] += 1
        elif script == "hangup_offer":
            self._hangup(c, "hangup_at_offer")
        elif script == "wrong_key" and c.offers == 1:
            self.stats["wrong_keys"] += 1
            self._press(c, "7")
        else:
            self._press(c, "1", slow=script == "accept_slow")

    def _being_called_back(self, c: Caller) -> bool:
        """One phone call at a time: someone whose callback rings (or is on with an agent)
        while they are still in a dialogue (a resumed one, after a crash) drops this call."""
        assert self.observer is not None
        p = c.person
        if not (
            self.observer.has_live_callback(p.number) or self.observer.has_live_callback(p.alt)
        ):
            return False
        self._hangup(c, "hangup_being_called_back")
        return True

    def _confirm(self, c: Caller) -> None:
        script = c.script
        if self._being_called_back(c):
            return
        if script == "hangup_confirm":
            self._hangup(c, "hangup_at_confirm")
        elif script in ("accept_alt", "mistype", "hangup_entry") and not c.entered:
            self._press(c, "2")
        else:
            delay = self._delay(slow=script == "accept_slow")
            self.sched.after(delay, lambda: self._confirm_now(c))

    def _confirm_now(self, c: Caller) -> None:
        if self._being_called_back(c):
            return
        number = c.candidate or c.person.number
        self.sim.press_digit(c.channel_id, "1")
        conf = Confirmation(c.person.queue, number, c.channel_id, time.time())
        c.confirmations.append(conf)
        self.confirmations.append(conf)
        self.stats["confirmations"] += 1
        outcome = self.react_rng.choices(
            [o for o, _ in CALLBACK_OUTCOMES], weights=[w for _, w in CALLBACK_OUTCOMES]
        )[0]
        self.sim.set_number_behaviour(number, list(outcome))

    def _entry(self, c: Caller) -> None:
        c.entries += 1
        if self._being_called_back(c):
            return
        if c.script == "hangup_entry":
            self._hangup(c, "hangup_at_entry")
            return
        if c.script == "mistype" and c.entries == 1:
            self.stats["mistyped"] += 1
            digits = self.react_rng.choice(INVALID_ENTRIES)
        else:
            c.entered = True
            digits = c.person.alt if c.script in ("accept_alt", "mistype") else c.person.number
        self.sched.after(self._delay(), lambda: self.sim.send_dtmf(c.channel_id, digits + "#"))

    def _heard(self, c: Caller, what: str) -> None:
        self.stats[f"heard_{what}"] += 1
        if c.confirmations and not c.confirmations[-1].heard:
            c.confirmations[-1].heard = what
            c.confirmations[-1].heard_t = time.time()

    def _press(self, c: Caller, digit: str, *, slow: bool = False) -> None:
        self.sched.after(self._delay(slow=slow), lambda: self.sim.press_digit(c.channel_id, digit))

    def _hangup(self, c: Caller, stat: str) -> None:
        self.stats[stat] += 1
        self.sched.after(self._delay(), lambda: self.sim.hangup(c.channel_id))

    def _delay(self, *, slow: bool = False) -> float:
        # a slow caller answers near the end of the response timeout (2 s)
        return self.react_rng.uniform(1.2, 1.8) if slow else self.react_rng.uniform(0.05, 0.4)

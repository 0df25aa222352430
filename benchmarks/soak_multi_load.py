"""Callers on the real PBXs for the multi-PBX soak: Poisson arrivals into every queue.

Each caller is the harness's Local channel into the PBX's inbound route for a queue (the
kit's subroutine around Queue()). After ``offer_threshold`` the service withdraws them and
offers a callback; the caller answers the prompt they have just heard (PlaybackFinished on
their channel): accept (press 1, then 1 to confirm the read-back), decline (2: back to the
queue, a live caller the fairness check weighs), stay silent, or hang up at the offer.
Anyone still holding gives up after an exponential patience. A promise is the PBX's own
word: the route's ``RouteResult`` user event with QueueStatus CALLBACK.

The number a caller calls from decides what their phone does when called back (the
sandbox's [customers] context: 5551 answers and presses 1, 5552 busy, 5553 no answer, 5556
answers and hangs up). Some callers are regulars who call several queues on both PBXs, so
the same number can have callbacks pending on two PBXs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from soak_load import Confirmation
from soak_multi_observer import Observer
from soak_multi_topology import PbxDef

from callback_ari.sim.sandbox import Harness, SandboxError

PLANS = (("accept", 62), ("decline", 23), ("silent", 5), ("hangup_offer", 10))
BEHAVIOURS = (("1", 82), ("2", 6), ("3", 6), ("6", 6))  # 555X: answer, busy, no answer, hangup
AREAS = ("202", "212", "213", "305", "312", "404", "415", "503", "602", "617", "702", "713")
REGULARS = 40
AMI_CLASSES = "call,agent,user,system,dtmf"  # what the observer reads, nothing more
REGULAR_SHARE = 0.15
KEYS = {
    "sound:digits/1": {"accept": "1", "decline": "2"},  # the end of the offer
    "sound:vm-calldiffnum": {"accept": "1"},  # the end of the read-back: confirm it
}


@dataclass(slots=True)
class Caller:
    pbx: str
    queue: str
    number: str
    handset: str  # the harness's end (;1): keys are pressed here
    plan: str
    placed: float
    offers: int = 0
    confirmation: Confirmation | None = None
    done: bool = False


@dataclass
class Link:
    """The harness on one PBX; reopened after that PBX restarts."""

    pbx: PbxDef
    harness: Harness | None = None
    up: bool = False
    events: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while True:
            h = Harness(self.pbx.box, subscribe_all=False, ami_classes=AMI_CLASSES,
                        http_connections=20)  # fmt: skip
            try:
                await h.__aenter__()
            except (OSError, SandboxError, aiohttp.ClientError, TimeoutError):
                await h.__aexit__(None, None, None)
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
                continue
            self.harness, self.up = h, True
            self.events.set()
            return

    async def close(self) -> None:
        self.up = False
        if self.harness is not None:
            await self.harness.__aexit__(None, None, None)
            self.harness = None


class Load:
    """Arrivals and the callers' reactions; what each caller was promised."""

    def __init__(self, links: dict[str, Link], observer: Observer, *, rate: float, seed: int,
                 patience_mean: float, max_inbound: int) -> None:  # fmt: skip
        self.links = links
        self.observer = observer
        self.rate = rate
        self.patience_mean = patience_mean
        self.max_inbound = max_inbound
        self.rng = random.Random(seed)
        self.queues = [(p, q.name) for p, link in links.items() for q in link.pbx.queues]
        self.callers: dict[str, Caller] = {}  # by the PBX-side uid (handset + "-pbx")
        self.origin: dict[str, float] = {}  # uid -> placed (wall), for the observer
        self.confirmations: list[Confirmation] = []
        self.stats: Counter[str] = Counter()
        self._serial = itertools.count(1)
        self._tag = f"sk{int(time.time()) % 100000}"
        self._fresh: Counter[str] = Counter()
        self.regulars = [f"{AREAS[i % len(AREAS)]}5551{900 + i:03d}"[:10] for i in range(REGULARS)]
        self._tasks: set[asyncio.Task[None]] = set()

    # --- arrivals -----------------------------------------------------------------------

    async def arrivals(self, until: float) -> None:
        """Place callers (wall clock ``until``)."""
        due = time.time()
        while True:
            due += self.rng.expovariate(self.rate)
            if due >= until:
                return
            await asyncio.sleep(max(0.0, due - time.time()))
            self._spawn(self._arrive())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _number(self) -> str:
        rng = self.rng
        if rng.random() < REGULAR_SHARE:
            free = [n for n in self.regulars if not self.observer.busy(n)]
            if free:
                self.stats["regular_calls"] += 1
                return rng.choice(free)
        behaviour = rng.choices([b for b, _ in BEHAVIOURS], weights=[w for _, w in BEHAVIOURS])[0]
        area = rng.choice(AREAS)
        self._fresh[area + behaviour] += 1
        n = self._fresh[area + behaviour]
        if n >= 900:
            return self._number()
        return f"{area}555{behaviour}{n:03d}"

    async def _arrive(self) -> None:
        pbx, queue = self.rng.choice(self.queues)
        number = self._number()
        plan = self.rng.choices([p for p, _ in PLANS], weights=[w for _, w in PLANS])[0]
        patience = self.rng.expovariate(1.0 / self.patience_mean) + 20.0
        link = self.links[pbx]
        h = link.harness
        if not link.up or h is None:
            self.stats["arrivals_skipped_pbx_down"] += 1
            return
        live = sum(len(v) for v in self.observer.live_inbound.values())
        if live >= self.max_inbound:
            self.stats["arrivals_skipped_cap"] += 1
            return
        handset = f"{self._tag}-{next(self._serial)}"
        uid = handset + "-pbx"
        now = time.time()
        caller = Caller(pbx, queue, number, handset, plan, now)
        self.callers[uid] = caller
        self.origin[uid] = now
        self.observer.add_inbound(pbx, uid, number, queue, now)
        try:
            await h.call_in(number, exten=queue, channel_id=handset, name="Soak")
            await h.subscribe(uid)
        except (SandboxError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.stats[f"place_failed_{type(exc).__name__}"] += 1
            caller.done = True
            return
        self.stats["calls"] += 1
        self.stats[f"plan_{plan}"] += 1
        self.stats[f"calls_{queue}"] += 1
        await asyncio.sleep(patience)
        if caller.done or caller.confirmation is not None:
            return
        if any(uid in q.talking.values() for q in self.observer.queues.values()):
            return  # talking to an agent: the agent hangs up
        ch = self.observer.channels.get(uid)
        if ch is not None and not ch.destroyed and link.harness is not None:
            self.stats["gave_up_holding"] += 1
            with contextlib.suppress(SandboxError, aiohttp.ClientError, OSError, TimeoutError):
                await link.harness.hang_up(handset)

    # --- reactions ----------------------------------------------------------------------

    def on_ari(self, pbx: str, event: dict[str, object]) -> None:
        if event.get("type") != "PlaybackFinished":
            return
        playback = event.get("playback")
        if not isinstance(playback, dict) or playback.get("state") != "done":
            return
        uid = str(playback.get("target_uri", "")).removeprefix("channel:")
        caller = self.callers.get(uid)
        if caller is None or caller.done:
            return
        media = str(playback.get("media_uri", ""))
        keys = KEYS.get(media, {}).get(caller.plan)
        if media == "sound:digits/1" and caller.confirmation is None:
            caller.offers += 1
            if caller.offers == 1:
                self.stats["offers_heard"] += 1
            if caller.plan == "hangup_offer":
                self.stats["hung_up_at_offer"] += 1
                caller.done = True
                self._spawn(self._hang_up(pbx, caller))
                return
        if keys is None:
            return
        if media == "sound:vm-calldiffnum":
            conf = Confirmation(caller.queue, caller.number, uid, time.time())
            caller.confirmation = conf
            self.confirmations.append(conf)
            self.stats["confirmations"] += 1
        self._spawn(self._press(pbx, caller, keys))

    def on_promise(self, uid: str, t: float) -> None:
        caller = self.callers.get(uid)
        if caller is None:
            return
        self.stats["promised"] += 1
        caller.done = True
        if caller.confirmation is not None and not caller.confirmation.heard:
            caller.confirmation.heard = "stored"
            caller.confirmation.heard_t = t
        else:
            self.stats["promise_without_confirmation"] += 1

    async def _press(self, pbx: str, caller: Caller, keys: str) -> None:
        await asyncio.sleep(self.rng.uniform(0.1, 0.6))
        h = self.links[pbx].harness
        if h is None:
            return
        try:
            await h.press(caller.handset, keys)
        except (SandboxError, aiohttp.ClientError, OSError, TimeoutError):
            self.stats["press_failed"] += 1

    async def _hang_up(self, pbx: str, caller: Caller) -> None:
        await asyncio.sleep(self.rng.uniform(0.1, 0.6))
        h = self.links[pbx].harness
        if h is not None:
            with contextlib.suppress(SandboxError, aiohttp.ClientError, OSError, TimeoutError):
                await h.hang_up(caller.handset)

"""The PBX the demo's play runs on: the simulated PBX, or the real sandbox Asterisk 22.

``demo_script.Scenario`` plays its callers and agents through a ``Stage`` and never learns
which PBX it is on. Waits have no timeout of their own: the scenario bounds each one with its
deadline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from callback_ari.sim.sandbox import AmiMessage, Harness, JsonDict, Sandbox
from callback_ari.sim.simpbx.sim import SimAsterisk

APP = "callback-ari"

AGENT_EVENTS = ("AgentConnect", "AgentComplete")
AgentEvent = tuple[str, dict[str, str]]  # (AMI event name, its fields)


@dataclass(frozen=True, slots=True)
class PbxLink:
    """How the service reaches a stage's PBX and dials its customers; what the header says."""

    description: str
    ari_url: str
    ari_user: str
    ari_password: str
    ami_host: str
    ami_port: int
    ami_user: str
    ami_secret: str
    dial_template: str
    real_time: bool  # a real PBX: prompts, rings and talk take the time they take


class Stage(Protocol):
    """What the play does to a PBX and what it watches there."""

    @property
    def link(self) -> PbxLink:
        """Where the service finds this PBX."""

    async def setup(
        self, queue: str, agents: tuple[str, ...], talk_s: float,
        behaviours: Mapping[str, tuple[str, ...]],
    ) -> None:  # fmt: skip
        """The queue, its agents busy on other calls, how each customer number behaves.

        ``talk_s`` is the agents' handle time in story seconds.
        """

    async def call_in(self, queue: str, number: str, name: str) -> str:
        """A caller rings the inbound route; the id of their channel that runs the dialplan."""

    async def set_agent(self, agent: str, state: str) -> None:
        """The agent's phone sets its device state (INUSE, NOT_INUSE)."""

    def mark(self) -> int:
        """A position in what the PBX reported, for ``heard(since=...)``."""

    async def heard(self, channel_id: str, media: str, since: int) -> None:
        """Until the caller hears a prompt whose media contains ``media`` (after ``since``)."""

    async def press(self, channel_id: str, digits: str) -> None:
        """The caller presses keys."""

    async def back_in_queue(self, queue: str, channel_id: str) -> None:
        """Until the caller waits in the queue again."""

    async def hung_up(self, channel_id: str) -> None:
        """Until the caller's channel is gone."""

    def agent_events(self) -> list[AgentEvent]:
        """The AMI AgentConnect/AgentComplete events since the last call (Uniqueid, MemberName)."""


class SimStage:
    """The play on ``SimAsterisk``: everything in this process, time scaled."""

    def __init__(self, sim: SimAsterisk) -> None:
        self.sim = sim
        self._ami_seen = 0

    @property
    def link(self) -> PbxLink:
        sim = self.sim
        return PbxLink(
            f"simulated Asterisk 22: ARI {sim.ari_url}, AMI port {sim.ami_port}",
            sim.ari_url, sim.ari_user, sim.ari_password, sim.host, sim.ami_port, sim.ami_user,
            sim.ami_secret, "PJSIP/{number}@trunk", real_time=False,
        )  # fmt: skip

    async def setup(
        self, queue: str, agents: tuple[str, ...], talk_s: float,
        behaviours: Mapping[str, tuple[str, ...]],
    ) -> None:  # fmt: skip
        self.sim.add_queue(queue, list(agents), handle_time=talk_s)
        for agent in agents:
            self.sim.set_devstate(f"Custom:{agent}", "INUSE")
        for number, script in behaviours.items():
            self.sim.set_number_behaviour(number, list(script))

    async def call_in(self, queue: str, number: str, name: str) -> str:
        return self.sim.caller_joins(queue, number, name).id

    async def set_agent(self, agent: str, state: str) -> None:
        self.sim.set_devstate(f"Custom:{agent}", state)

    def mark(self) -> int:
        return self.sim.mark()

    async def heard(self, channel_id: str, media: str, since: int) -> None:
        def playing() -> bool:
            return any(
                ev.get("playback", {}).get("target_uri") == f"channel:{channel_id}"
                and media in str(ev.get("playback", {}).get("media_uri", ""))
                for ev in self.sim.events(app=APP, kind="PlaybackStarted", since=since)
            )

        await self.sim.pbx.wait_for(playing)

    async def press(self, channel_id: str, digits: str) -> None:
        if len(digits) == 1:
            self.sim.press_digit(channel_id, digits)
        else:
            self.sim.send_dtmf(channel_id, digits)

    async def back_in_queue(self, queue: str, channel_id: str) -> None:
        await self.sim.pbx.wait_for(
            lambda: any(ch.id == channel_id for ch in self.sim.queue_callers(queue))
        )

    async def hung_up(self, channel_id: str) -> None:
        def gone() -> bool:
            channel = self.sim.pbx.channels.get(channel_id)
            return channel is None or channel.destroyed

        await self.sim.pbx.wait_for(gone)

    def agent_events(self) -> list[AgentEvent]:
        log = self.sim.pbx.ami_log
        new, self._ami_seen = log[self._ami_seen :], len(log)
        return [(name, dict(fields)) for name, fields in new if name in AGENT_EVENTS]


class SandboxStage:
    """The play on the real sandbox Asterisk, through the tests' harness (ARI + AMI).

    Asterisk runs in real time: the story's own pauses and thresholds are scaled by ``speed``
    as on the simulator, but prompts, rings and the agents' talk take the time they take.
    """

    def __init__(self, harness: Harness, *, speed: float, version: str) -> None:
        self.h = harness
        self.speed = speed
        self.version = version
        self._ami_seen = 0
        self._handsets: dict[str, str] = {}  # dialplan-side channel id -> the caller's handset
        self._talking: set[str] = set()  # channels connected to an agent, call not over yet

    @property
    def link(self) -> PbxLink:
        box: Sandbox = self.h.sandbox
        return PbxLink(
            f"real Asterisk 22 (sandbox {box.name}, {self.version}): ARI {box.ari_url}, "
            f"AMI port {box.ami_port}",
            box.ari_url, box.ari_user, box.ari_password, "127.0.0.1", box.ami_port, box.ami_user,
            box.ami_secret, "Local/{number}@customers", real_time=True,
        )  # fmt: skip

    async def setup(
        self, queue: str, agents: tuple[str, ...], talk_s: float,
        behaviours: Mapping[str, tuple[str, ...]],
    ) -> None:  # fmt: skip
        # The queue and its members are the sandbox's own (dialplan/sandbox/etc/queues.conf).
        await self.h.set_global("AGENT_TALK", str(max(1, round(talk_s / self.speed))))
        for agent in agents:
            await self.h.device(agent, "INUSE")
        for number, script in behaviours.items():
            await self.h.customer(number, *script)
        self._ami_seen = len(self.h.watch.ami)

    async def call_in(self, queue: str, number: str, name: str) -> str:
        handset = f"demo-{number[-4:]}-{int(time.time() * 1000) % 10**8}"
        await self.h.call_in(number, exten=queue, channel_id=handset, name=name)
        self._handsets[handset + "-pbx"] = handset
        return handset + "-pbx"

    async def set_agent(self, agent: str, state: str) -> None:
        await self.h.device(agent, state)

    def mark(self) -> int:
        return len(self.h.watch.ari)

    async def heard(self, channel_id: str, media: str, since: int) -> None:
        def playing(event: JsonDict) -> bool:
            playback = event.get("playback", {})
            return (
                event.get("type") == "PlaybackStarted"
                and playback.get("target_uri") == f"channel:{channel_id}"
                and media in str(playback.get("media_uri", ""))
            )

        await self.h.wait_ari(playing, since=since)

    async def press(self, channel_id: str, digits: str) -> None:
        await self.h.press(self._handsets[channel_id], digits)

    async def back_in_queue(self, queue: str, channel_id: str) -> None:
        def rejoined(message: AmiMessage) -> bool:
            return (
                message.get("Event") == "QueueCallerJoin"
                and message.get("Queue") == queue
                and message.get("Uniqueid") == channel_id
            )

        # the caller joined once on arrival: wait for the second join
        first = await self.h.wait_ami(rejoined)
        await self.h.wait_ami(rejoined, since=self.h.watch.ami.index(first) + 1)

    async def hung_up(self, channel_id: str) -> None:
        await self.h.wait_ari(
            lambda e: e.get("type") == "ChannelDestroyed" and e["channel"]["id"] == channel_id
        )

    def agent_events(self) -> list[AgentEvent]:
        # A call is over when AgentComplete says so or when the caller's channel hangs up: in
        # about 1 demo of 5 the harness saw no AgentComplete for one of the four agent calls
        # (cause not found), and the play then waited for a call that had long ended.
        log = self.h.watch.ami
        new, self._ami_seen = log[self._ami_seen :], len(log)
        found: list[AgentEvent] = []
        for m in new:
            event, channel = m.get("Event", ""), m.get("Uniqueid", "")
            if event == "AgentConnect":
                self._talking.add(channel)
            elif event in ("AgentComplete", "Hangup") and channel in self._talking:
                self._talking.discard(channel)
                event = "AgentComplete"
            else:
                continue
            found.append((event, m))
        return found

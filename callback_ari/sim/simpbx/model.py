"""Mutable PBX objects of the fake (channels, playbacks, bridges) and their ARI JSON shapes."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ASTERISK_ID = "02:fc:00:00:00:01"
VERSION = "GIT-22-22.0.0-pre1-541-g69535d4837"

CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    34: "Circuit/channel congestion",
}
STATE_CODE = {"Down": 0, "Rsrvd": 1, "OffHook": 2, "Dialing": 3, "Ring": 4, "Ringing": 5}
STATE_CODE |= {"Up": 6, "Busy": 7}


def timestamp(at: float | None = None) -> str:
    """ARI time format: ``2026-11-23T08:22:14.617+0000``."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


@dataclass(frozen=True, slots=True)
class CallerId:
    """A name/number pair (caller or connected line)."""

    name: str = ""
    number: str = ""

    @classmethod
    def parse(cls, text: str | None) -> CallerId:
        """``"Alice" <5550100>`` / ``Alice <5550100>`` / ``5550100``."""
        if not text:
            return cls()
        text = text.strip()
        if "<" in text and text.endswith(">"):
            name, _, number = text[:-1].partition("<")
            return cls(name.strip().strip('"'), number.strip())
        return cls("", text)

    def to_json(self) -> dict[str, str]:
        """ARI CallerID model."""
        return {"name": self.name, "number": self.number}


@dataclass
class GosubFrame:
    """One Gosub(): where Return() goes and the frame's LOCAL() variables (ARG1...)."""

    back: tuple[str, str, int]
    locals: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Channel:
    """One Asterisk channel (a Local half, an inbound caller, an outbound trunk call)."""

    id: str
    name: str
    state: str
    caller: CallerId
    context: str
    exten: str
    priority: int = 1
    app_name: str = ""
    app_data: str = ""
    created: float = field(default_factory=time.time)
    language: str = "en"
    connected: CallerId | None = None
    linkedid: str = ""
    peer: Channel | None = None  # the other half of a Local pair
    half: int = 0  # 1 or 2 for Local halves
    has_pbx: bool = False  # runs dialplan started by its channel driver (;2, inbound)
    variables: dict[str, str] = field(default_factory=dict)
    gosub_stack: list[GosubFrame] = field(default_factory=list)  # Gosub() frames, innermost last
    subscribers: set[str] = field(default_factory=set)  # ARI apps subscribed to it
    stasis_app: str | None = None
    stasis_from_dialplan: bool = False
    originate_app: str | None = None  # app given to POST /channels (;1 enters it on answer)
    app_args: list[str] = field(default_factory=list)
    dial_app: tuple[str, str] | None = None  # app shown outside Stasis: AppDial2, AppQueue
    entered_app: bool = False
    hangupcause: int = 0
    hangup_requested: bool = False
    destroyed: bool = False
    runner: asyncio.Task[None] | None = None
    continue_to: tuple[str, str, int] | None = None
    stasis_done: asyncio.Future[None] | None = None
    playing: list[Playback] = field(default_factory=list)
    pending_playbacks: list[Playback] = field(default_factory=list)
    playback_task: asyncio.Task[None] | None = None
    in_queue: str | None = None  # queue name while the caller waits or talks in Queue()
    agent_for: Channel | None = None  # on a queue member's Local legs: the caller they talk to

    def to_json(self) -> dict[str, Any]:
        """ARI Channel model, keys exactly as Asterisk 22 sends them."""
        connected = self.connected if self.connected is not None else self.caller
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": self.caller.to_json(),
            "connected": connected.to_json(),
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": timestamp(self.created),
            "language": self.language,
        }

    @property
    def alive(self) -> bool:
        """Not hung up and not destroyed."""
        return not self.hangup_requested and not self.destroyed

    @property
    def technology(self) -> str:
        """``Local``, ``PJSIP`` ..."""
        return self.name.split("/", 1)[0]


@dataclass(eq=False)
class Playback:
    """One POST /play: a list of media URIs played in order on a channel."""

    id: str
    channel: Channel
    media: list[str]
    language: str = "en"
    state: str = "queued"
    index: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        """ARI Playback model (next_media_uri only while more media follow)."""
        body: dict[str, Any] = {"id": self.id, "media_uri": self.media[self.index]}
        if self.index < len(self.media) - 1:
            body["next_media_uri"] = self.media[self.index + 1]
        body |= {
            "target_uri": f"channel:{self.channel.id}",
            "language": self.language,
            "state": self.state,
        }
        return body


@dataclass(eq=False)
class Bridge:
    """A queue's mixing bridge between a caller and an agent leg."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    channels: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """ARI Bridge model as app_queue's bridges show it."""
        return {
            "id": self.id,
            "technology": "simple_bridge",
            "bridge_type": "mixing",
            "bridge_class": "basic",
            "creator": "",
            "name": "",
            "channels": list(self.channels),
            "creationtime": timestamp(self.created),
            "video_mode": "none",
        }

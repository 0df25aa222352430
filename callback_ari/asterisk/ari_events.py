"""ARI event decoding: one JSON object from /ari/events -> a typed frozen event, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import structlog

from callback_ari import masking

log = structlog.get_logger(__name__)

PREVIEW_CHARS: Final = 200
"""How much of a rejected event or frame is shown in the ``ari.bad_event`` log line."""

_DIGIT_RUN = re.compile(r"\d{5,}")


class MalformedEvent(ValueError):
    """An event (or a channel object in a REST answer) lacks a field or has the wrong type."""


# --- values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The parts of an ARI ``Channel`` object the service uses."""

    id: str
    name: str
    state: str
    caller_number: str
    caller_name: str
    context: str
    exten: str
    priority: int
    app_name: str
    app_data: str
    creationtime: str


@dataclass(frozen=True, slots=True)
class AriEvent:
    """Base of every decoded event: ``type``, ``timestamp`` and ``application`` as sent."""

    type: str
    timestamp: str
    application: str

    @property
    def channel_id(self) -> str | None:
        """The channel this event is about, for routing; None if it concerns no channel."""
        return None


@dataclass(frozen=True, slots=True)
class _ChannelEvent(AriEvent):
    channel: ChannelInfo

    @property
    def channel_id(self) -> str:
        return self.channel.id


@dataclass(frozen=True, slots=True)
class StasisStart(_ChannelEvent):
    """A channel entered our Stasis app; ``args`` are the Stasis() / appArgs arguments."""

    args: tuple[str, ...]
    replace_channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class StasisEnd(_ChannelEvent):
    """A channel left our Stasis app (continue, hangup, or moved elsewhere)."""


@dataclass(frozen=True, slots=True)
class ChannelStateChange(_ChannelEvent):
    """The channel's ``state`` changed (Ring, Up, Busy, ...); the new state is in ``channel``."""


@dataclass(frozen=True, slots=True)
class ChannelDtmfReceived(_ChannelEvent):
    """One DTMF digit finished on the channel."""

    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class ChannelHangupRequest(_ChannelEvent):
    """Hang-up requested. With ``soft`` the cause is Asterisk's soft-hangup bitmask
    (32 = explicit, e.g. ARI DELETE; 16 = dialplan ended), otherwise a Q.850 code."""

    cause: int | None
    soft: bool

    @property
    def q850_cause(self) -> int | None:
        """The Q.850 cause, or None for a soft hangup (whose ``cause`` is a bitmask)."""
        return None if self.soft else self.cause


@dataclass(frozen=True, slots=True)
class ChannelDestroyed(_ChannelEvent):
    """The channel is gone; ``cause`` is Q.850 (17 busy, 19 no answer, 34 congestion...)."""

    cause: int
    cause_txt: str


@dataclass(frozen=True, slots=True)
class Dial(AriEvent):
    """Dial progress of ``peer``; ``caller`` is set only when a calling channel exists
    (queue member dials), not for an originate. ``dialstatus`` "" means "dialling"."""

    peer: ChannelInfo
    caller: ChannelInfo | None
    dialstatus: str
    dialstring: str
    forward: str = ""

    @property
    def channel_id(self) -> str:
        return self.peer.id


@dataclass(frozen=True, slots=True)
class _PlaybackEvent(AriEvent):
    playback_id: str
    target_uri: str
    state: str
    media_uri: str = ""

    @property
    def channel_id(self) -> str | None:
        target = self.target_uri
        return target[8:] if target.startswith("channel:") else None


@dataclass(frozen=True, slots=True)
class PlaybackStarted(_PlaybackEvent):
    """A playback began (``state`` "playing")."""


@dataclass(frozen=True, slots=True)
class PlaybackFinished(_PlaybackEvent):
    """A playback ended: ``state`` "done", or "failed" when the channel hung up meanwhile."""


@dataclass(frozen=True, slots=True)
class _RecordingEvent(AriEvent):
    name: str  # the recording's name, as given to POST /channels/{id}/record
    target_uri: str
    state: str
    cause: str = ""

    @property
    def channel_id(self) -> str | None:
        target = self.target_uri
        return target[8:] if target.startswith("channel:") else None


@dataclass(frozen=True, slots=True)
class RecordingFinished(_RecordingEvent):
    """A live recording ended and was stored (# pressed, silence, the time limit, hang-up)."""


@dataclass(frozen=True, slots=True)
class RecordingFailed(_RecordingEvent):
    """A live recording failed (``cause`` says why)."""


@dataclass(frozen=True, slots=True)
class ChannelVarset(AriEvent):
    """A variable was set; ``channel`` is None for a global variable."""

    channel: ChannelInfo | None
    variable: str
    value: str

    @property
    def channel_id(self) -> str | None:
        return None if self.channel is None else self.channel.id


@dataclass(frozen=True, slots=True)
class ApplicationReplacedEvent(AriEvent):
    """Another WebSocket took our app name; this socket will receive nothing more."""


@dataclass(frozen=True, slots=True)
class DeviceStateChanged(AriEvent):
    """A subscribed device (``deviceState:...``) changed state (NOT_INUSE, INUSE, ...)."""

    name: str
    state: str


@dataclass(frozen=True, slots=True)
class ChannelUserevent(AriEvent):
    """A dialplan ``UserEvent()``; ``userevent`` holds its key/values."""

    channel: ChannelInfo | None
    eventname: str
    userevent: Mapping[str, object]

    @property
    def channel_id(self) -> str | None:
        return None if self.channel is None else self.channel.id


@dataclass(frozen=True, slots=True)
class OtherEvent(AriEvent):
    """A valid ARI event type the service has no use for; ``raw`` is the JSON object."""

    raw: Mapping[str, object]

    @property
    def channel_id(self) -> str | None:
        channel = self.raw.get("channel")
        if type(channel) is dict:
            cid = channel.get("id")
            if type(cid) is str:
                return cid
        return None


# --- field readers: raise on a missing key / wrong type, cheap on the happy path -----


def _str(value: object) -> str:
    if type(value) is str:
        return value
    raise MalformedEvent(f"expected a string, got {type(value).__name__}")


def _int(value: object) -> int:
    if type(value) is int:
        return value
    raise MalformedEvent(f"expected an integer, got {type(value).__name__}")


def _obj(value: object) -> dict[str, Any]:
    if type(value) is dict:
        return value
    raise MalformedEvent(f"expected an object, got {type(value).__name__}")


def _channel(value: object) -> ChannelInfo:
    c = _obj(value)
    caller = _obj(c["caller"])
    dp = _obj(c["dialplan"])
    return ChannelInfo(
        _str(c["id"]), _str(c["name"]), _str(c["state"]), _str(caller["number"]),
        _str(caller["name"]), _str(dp["context"]), _str(dp["exten"]), _int(dp["priority"]),
        _str(dp["app_name"]), _str(dp["app_data"]), _str(c["creationtime"]),
    )  # fmt: skip


def _optional_channel(value: object) -> ChannelInfo | None:
    return None if value is None else _channel(value)


def channel_from_json(value: object) -> ChannelInfo:
    """A ``Channel`` object from a REST answer; raises MalformedEvent if it is not one."""
    try:
        return _channel(value)
    except KeyError as exc:
        raise MalformedEvent(f"channel lacks {exc}") from exc


# --- per-type decoders ---------------------------------------------------------------

_Decoder = Callable[[dict[str, Any], str, str, str], AriEvent]


def _stasis_start(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    args = o["args"]
    if type(args) is not list or not all(type(a) is str for a in args):
        raise MalformedEvent("args is not a list of strings")
    replace = o.get("replace_channel")
    replace_id = None if replace is None else _channel(replace).id
    return StasisStart(t, ts, app, _channel(o["channel"]), tuple(args), replace_id)


def _channel_only(cls: type[_ChannelEvent]) -> _Decoder:
    def decode_channel_event(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
        return cls(t, ts, app, _channel(o["channel"]))

    return decode_channel_event


def _dtmf(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    return ChannelDtmfReceived(
        t, ts, app, _channel(o["channel"]), _str(o["digit"]), _int(o["duration_ms"])
    )


def _hangup_request(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    cause = o.get("cause")
    soft = o.get("soft", False)
    if cause is not None:
        _int(cause)
    if type(soft) is not bool:
        raise MalformedEvent("soft is not a boolean")
    return ChannelHangupRequest(t, ts, app, _channel(o["channel"]), cause, soft)


def _destroyed(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    return ChannelDestroyed(
        t, ts, app, _channel(o["channel"]), _int(o["cause"]), _str(o["cause_txt"])
    )


def _dial(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    return Dial(
        t, ts, app, _channel(o["peer"]), _optional_channel(o.get("caller")),
        _str(o["dialstatus"]), _str(o.get("dialstring", "")), _str(o.get("forward", "")),
    )  # fmt: skip


def _playback(cls: type[_PlaybackEvent]) -> _Decoder:
    def decode_playback(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
        pb = _obj(o["playback"])
        return cls(
            t, ts, app, _str(pb["id"]), _str(pb["target_uri"]), _str(pb["state"]),
            _str(pb["media_uri"]),
        )  # fmt: skip

    return decode_playback


def _recording(cls: type[_RecordingEvent]) -> _Decoder:
    def decode_recording(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
        rec = _obj(o["recording"])
        cause = rec.get("cause")
        return cls(
            t, ts, app, _str(rec["name"]), _str(rec["target_uri"]), _str(rec["state"]),
            cause if isinstance(cause, str) else "",
        )  # fmt: skip

    return decode_recording


def _varset(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    return ChannelVarset(
        t, ts, app, _optional_channel(o.get("channel")), _str(o["variable"]), _str(o["value"])
    )


def _replaced(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    return ApplicationReplacedEvent(t, ts, app)


def _device_state(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    ds = _obj(o["device_state"])
    return DeviceStateChanged(t, ts, app, _str(ds["name"]), _str(ds["state"]))


def _userevent(o: dict[str, Any], t: str, ts: str, app: str) -> AriEvent:
    return ChannelUserevent(
        t, ts, app, _optional_channel(o.get("channel")), _str(o["eventname"]),
        MappingProxyType(_obj(o["userevent"])),
    )  # fmt: skip


_DECODERS: Final[dict[str, _Decoder]] = {
    "StasisStart": _stasis_start,
    "StasisEnd": _channel_only(StasisEnd),
    "ChannelStateChange": _channel_only(ChannelStateChange),
    "ChannelDtmfReceived": _dtmf,
    "ChannelHangupRequest": _hangup_request,
    "ChannelDestroyed": _destroyed,
    "Dial": _dial,
    "PlaybackStarted": _playback(PlaybackStarted),
    "PlaybackFinished": _playback(PlaybackFinished),
    "RecordingFinished": _recording(RecordingFinished),
    "RecordingFailed": _recording(RecordingFailed),
    "ChannelVarset": _varset,
    "ApplicationReplaced": _replaced,
    "DeviceStateChanged": _device_state,
    "ChannelUserevent": _userevent,
}

TYPED_EVENTS: Final = frozenset(_DECODERS)
"""Event types decoded into their own class."""

OTHER_EVENTS: Final = frozenset(
    {
        "ApplicationMoveFailed", "ApplicationRegistered", "ApplicationUnregistered",
        "BridgeAttendedTransfer", "BridgeBlindTransfer", "BridgeCreated", "BridgeDestroyed",
        "BridgeMerged", "BridgeVideoSourceChanged", "CallBroadcast", "CallClaimed",
        "ChannelCallerId", "ChannelConnectedLine", "ChannelCreated", "ChannelDialplan",
        "ChannelEnteredBridge", "ChannelHold", "ChannelLeftBridge", "ChannelTalkingFinished",
        "ChannelTalkingStarted", "ChannelToneDetected", "ChannelTransfer", "ChannelUnhold",
        "ContactStatusChange", "EndpointStateChange", "PeerStatusChange", "PlaybackContinuing",
        "RecordingStarted", "RESTResponse",
        "TextMessageReceived",
    }
)  # fmt: skip
"""The other ``Event`` subtypes of the ARI 22 spec (events.json): decoded as OtherEvent."""


# --- entry point ---------------------------------------------------------------------


def decode(obj: Mapping[str, object]) -> AriEvent | None:
    """Decode one ARI event object; None (logged as ``ari.bad_event``) if it is unusable.

    Never raises for bad input: unknown types, missing or mistyped fields and non-objects
    are rejected so that one odd frame cannot stop the event stream.
    """
    if type(obj) is not dict:
        if not isinstance(obj, Mapping):
            reject("not_an_object", obj)
            return None
        obj = dict(obj)
    try:
        etype = obj["type"]
        ts = obj["timestamp"]
        app = obj["application"]
        if type(etype) is not str or type(ts) is not str or type(app) is not str:
            raise MalformedEvent("type, timestamp or application is not a string")
        decoder = _DECODERS.get(etype)
        if decoder is not None:
            return decoder(obj, etype, ts, app)
        if etype in OTHER_EVENTS:
            return OtherEvent(etype, ts, app, obj)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reject("malformed", obj, error=_describe(exc))
        return None
    reject("unknown_type", obj, event_type=etype)
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return str(exc) or type(exc).__name__


def reject(reason: str, data: object, **fields: object) -> None:
    """Log a frame or event we skip, with a short preview whose long digit runs are masked."""
    log.warning("ari.bad_event", reason=reason, preview=preview(data), **fields)


def preview(data: object) -> str:
    """A short, log-safe rendering of a rejected frame (phone-number-like digits masked)."""
    if isinstance(data, bytes | bytearray):
        text = f"<{len(data)} bytes> {bytes(data[:PREVIEW_CHARS])!r}"
    elif isinstance(data, str):
        text = data[: PREVIEW_CHARS + 40]
    else:
        try:
            text = json.dumps(data, default=str)[: PREVIEW_CHARS + 40]
        except (TypeError, ValueError):
            text = repr(data)[: PREVIEW_CHARS + 40]
    return _DIGIT_RUN.sub(lambda m: masking.mask(m.group()), text)[:PREVIEW_CHARS]

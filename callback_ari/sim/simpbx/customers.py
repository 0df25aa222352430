"""POST /channels of the fake: Local pairs and trunk calls; the dialled number picks the outcome."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callback_ari.sim.simpbx.model import CallerId, Channel
from callback_ari.sim.simpbx.pbx import AriFailure, Pbx

# What the person (or network) at a dialled number does.
ANSWER = "answer"  # answers, presses 1 about 2.7 s later, hangs up after 30 s more
BUSY = "busy"
NO_ANSWER = "no_answer"  # rings until the originate timeout
CONGESTION = "congestion"
MACHINE = "machine"  # answers and never presses anything (answering machine)
ANSWER_HANGUP = "answer_hangup"  # answers and hangs up after 1 s
INVALID = "invalid"  # no such number: the call fails at once
BEHAVIOURS = (ANSWER, BUSY, NO_ANSWER, CONGESTION, MACHINE, ANSWER_HANGUP, INVALID)

# Default rules by the last 7 digits, like the [customers] context of the recordings.
_PREFIX_RULES = {
    "5551": ANSWER,
    "5552": BUSY,
    "5553": NO_ANSWER,
    "5554": CONGESTION,
    "5555": MACHINE,
    "5556": ANSWER_HANGUP,
}

# The dialplan each behaviour runs on the answering side (a Local ;2 or the far end of a trunk).
PROGRAMS: Mapping[str, tuple[tuple[str, str], ...]] = {
    ANSWER: (("Answer", ""), ("Wait", "2"), ("SendDTMF", "1"), ("Wait", "30"), ("Hangup", "")),
    MACHINE: (("Answer", ""), ("Wait", "60"), ("Hangup", "")),
    ANSWER_HANGUP: (("Answer", ""), ("Wait", "1"), ("Hangup", "")),
    BUSY: (("Busy", "5"),),
    CONGESTION: (("Congestion", "5"),),
    NO_ANSWER: (("Wait", "120"),),
}


def digits_of(text: str) -> str:
    """The digits of a number or dial string (``PJSIP/+12025551234@trunk`` -> ``12025551234``)."""
    return re.sub(r"\D", "", text)


class Behaviours:
    """Default outcome rules plus per-number overrides (a single one or a sequence)."""

    def __init__(self) -> None:
        self._overrides: dict[str, deque[str]] = {}

    def set(self, number: str, behaviour: str | Sequence[str]) -> None:
        """Override what a number does; a sequence is used one entry per call, the last sticks."""
        seq = [behaviour] if isinstance(behaviour, str) else list(behaviour)
        for b in seq:
            if b not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {b!r}; one of {', '.join(BEHAVIOURS)}")
        if not seq:
            raise ValueError("empty behaviour sequence")
        self._overrides[digits_of(number)] = deque(seq)

    def clear(self) -> None:
        """Forget every override."""
        self._overrides.clear()

    def resolve(self, number: str) -> str:
        """The behaviour for this call to number (consumes one entry of a sequence)."""
        digits = digits_of(number)
        seq = self._overrides.get(digits)
        if seq is None:
            for key, candidate in self._overrides.items():
                if key and (digits.endswith(key) or key.endswith(digits)) and len(digits) >= 7:
                    seq = candidate
                    break
        if seq is not None:
            return seq.popleft() if len(seq) > 1 else seq[0]
        return _PREFIX_RULES.get(digits[-7:-3], INVALID) if len(digits) >= 7 else INVALID


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    """The parameters of POST /channels the fake uses."""

    endpoint: str
    app: str | None
    app_args: str
    caller_id: str
    timeout: int
    channel_id: str | None
    other_channel_id: str | None
    extension: str | None
    context: str | None
    priority: int | None
    variables: Mapping[str, str]


def _parse_endpoint(endpoint: str) -> tuple[str, str, str]:
    tech, sep, resource = endpoint.partition("/")
    if not sep or not tech:
        raise AriFailure(400, "Bad Request", "Invalid endpoint specified")
    if not resource:
        raise AriFailure(400, "Bad Request", "Invalid endpoint specified")
    return tech, resource, endpoint


def originate(pbx: Pbx, req: OriginateRequest) -> Channel:
    """Create the channel(s) and start the call; the outcome arrives only as events."""
    if not req.endpoint:
        raise AriFailure(400, "Bad Request", "Endpoint must be specified")
    if not req.app and not req.extension:
        raise AriFailure(400, "Bad Request", "Application or extension must be specified")
    tech, resource, _ = _parse_endpoint(req.endpoint)
    caller = CallerId.parse(req.caller_id)
    if tech == "Local":
        target = resource.split("/", 1)[0]
        exten, _, context = target.partition("@")
        ch1, ch2 = pbx.local_pair(
            exten, context or "default", caller, id1=req.channel_id, id2=req.other_channel_id
        )
        chans = [ch1, ch2]
    else:
        pbx_ids = [req.channel_id, req.other_channel_id]
        for cid in pbx_ids:
            if cid and cid in pbx.channels:
                raise AriFailure(409, "Conflict", "Channel with given unique ID already exists")
        number, _, trunk = resource.partition("@")
        name = f"{tech}/{trunk or number}-{pbx.new_suffix()}"
        ch1 = Channel(req.channel_id or pbx.new_uniqueid(), name, "Down", caller, "default", "s")
        ch1.dial_app = ("AppDial2", "(Outgoing Line)")
        ch1.app_name, ch1.app_data = ch1.dial_app
        ch1.linkedid = ch1.id
        pbx.add_channel(ch1)
        chans = [ch1]
    ch1.originate_app = req.app or None
    ch1.app_args = req.app_args.split(",") if req.app_args else []
    if not req.app and req.extension:
        ch1.continue_to = (req.context or "default", req.extension, req.priority or 1)
    for name, value in req.variables.items():
        ch1.variables[name] = value
    if req.app:
        for ch in chans:
            pbx.stasis.subscribe(req.app, ch)
    if tech == "Local":
        pbx.spawn(start_local(pbx, ch1, chans[1], req.timeout, resource))
    else:
        behaviour = pbx.dialplan.behaviours.resolve(resource)
        pbx.spawn(_start_trunk(pbx, ch1, behaviour, req.timeout, resource))
    return ch1


async def start_local(pbx: Pbx, ch1: Channel, ch2: Channel, ring_s: int, dialstring: str) -> None:
    pbx.emit(
        "ChannelCallerId",
        ch2,
        {"caller_presentation": 0, "caller_presentation_txt": "Presentation Allowed, Not Screened"},
    )
    pbx.emit("ChannelConnectedLine", ch2)
    if not pbx.dialplan.exists(ch2.context, ch2.exten, ch2):
        pbx.destroy(ch2, propagate=False)
        pbx.destroy(ch1, propagate=False)
        return
    pbx.dial_event(ch1, "", dialstring)
    pbx.start_dialplan(ch2, ch2.context, ch2.exten, 1)
    await _ring_timeout(pbx, ch1, ring_s)


async def _ring_timeout(pbx: Pbx, ch1: Channel, ring_s: int) -> None:
    """Originate timeout: a call not answered in time is abandoned with cause 19."""
    await pbx.sleep(ring_s if ring_s > 0 else 30)
    if ch1.alive and ch1.state != "Up":
        ch1.hangupcause = 19
        peer = ch1.peer
        if peer is not None and peer.alive:
            ch1.hangup_requested = True  # the originate gives up; ;2 is told, then ;1 goes
            pbx.hangup(peer, 19, soft=False)
        pbx.destroy(ch1, propagate=False)


async def _start_trunk(pbx: Pbx, ch: Channel, behaviour: str, ring_s: int, dialstring: str) -> None:
    """A single outbound channel (PJSIP/...) whose far end follows the behaviour."""
    pbx.dial_event(ch, "", dialstring)
    if behaviour == INVALID:
        pbx.dial_event(ch, "CHANUNAVAIL", dialstring)
        ch.hangupcause = 1
        pbx.destroy(ch)
        return
    if behaviour in (BUSY, CONGESTION):
        await pbx.sleep(0.1)
        status, cause = ("BUSY", 17) if behaviour == BUSY else ("CONGESTION", 34)
        pbx.dial_event(ch, status, dialstring)
        ch.hangupcause = cause
        pbx.destroy(ch)
        return
    pbx.set_state(ch, "Ringing")
    if behaviour == NO_ANSWER:
        await _ring_timeout(pbx, ch, ring_s)
        return
    await pbx.sleep(0.5)
    if not ch.alive:
        return
    pbx.set_state(ch, "Up")
    pbx.dial_event(ch, "ANSWER", dialstring)
    pbx.dial_answered(ch)
    program = PROGRAMS[behaviour]
    for app, data in program[1:]:
        if not ch.alive:
            return
        if app == "Wait":
            await pbx.sleep(float(data))
        elif app == "SendDTMF":
            for digit in data:
                await pbx.sleep(0.2)
                pbx.media.dtmf_received(ch, digit, 100)
            await pbx.sleep(0.25)
        elif app == "Hangup" and ch.alive:
            pbx.hangup(ch, 16, soft=False)

"""ARI REST operations of the fake, one method per (path template, HTTP method)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from callback_ari.sim.simpbx import customers, sounds
from callback_ari.sim.simpbx.dialplan import FunctionError
from callback_ari.sim.simpbx.model import ASTERISK_ID, VERSION, Channel
from callback_ari.sim.simpbx.pbx import AriFailure, Pbx, not_found

HANGUP_REASONS = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 19,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    501: "Not Implemented",
}
STARTED = time.time()


@dataclass(frozen=True, slots=True)
class Reply:
    """An ARI response: status, JSON body (None for empty) and a Location for 201."""

    status: int
    body: Any = None
    location: str | None = None
    reason: str | None = None


Params = Mapping[str, Any]
Handler = Callable[[Mapping[str, str], Params], Reply]


def _str(params: Params, name: str) -> str | None:
    value = params.get(name)
    return None if value is None else str(value)


def _int(params: Params, name: str, default: int) -> int:
    """Asterisk converts ints with atoi: garbage is 0, absent is the default."""
    value = params.get(name)
    if value is None or value == "":
        return default
    digits = str(value).strip()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    n = ""
    for c in digits:
        if not c.isdigit():
            break
        n += c
    return sign * int(n) if n else 0


class Handlers:
    """Maps routes to PBX operations."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.table: dict[tuple[str, str], Handler] = {
            ("/asterisk/info", "GET"): self.info,
            ("/asterisk/ping", "GET"): self.ping,
            ("/asterisk/variable", "GET"): self.get_global,
            ("/asterisk/variable", "POST"): self.set_global,
            ("/applications", "GET"): self.list_apps,
            ("/applications/{applicationName}", "GET"): self.get_app,
            ("/applications/{applicationName}/subscription", "POST"): self.subscribe,
            ("/applications/{applicationName}/subscription", "DELETE"): self.unsubscribe,
            ("/channels", "GET"): self.list_channels,
            ("/channels", "POST"): self.originate,
            ("/channels/{channelId}", "POST"): self.originate,
            ("/channels/{channelId}", "GET"): self.get_channel,
            ("/channels/{channelId}", "DELETE"): self.hangup,
            ("/channels/{channelId}/answer", "POST"): self.answer,
            ("/channels/{channelId}/ring", "POST"): self.ring,
            ("/channels/{channelId}/ring", "DELETE"): self.ring,
            ("/channels/{channelId}/progress", "POST"): self.ring,
            ("/channels/{channelId}/continue", "POST"): self.continue_,
            ("/channels/{channelId}/play", "POST"): self.play,
            ("/channels/{channelId}/play/{playbackId}", "POST"): self.play,
            ("/channels/{channelId}/dtmf", "POST"): self.dtmf,
            ("/channels/{channelId}/record", "POST"): self.record,
            ("/recordings/stored", "GET"): self.list_recordings,
            ("/recordings/stored/{recordingName}", "GET"): self.get_recording,
            ("/recordings/stored/{recordingName}", "DELETE"): self.delete_recording,
            ("/channels/{channelId}/variable", "GET"): self.get_var,
            ("/channels/{channelId}/variable", "POST"): self.set_var,
            ("/playbacks/{playbackId}", "GET"): self.get_playback,
            ("/playbacks/{playbackId}", "DELETE"): self.stop_playback,
            ("/playbacks/{playbackId}/control", "POST"): self.control_playback,
            ("/sounds", "GET"): self.list_sounds,
            ("/sounds/{soundId}", "GET"): self.get_sound,
            ("/bridges", "GET"): self.list_bridges,
            ("/bridges/{bridgeId}", "GET"): self.get_bridge,
            ("/endpoints", "GET"): self.list_endpoints,
            ("/deviceStates/{deviceName}", "PUT"): self.update_devstate,
        }

    # --- asterisk ------------------------------------------------------------------------

    def info(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /asterisk/info, shaped like Debian's Asterisk 22.10 answers it."""
        started = time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(STARTED))
        return Reply(
            200,
            {
                "build": {
                    "os": "Linux",
                    "kernel": "unknown",
                    "machine": "unknown",
                    "options": "OPTIONAL_API, TEST_FRAMEWORK",
                    "date": "2026-07-20 21:35:32 UTC",
                    "user": "nobody",
                },
                "system": {"version": VERSION, "entity_id": ASTERISK_ID},
                "config": {
                    "name": "",
                    "default_language": "en",
                    "setid": {"user": "", "group": ""},
                },
                "status": {"startup_time": started, "last_reload_time": started},
            },
        )

    def ping(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /asterisk/ping."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())
        return Reply(200, {"ping": "pong", "timestamp": now, "asterisk_id": ASTERISK_ID})

    def get_global(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /asterisk/variable (functions too)."""
        name = str(p["variable"])
        try:
            value = self.pbx.read_variable(None, name)
        except FunctionError:
            return Reply(
                500, {"message": "Unable to read provided function"}, reason="Error With Function"
            )
        return Reply(200, {"value": value or ""})

    def set_global(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /asterisk/variable; without a value Asterisk 22 removes the variable."""
        value = _str(p, "value")
        if value is None:
            self.pbx.globals.pop(str(p["variable"]), None)
        else:
            self.pbx.globals[str(p["variable"])] = value
        return Reply(204)

    # --- applications ----------------------------------------------------------------------

    def list_apps(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /applications."""
        return Reply(200, [a.to_json() for a in self.pbx.stasis.listed()])

    def _app(self, name: str) -> Any:
        app = self.pbx.stasis.apps.get(name)
        if app is None or app not in self.pbx.stasis.listed():
            raise AriFailure(404, "Not Found", "Application not found")
        return app

    def get_app(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /applications/{name}."""
        return Reply(200, self._app(pv["applicationName"]).to_json())

    def _event_sources(self, p: Params) -> list[Channel]:
        found = []
        for source in str(p["eventSource"]).split(","):
            scheme, _, ident = source.partition(":")
            if scheme not in ("channel", "bridge", "endpoint", "deviceState"):
                raise AriFailure(400, "Bad Request", "Invalid event source URI scheme")
            if scheme == "channel":
                ch = self.pbx.channels.get(ident)
                if ch is None:
                    raise AriFailure(422, "Unprocessable Entity", "Event source does not exist")
                found.append(ch)
        return found

    def subscribe(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /applications/{name}/subscription."""
        app = self._app(pv["applicationName"])
        for ch in self._event_sources(p):
            self.pbx.stasis.subscribe(app.name, ch)
        return Reply(200, app.to_json())

    def unsubscribe(self, pv: Mapping[str, str], p: Params) -> Reply:
        """DELETE /applications/{name}/subscription."""
        app = self._app(pv["applicationName"])
        for ch in self._event_sources(p):
            self.pbx.stasis.unsubscribe(app.name, ch)
        return Reply(200, app.to_json())

    # --- channels --------------------------------------------------------------------------------

    def list_channels(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /channels."""
        return Reply(200, [ch.to_json() for ch in self.pbx.channels.values() if not ch.destroyed])

    def get_channel(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /channels/{id}."""
        return Reply(200, self.pbx.get_channel(pv["channelId"]).to_json())

    def originate(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /channels and POST /channels/{channelId}."""
        variables = p.get("variables")
        if isinstance(variables, Mapping) and "variables" in variables:
            variables = variables["variables"]
        req = customers.OriginateRequest(
            endpoint=_str(p, "endpoint") or "",
            app=_str(p, "app"),
            app_args=_str(p, "appArgs") or "",
            caller_id=_str(p, "callerId") or "",
            timeout=_int(p, "timeout", 30),
            channel_id=pv.get("channelId") or _str(p, "channelId"),
            other_channel_id=_str(p, "otherChannelId"),
            extension=_str(p, "extension"),
            context=_str(p, "context"),
            priority=_int(p, "priority", 0) or None,
            variables={str(k): str(v) for k, v in (variables or {}).items()}
            if isinstance(variables, Mapping)
            else {},
        )
        return Reply(200, customers.originate(self.pbx, req).to_json())

    def hangup(self, pv: Mapping[str, str], p: Params) -> Reply:
        """DELETE /channels/{id}: soft hang-up 32 (EXPLICIT), cause from reason."""
        reason, code = _str(p, "reason"), _str(p, "reason_code")
        if reason and code:
            raise AriFailure(
                400, "Bad Request", "The reason and reason_code can't both be specified"
            )
        ch = self.pbx.channels.get(pv["channelId"])
        if ch is None or not ch.alive:
            raise not_found()
        if code:
            ch.hangupcause = _int(p, "reason_code", 16)
        else:
            ch.hangupcause = HANGUP_REASONS.get(reason or "normal", 16)
        self.pbx.hangup(ch, 32, soft=True)
        return Reply(204)

    def answer(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /answer (204 also on an Up channel)."""
        ch = self.pbx.control(pv["channelId"])
        if ch.state != "Up":
            self.pbx.answer(ch)
        return Reply(204)

    def ring(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST/DELETE /ring, POST /progress: indications only."""
        self.pbx.control(pv["channelId"])
        return Reply(204)

    def continue_(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /continue."""
        ch = self.pbx.control_up(pv["channelId"])
        label = _str(p, "label")
        priority = _int(p, "priority", 0) or None
        context, exten = _str(p, "context"), _str(p, "extension")
        if label:
            ext = self.pbx.dialplan.find(context or ch.context, exten or ch.exten, ch)
            if label.isdigit():
                priority = int(label)
            elif ext is None or label not in ext.labels:
                raise AriFailure(404, "Not Found", "Requested label can not be found")
            else:
                priority = ext.labels[label]
        self.pbx.continue_in_dialplan(ch, context, exten, priority)
        return Reply(204)

    def play(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /play and /play/{playbackId}: 201 + Location, state queued."""
        ch = self.pbx.control_up(pv["channelId"])
        if _int(p, "skipms", 3000) < 0:
            raise AriFailure(400, "Bad Request", "skipms cannot be negative")
        if _int(p, "offsetms", 0) < 0:
            raise AriFailure(400, "Bad Request", "offsetms cannot be negative")
        media = [m for m in str(p["media"]).split(",")]
        playback_id = pv.get("playbackId") or _str(p, "playbackId")
        pb = self.pbx.media.play(ch, media, playback_id, _str(p, "lang") or "")
        body = pb.to_json()
        return Reply(201, body, location=f"/ari/playbacks/{pb.id}")

    def dtmf(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /dtmf: the Local peer receives the digits (200 ms apart by default)."""
        ch = self.pbx.control_up(pv["channelId"])
        self.pbx.media.send_dtmf(
            ch,
            str(p["dtmf"]),
            before_ms=_int(p, "before", 0),
            between_ms=_int(p, "between", 100),
            duration_ms=_int(p, "duration", 100),
        )
        return Reply(204)

    def record(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /record: 201 + the LiveRecording; it ends on its own (events)."""
        ch = self.pbx.control_up(pv["channelId"])
        if not self.pbx.recording_dir:
            raise AriFailure(500, "Internal Server Error", "Internal Server Error")
        rec = self.pbx.media.record(
            ch, str(p["name"]), str(p["format"]), _int(p, "maxDurationSeconds", 0),
            _str(p, "terminateOn") or "none", _str(p, "ifExists") or "fail",
        )  # fmt: skip
        return Reply(201, rec.to_json("queued"), location=f"/ari/recordings/live/{rec.name}")

    def list_recordings(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /recordings/stored."""
        if not self.pbx.recording_dir:
            raise AriFailure(500, "Internal Server Error", "Allocation failed")
        stored = self.pbx.stored_recordings
        return Reply(200, [{"name": n, "format": f} for n, f in sorted(stored.items())])

    def get_recording(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /recordings/stored/{name}."""
        fmt = self.pbx.stored_recordings.get(pv["recordingName"])
        if fmt is None:
            raise AriFailure(404, "Not Found", "Recording not found")
        return Reply(200, {"name": pv["recordingName"], "format": fmt})

    def delete_recording(self, pv: Mapping[str, str], p: Params) -> Reply:
        """DELETE /recordings/stored/{name}."""
        if self.pbx.stored_recordings.pop(pv["recordingName"], None) is None:
            raise AriFailure(404, "Not Found", "Recording not found")
        return Reply(204)

    def get_var(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /variable: functions are evaluated on any channel."""
        ch = self.pbx.channels.get(pv["channelId"])
        if ch is None or ch.destroyed:
            raise AriFailure(404, "Channel Not Found", "Provided channel was not found")
        try:
            value = self.pbx.read_variable(ch, str(p["variable"]))
        except FunctionError:
            raise AriFailure(
                500, "Error With Function", "Unable to read provided function"
            ) from None
        if value is None:
            raise AriFailure(404, "Variable Not Found", "Provided variable was not found")
        return Reply(200, {"value": value})

    def set_var(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /variable."""
        ch = self.pbx.channels.get(pv["channelId"])
        if ch is None or ch.destroyed:
            raise AriFailure(404, "Channel Not Found", "Provided channel was not found")
        self.pbx.dialplan.assign(ch, str(p["variable"]), _str(p, "value") or "")
        return Reply(204)

    # --- playbacks, sounds, bridges, endpoints, device states -------------------------------

    def get_playback(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /playbacks/{id}."""
        return Reply(200, self.pbx.media.get(pv["playbackId"]).to_json())

    def stop_playback(self, pv: Mapping[str, str], p: Params) -> Reply:
        """DELETE /playbacks/{id}."""
        self.pbx.media.stop(pv["playbackId"])
        return Reply(204)

    def control_playback(self, pv: Mapping[str, str], p: Params) -> Reply:
        """POST /playbacks/{id}/control (accepted, no effect on timing)."""
        pb = self.pbx.media.get(pv["playbackId"])
        if pb.state != "playing":
            raise AriFailure(409, "Conflict", f"Can only {p['operation']} while media is playing")
        return Reply(204)

    def list_sounds(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /sounds."""
        return Reply(200, [s.to_json() for s in sounds.all_sounds()])

    def get_sound(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /sounds/{id}."""
        info = sounds.lookup(pv["soundId"])
        if info is None:
            raise AriFailure(404, "Not Found", "Sound not found")
        return Reply(200, info.to_json())

    def list_bridges(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /bridges."""
        return Reply(200, [b.to_json() for b in self.pbx.bridges.values()])

    def get_bridge(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /bridges/{id}."""
        bridge = self.pbx.bridges.get(pv["bridgeId"])
        if bridge is None:
            raise AriFailure(404, "Not found", "Bridge not found")
        return Reply(200, bridge.to_json())

    def list_endpoints(self, pv: Mapping[str, str], p: Params) -> Reply:
        """GET /endpoints: one PJSIP trunk."""
        return Reply(
            200,
            [
                {
                    "technology": "PJSIP",
                    "resource": "trunk",
                    "state": "online",
                    "channel_ids": [],
                }
            ],
        )

    def update_devstate(self, pv: Mapping[str, str], p: Params) -> Reply:
        """PUT /deviceStates/{name}: drives queue members like ``devstate change``."""
        self.pbx.queues.set_devstate(pv["deviceName"], str(p["deviceState"]))
        return Reply(204)

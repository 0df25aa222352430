"""Thin ARI client on aiohttp: the REST calls the service needs plus the event socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from callback_ari.asterisk.ari_events import ChannelInfo, MalformedEvent, channel_from_json
from callback_ari.asterisk.ari_ws import (
    MAX_MESSAGE_BYTES,
    ConnectHandler,
    EventHandler,
    EventStream,
    StreamSettings,
    status_error,
)
from callback_ari.core.backoff import Backoff
from callback_ari.errors import AriError, AriNotFound, AriUnavailable

HANGUP_REASONS: Final = frozenset(
    {
        "normal", "busy", "congestion", "no_answer", "timeout", "rejected", "unallocated",
        "normal_unspecified", "number_incomplete", "codec_mismatch", "interworking", "failure",
        "answered_elsewhere",
    }
)  # fmt: skip
"""``DELETE /channels/{id}?reason=`` values allowed by the ARI 22 spec."""


def _seg(value: str) -> str:
    """One URL path segment: ids may hold ';', '/', '@' (Local channel names) or spaces."""
    return quote(value, safe="")


def _no_commas(values: Sequence[str], what: str) -> str:
    # Asterisk splits these parameters on commas; a comma inside one item cannot be sent.
    for value in values:
        if "," in value:
            raise ValueError(f"{what} item may not contain a comma: {value!r}")
    return ",".join(values)


class AriClient:
    """ARI REST + events for one Stasis app. Use as ``async with AriClient(...) as ari``.

    ``base_url`` is the HTTP(S) root of Asterisk's web server without ``/ari``. Credentials
    travel only in the ``Authorization: Basic`` header (REST and WebSocket), never in a URL.
    Every REST call is bounded by ``request_timeout``; connection failures and timeouts raise
    AriUnavailable, error statuses the matching AriHTTPError subclass.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        *,
        verify_tls: bool = True,
        request_timeout: float = 10.0,
        heartbeat: float = 20.0,
        backoff: Backoff | None = None,
        stable_after: float = 10.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        url = URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"ARI url must be http(s)://host[:port], got {url.with_user(None)}")
        url = url.with_user(None)  # credentials in the URL would end up in logs and errors
        root = str(url) if url.path.endswith("/ari") else str(url) + "/ari"
        self.app = app
        self.base_url = str(url)
        self._api = root
        self._authorization = aiohttp.encode_basic_auth(username, password)
        self._verify_tls = verify_tls
        self._timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        ws_scheme = "wss" if url.scheme == "https" else "ws"
        self._events = EventStream(
            StreamSettings(
                url=ws_scheme + root[len(url.scheme) :] + "/events",
                app=app,
                verify_tls=verify_tls,
                connect_timeout=request_timeout,
                heartbeat=heartbeat,
                stable_after=stable_after,
                max_message_bytes=max_message_bytes,
            ),
            self._session,
            backoff if backoff is not None else Backoff(),
        )

    def __repr__(self) -> str:
        return f"AriClient(url={self.base_url!r}, app={self.app!r})"

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> AriClient:
        self._session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (and with it any open WebSocket). Idempotent."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"Authorization": self._authorization, "Accept": "application/json"},
            )
        return self._http

    # --- events -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the event WebSocket is open (readiness)."""
        return self._events.connected

    @property
    def reconnects(self) -> int:
        """How many times the event WebSocket was re-established after the first connect."""
        return self._events.reconnects

    async def run_events(self, on_event: EventHandler, on_connect: ConnectHandler) -> None:
        """Hold the event socket forever (until cancelled), reconnecting with backoff.

        ``on_connect()`` is awaited after every successful (re)connect, before any event of
        that connection is dispatched: resync there (Asterisk drops events while we are
        away). A raising ``on_event`` is logged and the stream goes on. Raises
        ApplicationReplaced when another WebSocket takes the app.
        """
        await self._events.run(on_event, on_connect)

    # --- REST plumbing ------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> Any:
        url = URL(self._api + path, encoded=True)
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session().request(method, url, params=params, json=body) as resp:
                    status = resp.status
                    raw = await resp.read()
        except TimeoutError as exc:
            raise AriUnavailable(f"{method} {path}: no answer within {self._timeout:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AriUnavailable(f"{method} {path}: {exc}") from exc
        if status >= 400:
            raise status_error(status, _message(raw), method, path)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise AriError(f"{method} {path}: answer is not JSON") from exc

    async def _channel(self, method: str, path: str, **kw: Any) -> ChannelInfo:
        try:
            return channel_from_json(await self._request(method, path, **kw))
        except MalformedEvent as exc:
            raise AriError(f"{method} {path}: unexpected channel JSON: {exc}") from exc

    # --- channels -----------------------------------------------------------------------

    async def originate(
        self,
        *,
        endpoint: str,
        channel_id: str,
        other_channel_id: str | None = None,
        app_args: Sequence[str] = (),
        caller_id: str | None = None,
        timeout: int = 30,  # noqa: ASYNC109 -- ARI's ring timeout (s), not an asyncio bound
        variables: Mapping[str, str] | None = None,
        dialplan: tuple[str, str, int] | None = None,
    ) -> ChannelInfo:
        """``POST /channels`` into our app with our own ids; 409 (AriConflict) if either id
        is still live. Asterisk answers 200 with a Down channel even for an unreachable
        endpoint: the outcome arrives only as events. With ``dialplan`` (context, extension,
        priority) the answered channel runs that dialplan instead of entering our app."""
        params = {"endpoint": endpoint}
        if dialplan is None:
            params["app"] = self.app
        else:
            context, extension, priority = dialplan
            params |= {"context": context, "extension": extension, "priority": str(priority)}
        if app_args:
            params["appArgs"] = _no_commas(app_args, "app_args")
        if caller_id:
            params["callerId"] = caller_id
        params["timeout"] = str(int(timeout))
        params["channelId"] = channel_id
        if other_channel_id:
            params["otherChannelId"] = other_channel_id
        body = {"variables": dict(variables)} if variables else None
        return await self._channel("POST", "/channels", params=params, body=body)

    async def answer(self, channel_id: str) -> None:
        """``POST /channels/{id}/answer`` (204 also when already Up)."""
        await self._request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def play(
        self, channel_id: str, media: Sequence[str], playback_id: str, lang: str = ""
    ) -> str:
        """Play ``sound:``/``digits:``/``number:`` URIs in order under our own playback id;
        returns the playback id. AriNotFound when the channel has hung up.

        ``lang`` picks the language of sounds and of Asterisk's own say-number/digits; empty
        leaves it to the channel's language."""
        if not media:
            raise ValueError("play() needs at least one media URI")
        params = {"media": _no_commas(media, "media"), "playbackId": playback_id}
        if lang:
            params["lang"] = lang
        answer = await self._request("POST", f"/channels/{_seg(channel_id)}/play", params)
        pb_id = answer.get("id") if isinstance(answer, dict) else None
        return pb_id if isinstance(pb_id, str) else playback_id

    async def stop_playback(self, playback_id: str) -> None:
        """``DELETE /playbacks/{id}``; AriNotFound if it already finished."""
        await self._request("DELETE", f"/playbacks/{_seg(playback_id)}")

    async def playback_exists(self, playback_id: str) -> bool:
        """Whether the playback is still queued or playing (``GET /playbacks/{id}``)."""
        try:
            await self._request("GET", f"/playbacks/{_seg(playback_id)}")
        except AriNotFound:
            return False
        return True

    async def continue_in_dialplan(
        self, channel_id: str, context: str, extension: str, priority: int = 1
    ) -> None:
        """Leave Stasis and continue at context,extension,priority (StasisEnd follows)."""
        params = {"context": context, "extension": extension, "priority": str(int(priority))}
        await self._request("POST", f"/channels/{_seg(channel_id)}/continue", params)

    async def continue_next(self, channel_id: str) -> None:
        """Leave Stasis and go on at the priority after the ``Stasis()`` line (no target)."""
        await self._request("POST", f"/channels/{_seg(channel_id)}/continue")

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        """A channel variable or function value; None when unset. AriNotFound if the
        channel is gone (both are 404; only the message tells them apart)."""
        path = f"/channels/{_seg(channel_id)}/variable"
        try:
            answer = await self._request("GET", path, {"variable": name})
        except AriNotFound as exc:
            if "variable" in exc.message.lower():  # "Provided variable was not found"
                return None
            raise
        value = answer.get("value") if isinstance(answer, dict) else None
        if not isinstance(value, str):
            raise AriError(f"GET {path}: answer has no string 'value'")
        return value

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        """``POST /channels/{id}/variable?variable=&value=``."""
        params = {"variable": name, "value": value}
        await self._request("POST", f"/channels/{_seg(channel_id)}/variable", params)

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """``DELETE /channels/{id}``; "normal" is Asterisk's default and is not sent."""
        if reason not in HANGUP_REASONS:
            raise ValueError(f"unknown hangup reason {reason!r}")
        params = None if reason == "normal" else {"reason": reason}
        await self._request("DELETE", f"/channels/{_seg(channel_id)}", params)

    async def list_channels(self) -> list[ChannelInfo]:
        """Every channel Asterisk has (not only ours); used to resync after a reconnect."""
        answer = await self._request("GET", "/channels")
        if not isinstance(answer, list):
            raise AriError("GET /channels: answer is not a list")
        try:
            return [channel_from_json(item) for item in answer]
        except MalformedEvent as exc:
            raise AriError(f"GET /channels: unexpected channel JSON: {exc}") from exc

    async def get_channel(self, channel_id: str) -> ChannelInfo:
        """``GET /channels/{id}``; AriNotFound once the channel is gone."""
        return await self._channel("GET", f"/channels/{_seg(channel_id)}")

    # --- recordings ---------------------------------------------------------------------

    async def record(
        self,
        channel_id: str,
        name: str,
        *,
        fmt: str,
        max_duration_s: int,
        max_silence_s: int = 0,
        beep: bool = True,
        terminate_on: str = "#",
    ) -> None:
        """``POST /channels/{id}/record`` (overwriting a stored recording of that name).

        The end arrives as RecordingFinished / RecordingFailed. AriNotFound when the channel
        is gone; AriConflict (409) when it is not in our app or is bridged.
        """
        params = {
            "name": name, "format": fmt, "maxDurationSeconds": str(int(max_duration_s)),
            "maxSilenceSeconds": str(int(max_silence_s)), "ifExists": "overwrite",
            "beep": "true" if beep else "false", "terminateOn": terminate_on,
        }  # fmt: skip
        await self._request("POST", f"/channels/{_seg(channel_id)}/record", params)

    async def stored_recordings(self) -> list[str]:
        """Names of every stored recording (``GET /recordings/stored``), ours or not."""
        answer = await self._request("GET", "/recordings/stored")
        if not isinstance(answer, list):
            raise AriError("GET /recordings/stored: answer is not a list")
        return [r["name"] for r in answer if isinstance(r, dict) and isinstance(r.get("name"), str)]

    async def delete_stored_recording(self, name: str) -> None:
        """``DELETE /recordings/stored/{name}``; AriNotFound if it is already gone."""
        await self._request("DELETE", f"/recordings/stored/{_seg(name)}")

    # --- application, sounds, system ----------------------------------------------------

    async def application(self) -> dict[str, Any]:
        """Our app as Asterisk sees it (``channel_ids``...); AriNotFound if not registered."""
        return await self._object("GET", f"/applications/{_seg(self.app)}")

    async def subscribe(self, event_source: str) -> dict[str, Any]:
        """Subscribe our app to an event source, e.g. ``deviceState:Custom:agent1``."""
        path = f"/applications/{_seg(self.app)}/subscription"
        return await self._object("POST", path, {"eventSource": event_source})

    async def sound_exists(self, sound_id: str, lang: str = "en") -> bool:
        """Whether Asterisk has the sound (in ``lang``; any language if ``lang`` is empty)."""
        try:
            sound = await self._object("GET", f"/sounds/{_seg(sound_id)}")
        except AriNotFound:
            return False
        formats = sound.get("formats")
        if not lang:
            return True
        return isinstance(formats, list) and any(
            isinstance(f, dict) and f.get("language") == lang for f in formats
        )

    async def asterisk_info(self) -> dict[str, Any]:
        """``GET /asterisk/info`` (``system.version``, ``system.entity_id``, ...)."""
        return await self._object("GET", "/asterisk/info")

    async def get_global(self, name: str) -> str:
        """``GET /asterisk/variable``: a global dialplan variable, "" when it is unset."""
        value = (await self._object("GET", "/asterisk/variable", {"variable": name})).get("value")
        if not isinstance(value, str):
            raise AriError("GET /asterisk/variable: answer has no string 'value'")
        return value

    async def unset_global(self, name: str) -> None:
        """``POST /asterisk/variable`` without a value: Asterisk 22 removes the global."""
        await self._request("POST", "/asterisk/variable", {"variable": name})

    async def _object(
        self, method: str, path: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        answer = await self._request(method, path, params)
        if not isinstance(answer, dict):
            raise AriError(f"{method} {path}: answer is not a JSON object")
        return answer


def _message(raw: bytes) -> str:
    """The ``message`` of an ARI error body, or the start of the body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace")
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else raw[:200].decode("utf-8", "replace")

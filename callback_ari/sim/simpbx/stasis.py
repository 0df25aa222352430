"""ARI applications of the fake: websocket registration, subscriptions and event routing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from callback_ari.sim.simpbx.model import ASTERISK_ID, Channel, timestamp


class EventSink(Protocol):
    """Where one websocket's events go (implemented by the ARI server)."""

    def send(self, event: dict[str, Any]) -> None:
        """Queue one event for the socket; never blocks."""

    def close(self, clean: bool) -> None:
        """Close the socket: with a close frame (clean) or by aborting TCP."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One ARI event as the fake produced it; delivered is False when no socket took it."""

    seq: int
    app: str
    event: dict[str, Any]
    delivered: bool


@dataclass(eq=False)
class App:
    """A Stasis application (registered by its first websocket)."""

    name: str
    sink: EventSink | None = None
    subscribe_all: bool = False
    channel_ids: set[str] = field(default_factory=set)
    bridge_ids: set[str] = field(default_factory=set)

    @property
    def active(self) -> bool:
        """A websocket is connected for it."""
        return self.sink is not None

    def to_json(self) -> dict[str, Any]:
        """ARI Application model."""
        if self.subscribe_all:
            channels = ["__AST_CHANNEL_ALL_TOPIC"]
            bridges = ["__AST_BRIDGE_ALL_TOPIC"]
            endpoints = ["__AST_ENDPOINT_ALL_TOPIC"]
            devices = ["__AST_DEVICE_STATE_ALL_TOPIC"]
        else:
            channels, bridges = sorted(self.channel_ids), sorted(self.bridge_ids)
            endpoints, devices = [], []
        return {
            "name": self.name,
            "channel_ids": channels,
            "bridge_ids": bridges,
            "endpoint_ids": endpoints,
            "device_names": devices,
            "events_allowed": [],
            "events_disallowed": [],
        }


def build_event(
    kind: str, app: str, body: dict[str, Any], pre: dict[str, Any] | None, at: float
) -> dict[str, Any]:
    """One event with Asterisk's key order: [payload-first keys], type, timestamp, ..., ids."""
    ts = timestamp(at)
    if kind == "DeviceStateChanged":
        return {
            "type": kind,
            "application": app,
            "timestamp": ts,
            **body,
            "asterisk_id": ASTERISK_ID,
        }
    event: dict[str, Any] = dict(pre or {})
    event["type"] = kind
    event["timestamp"] = ts
    event.update(body)
    event["asterisk_id"] = ASTERISK_ID
    event["application"] = app
    return event


class Stasis:
    """Registered apps, which channels they follow, and the log of every event sent."""

    def __init__(self, on_event: Callable[[], None], log_limit: int = 200_000) -> None:
        self.apps: dict[str, App] = {}
        self.log: list[EventRecord] = []
        self._seq = 0
        self._log_limit = log_limit
        self._on_event = on_event

    # --- registration ----------------------------------------------------------------

    def connect(self, names: Iterable[str], sink: EventSink, subscribe_all: bool) -> None:
        """A websocket for these apps; an older socket of the same app is replaced."""
        for name in names:
            app = self.apps.setdefault(name, App(name))
            old = app.sink
            app.sink = sink
            app.subscribe_all = subscribe_all
            if old is not None and old is not sink:
                replaced = {
                    "type": "ApplicationReplaced",
                    "timestamp": timestamp(),
                    "application": name,
                    "asterisk_id": ASTERISK_ID,
                }
                old.send(replaced)
                self._record(name, replaced, True)

    def disconnect(self, sink: EventSink) -> None:
        """The socket closed; its apps stay registered but receive nothing."""
        for app in self.apps.values():
            if app.sink is sink:
                app.sink = None

    def active(self, name: str) -> bool:
        """Does the app have a connected websocket (so Stasis() can enter it)?"""
        app = self.apps.get(name)
        return app is not None and app.active

    def sinks(self) -> list[EventSink]:
        """Every connected socket."""
        return [app.sink for app in self.apps.values() if app.sink is not None]

    def listed(self) -> list[App]:
        """Apps GET /applications shows: connected ones and ones still holding channels."""
        return [a for a in self.apps.values() if a.active or a.channel_ids]

    # --- subscriptions -----------------------------------------------------------------

    def subscribe(self, app_name: str, channel: Channel) -> None:
        """Route the channel's events to the app."""
        app = self.apps.setdefault(app_name, App(app_name))
        channel.subscribers.add(app_name)
        app.channel_ids.add(channel.id)

    def unsubscribe(self, app_name: str, channel: Channel) -> None:
        """Stop routing the channel's events to the app."""
        channel.subscribers.discard(app_name)
        app = self.apps.get(app_name)
        if app is not None:
            app.channel_ids.discard(channel.id)

    def forget_channel(self, channel: Channel) -> None:
        """The channel is gone."""
        for name in list(channel.subscribers):
            self.unsubscribe(name, channel)

    # --- emission ------------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        channels: Iterable[Channel],
        body: dict[str, Any],
        *,
        pre: dict[str, Any] | None = None,
        only_app: str | None = None,
    ) -> None:
        """Send an event to every app subscribed to one of the channels (or to one app)."""
        if only_app is not None:
            targets = {only_app}
        else:
            targets = set()
            for ch in channels:
                targets |= ch.subscribers
            targets |= {a.name for a in self.apps.values() if a.subscribe_all}
        self._send(kind, targets, body, pre)

    def emit_global(self, kind: str, body: dict[str, Any]) -> None:
        """Events only subscribeAll apps receive (device states)."""
        self._send(kind, {a.name for a in self.apps.values() if a.subscribe_all}, body, None)

    def _send(
        self, kind: str, targets: set[str], body: dict[str, Any], pre: dict[str, Any] | None
    ) -> None:
        now = time.time()
        for name in sorted(targets):
            event = build_event(kind, name, body, pre, now)
            app = self.apps.get(name)
            delivered = app is not None and app.sink is not None
            if app is not None and app.sink is not None:
                app.sink.send(event)
            self._record(name, event, delivered)
        self._on_event()

    def _record(self, app: str, event: dict[str, Any], delivered: bool) -> None:
        self._seq += 1
        self.log.append(EventRecord(self._seq, app, event, delivered))
        if len(self.log) > self._log_limit:
            del self.log[: self._log_limit // 2]

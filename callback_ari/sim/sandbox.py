"""The sandbox PBX from Python: start it, place callers, press their keys, watch what Asterisk says.

The sandbox is a real Asterisk 22 that ``dialplan/sandbox/pbx`` builds in a chroot (see that
script). This module is what the real-PBX tests, the recorder, ``demo --asterisk`` and the
benchmarks use to drive it. It talks to Asterisk with its own minimal ARI and AMI code on
purpose: what it observes must not depend on the service's clients it is there to check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SCRIPT = Path(__file__).resolve().parents[2] / "dialplan" / "sandbox" / "pbx"
HARNESS_APP = "harness"

JsonDict = dict[str, Any]
AmiMessage = dict[str, str]


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One sandbox PBX instance: where it listens and the secrets its config was laid out with."""

    name: str = "pbx1"
    ari_port: int = 18088
    ami_port: int = 15038
    agi_port: int = 14573
    # The kit's users (dialplan/ari.conf, dialplan/manager.conf) get these secrets in the sandbox.
    ari_user: str = "callback-ari"
    ari_password: str = "sandbox-ari-secret"
    ami_user: str = "callback-ari"
    ami_secret: str = "sandbox-ami-secret"
    # The tests' own users (dialplan/sandbox/etc/ari.conf, manager.conf).
    harness_user: str = "harness"
    harness_secret: str = "sandbox-harness-secret"

    @classmethod
    def from_env(cls) -> Sandbox:
        """The instance named by CBPBX_NAME / CBPBX_*_PORT (the script's own variables)."""
        env, default = os.environ, cls()
        return cls(
            name=env.get("CBPBX_NAME", default.name),
            ari_port=int(env.get("CBPBX_ARI_PORT", default.ari_port)),
            ami_port=int(env.get("CBPBX_AMI_PORT", default.ami_port)),
            agi_port=int(env.get("CBPBX_AGI_PORT", default.agi_port)),
        )

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.ari_port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CBPBX_NAME": self.name,
            "CBPBX_ARI_PORT": str(self.ari_port),
            "CBPBX_AMI_PORT": str(self.ami_port),
            "CBPBX_AGI_PORT": str(self.agi_port),
        }

    def _run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self._env(), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise SandboxError(f"pbx {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def facts(self) -> dict[str, str]:
        """The script's ``env`` output: chroot paths of this instance's etc, log and spool."""
        out = self._run("env")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def unavailable(self) -> str | None:
        """Why the sandbox cannot run here, or None when it can."""
        if os.geteuid() != 0:
            return "the sandbox PBX needs root (chroot)"
        root = Path(self.facts()["CBPBX_ROOT"])
        if not (root / ".callback-ari-ready").exists():
            return f"no sandbox chroot at {root}: run `bash {SCRIPT} build`"
        return None

    def start(self) -> None:
        """Lay out a fresh config (the kit included) and start Asterisk; idempotent."""
        self._run("start")

    def stop(self) -> None:
        self._run("stop", check=False)

    def cli(self, command: str) -> str:
        """Run an Asterisk CLI command on this instance and return its output."""
        return self._run("cli", command)

    def service_config(self, redis_url: str, *, general: Mapping[str, str] | None = None,
                       queue: Mapping[str, str] | None = None,
                       extra: str = "") -> str:  # fmt: skip
        """A callback_ari.conf for the service against this sandbox (queue ``support``)."""
        general_lines = "".join(f"{k} = {v}\n" for k, v in (general or {}).items())
        queue_settings = {"dial_template": "Local/{number}@customers", **(queue or {})}
        queue_lines = "".join(f"{k} = {v}\n" for k, v in queue_settings.items())
        return (
            f"[general]\n{general_lines}"
            f"[ari]\nurl = {self.ari_url}\nusername = {self.ari_user}\n"
            f"password = {self.ari_password}\n"
            f"[ami]\nport = {self.ami_port}\nusername = {self.ami_user}\n"
            f"secret = {self.ami_secret}\nping_interval = 2\nping_timeout = 2\n"
            f"[redis]\nurl = {redis_url}\n"
            f"[queue:support]\n{queue_lines}{extra}"
        )


class SandboxError(RuntimeError):
    """The sandbox script or Asterisk said no."""


@dataclass
class _Watch:
    """Every ARI event and AMI message seen, with a condition to wait on new ones."""

    ari: list[JsonDict] = field(default_factory=list)
    ami: list[AmiMessage] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, into: list[Any], item: Any) -> None:
        async with self.changed:
            into.append(item)
            self.changed.notify_all()


class Harness:
    """The tests' own ARI app and AMI session on a sandbox: callers, keys, devices, observations.

    ARI: app ``harness`` with ``subscribeAll``, so it sees every channel's events, the
    service's included. AMI: the ``harness`` user with every event class.
    """

    def __init__(
        self, sandbox: Sandbox, *, subscribe_all: bool = True, ami_classes: str = "on",
        http_connections: int = 100,
    ) -> None:  # fmt: skip
        """``subscribe_all=False`` and narrower ``ami_classes`` (AMI classes, e.g. "agent")
        cost Asterisk less per call: for load, where the harness must not be the bottleneck.
        Without subscribeAll, ``subscribe(channel_id)`` adds one channel's events.
        ``http_connections`` caps the harness's share of Asterisk's HTTP sessions (http.conf
        ``sessionlimit``, 100 by default, shared with the service's ARI client)."""
        self.sandbox = sandbox
        self.subscribe_all = subscribe_all
        self.ami_classes = ami_classes
        self.http_connections = http_connections
        self.watch = _Watch()
        self._http: aiohttp.ClientSession | None = None
        self._ami_writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Harness:
        auth = f"{self.sandbox.harness_user}:{self.sandbox.harness_secret}".encode()
        self._http = aiohttp.ClientSession(
            base_url=self.sandbox.ari_url,
            headers={"Authorization": "Basic " + base64.b64encode(auth).decode()},
            connector=aiohttp.TCPConnector(limit=self.http_connections),
        )
        ws = await self._http.ws_connect(
            "/ari/events",
            params={"app": HARNESS_APP, "subscribeAll": str(self.subscribe_all).lower()},
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", self.sandbox.ami_port)
        self._ami_writer = writer
        await reader.readline()  # banner
        self._tasks = [
            asyncio.create_task(self._read_ari(ws)),
            asyncio.create_task(self._read_ami(reader)),
        ]
        login = await self.ami(
            "Login", Username=self.sandbox.harness_user, Secret=self.sandbox.harness_secret,
            Events=self.ami_classes,
        )  # fmt: skip
        if login.get("Response") != "Success":
            raise SandboxError(f"harness AMI login failed: {login}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ami_writer is not None:
            self._ami_writer.close()
        if self._http is not None:
            await self._http.close()

    async def _read_ari(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                event["_t"] = time.monotonic()
                await self.watch.add(self.watch.ari, event)

    async def _read_ami(self, reader: asyncio.StreamReader) -> None:
        block: AmiMessage = {}
        while line := await reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(":")
                block.setdefault(key.strip(), value.strip())
                continue
            if not block:
                continue
            block["_t"] = str(time.monotonic())
            future = self._pending.pop(block.get("ActionID", ""), None)
            if "Response" in block and future is not None and not future.done():
                future.set_result(block)
            else:
                await self.watch.add(self.watch.ami, block)
            block = {}

    # -- AMI -------------------------------------------------------------------------------
    async def ami(self, action: str, **fields: str) -> AmiMessage:
        """Send one AMI action and return its response message."""
        assert self._ami_writer is not None
        action_id = f"h{next(self._ids)}"
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self._ami_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10):
            return await future

    async def device(self, agent: str, state: str) -> None:
        """Set an agent's Custom: device state, as their phone would (NOT_INUSE, INUSE, ...)."""
        await self.ami("Setvar", Variable=f"DEVICE_STATE(Custom:{agent})", Value=state)

    async def db_put(self, family: str, key: str, value: str) -> None:
        await self.ami("DBPut", Family=family, Key=key, Val=value)

    async def customer(self, number: str, *behaviours: str) -> None:
        """Script what ``number`` does on its next calls (answer, busy, noanswer, machine...)."""
        await self.db_put("cbtest", number, "-".join(behaviours))

    async def set_global(self, name: str, value: str) -> None:
        await self.ami("Setvar", Variable=name, Value=value)

    async def getvar(self, variable: str, channel: str | None = None) -> str:
        fields = {"Variable": variable} | ({"Channel": channel} if channel else {})
        return (await self.ami("Getvar", **fields)).get("Value", "")

    # -- ARI -------------------------------------------------------------------------------
    async def rest(self, method: str, path: str, **params: str) -> Any:
        assert self._http is not None
        async with self._http.request(method, "/ari" + path, params=params) as resp:
            body = await resp.text()
            if resp.status >= 300:
                raise SandboxError(f"{method} {path}: {resp.status} {body}")
            return json.loads(body) if body else None

    async def call_in(self, number: str, *, exten: str = "support", context: str = "incoming",
                      channel_id: str | None = None, name: str = "Caller") -> str:  # fmt: skip
        """A caller dials the inbound route; returns the id of the caller's own end (;1).

        The ;1 half sits in the harness app and is the caller's handset: DTMF sent to it is
        heard by the ;2 half, which runs the PBX's dialplan.
        """
        channel_id = channel_id or f"caller-{next(self._ids)}-{int(time.time() * 1000) % 10**8}"
        await self.rest(
            "POST", "/channels", endpoint=f"Local/{exten}@{context}", app=HARNESS_APP,
            channelId=channel_id, otherChannelId=channel_id + "-pbx",
            callerId=f'"{name}" <{number}>',
        )  # fmt: skip
        return channel_id

    async def subscribe(self, channel_id: str) -> None:
        """Receive this channel's ARI events (playbacks included) without subscribeAll."""
        await self.rest("POST", f"/applications/{HARNESS_APP}/subscription",
                        eventSource=f"channel:{channel_id}")  # fmt: skip

    async def press(self, channel_id: str, digits: str, *, between_ms: int = 100) -> None:
        """The caller presses keys on their handset."""
        await self.rest("POST", f"/channels/{channel_id}/dtmf", dtmf=digits,
                        between=str(between_ms))  # fmt: skip

    async def hang_up(self, channel_id: str) -> None:
        with contextlib.suppress(SandboxError):
            await self.rest("DELETE", f"/channels/{channel_id}")

    async def channels(self) -> list[JsonDict]:
        result: list[JsonDict] = await self.rest("GET", "/channels")
        return result

    # -- waiting on what Asterisk reports (the caller bounds it with asyncio.timeout) -------
    async def wait_ari(self, predicate: Callable[[JsonDict], bool], *, since: int = 0) -> JsonDict:
        """The first ARI event (from index ``since``) that satisfies ``predicate``."""
        event: JsonDict = await self._wait(self.watch.ari, predicate, since)
        return event

    async def wait_ami(
        self, predicate: Callable[[AmiMessage], bool], *, since: int = 0
    ) -> AmiMessage:
        """The first AMI event (from index ``since``) that satisfies ``predicate``."""
        message: AmiMessage = await self._wait(self.watch.ami, predicate, since)
        return message

    async def _wait(self, items: list[Any], predicate: Callable[[Any], bool], since: int) -> Any:
        seen = since
        async with self.watch.changed:
            while True:
                for item in items[seen:]:
                    if predicate(item):
                        return item
                seen = len(items)
                await self.watch.changed.wait()

    def ami_events(self, name: str, since: int = 0) -> list[AmiMessage]:
        return [m for m in self.watch.ami[since:] if m.get("Event") == name]

    def ari_events(self, kind: str, since: int = 0) -> list[JsonDict]:
        return [e for e in self.watch.ari[since:] if e.get("type") == kind]

    async def idle(self) -> None:
        """Wait until the PBX has no channels left (between tests)."""
        while True:
            mark = len(self.watch.ari)
            if not await self.channels():
                return
            await self.wait_ari(lambda e: e.get("type") == "ChannelDestroyed", since=mark)


@contextlib.asynccontextmanager
async def harness(sandbox: Sandbox) -> AsyncIterator[Harness]:
    async with Harness(sandbox) as h:
        yield h

"""Raw ARI and AMI clients that write what a real Asterisk sends, as received, into transcripts.

The recorder (``recorder.py``) drives the sandbox PBX through these. Nothing of the service
sits between them and Asterisk: REST is plain aiohttp, the ARI websocket is a minimal RFC 6455
client over a TCP stream (so the handshake headers and every text frame are kept exactly), and
AMI is a raw TCP socket split into messages at the blank line. Formats are those of the
transcripts the tests read (see tests/data/asterisk-22/README.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import aiohttp

JsonDict = dict[str, Any]
Predicate = Callable[[str, JsonDict], bool]


class RecordingError(RuntimeError):
    """Asterisk did not do what a recorded scenario needs."""


class Jsonl:
    """The JSONL transcript: notes, requests, responses and events, in arrival order."""

    def __init__(self, path: Path) -> None:
        self._out: TextIO = path.open("w")
        self._t0 = time.monotonic()
        self.scenario: str | None = None
        self.events: list[tuple[str, JsonDict]] = []
        self._changed = asyncio.Event()

    def close(self) -> None:
        self._out.close()

    def write(self, direction: str, **fields: Any) -> None:
        line: JsonDict = {"t": round(time.monotonic() - self._t0, 4)}
        if self.scenario is not None:
            line["scenario"] = self.scenario
        line["dir"] = direction
        line.update(fields)
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()

    def note(self, text: str, *, socket: str | None = None, **extra: Any) -> None:
        """A recorder marker (never traffic): run descriptions, socket closes, CLI commands."""
        if socket is not None:
            self.write("note", socket=socket, text=text)
        else:
            self.write("note", text=text, **extra)

    def event(self, label: str, event: JsonDict) -> None:
        self.write("event", socket=label, event=event)
        self.events.append((label, event))
        self._changed.set()

    async def wait(self, predicate: Predicate, *, since: int = 0) -> JsonDict:
        """The first event (from index ``since``) that satisfies ``predicate(socket, event)``."""
        seen = since
        while True:
            for label, event in self.events[seen:]:
                if predicate(label, event):
                    return event
            seen = len(self.events)
            self._changed.clear()
            await self._changed.wait()

    def mark(self) -> int:
        return len(self.events)


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    return key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    return head + _mask(payload)


class RawWebSocket:
    """One ``/ari/events`` websocket: the handshake and every text frame go to the transcript."""

    def __init__(self, rec: Jsonl, label: str, keep: Callable[[JsonDict], bool] | None) -> None:
        self.rec, self.label, self.keep = rec, label, keep
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.done = asyncio.Event()

    async def connect(self, port: int, query: dict[str, str], auth: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._reader, self._writer = reader, writer
        key = base64.b64encode(os.urandom(16)).decode()
        self.rec.write("request", actor=self.label, method="GET", path="/ari/events",
                       query=query, body=None, websocket=True)  # fmt: skip
        writer.write(
            (
                f"GET /ari/events?{urlencode(query)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ari\r\n"
                f"Authorization: {auth}\r\n\r\n"
            ).encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        status_line, *header_lines = head.strip("\r\n").split("\r\n")
        _, status, reason = status_line.split(" ", 2)
        headers = dict(line.split(": ", 1) for line in header_lines)
        self.rec.write("response", actor=self.label, method="GET", path="/ari/events",
                       status=int(status), reason=reason, headers=headers, body=None,
                       websocket=True)  # fmt: skip
        if status != "101":
            raise RecordingError(f"websocket {self.label}: {status_line}")

    async def run(self) -> None:
        """Read frames until the server closes or the socket is dropped."""
        assert self._reader is not None and self._writer is not None
        parts: list[bytes] = []
        try:
            while True:
                b0, b1 = await self._reader.readexactly(2)
                size = b1 & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await self._reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await self._reader.readexactly(8))
                payload = await self._reader.readexactly(size)
                opcode = b0 & 0x0F
                if opcode in (0, 1):
                    parts.append(payload)
                    if b0 & 0x80:
                        event = json.loads(b"".join(parts).decode())
                        parts = []
                        if self.keep is None or self.keep(event):
                            self.rec.event(self.label, event)
                elif opcode == 9:
                    self._writer.write(_frame(10, payload))
                elif opcode == 8:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.done.set()

    async def close(self) -> None:
        """A clean close: close frame 1000, then wait for the server's close."""
        assert self._writer is not None
        self.rec.note("client closes websocket with close frame 1000", socket=self.label)
        self._writer.write(_frame(8, struct.pack("!H", 1000)))
        async with asyncio.timeout(5):
            await self.done.wait()
        self._writer.close()

    def drop(self) -> None:
        """An abrupt drop: TCP reset, no close frame."""
        assert self._writer is not None
        self.rec.note("client closes websocket abruptly (TCP RST, no close frame)",
                      socket=self.label)  # fmt: skip
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()


class Ari:
    """REST calls and websockets of one ARI user, all written to one transcript."""

    def __init__(self, rec: Jsonl, port: int, user: str, password: str,
                 tg: asyncio.TaskGroup) -> None:  # fmt: skip
        self.rec, self.port, self.tg = rec, port, tg
        self._auth = aiohttp.encode_basic_auth(user, password)
        self._http: aiohttp.ClientSession | None = None
        self.sockets: dict[str, RawWebSocket] = {}

    async def __aenter__(self) -> Ari:
        self._http = aiohttp.ClientSession(headers={"Authorization": self._auth})
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self.sockets.values()):
            if not ws.done.is_set():
                ws.drop()
        if self._http is not None:
            await self._http.close()

    async def open(self, label: str, app: str, *, subscribe_all: bool = False,
                   keep: Callable[[JsonDict], bool] | None = None) -> RawWebSocket:  # fmt: skip
        query = {"app": app} | ({"subscribeAll": "true"} if subscribe_all else {})
        ws = RawWebSocket(self.rec, label, keep)
        await ws.connect(self.port, query, self._auth)
        self.sockets[label] = ws
        self.tg.create_task(ws.run())
        return ws

    async def rest(self, actor: str, method: str, path: str, **query: str) -> tuple[int, Any]:
        """One request, recorded when sent and when answered; returns (status, parsed body)."""
        assert self._http is not None
        self.rec.write("request", actor=actor, method=method, path="/ari" + path, query=query,
                       body=None)  # fmt: skip
        url = f"http://127.0.0.1:{self.port}/ari{path}"
        async with self._http.request(method, url, params=query) as resp:
            raw = await resp.read()
            headers = {k.decode(): v.decode() for k, v in resp.raw_headers}
            body = json.loads(raw) if raw else None
            self.rec.write("response", actor=actor, method=method, path="/ari" + path,
                           status=resp.status, reason=resp.reason, headers=headers,
                           body=body)  # fmt: skip
            return resp.status, body


class AmiTranscript:
    """The AMI text transcript: SENT/RECV blocks, notes and out-of-band CLI commands."""

    def __init__(self, path: Path) -> None:
        self._out: TextIO = path.open("w")
        self._t0 = time.monotonic()

    def close(self) -> None:
        self._out.close()

    def _t(self) -> str:
        return f"{time.monotonic() - self._t0:.4f}"

    def raw(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def note(self, text: str) -> None:
        self.raw(f"### [t={self._t()}] NOTE: {text}\n\n")

    def cli(self, command: str) -> None:
        self.raw(f"### [t={self._t()}] CLI (not AMI traffic): {command}\n\n")

    def cli_output(self, output: str) -> None:
        self.raw(f"### [t={self._t()}] CLI output: {output}\n\n")

    def block(
        self, arrow: str, direction: str, conn: str, lines: list[str], rest: str = ""
    ) -> None:
        body = "".join(line + "\n" for line in lines)
        self.raw(f"{arrow} [t={self._t()}] {direction} conn={conn}{rest}\n{body}\n")


AmiFields = list[tuple[str, str]]


class RawAmi:
    """One AMI connection: every message read is one RECV block, every action one SENT block."""

    def __init__(self, out: AmiTranscript, conn: str) -> None:
        self.out, self.conn = out, conn
        self.messages: list[dict[str, str]] = []
        self.eof = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await self._reader.readline()
        if not banner.endswith(b"\r\n"):
            raise RecordingError(f"AMI banner not CRLF-terminated: {banner!r}")
        self.out.block("<<<", "RECV", self.conn, [banner.decode()[:-2]],
                       " (banner line, terminated by a single CRLF)")  # fmt: skip

    async def run(self) -> None:
        assert self._reader is not None
        try:
            while True:
                try:
                    raw = await self._reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise RecordingError(f"AMI {self.conn}: torn message") from exc
                    break
                lines = raw.decode()[:-4].split("\r\n")
                self.out.block("<<<", "RECV", self.conn, lines)
                message: dict[str, str] = {}
                for line in lines:
                    key, _, value = line.partition(": ")
                    message.setdefault(key, value)
                self.messages.append(message)
                self._changed.set()
        except ConnectionError:
            pass
        self.out.raw(f"<<< [t={self.out._t()}] RECV conn={self.conn}: "
                     "connection closed by server (EOF)\n\n")  # fmt: skip
        self.eof.set()
        self._changed.set()

    def send(self, *fields: tuple[str, str]) -> int:
        """Write one action; returns the index from which its answer will be found."""
        assert self._writer is not None
        mark = len(self.messages)
        lines = [f"{k}: {v}" for k, v in fields]
        self.out.block(">>>", "SENT", self.conn, lines)
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return mark

    async def wait(self, predicate: Callable[[dict[str, str]], bool], since: int = 0
                   ) -> dict[str, str]:  # fmt: skip
        seen = since
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            if self.eof.is_set():
                raise RecordingError(f"AMI {self.conn} closed while waiting")
            seen = len(self.messages)
            self._changed.clear()
            await self._changed.wait()

    async def action(self, *fields: tuple[str, str]) -> dict[str, str]:
        """Send an action and wait for its response (matched by ActionID, or the next one)."""
        action_id = dict(fields).get("ActionID")
        mark = self.send(*fields)
        return await self.wait(lambda m: "Response" in m and m.get("ActionID") == action_id, mark)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def fetch_api_docs(ari_url: str, user: str, password: str) -> dict[str, Any]:
    """``resources.json`` and every resource document a running Asterisk serves, parsed.

    Kept in memory only: the documents are Asterisk's source and never go into the repository;
    what the project keeps is derived from them (``simpbx.spec``).
    """
    auth = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    async with aiohttp.ClientSession(headers=auth) as http:

        async def get(name: str) -> Any:
            async with http.get(f"{ari_url}/ari/api-docs/{name}") as resp:
                if resp.status != 200:
                    raise RecordingError(f"GET /ari/api-docs/{name}: {resp.status}")
                return await resp.json(content_type=None)

        listing = await get("resources.json")
        docs: dict[str, Any] = {"resources.json": listing}
        for api in listing["apis"]:
            name = api["path"].rsplit("/", 1)[-1].replace(".{format}", ".json")
            docs[name] = await get(name)
        return docs

"""FastAGI wire: one connection's agi_* environment and command/reply exchange, and a server.

AGI replies (Asterisk 22 res_agi): ``200 result=N [endpos=N] [(data)]`` is a reply (``-1``: the
command failed, usually because the channel hung up; a missing sound file answers it too),
``510`` unknown command, ``511`` dead channel, ``520`` usage error (``520-...`` lines up to
``520 End of proper usage.``, or one ``520 ...`` line); a bare ``HANGUP`` line is Asterisk's
hang-up notice and may arrive before any reply. ``511``, the notice and a closed socket raise
``AgiHangup``; other failures raise ``AgiError``. What a session does with its channel is the
caller's business: ``AgiServer`` hands each connection to a handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable

import structlog

from callback_ari.errors import AgiError, AgiHangup

log = structlog.get_logger(__name__)

ALL_DIGITS = "0123456789*#"
MAX_LINE = 8192
ENV_LIMIT = 200  # agi_* lines; a peer sending more is not Asterisk
ENV_TIMEOUT_S = 10.0  # Asterisk sends the environment at once; a silent peer is dropped
USAGE_LIMIT = 200  # lines of a 520 usage text
_RESULT = re.compile(r"200 result=(-?\d+)(?:\s+endpos=\d+)?(?:\s+\((.*)\))?")
# One AGI argument: a bare word of printable ASCII, or a double-quoted string. Neither may hold
# a quote, a backslash or a control character, so no argument can split or end a command.
_ARG = re.compile(r'[!#-\[\]-~]+|"[ !#-\[\]-~]*"')
_KEYS = frozenset(ALL_DIGITS + "ABCD")


def quoted(text: str) -> str:
    """``text`` as one quoted AGI argument (escape digits: ``""`` is "no digit interrupts")."""
    return f'"{text}"'


def dtmf_key(result: int) -> str:
    """The DTMF key an AGI result codes (its ASCII value), or '' for anything else."""
    key = chr(result) if 0 < result < 128 else ""
    return key if key in _KEYS else ""


class AgiChannel:
    """One FastAGI connection: the agi_* environment and a command/reply exchange."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.env: dict[str, str] = {}
        self.hung_up = False
        self._in_step = True  # False while a reply is owed: a cut exchange cannot be resumed

    async def read_env(self) -> None:
        """Read ``agi_name: value`` lines up to the blank line that ends them."""
        for _ in range(ENV_LIMIT):
            line = await self._readline()
            if not line:
                return
            key, sep, value = line.partition(":")
            if not sep or not key.startswith("agi_"):
                raise AgiError("malformed AGI environment")
            self.env[key.strip()] = value.strip()
        raise AgiError("AGI environment too long")

    async def _readline(self) -> str:
        try:
            raw = await self._reader.readline()
        except ValueError as exc:  # StreamReader's limit: a line longer than any AGI line
            raise AgiError("AGI line too long") from exc
        except OSError as exc:
            self.hung_up = True
            raise AgiHangup(f"AGI connection lost: {type(exc).__name__}") from exc
        if not raw.endswith(b"\n"):
            self.hung_up = True
            raise AgiHangup("AGI connection closed")
        if len(raw) > MAX_LINE:
            raise AgiError("AGI line too long")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def command(self, *words: str) -> tuple[int, str]:
        """Send one command; return (result, parenthesised data) of its ``200`` reply.

        ``result`` may be -1 (failed). Raises AgiHangup (dead channel, closed socket) or
        AgiError (510/520, a bad argument, an unexpected reply, an exchange cut short).
        """
        for word in words:
            if not _ARG.fullmatch(word):
                raise AgiError(f"unsafe AGI argument {word[:40]!r}")
        if self.hung_up:
            raise AgiHangup("channel already hung up")
        if not self._in_step:
            raise AgiError("AGI exchange out of step")
        self._in_step = False
        try:
            self._writer.write((" ".join(words) + "\n").encode())
            await self._writer.drain()
        except OSError as exc:
            self.hung_up = True
            raise AgiHangup(f"AGI connection lost: {type(exc).__name__}") from exc
        line = await self._readline()
        while line == "HANGUP":  # the notice; the command's own reply still follows
            self.hung_up = True
            line = await self._readline()
        if line.startswith("520-"):
            for _ in range(USAGE_LIMIT):
                if line.startswith("520 "):
                    break
                line = await self._readline()
            else:
                raise AgiError(f"{words[0]}: endless usage text")
        self._in_step = True
        if line.startswith("520"):
            raise AgiError(f"{' '.join(words[:2])}: usage error (520)")
        if line.startswith("510"):
            raise AgiError(f"{' '.join(words[:2])}: invalid or unknown command (510)")
        if line.startswith("511"):
            self.hung_up = True
            raise AgiHangup(f"{' '.join(words[:2])}: dead channel (511)")
        match = _RESULT.match(line)
        if match is None:
            raise AgiError(f"{words[0]}: unexpected reply {line[:80]!r}")
        return int(match.group(1)), match.group(2) or ""

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


Handler = Callable[[AgiChannel], Awaitable[str]]


class AgiServer:
    """Accepts FastAGI connections, reads each one's environment and runs ``handler`` on it."""

    def __init__(self, handler: Handler, *, on_crash: Callable[[], None] = lambda: None) -> None:
        self._handler = handler
        self._on_crash = on_crash  # a handler raised something unexpected (counted by the caller)
        self.port: int | None = None
        self.listening = asyncio.Event()  # set once ``port`` is known

    async def serve(self, host: str, port: int) -> None:
        """Serve until cancelled; connections in progress are closed on the way out."""
        async with asyncio.TaskGroup() as tg:

            def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                session = self.handle(reader, writer)
                try:
                    tg.create_task(session)
                except RuntimeError:  # the group is shutting down: refuse the connection
                    session.close()
                    writer.close()

            server = await asyncio.start_server(accept, host, port, limit=MAX_LINE * 2)
            try:
                self.port = server.sockets[0].getsockname()[1]
                log.info("agi.listening", host=host, port=self.port)
                self.listening.set()
                # Not serve_forever(): from 3.12 its cancellation waits for the connections,
                # which only end when this task group cancels them after this block.
                await asyncio.get_running_loop().create_future()
            finally:
                server.close()
                self.listening.clear()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """One connection: read the environment, run the handler, close. Never raises."""
        agi = AgiChannel(reader, writer)
        try:
            async with asyncio.timeout(ENV_TIMEOUT_S):
                await agi.read_env()
            return await self._handler(agi)
        except (AgiError, OSError, TimeoutError) as exc:
            log.info("agi.session_ended", error=str(exc) or type(exc).__name__)
            return "error"
        except Exception:  # one broken session must not take the server down
            log.exception("agi.session_crashed")
            self._on_crash()
            return "error"
        finally:
            await agi.close()

"""FastAGI front end: the same offer dialogue and store code, driven over AGI commands.

For dialplan-first installations: ``AGI(agi://127.0.0.1:4573/offer?queue=support)`` (optionally
``&entry=timeout&join=${CB_JOIN}&position=${QUEUEPOSITION}``), or the Stasis-style arguments
``AGI(agi://127.0.0.1:4573/offer,support,timeout,${CB_JOIN},${QUEUEPOSITION})``. The session
ends by setting the dialplan location (return context) or hanging up, exactly like the ARI
driver. If the session ends any other way (error, timeout) the socket is closed and Asterisk
continues after ``AGI()``: the dialplan should send the caller back to the queue there.

AGI replies (Asterisk 22 res_agi): ``200 result=N [endpos=N] [(data)]`` is a reply (``-1``: the
command failed, usually because the channel hung up; a missing sound file answers it too),
``510`` unknown command, ``511`` dead channel, ``520`` usage error (``520-...`` lines up to
``520 End of proper usage.``, or one ``520 ...`` line); a bare ``HANGUP`` line is Asterisk's
hang-up notice and may arrive before any reply. ``511``, the notice and a closed socket raise
``AgiHangup``; other failures raise ``AgiError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable
from urllib.parse import parse_qs

import structlog

from callback_ari import offer
from callback_ari.clock import Clock, SystemClock
from callback_ari.config import Config
from callback_ari.errors import AgiError, AgiHangup
from callback_ari.intake import (
    OfferEntry,
    number_validator,
    offer_finished,
    offer_settings,
    offer_started,
    store_from_dialogue,
)
from callback_ari.metrics import Metrics
from callback_ari.models import Origin
from callback_ari.store import CallbackStore

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


def _key(result: int) -> str:
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


class AgiOfferSession:
    """The offer dialogue over one AGI channel. Sequential: AGI has one command at a time."""

    def __init__(
        self,
        agi: AgiChannel,
        *,
        store: CallbackStore,
        config: Config,
        entry: OfferEntry,
        metrics: Metrics,
        wait_estimate: Callable[[], float | None] = lambda: None,
        clock: Clock | None = None,
    ) -> None:
        self._agi = agi
        self._store = store
        self._q = config.queues[entry.queue]
        self._dialogue_timeout = float(config.general.dialogue_timeout)
        self._entry = entry
        self._metrics = metrics
        self._wait_estimate = wait_estimate
        self._clock: Clock = clock or SystemClock()
        self._caller_id = _known(agi.env.get("agi_callerid", "")) or None
        self._machine = offer.OfferMachine(
            offer_settings(self._q), number_validator(self._q), caller_id=self._caller_id
        )
        self._timer: tuple[int, int] | None = None  # (deadline ms, token); AGI waits inline
        self.result = "running"

    async def run(self) -> str:
        """Run the dialogue to its end; returns the outcome code (as the ARI driver does)."""
        q = self._q
        channel_id = self._agi.env.get("agi_uniqueid", "")
        offer_started(
            self._metrics, q, self._entry, self._clock.now_ms(), channel_id=channel_id,
            caller=self._caller_id, frontend="agi",
        )  # fmt: skip
        todo: deque[offer.Action] = deque(self._machine.start())
        try:
            async with asyncio.timeout(self._dialogue_timeout):
                # The last actions (continue, hang up) come with the machine already done.
                while self.result == "running" and (todo or not self._machine.done):
                    if todo:
                        todo.extend(await self._execute(todo.popleft()))
                    else:
                        todo.extend(self._machine.handle(await self._idle_input()))
        except AgiHangup:
            self._machine.handle(offer.Hangup())
        except TimeoutError:
            log.warning("offer.dialogue_timeout", queue=q.name, frontend="agi")
            await self._back_to_queue("dialogue_timeout")
        except AgiError as exc:
            log.error("agi.command_failed", queue=q.name, error=str(exc))
            self._metrics.errors.labels("agi").inc()
            await self._back_to_queue("error")
        except Exception as exc:  # any internal error: the caller goes back to the queue
            log.exception("offer.error", queue=q.name, frontend="agi", error=str(exc))
            self._metrics.errors.labels("flow").inc()
            await self._back_to_queue("error")
        if self.result == "running":
            self.result = str(self._machine.result or "abandoned")
        offer_finished(self._metrics, q, self.result, channel_id=channel_id, frontend="agi")
        return self.result

    async def _idle_input(self) -> offer.Event:
        """Nothing is playing: wait for a key until the armed timer runs out."""
        if self._timer is None:  # the machine always arms one; never wait forever
            raise AgiError("offer dialogue waits with no timer armed")
        deadline, token = self._timer
        left_ms = deadline - self._clock.now_ms()
        if left_ms > 0:
            result, _ = await self._agi.command("WAIT", "FOR", "DIGIT", str(left_ms))
            if result < 0:
                raise AgiHangup("WAIT FOR DIGIT: result=-1")
            if result > 0:  # the timer stays armed: an ignored key does not stop the clock
                return offer.Digit(_key(result) or "?")
        self._timer = None
        return offer.Timeout(token)

    async def _execute(self, action: offer.Action) -> list[offer.Action]:
        match action:
            case offer.Play(media=media, token=token, interruptible=interruptible):
                escape = ALL_DIGITS if interruptible else ""
                for uri in media:
                    key = await self._play(uri, escape)
                    if key:
                        return self._machine.handle(offer.Digit(key))
                return self._machine.handle(offer.PlaybackDone(token))
            case offer.StartTimer(seconds=seconds, token=token):
                self._timer = (self._clock.now_ms() + round(seconds * 1000), token)
            case offer.CancelTimer():
                self._timer = None
            case offer.Store(number=number):
                result = await store_from_dialogue(
                    self._store, self._metrics, self._q, number=number,
                    caller_name=_known(self._agi.env.get("agi_calleridname", "")),
                    source_channel=self._agi.env.get("agi_uniqueid", ""), entry=self._entry,
                    origin=Origin.AGI, wait_estimate=self._wait_estimate,
                )  # fmt: skip
                return self._machine.handle(result)
            case offer.ContinueToQueue(reason=reason):
                await self._back_to_queue(reason)
            case offer.HangupCall(reason=reason):
                self.result = reason
                with contextlib.suppress(AgiError):  # gone already: nothing left to do
                    await self._agi.command("HANGUP")
            case offer.StopPlayback():
                pass  # AGI playback already stopped when the key came back
        return []

    async def _play(self, uri: str, escape: str) -> str:
        """Play one media URI; the escape key pressed, or '' if it played to the end."""
        scheme, _, target = uri.partition(":")
        if scheme == "sound":
            words = ("STREAM", "FILE", target, quoted(escape))
        elif scheme == "digits":
            words = ("SAY", "DIGITS", target, quoted(escape))
        elif scheme == "number":
            words = ("SAY", "NUMBER", target, quoted(escape))
        else:
            log.warning("agi.unsupported_media", uri=uri)
            return ""
        result, _ = await self._agi.command(*words)
        if result < 0:
            # A hang-up, or a missing sound file on a live channel: the next command tells
            # (a dead channel answers it with HANGUP/511), so carry on as if it had played.
            log.warning("agi.playback_failed", uri=uri)
            return ""
        return _key(result) if escape else ""

    async def _back_to_queue(self, reason: str) -> None:
        """Point the channel at the return context: same queue, the position they left."""
        self.result = f"continued:{reason}"
        q = self._q
        try:
            if self._entry.position:
                await self._agi.command("SET", "VARIABLE", "CB_POSITION", str(self._entry.position))
            await self._agi.command("SET", "CONTEXT", q.return_context)
            await self._agi.command("SET", "EXTENSION", q.name)
            await self._agi.command("SET", "PRIORITY", "1")
        except AgiHangup:
            self.result = "abandoned"
        except AgiError as exc:
            log.error("agi.continue_failed", queue=q.name, error=str(exc))


def _known(value: str) -> str:
    """Asterisk sends ``unknown`` for a caller ID number or name that is not set."""
    return "" if value == "unknown" else value


def entry_from_env(env: dict[str, str], now_ms: int) -> OfferEntry | None:
    """The offer entry from ``agi://host/offer?queue=Q&entry=..&join=..&position=..``.

    The Stasis-style arguments (``AGI(agi://host/offer,Q,entry,join,position)``) are read
    from ``agi_arg_1..4`` for whatever the query string does not give.
    """
    script, _, query_text = env.get("agi_network_script", "").partition("?")
    if script.strip("/") != "offer":
        return None
    query = {k: v[0] for k, v in parse_qs(query_text).items()}
    names = ("queue", "entry", "join", "position")
    args = [query.get(name, env.get(f"agi_arg_{i}", "")) for i, name in enumerate(names, 1)]
    return OfferEntry.from_args(["offer", *args], now_ms)


class AgiServer:
    """Accepts FastAGI connections and runs one offer session per connection."""

    def __init__(
        self, *, store: CallbackStore, config: Config, metrics: Metrics, clock: Clock,
        wait_estimate: Callable[[str], float | None] = lambda _q: None,
    ) -> None:  # fmt: skip
        self._store = store
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._wait_estimate = wait_estimate
        self.port: int | None = None
        self.listening = asyncio.Event()  # set once ``port`` is known

    def reconfigure(self, config: Config) -> None:
        """New connections use ``config``; dialogues in progress keep their settings."""
        self._config = config

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
        """One connection: read the environment, run the offer, close. Never raises."""
        agi = AgiChannel(reader, writer)
        try:
            async with asyncio.timeout(ENV_TIMEOUT_S):
                await agi.read_env()
            entry = entry_from_env(agi.env, self._clock.now_ms())
            if entry is None or entry.queue not in self._config.queues:
                log.warning("agi.unknown_script", script=agi.env.get("agi_network_script", "")[:80])
                return "unknown"  # closing the socket returns the caller to the dialplan
            session = AgiOfferSession(
                agi, store=self._store, config=self._config, entry=entry, metrics=self._metrics,
                wait_estimate=lambda: self._wait_estimate(entry.queue), clock=self._clock,
            )  # fmt: skip
            return await session.run()
        except (AgiError, OSError, TimeoutError) as exc:
            log.info("agi.session_ended", error=str(exc) or type(exc).__name__)
            return "error"
        except Exception:  # one broken session must not take the server down
            log.exception("agi.session_crashed")
            self._metrics.errors.labels("agi").inc()
            return "error"
        finally:
            await agi.close()

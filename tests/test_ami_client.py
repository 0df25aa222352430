"""AmiClient against a tiny TCP server that replays the answers recorded from Asterisk 22."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ami_protocol import AmiMessage, AmiParser
from callback_ari.core.backoff import Backoff
from callback_ari.errors import AmiActionError, AmiAuthError, AmiUnavailable
from tests.test_ami_protocol import Block, transcript

USER, SECRET = "cbami", "cbpass"
WAIT = 5.0  # generous upper bound for anything awaited here


def _key(msg: AmiMessage) -> tuple[str, tuple[tuple[str, str], ...]]:
    fields = sorted((k.lower(), v) for k, v in msg if k.lower() not in ("action", "actionid"))
    return msg.name.lower(), tuple(fields)


def _with_action_id(msg: AmiMessage, action_id: str | None) -> bytes:
    lines = [(k, v) for k, v in msg if k.lower() != "actionid"]
    if action_id is not None:
        lines.insert(1, ("ActionID", action_id))
    return ("".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n").encode()


class FakeAmi:
    """An AMI server that answers each action with what Asterisk 22 answered in the recording."""

    def __init__(self, blocks: list[Block]) -> None:
        self.answers: dict[tuple[str, tuple[tuple[str, str], ...]], list[AmiMessage]] = {}
        main = [b for b in blocks if b.conn == "main" and not b.eof and not b.banner]
        recv = [b.message() for b in main if b.direction == "RECV"]
        for block in main:
            if block.direction != "SENT":
                continue
            sent = block.message()
            if sent.action_id is not None:
                answer = [m for m in recv if m.action_id == sent.action_id]
                self.answers.setdefault(_key(sent), answer)
        self.login_events = [m for m in recv if m.name in ("FullyBooted", "SuccessfulAuth")]
        self.noise = next(m for m in recv if m.name == "DeviceStateChange")
        self.received: list[AmiMessage] = []
        self.held: set[str] = set()  # actions received but never answered
        self.interleave = False  # push an unrelated event between the messages of an answer
        self.auth_delay = 0.05  # Asterisk takes ~1 s to refuse a login
        self._writers: list[asyncio.StreamWriter] = []
        self._silent: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.drop()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until every connection the client opened has been closed by the client."""
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def drop(self) -> None:
        """Cut every connection, as when Asterisk restarts."""
        for writer in self._writers:
            writer.transport.abort()

    def go_silent(self) -> None:
        """Keep current sockets open but stop answering anything: a half-open connection."""
        self._silent.update(self._writers)

    def count(self, action: str) -> int:
        return sum(1 for m in self.received if m.name.lower() == action.lower())

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        async with asyncio.timeout(WAIT):
            await future

    async def push_event(self, pairs: list[tuple[str, str]]) -> None:
        data = _with_action_id(AmiMessage.from_pairs(pairs), None)
        for writer in self._writers:
            if writer not in self._silent:
                writer.write(data)
                await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        parser = AmiParser(expect_banner=False)
        logged_in = False
        try:
            writer.write(b"Asterisk Call Manager/11.0.0\r\n")
            while data := await reader.read(4096):
                for action in parser.feed(data):
                    self.received.append(action)
                    self._wake()
                    if writer in self._silent or action.name in self.held:
                        continue
                    logged_in = await self._answer(writer, action, logged_in)
                    await writer.drain()
        except (OSError, _Closed):
            pass
        finally:
            self._writers.remove(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, action: AmiMessage, logged: bool) -> bool:
        aid = action.action_id
        name = action.name.lower()

        def reply(*pairs: tuple[str, str]) -> None:
            writer.write(_with_action_id(AmiMessage.from_pairs(pairs), aid))

        if name == "login":
            if action.get("Username") == USER and action.get("Secret") == SECRET:
                reply(("Response", "Success"), ("Message", "Authentication accepted"))
                for event in self.login_events:
                    writer.write(_with_action_id(event, None))
                return True
            await asyncio.sleep(self.auth_delay)
            reply(("Response", "Error"), ("Message", "Authentication failed"))
            await writer.drain()
            raise _Closed
        if not logged:
            reply(("Response", "Error"), ("Message", "Permission denied"))
        elif name == "ping":
            reply(("Response", "Success"), ("Ping", "Pong"), ("Timestamp", "1795421998.881132"))
        elif name == "logoff":
            reply(("Response", "Goodbye"), ("Message", "Thanks for all the fish."))
            await writer.drain()
            raise _Closed
        elif (answer := self.answers.get(_key(action))) is not None:
            for msg in answer:
                if self.interleave:
                    writer.write(_with_action_id(self.noise, None))
                writer.write(_with_action_id(msg, aid))
        else:
            reply(("Response", "Error"), ("Message", f"Invalid/unknown command: {action.name}."))
        return logged

    def _wake(self) -> None:
        for item in list(self._waiters):
            predicate, future = item
            if predicate() and not future.done():
                future.set_result(None)
                self._waiters.remove(item)


class _Closed(Exception):
    """The fake closes this connection, as Asterisk does after a refused login or Logoff."""


class RetryCounter(random.Random):
    """Backoff's random source; each delay drawn marks one failed connection attempt."""

    def __init__(self) -> None:
        super().__init__(0)
        self.delays: asyncio.Queue[float] = asyncio.Queue()

    def uniform(self, a: float, b: float) -> float:
        delay = super().uniform(a, b)
        self.delays.put_nowait(delay)
        return delay


class Session:
    """A running client with the connects and events it reported."""

    def __init__(self, client: AmiClient) -> None:
        self.client = client
        self.connects: asyncio.Queue[float] = asyncio.Queue()
        self.events: list[AmiMessage] = []
        self.event_seen: asyncio.Queue[AmiMessage] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.fail_on: set[str] = set()

    def on_event(self, msg: AmiMessage) -> None:
        if msg.name in self.fail_on:
            raise RuntimeError(f"handler broke on {msg.name}")
        self.events.append(msg)
        self.event_seen.put_nowait(msg)

    async def on_connect(self) -> None:
        self.connects.put_nowait(asyncio.get_running_loop().time())

    async def next_connect(self) -> float:
        async with asyncio.timeout(WAIT):
            return await self.connects.get()

    async def next_event(self, name: str) -> AmiMessage:
        async with asyncio.timeout(WAIT):
            while True:
                msg = await self.event_seen.get()
                if msg.name == name:
                    return msg


@pytest.fixture
async def fake(shared_asterisk: Path) -> AsyncIterator[FakeAmi]:
    server = FakeAmi(transcript(shared_asterisk))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_client(port: int, secret: str = SECRET, **kw: float) -> AmiClient:
    options: dict[str, float] = {"ping_interval": 30.0, "ping_timeout": 5.0, **kw}
    return AmiClient(
        "127.0.0.1",
        port,
        USER,
        secret,
        backoff=Backoff(base=0.05, cap=0.1),
        ping_interval=options["ping_interval"],
        ping_timeout=options["ping_timeout"],
        action_timeout=options.get("action_timeout", WAIT),
    )


async def run_session(tg: asyncio.TaskGroup, client: AmiClient) -> Session:
    session = Session(client)
    session.task = tg.create_task(client.run(session.on_event, session.on_connect))
    await session.next_connect()
    return session


async def outcome(aw: Awaitable[object]) -> object:
    """The result or the exception, so an expected failure does not abort the TaskGroup."""
    try:
        return await aw
    except Exception as exc:
        return exc


async def stop(session: Session) -> None:
    assert session.task is not None
    session.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await session.task


@pytest.mark.expect_errors("ami.auth_failed")
async def test_refused_login_raises_auth_error_once_without_logging_the_secret(
    fake: FakeAmi,
) -> None:
    client = make_client(fake.port, secret="wrongpass")
    session = Session(client)
    with capture_logs() as logs:
        async with asyncio.timeout(WAIT):
            with pytest.raises(AmiAuthError, match="Authentication failed"):
                await client.run(session.on_event, session.on_connect)
    assert fake.count("Login") == 1  # a clear error, no retry loop hammering Asterisk
    assert session.connects.empty()
    assert "wrongpass" not in repr(logs) + repr(client)
    assert any(entry["event"] == "ami.auth_failed" for entry in logs)


async def test_list_action_collects_items_while_events_interleave(fake: FakeAmi) -> None:
    fake.interleave = True
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, make_client(fake.port))
        items = await session.client.queue_status("support")
        assert [m.name for m in items] == ["QueueParams", "QueueMember", "QueueMember"]
        assert [m.get("Name") for m in items[1:]] == ["Agent One", "Agent Two"]
        assert {m.action_id for m in items} == {fake.received[-1].action_id}
        summary = await session.client.queue_summary()
        assert [(m.name, m.get("LoggedIn")) for m in summary] == [("QueueSummary", "2")]
        assert await session.client.queue_status("nosuchqueue") == []
        # the unrelated events went to the event stream, not into the lists
        assert [m.name for m in session.events].count("DeviceStateChange") >= 8
        assert "QueueMember" not in {m.name for m in session.events}
        await stop(session)


async def test_concurrent_actions_get_their_own_answers(fake: FakeAmi) -> None:
    fake.interleave = True
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, make_client(fake.port))
        client = session.client
        logged, ready, count, status, bad = await asyncio.gather(
            client.getvar("QUEUE_MEMBER(support,logged)"),
            client.getvar("QUEUE_MEMBER(support,ready)"),
            client.getvar("QUEUE_MEMBER(support,count)"),
            client.queue_status("support"),
            client.getvar("QUEUE_MEMBER(nosuchqueue,ready)"),
        )
        assert (logged, ready, count, bad) == ("2", "0", "2", "0")
        assert len(status) == 3
        sent_ids = [m.action_id for m in fake.received]
        assert len(set(sent_ids)) == len(sent_ids)
        assert all(m.get("Channel") is None for m in fake.received if m.name == "Getvar")
        await stop(session)


async def test_action_errors_carry_asterisk_message(fake: FakeAmi) -> None:
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, make_client(fake.port))
        client = session.client
        await client.queue_withdraw_caller(
            "support", "Local/join@qcaller-00000033;2", "cb-offer-42"
        )
        with pytest.raises(AmiActionError, match="No such caller") as info:
            await client.queue_withdraw_caller("support", "Local/nobody@qcaller-deadbeef;2", "x")
        assert info.value.action == "QueueWithdrawCaller"
        with pytest.raises(AmiActionError, match="Interface not found"):
            await client.queue_pause("Local/nobody@agents/n", True)
        await client.queue_pause("Local/agent1@agents/n", True, queue="support", reason="lunch")
        with pytest.raises(AmiActionError, match="Invalid/unknown command"):
            await client.action("FooBar")
        with pytest.raises(ValueError):
            await client.getvar("X\r\nAction: Hangup")
        await client.ping()  # the connection survived every error
        withdraw = next(m for m in fake.received if m.name == "QueueWithdrawCaller")
        assert withdraw.get("WithdrawInfo") == "cb-offer-42"
        await stop(session)


async def test_show_dialplan_lists_or_reports_missing_context(fake: FakeAmi) -> None:
    key = _key(AmiMessage.from_pairs([("Action", "ShowDialPlan"), ("Context", "callback-queue")]))
    fake.answers[key] = [
        AmiMessage.from_pairs(
            [
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "DialPlan list will follow"),
            ]
        ),
        AmiMessage.from_pairs(
            [("Event", "ListDialplan"), ("Context", "callback-queue"), ("Extension", "support")]
        ),
        AmiMessage.from_pairs(
            [("Event", "ShowDialPlanComplete"), ("EventList", "Complete"), ("ListItems", "1")]
        ),
    ]
    key = _key(AmiMessage.from_pairs([("Action", "ShowDialPlan"), ("Context", "nope")]))
    fake.answers[key] = [
        AmiMessage.from_pairs([("Response", "Error"), ("Message", "Did not find context nope")])
    ]
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, make_client(fake.port))
        items = await session.client.show_dialplan("callback-queue")
        assert [(m.name, m.get("Extension")) for m in items] == [("ListDialplan", "support")]
        with pytest.raises(AmiActionError, match="Did not find context nope"):
            await session.client.show_dialplan("nope")
        await stop(session)


async def test_drop_reconnects_fails_pending_and_never_resends(fake: FakeAmi) -> None:
    fake.held.add("QueueSummary")
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, make_client(fake.port))
        assert fake.count("Login") == 1 and session.client.connected
        pending = tg.create_task(outcome(session.client.queue_summary("support")))
        await fake.wait_for(lambda: fake.count("QueueSummary") == 1)
        dropped_at = asyncio.get_running_loop().time()
        fake.drop()
        assert isinstance(await pending, AmiUnavailable)
        reconnected_at = await session.next_connect()
        # Backoff(base=0.05, cap=0.1): the first retry comes within 0.05 s, plus slack
        assert reconnected_at - dropped_at < 1.0
        assert fake.count("Login") == 2
        assert session.client.reconnects == 1
        fake.held.clear()
        await session.client.ping()  # anything re-sent would have arrived before this
        assert fake.count("QueueSummary") == 1
        await stop(session)


async def test_half_open_connection_detected_by_ping_timeout(fake: FakeAmi) -> None:
    client = make_client(fake.port, ping_interval=0.05, ping_timeout=0.2)
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            session = await run_session(tg, client)
            await fake.wait_for(lambda: fake.count("Ping") >= 1)  # keepalive is running
            fake.go_silent()
            pending = tg.create_task(outcome(client.getvar("QUEUE_MEMBER(support,ready)")))
            await session.next_connect()
            assert isinstance(await pending, AmiUnavailable)
            assert fake.count("Login") == 2
            assert await client.getvar("QUEUE_MEMBER(support,ready)") == "0"
            await stop(session)
    assert any(entry["event"] == "ami.ping_timeout" for entry in logs)


@pytest.mark.expect_errors("ami.handler_error")
async def test_raising_event_handler_keeps_the_connection(fake: FakeAmi) -> None:
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            session = await run_session(tg, make_client(fake.port))
            session.fail_on.add("Broken")
            await fake.push_event([("Event", "Broken"), ("Queue", "support")])
            await fake.push_event([("Event", "QueueCallerJoin"), ("Queue", "support")])
            joined = await session.next_event("QueueCallerJoin")
            assert joined.get("Queue") == "support"
            await session.client.ping()
            assert fake.count("Login") == 1
            await stop(session)
    assert [e["event"] for e in logs].count("ami.handler_error") == 1


async def test_connection_refused_is_retried_until_ami_listens(shared_asterisk: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on (yet)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    retries = RetryCounter()
    client = AmiClient("127.0.0.1", port, USER, SECRET, backoff=Backoff(0.01, 0.02, rng=retries))
    session = Session(client)
    with pytest.raises(AmiUnavailable):
        await client.action("Ping")
    late = FakeAmi(transcript(shared_asterisk))
    try:
        async with asyncio.TaskGroup() as tg:
            session.task = tg.create_task(client.run(session.on_event, session.on_connect))
            for _ in range(3):  # three refused connects, each followed by a backoff delay
                async with asyncio.timeout(WAIT):
                    await retries.delays.get()
            await late.start(port)
            await session.next_connect()
            assert client.reconnects >= 3
            await stop(session)
    finally:
        await late.stop()


async def test_aclose_logs_off_and_run_returns(fake: FakeAmi) -> None:
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, make_client(fake.port))
        await session.client.aclose()
        assert session.task is not None
        async with asyncio.timeout(WAIT):
            await session.task  # returns normally: no reconnect after aclose
    assert fake.count("Logoff") == 1
    assert fake.count("Login") == 1
    assert not session.client.connected


async def test_no_task_leaks(fake: FakeAmi) -> None:
    before = asyncio.all_tasks()
    client = make_client(fake.port, ping_interval=0.02, ping_timeout=1.0)
    async with asyncio.TaskGroup() as tg:
        session = await run_session(tg, client)
        await fake.wait_for(lambda: fake.count("Ping") >= 2)
        fake.drop()
        await session.next_connect()
        await client.queue_status("support")
        await stop(session)
    await fake.idle()  # the server saw the client close its socket
    assert asyncio.all_tasks() == before


async def test_connect_once_for_one_shot_tools(fake: FakeAmi) -> None:
    before = asyncio.all_tasks()
    client = make_client(fake.port)
    await client.connect_once()
    assert client.connected
    assert await client.getvar("QUEUE_MEMBER(support,logged)") == "2"
    await client.aclose()
    assert not client.connected and fake.count("Logoff") == 1
    await fake.idle()
    assert asyncio.all_tasks() == before


async def test_connect_once_reports_refused_login_and_unreachable_ami(fake: FakeAmi) -> None:
    before = asyncio.all_tasks()
    with pytest.raises(AmiAuthError):
        await make_client(fake.port, secret="wrongpass").connect_once()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AmiUnavailable):
        await make_client(port).connect_once()
    await fake.idle()
    assert asyncio.all_tasks() == before
    assert fake.count("Login") == 1


@pytest.mark.expect_errors("ami.on_connect_error")
async def test_failed_resync_starts_a_fresh_session(fake: FakeAmi) -> None:
    client = make_client(fake.port)
    calls: asyncio.Queue[int] = asyncio.Queue()

    async def on_connect() -> None:
        calls.put_nowait(calls.qsize())
        if fake.count("Login") == 1:
            raise RuntimeError("resync bug")
        await client.queue_status("support")

    with capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(client.run(lambda msg: None, on_connect))
            async with asyncio.timeout(WAIT):
                await calls.get()
                await calls.get()
            await fake.wait_for(lambda: fake.count("QueueStatus") == 1)
            task.cancel()
    assert fake.count("Login") == 2
    assert any(e["event"] == "ami.on_connect_error" for e in logs)

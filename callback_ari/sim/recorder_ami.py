"""The AMI part of the recording: raw AMI about queue ``support``, Parts A-M (ami_queue.txt)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from callback_ari.sim.recording import AmiTranscript, RawAmi

if TYPE_CHECKING:
    from callback_ari.sim.sandbox import Sandbox

USER, SECRET = "cbami", "cbpass"  # throwaway AMI user of the recording PBX, loopback only
HEADER = """\
### Raw AMI transcript recorded against Asterisk 22 (see README.md).
### Blocks: ">>> [t=..] SENT conn=X" = bytes written by the client, "<<< [t=..] RECV conn=X" = \
one message read from the server.
### On the wire every line ends in CRLF and each message ends with an empty line (CRLF CRLF); \
here CRLF is shown as a newline
### and the terminating empty line is the blank line after each block. t = seconds since the \
start of the recording.
### "### ... CLI" lines are actions done out-of-band via the Asterisk CLI (asterisk -rx), not \
AMI traffic.

"""


async def cli(box: Sandbox, out: AmiTranscript, command: str) -> None:
    out.cli(command)
    output = await asyncio.to_thread(box.cli, command)
    out.cli_output(output.strip())


def event(name: str, **fields: str) -> Callable[[dict[str, str]], bool]:
    """Matches the AMI event ``name`` whose fields have the given values."""

    def match(m: dict[str, str]) -> bool:
        return m.get("Event") == name and all(m.get(k) == v for k, v in fields.items())

    return match


async def record_ami(box: Sandbox, path: Path) -> None:
    out = AmiTranscript(path)
    out.raw(HEADER)
    try:
        async with asyncio.TaskGroup() as tg:
            await parts(box, out, tg)
    finally:
        out.close()


async def connect(box: Sandbox, out: AmiTranscript, conn: str, tg: asyncio.TaskGroup) -> RawAmi:
    ami = RawAmi(out, conn)
    await ami.connect(box.ami_port)
    tg.create_task(ami.run())
    return ami


async def failed_login(box: Sandbox, out: AmiTranscript, tg: asyncio.TaskGroup, conn: str,
                       *fields: tuple[str, str]) -> None:  # fmt: skip
    ami = await connect(box, out, conn, tg)
    await asyncio.sleep(0.3)
    if conn == "aux":
        await ami.action(("Action", "QueueStatus"), ("ActionID", "aux-1"))
    await ami.action(*fields)
    async with asyncio.timeout(5):
        await ami.eof.wait()
    ami.close()


async def parts(box: Sandbox, out: AmiTranscript, tg: asyncio.TaskGroup) -> None:
    for agent in ("agent1", "agent2"):
        await cli(box, out, f"devstate change Custom:{agent} INUSE")
    await cli(box, out, "queue reset stats support")
    await asyncio.sleep(0.3)

    out.note('--- Part A: error responses on a separate connection "aux": action before '
             "login, wrong password, then what happens next")  # fmt: skip
    await failed_login(box, out, tg, "aux", ("Action", "Login"), ("Username", USER),
                       ("Secret", "wrongpass"), ("ActionID", "aux-2"))  # fmt: skip
    out.note('second auxiliary connection "aux2": unknown username')
    await failed_login(box, out, tg, "aux2", ("Action", "Login"), ("Username", "nosuchuser"),
                       ("Secret", SECRET), ("ActionID", "aux2-1"))  # fmt: skip

    out.note("--- Part B: main connection, login with Events: on")
    ami = await connect(box, out, "main", tg)
    await asyncio.sleep(0.3)
    await ami.action(("Action", "Login"), ("Username", USER), ("Secret", SECRET),
                     ("Events", "on"), ("ActionID", "login-1"))  # fmt: skip
    async with asyncio.timeout(5):
        await ami.wait(event("FullyBooted"))
    await asyncio.sleep(0.5)

    out.note("--- Part C: unknown action and a malformed action (after login)")
    await ami.action(("Action", "FooBar"), ("ActionID", "bad-1"))
    await ami.action(("Action", "QueuePause"), ("ActionID", "bad-2"))
    await ami.action(("Action", "QueuePause"), ("Interface", "Local/nobody@agents/n"),
                     ("Paused", "true"), ("ActionID", "bad-3"))  # fmt: skip
    mark = ami.send(("Action", "Ping"))
    await ami.wait(lambda m: m.get("Ping") == "Pong", mark)
    await asyncio.sleep(0.3)

    out.note("--- Part D: QueueStatus / QueueSummary (both agents INUSE, no callers)")
    for action_id, queue in (
        ("qs-all", None),
        ("qs-support", "support"),
        ("qs-none", "nosuchqueue"),
    ):
        await listing(ami, "QueueStatus", action_id, queue)
    for action_id, queue in (("sum-all", None), ("sum-support", "support")):
        await listing(ami, "QueueSummary", action_id, queue)

    out.note("--- Part E: Getvar of QUEUE_MEMBER(...) without Channel")
    for what in ("ready", "free", "logged", "count"):
        await ami.action(("Action", "Getvar"), ("Variable", f"QUEUE_MEMBER(support,{what})"),
                         ("ActionID", f"gv-{what}"))  # fmt: skip
    await ami.action(("Action", "Getvar"), ("Variable", "QUEUE_MEMBER(nosuchqueue,ready)"),
                     ("ActionID", "gv-badq"))  # fmt: skip

    out.note("--- Part F: member device state changes -> QueueMemberStatus")
    for state in ("NOT_INUSE", "UNAVAILABLE", "RINGING", "INUSE", "NOT_INUSE"):
        await cli(box, out, f"devstate change Custom:agent1 {state}")
        await asyncio.sleep(0.4)
    await ami.action(("Action", "Getvar"), ("Variable", "QUEUE_MEMBER(support,ready)"),
                     ("ActionID", "gv-ready2"))  # fmt: skip

    out.note("--- Part G: QueuePause / unpause of agent1")
    member = "Local/agent1@agents/n"
    await ami.action(("Action", "QueuePause"), ("Queue", "support"), ("Interface", member),
                     ("Paused", "true"), ("Reason", "lunch"), ("ActionID", "pause-1"))  # fmt: skip
    await asyncio.sleep(0.5)
    await ami.action(("Action", "Getvar"), ("Variable", "QUEUE_MEMBER(support,ready)"),
                     ("ActionID", "gv-ready3"))  # fmt: skip
    await listing(ami, "QueueStatus", "qs-paused", "support", ("Member", member))
    await ami.action(("Action", "QueuePause"), ("Interface", member), ("Paused", "false"),
                     ("ActionID", "pause-2"))  # fmt: skip
    await asyncio.sleep(0.5)
    await cli(box, out, "devstate change Custom:agent1 INUSE")
    await asyncio.sleep(0.5)

    out.note("--- Part H: caller joins (both agents INUSE), QueueStatus shows the entry, then "
             "QueueWithdrawCaller. Dialplan [qcaller] join: Answer(), Queue(support), "
             "UserEvent(QueueResult,QueueStatus: ${QUEUESTATUS},WithdrawInfo: "
             "${QUEUE_WITHDRAW_INFO})")  # fmt: skip
    caller = await join(ami, "join", "Waiter", "5550001", "ami-w1", "orig-w1")
    await asyncio.sleep(1.5)
    await listing(ami, "QueueStatus", "qs-waiting", "support")
    mark = len(ami.messages)
    await ami.action(("Action", "QueueWithdrawCaller"), ("Queue", "support"), ("Caller", caller),
                     ("WithdrawInfo", "cb-offer-42"), ("ActionID", "wd-1"))  # fmt: skip
    # Queue() acts on the withdrawal within its own ~0.5 s wait loop: wait for it, so the
    # second (unknown caller) withdrawal is always sent after the first took effect
    async with asyncio.timeout(5):
        await ami.wait(event("QueueCallerAbandon", Channel=caller), mark)
    await asyncio.sleep(0.3)
    await ami.action(("Action", "QueueWithdrawCaller"), ("Queue", "support"),
                     ("Caller", "Local/nobody@qcaller-deadbeef;2"), ("WithdrawInfo", "x"),
                     ("ActionID", "wd-2"))  # fmt: skip
    async with asyncio.timeout(5):
        await ami.wait(event("Hangup", Channel=caller.replace(";2", ";1")), mark)
    await asyncio.sleep(1.0)

    out.note("--- Part I: caller joins and abandons (caller side ;1 hung up with Action: "
             "Hangup after ~3 s)")  # fmt: skip
    caller = await join(ami, "join", "Abandoner", "5550002", "ami-a1", "orig-a1")
    await asyncio.sleep(3.0)
    mark = len(ami.messages)
    await ami.action(("Action", "Hangup"), ("Channel", caller.replace(";2", ";1")),
                     ("ActionID", "hup-a1"))  # fmt: skip
    async with asyncio.timeout(5):
        await ami.wait(event("Hangup", Channel=caller), mark)
    await asyncio.sleep(1.0)

    out.note("--- Part J: caller connects to agent1 (agent1 set NOT_INUSE first), talks ~3 s, "
             "caller hangs up -> AgentComplete Reason: caller")  # fmt: skip
    await cli(box, out, "devstate change Custom:agent1 NOT_INUSE")
    mark = len(ami.messages)
    caller = await join(ami, "join", "Connected", "5550003", "ami-c1", "orig-c1")
    async with asyncio.timeout(10):
        await ami.wait(event("AgentConnect"), mark)
    await asyncio.sleep(3.0)
    await listing(ami, "QueueStatus", "qs-incall", "support")
    mark = len(ami.messages)
    await ami.action(("Action", "Hangup"), ("Channel", caller.replace(";2", ";1")),
                     ("ActionID", "hup-c1"))  # fmt: skip
    async with asyncio.timeout(5):
        await ami.wait(event("AgentComplete"), mark)
    await asyncio.sleep(2.0)

    out.note("--- Part K: caller joins via [qcaller] joinc = Queue(support,c); connects to "
             "agent1; the agent side (Local/agent1 ;2, running Echo) hangs up -> "
             "AgentComplete; with option c the caller continues in the dialplan (UserEvent "
             "QueueResult)")  # fmt: skip
    mark = len(ami.messages)
    await join(ami, "joinc", "Connected2", "5550004", "ami-c2", "orig-c2")
    async with asyncio.timeout(10):
        connect_event = await ami.wait(event("AgentConnect"), mark)
    await asyncio.sleep(2.5)
    agent_leg = connect_event["DestChannel"].replace(";1", ";2")
    mark = len(ami.messages)
    await ami.action(("Action", "Hangup"), ("Channel", agent_leg), ("ActionID", "hup-c2"))
    async with asyncio.timeout(5):
        await ami.wait(event("UserEvent", UserEvent="QueueResult"), mark)
    await asyncio.sleep(2.0)
    await cli(box, out, "devstate change Custom:agent1 INUSE")
    await asyncio.sleep(0.5)

    out.note("--- Part L: QueueSummary / QueueStatus after the calls (Completed/Abandoned "
             "counters, LastCall, CallsTaken)")  # fmt: skip
    await listing(ami, "QueueSummary", "sum-end", "support")
    await listing(ami, "QueueStatus", "qs-end", "support")

    out.note("--- Part M: Logoff")
    await ami.action(("Action", "Logoff"), ("ActionID", "bye"))
    async with asyncio.timeout(5):
        await ami.eof.wait()
    ami.close()
    await asyncio.sleep(0.5)
    out.note("end of recording")


async def listing(ami: RawAmi, action: str, action_id: str, queue: str | None,
                  *more: tuple[str, str]) -> None:  # fmt: skip
    """A list action, waited for until its ...Complete event."""
    fields = [("Action", action)] + ([("Queue", queue)] if queue else []) + list(more)
    mark = ami.send(*fields, ("ActionID", action_id))
    async with asyncio.timeout(5):
        await ami.wait(lambda m: m.get("Event") == f"{action}Complete"
                       and m.get("ActionID") == action_id, mark)  # fmt: skip


async def join(ami: RawAmi, exten: str, name: str, number: str, channel_id: str,
               action_id: str) -> str:  # fmt: skip
    """A caller originated into [qcaller]; returns the name of the channel in the queue (;2)."""
    mark = ami.send(
        ("Action", "Originate"), ("Channel", f"Local/{exten}@qcaller/n"), ("Application", "Wait"),
        ("Data", "60"), ("Async", "true"), ("CallerID", f'"{name}" <{number}>'),
        ("ChannelId", channel_id), ("OtherChannelId", channel_id + "-2"), ("ActionID", action_id),
    )  # fmt: skip
    async with asyncio.timeout(5):
        joined = await ami.wait(event("QueueCallerJoin", Uniqueid=channel_id + "-2"), mark)
    return joined["Channel"]

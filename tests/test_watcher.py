"""QueueWatcher: callers, members, readiness and wait estimates from recorded and hand-built AMI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callback_ari.asterisk.ami_protocol import AmiMessage
from callback_ari.clock import ManualClock
from callback_ari.core.estimator import HandleTimeEstimator
from callback_ari.service.watcher import DeviceStatus, QueueCaller, QueueMember, QueueWatcher
from tests.test_ami_protocol import Block, transcript

BASE_MS = 1_795_421_995_000  # the recording's t=0, near its epoch timestamps
A1, A2 = "Local/agent1@agents/n", "Local/agent2@agents/n"


def replay(
    watcher: QueueWatcher, clock: ManualClock, blocks: list[Block]
) -> Iterator[tuple[float, AmiMessage]]:
    """Feed the recorded main connection as the service does and yield after each message.

    List replies become ``load_snapshot`` (only full QueueStatus replies of watched queues, as
    the service sends), every other event goes through ``apply``; the clock follows ``t``.
    """
    sent = {
        m.action_id: m
        for b in blocks
        if b.conn == "main" and b.direction == "SENT"
        for m in [b.message()]
    }
    lists: dict[str, list[AmiMessage]] = {}
    for block in blocks:
        if block.conn != "main" or block.direction != "RECV" or block.banner or block.eof:
            continue
        clock.set_ms(BASE_MS + round(block.t * 1000))
        msg = block.message()
        aid = msg.action_id
        if msg.kind == "response":
            if msg.get("EventList") == "start" and aid is not None:
                lists[aid] = []
        elif aid is not None and aid in lists:
            if msg.get("EventList") != "Complete":
                lists[aid].append(msg)
            else:
                items, request = lists.pop(aid), sent[aid]
                queue = request.get("Queue")
                if msg.name == "QueueStatusComplete" and request.get("Member") is None:
                    watcher.load_snapshot(items, None if queue is None else [queue])
        else:
            watcher.apply(msg)
        yield block.t, msg


def ev(name: str, **fields: str | int) -> AmiMessage:
    return AmiMessage.from_pairs([("Event", name), *((k, str(v)) for k, v in fields.items())])


def member_item(queue: str, interface: str, status: int = 1, **extra: str | int) -> AmiMessage:
    fields: dict[str, str | int] = {
        "Queue": queue,
        "Name": interface.split("/")[1][:6],
        "Location": interface,
        "StateInterface": "Custom:" + interface.split("/")[1][:6],
        "Status": status,
        "Paused": 0,
        "InCall": 0,
        "LastCall": 0,
        "Wrapuptime": 0,
        **extra,
    }
    return ev("QueueMember", **fields)


def entry_item(queue: str, uid: str, position: int, wait: int) -> AmiMessage:
    return ev(
        "QueueEntry",
        Queue=queue,
        Position=position,
        Channel=f"PJSIP/{uid}-0001",
        Uniqueid=uid,
        CallerIDNum="5551234",
        CallerIDName="C",
        Wait=wait,
    )


def join(queue: str, uid: str, position: int) -> AmiMessage:
    return ev(
        "QueueCallerJoin",
        Queue=queue,
        Channel=f"PJSIP/{uid}-0001",
        Uniqueid=uid,
        CallerIDNum="5551234",
        CallerIDName="C",
        Position=position,
        Count=position,
    )


def leave(queue: str, uid: str) -> AmiMessage:
    return ev("QueueCallerLeave", Queue=queue, Channel=f"PJSIP/{uid}-0001", Uniqueid=uid)


def agent(name: str, queue: str, interface: str, **extra: str | int) -> AmiMessage:
    return ev(name, Queue=queue, Interface=interface, MemberName="x", **extra)


class Recorder:
    def __init__(self, watcher: QueueWatcher, clock: ManualClock) -> None:
        self.ready: list[tuple[str, int]] = []
        self.joined: list[QueueCaller] = []
        self.left: list[QueueCaller] = []
        watcher.on_member_ready(lambda q: self.ready.append((q, clock.now_ms())))
        watcher.on_caller_join(lambda q, c: self.joined.append(c) if q == c.queue else None)
        watcher.on_caller_leave(lambda q, c: self.left.append(c) if q == c.queue else None)


@pytest.fixture(scope="module")
def blocks(asterisk_data: Path) -> list[Block]:
    return transcript(asterisk_data)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(BASE_MS)


def test_ready_count_matches_asterisk_getvar_throughout_the_recording(
    blocks: list[Block], clock: ManualClock
) -> None:
    watcher = QueueWatcher(["support"], clock)
    checked = []
    for _, msg in replay(watcher, clock, blocks):
        if msg.get("Variable") == "QUEUE_MEMBER(support,ready)":
            assert watcher.ready_members("support") == int(msg.get("Value") or -1)
            checked.append(msg.get("Value"))
    assert checked == ["0", "1", "0"]  # both INUSE; agent1 NOT_INUSE; agent1 paused


Trace = list[tuple[float, AmiMessage, object]]


def at(trace: Trace, name: str, n: int = 0, **fields: str) -> int:
    """Index in ``trace`` of the ``n``-th message called ``name`` with those field values."""
    hits = [
        i
        for i, (_, m, _) in enumerate(trace)
        if m.name == name and all(m.get(k) == v for k, v in fields.items())
    ]
    return hits[n]


def ms(trace: Trace, i: int) -> float:
    """The clock (seconds, ms resolution) the replay had set when message ``i`` arrived."""
    return round(trace[i][0] * 1000) / 1000


def test_member_ready_fires_exactly_when_a_member_turns_ready(
    blocks: list[Block], clock: ManualClock
) -> None:
    watcher = QueueWatcher(["support"], clock)
    rec = Recorder(watcher, clock)
    trace: Trace = [
        (t, m, watcher.ready_members("support")) for t, m in replay(watcher, clock, blocks)
    ]
    fired = [round((ms_ - BASE_MS) / 1000, 3) for _, ms_ in rec.ready]
    # NOT_INUSE (F), NOT_INUSE again (F), unpause (G), NOT_INUSE (J), then after each
    # AgentComplete (J, K): the device never left NOT_INUSE but the call ended.
    assert fired == [
        ms(trace, at(trace, "QueueMemberStatus", 0, Status="1")),
        ms(trace, at(trace, "QueueMemberStatus", 1, Status="1")),
        ms(trace, at(trace, "QueueMemberPause", 0, Paused="0")),
        ms(trace, at(trace, "QueueMemberStatus", 2, Status="1")),
        ms(trace, at(trace, "AgentComplete", 0)),
        ms(trace, at(trace, "AgentComplete", 1)),
    ]
    assert {q for q, _ in rec.ready} == {"support"}
    assert trace[at(trace, "AgentCalled")][2] == 1  # still ready until connected
    assert trace[at(trace, "AgentConnect")][2] == 0  # in a call although Status stays 1
    # the QueueStatus reply during the call (InCall: 1)
    assert trace[at(trace, "QueueStatusComplete", ActionID="qs-incall")][2] == 0
    assert trace[at(trace, "AgentComplete")][2] == 1  # wrap-up 0
    assert trace[at(trace, "QueueMemberStatus", -1, Status="2")][2] == 0  # agent1 INUSE again
    assert trace[-1][2] == 0


def test_callers_positions_and_hold_times_from_the_recording(
    blocks: list[Block], clock: ManualClock
) -> None:
    watcher = QueueWatcher(["support"], clock)
    rec = Recorder(watcher, clock)
    trace: Trace = []
    callers: list[list[QueueCaller]] = []
    holds: list[float | None] = []
    waiter_channel = ""
    for t, msg in replay(watcher, clock, blocks):
        if not waiter_channel and msg.name == "QueueCallerJoin":
            waiter_channel = msg.get("Channel") or ""
        trace.append((t, msg, None))
        callers.append(watcher.callers("support"))
        holds.append(watcher.hold_time_s("support", waiter_channel) if waiter_channel else None)
    joined = at(trace, "QueueCallerJoin")
    (waiter,) = callers[joined]
    assert re.fullmatch(r"Local/join@qcaller-[0-9a-f]{8};2", waiter_channel)
    assert (waiter.channel, waiter.uniqueid, waiter.position) == (waiter_channel, "ami-w1-2", 1)
    assert (waiter.caller_number, waiter.caller_name) == ("5550001", "Waiter")
    assert waiter.join_time_ms == BASE_MS + round(trace[joined][0] * 1000)
    # the QueueStatus snapshot (Wait: 1) keeps the millisecond join time we saw
    snapshot = at(trace, "QueueStatusComplete", ActionID="qs-waiting")
    assert callers[snapshot][0].join_time_ms == waiter.join_time_ms
    hold = holds[snapshot]
    assert hold == pytest.approx(ms(trace, snapshot) - ms(trace, joined), abs=0.002)
    assert hold is not None and hold >= 1.5  # the recorder asked 1.5 s after the join
    assert watcher.oldest_join_ms("support") is None  # everybody left in the end
    assert callers[at(trace, "QueueCallerAbandon")] == []  # QueueWithdrawCaller -> Abandon
    assert [c.caller_number for c in rec.joined] == ["5550001", "5550002", "5550003", "5550004"]
    assert [c.uniqueid for c in rec.left] == [c.uniqueid for c in rec.joined]  # once each


def test_estimator_learns_from_agent_complete(blocks: list[Block], clock: ManualClock) -> None:
    watcher = QueueWatcher(["support"], clock)
    trace: Trace = [
        (t, m, watcher.estimated_wait_s("support", 1)) for t, m in replay(watcher, clock, blocks)
    ]
    first, second = (trace[at(trace, "AgentComplete", n)][1] for n in (0, 1))
    talk_1, talk_2 = (int(m.get("TalkTime") or "") for m in (first, second))
    assert talk_1 >= 3  # the recorder's caller talked about 3 s
    assert trace[at(trace, "QueueStatusComplete", ActionID="qs-incall")][2] is None  # none yet
    assert trace[at(trace, "AgentComplete", 0)][2] == pytest.approx(talk_1)  # the first call
    assert watcher.estimator.samples("support") == 2
    average = 0.25 * talk_2 + 0.75 * talk_1
    assert watcher.estimator.average_handle_s("support") == pytest.approx(average)
    # two staffed members: positions 1-2 need one round, 3-4 two rounds
    assert watcher.staffed_members("support") == 2
    assert watcher.estimated_wait_s("support", 2) == pytest.approx(average)
    assert watcher.estimated_wait_s("support", 3) == pytest.approx(2 * average)


def test_estimator_seeds_from_queue_params_after_restart(
    blocks: list[Block], clock: ManualClock
) -> None:
    final = [b.message() for b in blocks if b.direction == "RECV"]
    final_status = [m for m in final if m.action_id == "qs-end" and m.kind == "event"][:-1]
    params = next(m for m in final_status if m.name == "QueueParams")
    assert params.get("Completed") == "2"
    talk = int(params.get("TalkTime") or "")
    watcher = QueueWatcher(["support"], clock, wrapup_s={"support": 4})
    watcher.load_snapshot(final_status)
    assert watcher.estimator.average_handle_s("support") == talk + 4  # talk + wrap-up 4
    watcher.apply(agent("AgentComplete", "support", A1, TalkTime=10))
    assert watcher.estimator.average_handle_s("support") == 14.0  # real calls replace the seed


def test_estimator_definition() -> None:
    est = HandleTimeEstimator(alpha=0.5)
    assert est.estimate_wait_s("q", 1, staffed=3) is None
    est.observe("q", talk_s=60, wrapup_s=30)
    assert est.estimate_wait_s("q", 1, staffed=3) == 90
    est.observe("q", talk_s=30, wrapup_s=0)
    assert est.average_handle_s("q") == 60  # 0.5 * 30 + 0.5 * 90
    assert est.estimate_wait_s("q", 3, staffed=3) == 60
    assert est.estimate_wait_s("q", 4, staffed=3) == 120
    assert est.estimate_wait_s("q", 2, staffed=0) == 120  # nobody staffed counts as one
    with pytest.raises(ValueError):
        HandleTimeEstimator(alpha=0)


@pytest.mark.parametrize("status", list(DeviceStatus))
def test_ready_rule_per_device_status(status: DeviceStatus, clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock)
    watcher.load_snapshot([member_item("q", A1, status=int(status))])
    assert watcher.ready_members("q") == (1 if status == DeviceStatus.NOT_INUSE else 0)
    lenient = QueueWatcher(["q"], clock, unknown_is_ready=True)
    lenient.load_snapshot([member_item("q", A1, status=int(status))])
    assert lenient.ready_members("q") == (status in (DeviceStatus.NOT_INUSE, DeviceStatus.UNKNOWN))


def test_pause_devstate_and_calls_drive_readiness(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock)
    rec = Recorder(watcher, clock)
    watcher.load_snapshot([member_item("q", A1, status=2), member_item("q", A2, status=5)])
    assert (watcher.ready_members("q"), rec.ready) == (0, [])
    status: dict[str, str | int] = {
        "Queue": "q",
        "Interface": A1,
        "MemberName": "a1",
        "Paused": 0,
        "InCall": 0,
    }
    watcher.apply(ev("QueueMemberStatus", **{**status, "Status": 1}))
    assert (watcher.ready_members("q"), len(rec.ready)) == (1, 1)
    watcher.apply(ev("QueueMemberPause", **{**status, "Status": 1, "Paused": 1}))
    assert (watcher.ready_members("q"), len(rec.ready)) == (0, 1)
    watcher.apply(ev("QueueMemberPause", **{**status, "Status": 1, "Paused": 0}))
    assert (watcher.ready_members("q"), len(rec.ready)) == (1, 2)
    watcher.apply(ev("QueueMemberStatus", **{**status, "Status": 1}))  # no change, no signal
    watcher.apply(agent("AgentCalled", "q", A1))
    assert len(rec.ready) == 2
    watcher.apply(agent("AgentConnect", "q", A1, HoldTime=3, RingTime=1))
    assert watcher.ready_members("q") == 0
    member = watcher.members("q")[0]
    assert (member.in_call, member.status, member.name) == (True, 1, "a1")
    watcher.apply(agent("AgentComplete", "q", A1, TalkTime=20, Reason="caller"))
    assert (watcher.ready_members("q"), len(rec.ready)) == (1, 3)
    watcher.apply(ev("QueueMemberRemoved", Queue="q", Interface=A1))
    assert watcher.ready_members("q") == 0
    watcher.apply(ev("QueueMemberAdded", Queue="q", Interface=A1, MemberName="a1", Status=1))
    assert (watcher.ready_members("q"), len(rec.ready)) == (1, 4)


def test_wrapup_end_signals_ready_at_the_exact_millisecond(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock, wrapup_s={"q": 10})
    rec = Recorder(watcher, clock)
    watcher.load_snapshot([member_item("q", A1)])
    assert len(rec.ready) == 1
    watcher.apply(agent("AgentConnect", "q", A1))
    clock.advance(30)
    watcher.apply(agent("AgentComplete", "q", A1, TalkTime=30))
    ended = clock.now_ms()
    assert watcher.ready_members("q") == 0
    assert watcher.members("q")[0].wrapup_end_ms == ended + 10_000
    assert watcher.next_wrapup_end_ms() == ended + 10_000
    assert watcher.estimator.average_handle_s("q") == 40  # talk 30 + wrap-up 10
    clock.advance(9.999)
    watcher.tick()
    assert (watcher.ready_members("q"), len(rec.ready)) == (0, 1)
    clock.advance(0.001)
    watcher.tick()
    assert rec.ready[-1] == ("q", ended + 10_000)
    watcher.tick()
    assert len(rec.ready) == 2  # exactly once
    assert watcher.next_wrapup_end_ms() is None


def test_member_wrapuptime_overrides_queue_and_survives_resync(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock, wrapup_s={"q": 10})
    watcher.load_snapshot([member_item("q", A1, Wrapuptime=3)])
    watcher.apply(agent("AgentComplete", "q", A1, TalkTime=5))
    ended = clock.now_ms()
    assert watcher.next_wrapup_end_ms() == ended + 3000
    # AMI reconnect: QueueStatus reports LastCall in whole seconds; keep our milliseconds
    clock.advance(1)
    watcher.load_snapshot([member_item("q", A1, Wrapuptime=3, LastCall=ended // 1000)])
    assert watcher.next_wrapup_end_ms() == ended + 3000
    # a wrap-up that began before we connected is honoured too
    fresh = QueueWatcher(["q"], clock, wrapup_s={"q": 10})
    fresh.load_snapshot([member_item("q", A1, LastCall=clock.now_ms() // 1000 - 4)])
    assert fresh.ready_members("q") == 0
    assert fresh.next_wrapup_end_ms() == (clock.now_ms() // 1000 + 6) * 1000


async def test_run_owns_the_wrapup_timer(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock, wrapup_s={"q": 15})
    watcher.load_snapshot([member_item("q", A1)])
    watcher.apply(agent("AgentConnect", "q", A1))
    watcher.apply(agent("AgentComplete", "q", A1, TalkTime=5))
    became_ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    watcher.on_member_ready(lambda q: became_ready.set_result(clock.now_ms()))
    before = asyncio.all_tasks()
    async with asyncio.TaskGroup() as tg:
        timer = tg.create_task(watcher.run())
        for _ in range(5):
            await asyncio.sleep(0)  # the timer runs but the clock has not moved
        assert not became_ready.done()
        clock.advance(15)
        async with asyncio.timeout(5):
            fired_at = await became_ready
        timer.cancel()
    assert fired_at == clock.now_ms()
    assert asyncio.all_tasks() == before


async def test_wait_ready(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock)
    watcher.load_snapshot([member_item("q", A1, status=2)])
    async with asyncio.TaskGroup() as tg:
        waiting = tg.create_task(watcher.wait_ready("q"))
        await asyncio.sleep(0)
        assert not waiting.done()
        watcher.apply(ev("QueueMemberStatus", Queue="q", Interface=A1, Status=1))
        async with asyncio.timeout(5):
            await waiting
    await watcher.wait_ready("q")  # ready now: returns at once


def test_in_call_and_shared_wrapup_span_queues(clock: ManualClock) -> None:
    watcher = QueueWatcher(["sales", "support"], clock, wrapup_s={"sales": 5, "support": 20})
    watcher.load_snapshot([member_item("sales", A1), member_item("support", A1)])
    watcher.apply(agent("AgentConnect", "sales", A1))
    assert (watcher.ready_members("sales"), watcher.ready_members("support")) == (0, 0)
    watcher.apply(agent("AgentComplete", "sales", A1, TalkTime=5))
    ends = {m.queue: m.wrapup_end_ms for q in ("sales", "support") for m in watcher.members(q)}
    assert ends == {"sales": clock.now_ms() + 5000, "support": clock.now_ms() + 20000}
    clock.advance(5)
    watcher.tick()
    assert (watcher.ready_members("sales"), watcher.ready_members("support")) == (1, 0)
    # after a reconnect only the call's own queue reports InCall: 1
    watcher.load_snapshot([member_item("sales", A1, InCall=1), member_item("support", A1)])
    assert (watcher.ready_members("sales"), watcher.ready_members("support")) == (0, 0)
    watcher.apply(ev("QueueMemberStatus", Queue="support", Interface=A1, Status=1, InCall=0))
    assert watcher.ready_members("support") == 0  # still on the phone for sales
    watcher.apply(agent("AgentComplete", "sales", A1, TalkTime=5))
    clock.advance(20)
    watcher.tick()
    assert (watcher.ready_members("sales"), watcher.ready_members("support")) == (1, 1)
    separate = QueueWatcher(["a", "b"], clock, wrapup_s={"a": 5, "b": 5}, shared_lastcall=False)
    separate.load_snapshot([member_item("a", A1), member_item("b", A1)])
    separate.apply(agent("AgentComplete", "a", A1, TalkTime=5))
    assert (separate.ready_members("a"), separate.ready_members("b")) == (0, 1)


def test_positions_follow_joins_priorities_and_leaves(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock)
    for i, uid in enumerate(("u1", "u2", "u3"), start=1):
        watcher.apply(join("q", uid, i))
        clock.advance(10)
    watcher.apply(join("q", "vip", 1))  # QUEUE_PRIO puts a caller ahead
    assert [(c.uniqueid, c.position) for c in watcher.callers("q")] == [
        ("vip", 1),
        ("u1", 2),
        ("u2", 3),
        ("u3", 4),
    ]
    assert watcher.oldest_join_ms("q") == BASE_MS
    watcher.apply(leave("q", "u1"))
    assert [(c.uniqueid, c.position) for c in watcher.callers("q")] == [
        ("vip", 1),
        ("u2", 2),
        ("u3", 3),
    ]
    assert watcher.oldest_join_ms("q") == BASE_MS + 10_000
    assert watcher.hold_time_s("q", "PJSIP/u3-0001") == 10.0
    assert watcher.hold_time_s("q", "nobody") is None


def test_a_caller_back_from_an_offer_keeps_the_first_join(clock: ManualClock) -> None:
    """Declined the offer: back in Queue() "at the same position, same CB_JOIN" (README).
    app_queue reports a new join (and Wait from it); the caller must still count as holding
    since the first join, or callbacks booked after them are dialled ahead (soak, 2 PBXs)."""
    watcher = QueueWatcher(["q"], clock)
    watcher.apply(join("q", "u1", 1))
    clock.advance(3)
    watcher.apply(leave("q", "u1"))  # withdrawn for the offer
    clock.advance(20)
    watcher.apply(join("q", "u1", 1))  # declined: back at the position they left
    assert watcher.oldest_join_ms("q") == BASE_MS
    entry = ev("QueueEntry", Queue="q", Uniqueid="u1", Channel="PJSIP/u1-0001", Position=1, Wait=4)
    watcher.load_snapshot([entry])  # a resync after an AMI reconnect: Wait from the new join
    assert watcher.oldest_join_ms("q") == BASE_MS
    watcher.apply(join("q", "u2", 2))  # a new caller: their own join
    assert [c.join_time_ms for c in watcher.callers("q")] == [BASE_MS, BASE_MS + 23_000]


def test_snapshot_resync_replaces_state(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q", "other"], clock)
    rec = Recorder(watcher, clock)
    watcher.load_snapshot([member_item("q", A1, status=2), member_item("other", A2)])
    watcher.apply(join("q", "gone", 1))
    watcher.apply(join("q", "stays", 2))
    watcher.apply(join("other", "x", 1))
    stays_joined = watcher.callers("q")[1].join_time_ms
    clock.advance(30)
    # after an AMI reconnect: "gone" hung up, agent1 is free, agent2 joined, a new caller
    watcher.load_snapshot(
        [
            ev("QueueParams", Queue="q", Calls=2, Completed=0, TalkTime=0),
            member_item("q", A1, status=1),
            member_item("q", A2, status=2),
            entry_item("q", "stays", 1, wait=30),
            entry_item("q", "new", 2, wait=12),
            member_item("unwatched", A1),
        ],
        queues=["q"],
    )
    callers = watcher.callers("q")
    assert [(c.uniqueid, c.position) for c in callers] == [("stays", 1), ("new", 2)]
    assert callers[0].join_time_ms == stays_joined
    assert callers[1].join_time_ms == clock.now_ms() - 12_000
    assert sorted(m.interface for m in watcher.members("q")) == [A1, A2]
    assert [c.uniqueid for c in rec.left] == ["gone"]
    assert [c.uniqueid for c in rec.joined][-1] == "new"
    assert rec.ready[-1] == ("q", clock.now_ms())
    # the queue the snapshot did not cover is untouched
    assert [c.uniqueid for c in watcher.callers("other")] == ["x"]
    assert watcher.ready_members("other") == 1
    # a full snapshot with nothing for "other" empties it
    watcher.load_snapshot([])
    assert watcher.callers("other") == [] and watcher.members("other") == []


def test_unwatched_queues_and_foreign_events_are_ignored(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock)
    watcher.apply(join("elsewhere", "u1", 1))
    watcher.apply(ev("Newchannel", Channel="PJSIP/x"))
    watcher.apply(AmiMessage.from_pairs([("Response", "Success"), ("Queue", "q")]))
    assert watcher.callers("q") == []
    with pytest.raises(KeyError):
        watcher.callers("elsewhere")


@pytest.mark.expect_errors("watcher.listener_error")
def test_a_raising_listener_does_not_stop_the_others(clock: ManualClock) -> None:
    watcher = QueueWatcher(["q"], clock)
    calls: list[str] = []

    def broken(queue: str) -> None:
        raise RuntimeError("listener bug")

    watcher.on_member_ready(broken)
    unsubscribe = watcher.on_member_ready(calls.append)
    with capture_logs() as logs:
        watcher.load_snapshot([member_item("q", A1)])
    assert calls == ["q"]
    assert [e["event"] for e in logs].count("watcher.listener_error") == 1
    unsubscribe()
    watcher.apply(ev("QueueMemberStatus", Queue="q", Interface=A1, Status=2))
    watcher.apply(ev("QueueMemberStatus", Queue="q", Interface=A1, Status=1))
    assert calls == ["q"]


def test_member_value_semantics(clock: ManualClock) -> None:
    member = QueueMember(
        queue="q",
        interface=A1,
        name="a1",
        state_interface="Custom:agent1",
        status=1,
        paused=False,
        in_call=False,
        last_call_ms=1000,
        wrapup_s=2,
    )
    assert member.logged_in and member.wrapup_end_ms == 3000
    assert member.in_wrapup(2999) and not member.in_wrapup(3000)
    assert not member.is_ready(2999) and member.is_ready(3000)


def test_value_types_are_importable_from_the_watcher_and_the_model() -> None:
    from callback_ari.core import queue_model

    assert (DeviceStatus, QueueCaller, QueueMember) == (
        queue_model.DeviceStatus,
        queue_model.QueueCaller,
        queue_model.QueueMember,
    )


def test_abandon_listeners_hear_hold_time_before_leave_listeners(clock: ManualClock) -> None:
    """QueueCallerAbandon: abandon listeners get Asterisk's HoldTime, before the leave ones."""
    watcher = QueueWatcher(["support"], clock)
    heard: list[tuple[str, str, float]] = []
    callers: list[QueueCaller] = []

    def abandoned(queue: str, caller: QueueCaller, hold_s: float) -> None:
        heard.append(("abandon", caller.uniqueid, hold_s))
        callers.append(caller)

    watcher.on_caller_abandon(abandoned)
    watcher.on_caller_leave(lambda q, c: heard.append(("leave", c.uniqueid, 0.0)))
    watcher.apply(join("support", "1.1", 1))
    clock.advance(42.0)
    watcher.apply(ev(
        "QueueCallerAbandon", Queue="support", Channel="PJSIP/1.1-0001", Uniqueid="1.1",
        CallerIDNum="5551234", Position=1, OriginalPosition=1, HoldTime=41,
    ))  # fmt: skip
    watcher.apply(leave("support", "1.1"))  # a leave after the abandon is not heard again
    assert heard == [("abandon", "1.1", 41.0), ("leave", "1.1", 0.0)]
    assert callers[0].join_time_ms == BASE_MS  # the original join, for fairness
    # a caller who joined before the watcher started: built from the event itself
    clock.advance(300.0)
    watcher.apply(ev(
        "QueueCallerAbandon", Queue="support", Channel="PJSIP/2.2-0001", Uniqueid="2.2",
        CallerIDNum="2125550100", CallerIDName="Old", Position=1, HoldTime=300,
    ))  # fmt: skip
    assert heard[-1] == ("abandon", "2.2", 300.0)
    assert callers[-1].caller_number == "2125550100"
    assert callers[-1].join_time_ms == BASE_MS + 42_000
    assert watcher.callers("support") == []

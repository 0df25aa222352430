"""The Redis callback store: every transition, its idempotency, leases, corruption and outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from callback_ari.clock import ManualClock
from callback_ari.errors import (
    CallbackNotFound,
    CorruptRecord,
    InvalidTransition,
    StoreUnavailable,
)
from callback_ari.models import Callback, Origin, Outcome, State
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.store.scripts import ANSWERED_GRACE_MS
from callback_ari.store.store import CallbackStore, connect_redis

Q = "support"
T0 = 1_800_000_000_000
LEASE = 60_000


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = connect_redis(redis_url)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def store(client: aioredis.Redis, clock: ManualClock) -> CallbackStore:
    return CallbackStore(client, clock=clock, audit_maxlen=1000)


async def add(store: CallbackStore, number: str, join_s_ago: float = 60, **kw: Any) -> Callback:
    cb, created = await store.enqueue(
        queue=kw.pop("queue", Q), number=number, caller_name="Ann", source_channel="PJSIP/t-1",
        join_time_ms=T0 - int(join_s_ago * 1000), **kw,
    )  # fmt: skip
    assert created
    return cb


async def claim(store: CallbackStore, owner: str = "w1", **kw: Any) -> Callback | None:
    return await store.claim_next(kw.pop("queue", Q), owner=owner, lease_ms=LEASE, **kw)


async def busy(
    store: CallbackStore, cb: Callback, retry_in_s: float | None = 120, owner: str = "w1", **kw: Any
) -> Callback:
    retry = None if retry_in_s is None else T0 + int(retry_in_s * 1000)
    return await store.record_outcome(
        cb.id, owner, outcome=Outcome.BUSY, cause="BUSY/17", retry_at_ms=retry,
        max_attempts=kw.pop("max_attempts", 3), **kw,
    )  # fmt: skip


# --- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_stores_every_field_and_get_reads_it_back(store: CallbackStore) -> None:
    cb, created = await store.enqueue(
        queue=Q, number="+4930123456", caller_name="Zoë Müller", source_channel="PJSIP/trunk-0000a",
        join_time_ms=T0 - 90_000, origin=Origin.AGI, priority=30, position=4,
    )  # fmt: skip
    assert created
    assert (cb.state, cb.attempts, cb.created_ms, cb.updated_ms) == (State.PENDING, 0, T0, T0)
    assert (cb.number, cb.caller_name, cb.origin, cb.priority, cb.position) == (
        "+4930123456", "Zoë Müller", Origin.AGI, 30, 4,
    )  # fmt: skip
    assert await store.get(cb.id) == cb
    assert all(c.isalnum() or c == "-" for c in cb.id)  # safe inside ARI channel ids
    events = await store.audit()
    assert [(e["id"], e["from"], e["to"], e["ts"]) for e in events] == [
        (cb.id, "", "pending", str(T0))
    ]


async def test_second_request_for_same_number_returns_the_live_callback(
    store: CallbackStore,
) -> None:
    first = await add(store, "5551001")
    again, created = await store.enqueue(
        queue=Q, number="5551001", caller_name="Other", source_channel="x", join_time_ms=T0
    )
    assert (again, created) == (first, False)
    other_queue = await add(store, "5551001", queue="sales")
    assert other_queue.id != first.id
    assert await store.find_live(Q, "5551001") == first
    await store.cancel(first.id)
    assert await store.find_live(Q, "5551001") is None
    fresh = await add(store, "5551001")  # the number is free again once the first is over
    assert fresh.id != first.id
    assert len(await store.audit()) == 4  # enqueue, enqueue, cancel, enqueue: no phantom writes


async def test_enqueue_is_idempotent_on_a_chosen_id(store: CallbackStore) -> None:
    cb, created = await store.enqueue(
        queue=Q, number="5551002", join_time_ms=T0, callback_id="web-42"
    )
    again, created2 = await store.enqueue(
        queue=Q, number="5551002", join_time_ms=T0, callback_id="web-42"
    )
    assert (created, created2, again) == (True, False, cb)
    with pytest.raises(ValueError):
        await store.enqueue(queue=Q, number="1", join_time_ms=T0, callback_id="bad;id")


# --- claim ------------------------------------------------------------------------------------


async def test_claim_takes_the_earliest_join_time_and_leases_it(store: CallbackStore) -> None:
    young = await add(store, "5551003", join_s_ago=10)
    old = await add(store, "5551004", join_s_ago=300)
    mid = await add(store, "5551005", join_s_ago=100)
    got = await claim(store)
    assert got is not None and got.id == old.id
    assert (got.state, got.attempts, got.lease_owner, got.lease_expires_ms) == (
        State.DIALING, 1, "w1", T0 + LEASE,
    )  # fmt: skip
    assert got.channel_id == f"cb-{old.id}-a1"
    assert [(await claim(store)).id, (await claim(store)).id] == [mid.id, young.id]  # type: ignore[union-attr]
    assert await claim(store) is None
    assert await claim(store, queue="nobody") is None


async def test_priority_boost_moves_a_callback_ahead(store: CallbackStore) -> None:
    await add(store, "5551006", join_s_ago=100)
    boosted = await add(store, "5551007", join_s_ago=50, priority=60)  # 50 s + 60 s boost
    got = await claim(store)
    assert got is not None and got.id == boosted.id


async def test_join_before_gate_holds_callbacks_behind_older_live_callers(
    store: CallbackStore,
) -> None:
    cb = await add(store, "5551008", join_s_ago=60)
    assert await claim(store, join_before_ms=T0 - 120_000) is None  # a live caller waits longer
    assert await claim(store, join_before_ms=T0 - 60_000) is None  # equal is not ahead
    got = await claim(store, join_before_ms=T0 - 59_999)
    assert got is not None and got.id == cb.id


# --- outcomes ---------------------------------------------------------------------------------


async def test_connected_is_terminal_and_recording_twice_changes_nothing(
    store: CallbackStore, client: aioredis.Redis
) -> None:
    cb = await add(store, "5551009")
    await claim(store)
    done = await store.record_outcome(
        cb.id, "w1", outcome=Outcome.CONNECTED, cause="", retry_at_ms=None, max_attempts=3
    )
    assert (done.state, done.last_outcome, done.lease_expires_ms) == (
        State.CONNECTED,
        "connected",
        0,
    )
    n_audit = len(await store.audit())
    again = await store.record_outcome(
        cb.id, "w1", outcome=Outcome.CONNECTED, cause="", retry_at_ms=None, max_attempts=3
    )
    assert again == done and len(await store.audit()) == n_audit
    assert await store.find_live(Q, "5551009") is None
    assert 0 < await client.pttl(store.key("cb", cb.id)) <= 30 * 86400 * 1000  # kept for reports
    assert await store.get(cb.id) == done


async def test_only_the_lease_owner_of_the_current_attempt_may_record(store: CallbackStore) -> None:
    cb = await add(store, "5551010")
    with pytest.raises(InvalidTransition):
        await busy(store, cb)  # never claimed: pending
    await claim(store, owner="w1")
    with pytest.raises(InvalidTransition):
        await busy(store, cb, owner="intruder")
    with pytest.raises(InvalidTransition):
        await busy(store, cb, attempt=0)  # stale attempt number
    with pytest.raises(CallbackNotFound):
        await busy(store, Callback("nope", Q, "1", "", "", 0, 0, State.DIALING))
    after = await busy(store, cb, attempt=1)
    assert after.state is State.RETRY_WAIT
    assert await busy(store, cb, attempt=1) == after  # same call again: idempotent
    with pytest.raises(InvalidTransition):  # a different outcome for the same attempt is not
        await store.record_outcome(
            cb.id, "w1", outcome=Outcome.CONNECTED, retry_at_ms=None, max_attempts=3
        )


async def test_retry_waits_until_its_time(store: CallbackStore, clock: ManualClock) -> None:
    cb = await add(store, "5551011")
    await claim(store)
    waiting = await busy(store, cb, retry_in_s=120)
    assert (waiting.state, waiting.next_attempt_ms, waiting.last_cause) == (
        State.RETRY_WAIT, T0 + 120_000, "BUSY/17",
    )  # fmt: skip
    assert await store.next_due_ms(Q) == T0 + 120_000
    clock.set_ms(T0 + 119_999)
    assert await claim(store) is None
    clock.set_ms(T0 + 120_000)
    again = await claim(store, owner="w2")
    assert again is not None and (again.id, again.attempts, again.lease_owner) == (cb.id, 2, "w2")
    assert await store.next_due_ms(Q) is None
    trail = [(e["from"], e["to"], e["attempt"]) for e in await store.audit()]
    assert trail[-2:] == [("retry_wait", "pending", "1"), ("pending", "dialing", "2")]


async def test_last_allowed_attempt_fails_the_callback(store: CallbackStore) -> None:
    cb = await add(store, "5551012")
    await claim(store)
    await busy(store, cb, retry_in_s=0, max_attempts=2)
    await claim(store)
    failed = await busy(store, cb, retry_in_s=0, max_attempts=2)
    assert (failed.state, failed.attempts, failed.last_outcome) == (State.FAILED, 2, "busy")
    assert await claim(store) is None
    assert (await store.counts())[Q]["failed"] == 1
    cb2 = await add(store, "5551013")
    await claim(store)
    assert (await busy(store, cb2, retry_in_s=None)).state is State.FAILED  # no retry wanted


async def test_scheduled_callback_is_pending_but_not_claimable_before_its_time(
    store: CallbackStore, clock: ManualClock
) -> None:
    cb = await add(store, "5551014", next_attempt_ms=T0 + 3_600_000)
    assert cb.state is State.PENDING and await store.next_due_ms(Q) == T0 + 3_600_000
    assert await claim(store) is None
    clock.set_ms(T0 + 3_600_000)
    got = await claim(store)
    assert got is not None and got.id == cb.id


# --- cancel, expire, leases -------------------------------------------------------------------


async def test_cancel_is_idempotent_and_final(store: CallbackStore) -> None:
    cb = await add(store, "5551015")
    cancelled = await store.cancel(cb.id, reason="recalled")
    assert cancelled.state is State.CANCELLED
    assert await store.cancel(cb.id) == cancelled
    assert (await store.audit())[-1]["cause"] == "recalled"
    with pytest.raises(CallbackNotFound):
        await store.cancel("missing")
    done = await add(store, "5551016")
    await claim(store)
    await store.record_outcome(
        done.id, "w1", outcome=Outcome.CONNECTED, retry_at_ms=None, max_attempts=1
    )
    with pytest.raises(InvalidTransition):
        await store.cancel(done.id)


async def test_cancelling_a_dialing_callback_takes_the_lease_away(store: CallbackStore) -> None:
    cb = await add(store, "5551017")
    await claim(store)
    await store.cancel(cb.id, reason="api")
    assert not await store.renew_lease(cb.id, "w1", LEASE)
    with pytest.raises(InvalidTransition):
        await busy(store, cb)


async def test_expire_takes_old_waiting_callbacks_but_not_one_being_dialled(
    store: CallbackStore, clock: ManualClock
) -> None:
    retrying = await add(store, "5551018", join_s_ago=300)
    dialing = await add(store, "5551019", join_s_ago=200)
    pending = await add(store, "5551020", join_s_ago=100)
    await claim(store)
    await busy(store, retrying)
    await claim(store)
    clock.set_ms(T0 + 1000)
    newer = await add(store, "5551021")
    expired = await store.expire_older_than(Q, T0 + 1)
    assert sorted(expired) == sorted([retrying.id, pending.id])
    states = {cb.id: cb.state for cb in await store.list(Q)}
    assert states == {
        retrying.id: State.EXPIRED, pending.id: State.EXPIRED, dialing.id: State.DIALING,
        newer.id: State.PENDING,
    }  # fmt: skip
    assert await store.find_live(Q, "5551018") is None
    assert await store.expire_older_than(Q, T0 + 1) == []


async def test_crashed_worker_claim_returns_to_pending_with_its_attempt_counted(
    store: CallbackStore, clock: ManualClock
) -> None:
    cb = await add(store, "5551022")
    await store.claim_next(Q, owner="dead", lease_ms=1000)
    assert await store.renew_lease(cb.id, "dead", 5000)  # lease now ends at T0 + 5 s
    assert not await store.renew_lease(cb.id, "other", 5000)
    assert await store.reclaim_expired_leases(now_ms=T0 + 4999) == []
    assert await store.reclaim_expired_leases(now_ms=T0 + 5000) == [cb.id]
    back = await store.get(cb.id)
    assert (back.state, back.attempts, back.lease_owner, back.last_outcome) == (
        State.PENDING, 1, "", "error",
    )  # fmt: skip
    with pytest.raises(InvalidTransition):
        await busy(store, cb, owner="dead")  # the zombie cannot overwrite
    clock.set_ms(T0 + 6000)
    again = await claim(store, owner="w2")
    assert again is not None and (again.id, again.attempts) == (cb.id, 2)


# --- reads ------------------------------------------------------------------------------------


async def test_list_pages_and_filters_and_counts_add_up(store: CallbackStore) -> None:
    ids = [(await add(store, f"55520{i:02d}", join_s_ago=100 - i)).id for i in range(7)]
    await add(store, "5559999", queue="sales")
    await claim(store)
    await store.cancel(ids[6])
    page1 = await store.list(Q, State.PENDING, limit=3)
    page2 = await store.list(Q, State.PENDING, limit=3, cursor=3)
    assert [c.id for c in page1 + page2] == ids[1:6]
    assert await store.list(Q, State.PENDING, limit=3, cursor=6) == []
    assert [c.id for c in await store.list(Q, State.DIALING)] == [ids[0]]
    everything = await store.list(limit=100)
    assert len(everything) == 8 and {c.queue for c in everything} == {Q, "sales"}
    counts = await store.counts()
    assert counts[Q] == {
        "pending": 5, "dialing": 1, "retry_wait": 0, "connected": 0, "failed": 0,
        "expired": 0, "cancelled": 1,
    }  # fmt: skip
    assert counts["sales"]["pending"] == 1


async def test_audit_reads_since_a_time_and_pages_by_event_id(
    store: CallbackStore, clock: ManualClock
) -> None:
    a = await add(store, "5551030")
    clock.set_ms(T0 + 10_000)
    await claim(store)
    events = await store.audit(since_ms=T0 + 1)
    assert [(e["id"], e["queue"], e["to"], e["attempt"]) for e in events] == [
        (a.id, Q, "dialing", "1")
    ]
    assert set(events[0]) == {"id", "queue", "from", "to", "outcome", "cause", "attempt", "ts",
                              "event_id"}  # fmt: skip
    first = (await store.audit(count=1))[0]
    assert (await store.audit(after_id=first["event_id"]))[0]["to"] == "dialing"


async def test_keys_stay_under_the_prefix_and_records_stay_compact(client: aioredis.Redis) -> None:
    store = CallbackStore(client, prefix="tenant7", clock=ManualClock(T0))
    cb = await add(store, "5551031")
    await claim(store)
    keys = await client.keys("*")
    assert keys and all(k.startswith("{tenant7}:") for k in keys)
    assert await client.object("encoding", store.key("cb", cb.id)) == "listpack"


async def test_memory_per_pending_callback_is_under_700_bytes(client: aioredis.Redis) -> None:
    store = CallbackStore(client, clock=ManualClock(T0))
    await add(store, "4000000")  # create the per-queue structures first
    before = (await client.info("memory"))["used_memory"]
    n = 3000
    for i in range(n):
        await add(store, f"+1555{i:07d}", join_s_ago=i % 500)
    per = ((await client.info("memory"))["used_memory"] - before) / n
    assert per <= 700, per


# --- corruption and outages -------------------------------------------------------------------


async def test_corrupt_records_are_reported_and_skipped_never_crash(
    store: CallbackStore, client: aioredis.Redis
) -> None:
    good = await add(store, "5551040", join_s_ago=10)
    ready = store.key("q", Q, "ready")
    await client.set(store.key("cb", "s1"), "a string, not a hash")
    await client.hset(store.key("cb", "h1"), mapping={"q": Q, "s": "pending"})  # fields missing
    await client.hset(
        store.key("cb", "t1"),
        mapping={"q": Q, "n": "1", "j": "yesterday", "c": "1", "s": "pending", "a": "0"},
    )
    await client.zadd(ready, {"s1": 1, "h1": 2, "t1": 3, "ghost": 4})
    for bad in ("s1", "h1", "t1"):
        with pytest.raises(CorruptRecord):
            await store.get(bad)
    with capture_logs() as logs:
        listed = await store.list(Q)
        counts = await store.counts()
        got = await claim(store)
    assert [c.id for c in listed] == [good.id]
    assert counts[Q]["pending"] == 5  # index sizes: counted, not read
    assert got is not None and got.id == good.id
    reported = {e["key"] for e in logs if e["event"] == "store.corrupt_record"}
    assert {store.key("cb", x) for x in ("s1", "h1", "t1", "ghost")} <= reported
    assert await client.zcard(ready) == 0  # skipped entries no longer block the queue head


async def test_a_foreign_key_where_an_index_belongs_is_reported(
    store: CallbackStore, client: aioredis.Redis
) -> None:
    await add(store, "5551041")
    await client.delete(store.key("q", Q, "dial"))
    await client.set(store.key("q", Q, "dial"), "oops")
    with capture_logs() as logs:
        assert await claim(store) is None
        assert await store.reclaim_expired_leases() == []
        counts = await store.counts()
    assert counts[Q]["dialing"] == 0
    assert any(e["event"] == "store.corrupt_record" for e in logs)
    assert (await store.find_live(Q, "5551041")) is not None  # nothing was half-written
    await client.delete(store.key("q", Q, "dial"))
    await client.set(store.key("q", Q, "age"), "oops")
    with pytest.raises(CorruptRecord):
        await add(store, "5551042")
    assert await store.find_live(Q, "5551042") is None
    assert await client.zcard(store.key("q", Q, "ready")) == 1


async def test_unreachable_redis_raises_store_unavailable() -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    store = CallbackStore(client, clock=ManualClock(T0))
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await add(store, "5551050")
        with pytest.raises(StoreUnavailable):
            await claim(store)
        with pytest.raises(StoreUnavailable):
            await store.get("1")
    finally:
        await client.aclose()


async def test_acl_user_in_url_authenticates_and_a_wrong_password_is_unavailable(
    client: aioredis.Redis, redis_url: str
) -> None:
    await client.execute_command("ACL", "SETUSER", "cbtest", "on", ">s3cret", "~*", "+@all")
    host = redis_url.removeprefix("redis://")
    good = connect_redis(f"redis://cbtest:s3cret@{host}")
    bad = connect_redis(f"redis://cbtest:wrong@{host}")
    try:
        store = CallbackStore(good, clock=ManualClock(T0))
        await store.ping()
        assert (await add(store, "5551051")).state is State.PENDING
        with pytest.raises(StoreUnavailable) as err:
            await CallbackStore(bad).ping()
        assert "wrong" not in str(err.value)
    finally:
        await good.aclose()
        await bad.aclose()
        await client.execute_command("ACL", "DELUSER", "cbtest")


async def test_max_dialing_caps_claims_across_every_owner(
    store: CallbackStore, clock: ManualClock
) -> None:
    """Two instances share one Redis: together they never dial more than the cap."""
    for i in range(4):
        await add(store, f"20255501{i:02d}", join_s_ago=60 - i)
    first = await store.claim_next("support", owner="a", lease_ms=30_000, max_dialing=2)
    second = await store.claim_next("support", owner="b", lease_ms=30_000, max_dialing=2)
    assert first is not None and second is not None
    assert await store.claim_next("support", owner="a", lease_ms=30_000, max_dialing=2) is None
    assert await store.claim_next("support", owner="b", lease_ms=30_000, max_dialing=2) is None
    await store.record_outcome(
        first.id, "a", outcome=Outcome.CONNECTED, cause="", retry_at_ms=None, max_attempts=3
    )
    # The slot is free again ANSWERED_GRACE_MS after the agent answered, for every instance: a
    # pass that read the members just before (or whose AMI lags) still counts that one ready.
    for owner in ("a", "b"):
        assert (
            await store.claim_next("support", owner=owner, lease_ms=30_000, max_dialing=2) is None
        )
    clock.set_ms(T0 + ANSWERED_GRACE_MS - 1)
    assert await store.claim_next("support", owner="b", lease_ms=30_000, max_dialing=2) is None
    clock.set_ms(T0 + ANSWERED_GRACE_MS)
    third = await store.claim_next("support", owner="b", lease_ms=30_000, max_dialing=2)
    assert third is not None and third.id not in (first.id, second.id)
    assert await store.claim_next("support", owner="a", lease_ms=30_000, max_dialing=0) is None


async def test_a_number_is_never_dialled_by_two_callbacks_at_once(store: CallbackStore) -> None:
    """The same customer waiting in two queues gets one call at a time, not two."""
    support = await add(store, "2025550177", join_s_ago=90)
    sales, _ = await store.enqueue(
        queue="sales", number="2025550177", caller_name="", source_channel="",
        join_time_ms=T0 - 80_000, origin=Origin.PHONE,
    )  # fmt: skip
    other, _ = await store.enqueue(
        queue="sales", number="2025550188", caller_name="", source_channel="",
        join_time_ms=T0 - 10_000, origin=Origin.PHONE,
    )  # fmt: skip
    first = await store.claim_next("support", owner="a", lease_ms=30_000)
    assert first is not None and first.id == support.id
    # sales' first in line shares the number: it waits, and the next caller is dialled instead
    second = await store.claim_next("sales", owner="b", lease_ms=30_000)
    assert second is not None and second.id == other.id
    assert await store.claim_next("sales", owner="b", lease_ms=30_000) is None
    await store.record_outcome(
        first.id, "a", outcome=Outcome.BUSY, cause="BUSY/17", retry_at_ms=T0 + 60_000,
        max_attempts=3,
    )  # fmt: skip
    third = await store.claim_next("sales", owner="b", lease_ms=30_000)
    assert third is not None and third.id == sales.id


async def test_reason_and_origin_are_kept_and_audited_on_creation(store: CallbackStore) -> None:
    cb, created = await store.enqueue(
        queue="support", number="2025550199", join_time_ms=T0 - 60_000,
        origin=Origin.ABANDON, reason="technical",
    )  # fmt: skip
    assert created and cb.reason == "technical" and cb.origin is Origin.ABANDON
    assert (await store.get(cb.id)).reason == "technical"
    plain, _ = await store.enqueue(queue="support", number="2025550198", join_time_ms=T0)
    assert plain.reason == ""
    first = (await store.audit())[0]
    assert (first["id"], first["origin"], first["reason"]) == (cb.id, "abandon", "technical")


async def test_do_not_call_list_is_per_queue(store: CallbackStore) -> None:
    assert await store.dnc_add("support", "2025550199") is True
    assert await store.dnc_add("support", "2025550199") is False
    assert await store.dnc_has("support", "2025550199")
    assert not await store.dnc_has("sales", "2025550199")
    assert await store.dnc_list("support") == ["2025550199"]
    assert await store.dnc_remove("support", "2025550199") is True
    assert await store.dnc_list("support") == []

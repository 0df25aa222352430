"""The Redis key schema is written once: the Lua scripts use only names the keys module declares."""

from __future__ import annotations

import re

import pytest
import redis.asyncio as aioredis

from callback_ari.models import Outcome, State
from callback_ari.store import keys
from callback_ari.store.scripts import SCRIPTS
from callback_ari.store.store import CallbackStore

SCHEMA_NAME = re.compile(r"\b[KISO]_[A-Z_]+\b")  # K_ keys, I_ indexes, S_ states, O_ outcomes
LITERAL = re.compile(r"'([^'\\\n]*)'")
COMMENT = re.compile(r"--[^\n]*")
SPELLED_KEY = re.compile(r"\bP\s*\.\.")  # building a key by hand instead of K_*, kcb, kq


def bodies() -> dict[str, str]:
    """Each script without the generated header (which the test checks separately)."""
    header = keys.lua_header()
    out = {}
    for name, script in SCRIPTS.items():
        assert script.startswith(header), f"{name} does not start with the generated header"
        out[name] = COMMENT.sub("", script[len(header) :])
    return out


def test_the_scripts_use_only_declared_keys_indexes_and_states() -> None:
    declared = keys.lua_names()
    for name, body in bodies().items():
        used = set(SCHEMA_NAME.findall(body))
        assert used, f"{name} touches no key at all?"
        assert used <= declared, f"{name} uses {sorted(used - declared)}, not in store/keys.py"


def test_the_scripts_spell_no_key_index_or_state_of_their_own() -> None:
    # Global keys can only be built from P (caught below); 'q' and 'corrupt' also name a hash
    # field and a reply status, so only index, state and outcome names are checked as words.
    names = {*keys.INDEXES, *(s.value for s in State), *(o.value for o in Outcome)}
    for name, body in bodies().items():
        assert not SPELLED_KEY.search(body), f"{name} builds a key from P by hand"
        spelled = {lit for lit in LITERAL.findall(body) if lit in names or ":" in lit}
        assert not spelled, f"{name} spells {sorted(spelled)}: use the names from store/keys.py"


def test_the_header_declares_every_schema_entry() -> None:
    header = keys.lua_header()
    for name in keys.GLOBAL_KEYS:
        assert f"local K_{name.upper()} = P .. ':{name}'" in header
    for part in keys.INDEXES:
        assert f"'{part}'" in header
    assert "local function kcb(id)" in header and "local function kq(q, part)" in header


def test_key_builders_refuse_what_the_schema_does_not_declare() -> None:
    schema = keys.KeySchema("{cbari}")
    assert schema.key("seq") == "{cbari}:seq"
    assert schema.record("17") == "{cbari}:cb:17"
    assert schema.index("support", "ready") == "{cbari}:q:support:ready"
    for bad in (("nope",), ("q", "support", "nope"), ("cb",), ("q", "support")):
        with pytest.raises(ValueError, match="not a key of the store schema"):
            schema.key(*bad)


async def test_every_key_a_workload_leaves_in_redis_is_declared_with_its_type(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = CallbackStore(client, "t", terminal_ttl_s=3600)
    try:
        now = 1_000_000
        a, _ = await store.enqueue(
            queue="support", number="+12025550101", join_time_ms=1, now_ms=now
        )
        await store.enqueue(queue="support", number="+12025550102", join_time_ms=2, now_ms=now,
                            next_attempt_ms=now + 10_000)  # fmt: skip
        c, _ = await store.enqueue(queue="sales", number="+12025550103", join_time_ms=3, now_ms=now)
        d, _ = await store.enqueue(queue="sales", number="+12025550104", join_time_ms=4, now_ms=now)
        claimed = await store.claim_next("support", owner="w", lease_ms=1000, now_ms=now)
        assert claimed is not None and claimed.id == a.id
        await store.record_outcome(a.id, "w", outcome=Outcome.BUSY, retry_at_ms=now + 5,
                                   max_attempts=3, now_ms=now)  # fmt: skip
        await store.cancel(c.id, "test", now_ms=now)
        got = await store.claim_next("sales", owner="w", lease_ms=10, now_ms=now)
        assert got is not None and got.id == d.id
        await store.reclaim_expired_leases(now_ms=now + 100)
        got = await store.claim_next("sales", owner="w", lease_ms=1000, now_ms=now + 100)
        assert got is not None
        await store.record_outcome(d.id, "w", outcome=Outcome.CONNECTED, retry_at_ms=None,
                                   max_attempts=3, now_ms=now + 200)  # fmt: skip
        await store.expire_older_than("support", now + 1, now_ms=now + 300)
        await store.counts(now_ms=now + 300)
        schema = keys.KeySchema(store.namespace)
        seen: dict[str, str] = {}
        async for key in client.scan_iter(match=f"{store.namespace}:*"):
            entry = schema.classify(key)
            assert entry is not None, f"{key} is not in the key schema"
            seen[entry] = await client.type(key)
        types = {**{n: t for n, (t, _) in keys.GLOBAL_KEYS.items()}, keys.RECORD: "hash"}
        types |= {f"{keys.QUEUE}:*:{p}": t for p, (t, _) in keys.INDEXES.items()}
        for entry, kind in seen.items():
            assert kind == types[entry], f"{entry} holds a {kind}, declared {types[entry]}"
        assert {"seq", "queues", "audit", "cb", "q:*:s:connected", "q:*:s:cancelled"} <= set(seen)
    finally:
        await client.aclose()

"""Issue 15 acceptance: every way an offer and a callback can end moves exactly its counter.

One service run on the simulated PBX and a real redis-server: callers decline, stay silent,
fumble the keys three times and accept; a stored callback is cancelled because its caller
calls again, one expires, one fails on a busy line. The test then compares every counter
series before and after, so a path that counts twice, counts under the wrong label or is
folded into another result fails here.
"""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from callback_ari.models import Origin, State
from tests.harness import wait_for_callback
from tests.test_e2e_offer import (
    CONFIRM,
    INVALID,
    OFFER,
    RETURNING,
    STORED,
    TOO_MANY,
    Pbx,
    Person,
    asks_for_callback,
    callerid_readback,
    eventually,
    holding,
    scenario,
    until,
)

COUNTERS = (
    "callback_offers_total",
    "callback_offer_results_total",
    "callback_requested_total",
    "callback_finished_total",
    "callback_attempts_total",
    "callback_errors_total",
)


def counters(pbx: Pbx) -> dict[str, float]:
    """Every counter sample as the /metrics text shows it: "name{k=v,...}" -> value."""
    text = pbx.service.metrics.render().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in COUNTERS:
                shown = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{shown}}}"] = s.value
    return out


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}


async def accepts(pbx: Pbx, number: str) -> Person:
    """A holding caller asks for a callback on their caller ID and hears it stored."""
    person = await asks_for_callback(pbx, number)
    person.press("1")
    await person.hears_out(callerid_readback(number))
    await person.hears_out(CONFIRM)
    person.press("1")
    await person.hears(STORED)
    await until(pbx.sim, lambda: person.ch.destroyed)
    await pbx.idle()
    return person


async def test_every_ending_moves_exactly_its_counter(redis_url: str) -> None:
    async with scenario(redis_url, queue={"max_attempts": 1}) as pbx:
        hold_before = pbx.metric("callback_hold_at_offer_seconds_count", queue="support")
        before = counters(pbx)
        assert before  # every series exists at zero before anything happened
        assert before["callback_finished_total{origin=web,queue=support,state=expired}"] == 0

        declines = await asks_for_callback(pbx, "2025551001")
        declines.press("2")
        await declines.hears(RETURNING)
        await declines.back_in_queue()

        silent = await asks_for_callback(pbx, "2025551002")
        await silent.hears(RETURNING)  # after response_timeout (1 s)
        await silent.back_in_queue()

        fumbles = await asks_for_callback(pbx, "2025551003")
        for _ in range(2):
            fumbles.press("5")
            await fumbles.hears_out(f"{INVALID},{OFFER}")
        fumbles.press("5")
        await fumbles.hears(TOO_MANY)
        await fumbles.back_in_queue()
        await pbx.idle()
        for person in (declines, silent, fumbles):  # nobody older holds: no virtual-hold wait
            person.hang_up()
        await eventually(lambda: not pbx.service.watcher.callers("support"))

        # stored, then cancelled: the same caller calls again (on_recall = cancel)
        await accepts(pbx, "2025551004")
        again = await holding(pbx, "2025551004", "Alice")

        async with asyncio.timeout(10):
            await wait_for_callback(
                pbx.store, lambda cbs: any(cb.state is State.CANCELLED for cb in cbs)
            )
        again.hang_up()
        await eventually(lambda: not pbx.service.watcher.callers("support"))

        # expired: a web request older than max_age (4 h) found by housekeeping
        now = pbx.service.clock.now_ms()
        old, _ = await pbx.store.enqueue(
            queue="support", number="2025551006", join_time_ms=now - 5 * 3600_000,
            origin=Origin.WEB, now_ms=now - 5 * 3600_000,
        )  # fmt: skip
        assert pbx.service.dispatcher is not None
        await pbx.service.dispatcher.housekeeping()
        assert (await pbx.store.get(old.id)).state is State.EXPIRED

        # stored, then failed: the line is busy and max_attempts = 1
        pbx.sim.set_number_behaviour("2025551005", "busy")
        await accepts(pbx, "2025551005")
        pbx.sim.set_devstate("Custom:agent1", "NOT_INUSE")

        async with asyncio.timeout(10):
            await wait_for_callback(
                pbx.store, lambda cbs: any(cb.state is State.FAILED for cb in cbs)
            )
        # the counters move right after the store records the outcome
        busy = "callback_attempts_total{outcome=busy,queue=support}"
        await eventually(lambda: busy in moved(before, counters(pbx)))
        after = counters(pbx)
        assert moved(before, after) == {
            "callback_offers_total{entry=digit,queue=support}": 5,
            "callback_offer_results_total{queue=support,result=declined}": 1,
            "callback_offer_results_total{queue=support,result=silence}": 1,
            "callback_offer_results_total{queue=support,result=too_many_tries}": 1,
            "callback_offer_results_total{queue=support,result=stored}": 2,
            "callback_requested_total{origin=phone,queue=support}": 2,
            "callback_finished_total{origin=phone,queue=support,state=cancelled}": 1,
            "callback_finished_total{origin=web,queue=support,state=expired}": 1,
            "callback_finished_total{origin=phone,queue=support,state=failed}": 1,
            "callback_attempts_total{outcome=busy,queue=support}": 1,
        }
        assert pbx.metric("callback_hold_at_offer_seconds_count", queue="support") == (
            hold_before + 5
        )
        # a failed callback never connected: the promise histogram stays empty
        assert pbx.metric("callback_request_to_connected_seconds_count", queue="support") == 0

"""The HTTP API as an operator or a web form sees it: auth, validation, dedupe, cancel, health."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from callback_ari.clock import ManualClock
from callback_ari.config.loader import Config, load_config
from callback_ari.logs import configure_logging, reset_logging
from callback_ari.metrics import Metrics
from callback_ari.models import Origin, State
from callback_ari.ops.api import StatusDoc, build_status, create_app, serve
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.store.store import CallbackStore

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NUMBER = "2025550143"  # a valid US number (555-01xx is fictional)
START_MS = 1_800_000_000_000  # Friday 2027-01-15 08:00:00 UTC


def write_config(tmp_path: Path, *, token: str = TOKEN) -> Config:
    text = f"""
[general]
instance_id = test-instance
[ari]
password = ari-pass
[ami]
secret = ami-secret
[http]
token = {token}
[queue:support]
hours = mon-fri 08:00-18:00
timezone = UTC
max_age = 86400
max_pending = 5
[queue:sales]
"""
    path = tmp_path / "callback_ari.conf"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


@dataclass
class Harness:
    client: TestClient[Any, Any]
    store: CallbackStore
    clock: ManualClock
    config: Config
    links: dict[str, bool] = field(default_factory=dict)


async def _harness(tmp_path: Path, redis_url: str, token: str = TOKEN) -> AsyncIterator[Harness]:
    config = write_config(tmp_path, token=token)
    clock = ManualClock(START_MS)
    redis = aioredis.Redis.from_url(redis_url)
    store = CallbackStore(redis, prefix="t", clock=clock)
    metrics = Metrics()
    metrics.requested.labels("support", "web")
    links = {"ari": True, "ami": True, "redis": True}

    async def status() -> StatusDoc:
        return await build_status(
            store,
            config,
            clock,
            watcher_view=lambda q: {"ready_members": 2, "callers": []},
            in_flight=lambda q: 0,
            links=links,
        )

    app = create_app(
        store=store,
        config=config,
        metrics=metrics,
        readiness=lambda: dict(links),
        status=status,
        clock=clock,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Harness(client, store, clock, config, links)
    finally:
        await client.close()
        await redis.aclose()


@pytest.fixture
async def h(tmp_path: Path, redis_url: str) -> AsyncIterator[Harness]:
    async for harness in _harness(tmp_path, redis_url):
        yield harness


async def post(h: Harness, body: object, headers: dict[str, str] | None = None) -> Any:
    return await h.client.post("/api/v1/callbacks", json=body, headers=headers or AUTH)


async def error_of(resp: Any) -> dict[str, Any]:
    doc = await resp.json()
    assert set(doc) == {"error"}, doc
    err: dict[str, Any] = doc["error"]
    return err


# --- auth ------------------------------------------------------------------------------


async def test_api_requires_the_bearer_token(h: Harness) -> None:
    resp = await h.client.get("/api/v1/callbacks")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await error_of(resp))["code"] == "unauthorized"

    resp = await h.client.get("/api/v1/callbacks", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await h.client.get("/api/v1/status", headers={"Authorization": f"Basic {TOKEN}"})
    assert resp.status == 401
    resp = await h.client.get("/api/v1/nothing-here")
    assert resp.status == 401  # no route discovery without the token

    resp = await h.client.get("/api/v1/callbacks", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"callbacks": [], "next_cursor": None}


async def test_api_is_off_without_a_token_but_the_health_view_stays(
    tmp_path: Path, redis_url: str
) -> None:
    async for h in _harness(tmp_path, redis_url, token=""):
        for path in ("/api/v1/callbacks", "/api/v1/status"):
            resp = await h.client.get(path, headers={"Authorization": "Bearer "})
            assert resp.status == 404
            err = await error_of(resp)
            assert "token" in err["message"]
        resp = await post(h, {"queue": "support", "number": NUMBER})
        assert resp.status == 404
        assert (await h.client.get("/healthz")).status == 200
        # the page holds no data itself: it shows health from /readyz, figures need a token
        page = await h.client.get("/")
        assert page.status == 200
        assert 'id="health"' in await page.text()
        assert (await h.client.get("/static/status.js")).status == 200
        assert (await h.client.get("/readyz")).status in (200, 503)


# --- create: validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("911", "emergency"),
        ("112", "emergency"),
        ("19005550143", "premium"),
        ("+442079460018", "international"),
        ("12", "invalid"),
        ("555-CALL-ME", "invalid_chars"),
    ],
)
async def test_unsafe_numbers_are_rejected_like_on_the_phone(
    h: Harness, number: str, reason: str
) -> None:
    resp = await post(h, {"queue": "support", "number": number})
    assert resp.status == 422
    err = await error_of(resp)
    assert err["code"] == "number_rejected"
    assert err["reason"] == reason
    assert err["field"] == "number"
    assert await h.store.list() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queue": "support"}, "number"),
        ({"number": NUMBER}, "queue"),
        ({"queue": "nope", "number": NUMBER}, "queue"),
        ({"queue": "support", "number": 2025550143}, "number"),
        ({"queue": "support", "number": NUMBER, "name": ["x"]}, "name"),
        ({"queue": "support", "number": NUMBER, "extra": 1}, "extra"),
        ({"queue": "support", "number": NUMBER, "requested_at": "tomorrow"}, "requested_at"),
        ({"queue": "support", "number": NUMBER, "requested_at": "2027-01-15T10:00:00"},
         "requested_at"),
    ],
)  # fmt: skip
async def test_malformed_requests_name_the_field(
    h: Harness, body: dict[str, Any], field: str
) -> None:
    resp = await post(h, body)
    assert resp.status == 422
    err = await error_of(resp)
    assert err["code"] == "validation_failed"
    assert err["field"] == field


async def test_body_format_errors_have_stable_codes(h: Harness) -> None:
    url = "/api/v1/callbacks"
    json_headers = {**AUTH, "Content-Type": "application/json"}
    resp = await h.client.post(url, data=b"{not json", headers=json_headers)
    assert (resp.status, (await error_of(resp))["code"]) == (400, "invalid_json")
    resp = await h.client.post(url, data=b'{"queue": "\xff"}', headers=json_headers)
    assert (resp.status, (await error_of(resp))["code"]) == (400, "invalid_json")
    resp = await h.client.post(url, data=b"[1, 2]", headers=json_headers)
    assert (resp.status, (await error_of(resp))["code"]) == (422, "validation_failed")
    resp = await h.client.post(url, data=b"queue=support", headers={**AUTH,
                               "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (resp.status, (await error_of(resp))["code"]) == (415, "unsupported_media_type")
    huge = json.dumps({"queue": "support", "number": NUMBER, "name": "x" * 40_000})
    resp = await h.client.post(url, data=huge.encode(), headers=json_headers)
    assert (resp.status, (await error_of(resp))["code"]) == (413, "payload_too_large")
    resp = await h.client.put(url, json={}, headers=AUTH)
    assert resp.status == 405
    assert (await error_of(resp))["code"] == "method_not_allowed"


async def test_scheduled_request_must_fall_in_business_hours(h: Harness) -> None:
    evening = "2027-01-15T20:00:00Z"  # Friday after 18:00
    resp = await post(h, {"queue": "support", "number": NUMBER, "requested_at": evening})
    assert resp.status == 422
    err = await error_of(resp)
    assert (err["code"], err["field"], err["reason"]) == (
        "validation_failed", "requested_at", "outside_business_hours",
    )  # fmt: skip
    past = "2027-01-15T07:00:00+00:00"
    resp = await post(h, {"queue": "support", "number": NUMBER, "requested_at": past})
    assert (await error_of(resp))["reason"] == "in_the_past"
    far = "2027-01-19T10:00:00Z"  # beyond max_age (1 day)
    resp = await post(h, {"queue": "support", "number": NUMBER, "requested_at": far})
    assert (await error_of(resp))["reason"] == "too_far_ahead"

    ok = "2027-01-15T11:30:00+01:00"  # 10:30 UTC, open
    resp = await post(h, {"queue": "support", "number": NUMBER, "requested_at": ok})
    assert resp.status == 201
    cb = (await resp.json())["callback"]
    assert cb["next_attempt_at"] == "2027-01-15T10:30:00.000Z"
    stored = await h.store.get(cb["id"])
    assert stored.next_attempt_ms == START_MS + int(2.5 * 3600 * 1000)
    assert stored.origin is Origin.WEB


# --- create: dedupe and the record ----------------------------------------------------------


async def test_second_request_for_the_same_number_is_not_a_new_callback(h: Harness) -> None:
    resp = await post(h, {"queue": "support", "number": "(202) 555-0143", "name": "Ann"})
    assert resp.status == 201
    first = await resp.json()
    assert first["created"] is True
    assert resp.headers["Location"] == f"/api/v1/callbacks/{first['callback']['id']}"
    assert first["callback"]["number"] == "******0143"
    assert first["callback"]["state"] == "pending"
    assert first["callback"]["origin"] == "web"

    h.clock.advance(30)
    resp = await post(h, {"queue": "support", "number": "202-555-0143"})
    assert resp.status == 200
    again = await resp.json()
    assert again["created"] is False
    assert again["callback"]["id"] == first["callback"]["id"]

    stored = await h.store.get(first["callback"]["id"])
    assert stored.number == NUMBER
    assert stored.join_time_ms == START_MS
    assert stored.caller_name == "Ann"

    resp = await h.client.get(f"/api/v1/callbacks/{stored.id}", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["callback"]["id"] == stored.id
    resp = await h.client.get("/api/v1/callbacks/does-not-exist", headers=AUTH)
    assert (resp.status, (await error_of(resp))["code"]) == (404, "not_found")


async def test_queue_full_is_a_conflict(h: Harness) -> None:
    for i in range(5):
        resp = await post(h, {"queue": "support", "number": f"20255501{50 + i}"})
        assert resp.status == 201
    resp = await post(h, {"queue": "support", "number": "2025550199"})
    assert resp.status == 409
    assert (await error_of(resp))["reason"] == "full"
    resp = await post(h, {"queue": "support", "number": "2025550150"})
    assert resp.status == 200  # a duplicate is still answered


# --- cancel -----------------------------------------------------------------------------


async def test_cancel_then_cancel_again_is_a_conflict(h: Harness) -> None:
    resp = await post(h, {"queue": "sales", "number": NUMBER})
    cb_id = (await resp.json())["callback"]["id"]
    resp = await h.client.post(f"/api/v1/callbacks/{cb_id}/cancel", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["callback"]["state"] == "cancelled"
    assert (await h.store.get(cb_id)).state is State.CANCELLED

    resp = await h.client.delete(f"/api/v1/callbacks/{cb_id}", headers=AUTH)
    assert resp.status == 409
    assert (await error_of(resp))["code"] == "conflict"
    resp = await h.client.delete("/api/v1/callbacks/unknown-id", headers=AUTH)
    assert resp.status == 404

    # a cancelled callback no longer blocks a new request for the same number
    resp = await post(h, {"queue": "sales", "number": NUMBER})
    assert resp.status == 201
    other = (await resp.json())["callback"]["id"]
    resp = await h.client.delete(
        f"/api/v1/callbacks/{other}", json={"reason": "customer called in"}, headers=AUTH
    )
    assert resp.status == 200


# --- list -------------------------------------------------------------------------------


async def test_listing_pages_through_every_callback_once(h: Harness) -> None:
    created = set()
    for i in range(7):
        h.clock.advance(1)
        resp = await post(h, {"queue": "sales", "number": f"20255501{10 + i}"})
        created.add((await resp.json())["callback"]["id"])
    await post(h, {"queue": "support", "number": NUMBER})

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "queue=sales&limit=3" + (f"&cursor={cursor}" if cursor else "")
        resp = await h.client.get(f"/api/v1/callbacks?{query}", headers=AUTH)
        assert resp.status == 200
        doc = await resp.json()
        pages += 1
        seen.extend(cb["id"] for cb in doc["callbacks"])
        assert all(cb["queue"] == "sales" for cb in doc["callbacks"])
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == 7
    assert set(seen) == created

    resp = await h.client.get("/api/v1/callbacks?state=cancelled", headers=AUTH)
    assert (await resp.json())["callbacks"] == []
    for bad in ("limit=0", "limit=501", "limit=x", "state=bogus", "queue=nope", "color=red"):
        resp = await h.client.get(f"/api/v1/callbacks?{bad}", headers=AUTH)
        assert resp.status == 422, bad
        assert (await error_of(resp))["code"] == "validation_failed"


# --- health, readiness, metrics, status -----------------------------------------------------


async def test_health_readiness_and_metrics_need_no_token(h: Harness) -> None:
    resp = await h.client.get("/healthz")
    assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    resp = await h.client.get("/readyz")
    assert resp.status == 200
    h.links["ami"] = False
    h.links["ari"] = False
    resp = await h.client.get("/readyz")
    assert resp.status == 503
    doc = await resp.json()
    assert doc["status"] == "unavailable"
    assert doc["down"] == ["ami", "ari"]

    await post(h, {"queue": "support", "number": NUMBER})
    resp = await h.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    assert 'callback_requested_total{origin="web",queue="support"} 1.0' in text


async def test_status_document_and_page(h: Harness) -> None:
    resp = await post(h, {"queue": "support", "number": NUMBER})
    cb_id = (await resp.json())["callback"]["id"]
    resp = await h.client.get("/api/v1/status", headers=AUTH)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["instance"] == "test-instance"
    assert doc["links"] == {"ari": True, "ami": True, "redis": True}
    support = next(q for q in doc["queues"] if q["name"] == "support")
    assert support["ready_members"] == 2
    assert support["pending"] == [
        {"id": cb_id, "number": "******0143", "state": "pending", "attempts": 0,
         "next_attempt_at": None,  # due now: a web request has no inbound call to wait out
         "origin": "web", "reason": "", "recording": None}
    ]  # fmt: skip
    assert [q["name"] for q in doc["queues"]] == ["support", "sales"]

    page = await h.client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    for needle in ('id="token-form"', 'id="queues"', 'src="/static/status.js"', 'lang="en"'):
        assert needle in html
    assert "http://" not in html and "https://" not in html  # no external assets
    js = await h.client.get("/static/status.js")
    assert js.status == 200
    body = await js.text()
    assert "sessionStorage" in body and "Authorization" in body and "2000" in body


# --- logging --------------------------------------------------------------------------------


async def test_access_log_has_no_token_or_number(h: Harness) -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    try:
        resp = await post(h, {"queue": "support", "number": NUMBER})
        cb_id = (await resp.json())["callback"]["id"]
        await h.client.get(f"/api/v1/callbacks/{cb_id}?x={NUMBER}", headers=AUTH)
        await h.client.get(f"/api/v1/callbacks/{NUMBER}", headers=AUTH)
        await h.client.get(f"/nowhere/{NUMBER}", headers=AUTH)
        await post(h, {"queue": "support", "number": "911"})
    finally:
        reset_logging()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    requests = [entry for entry in lines if entry["event"] == "http.request"]
    assert len(requests) == 5
    assert {"method", "path", "status", "duration_ms"} <= set(requests[0])
    assert requests[0]["path"] == "/api/v1/callbacks"
    assert requests[0]["status"] == 201
    assert requests[1]["callback_id"] == cb_id
    text = out.getvalue()
    assert TOKEN not in text
    assert NUMBER not in text
    assert "5550143" not in text


async def test_serve_listens_until_cancelled(h: Harness) -> None:
    app = create_app(
        store=h.store,
        config=h.config,
        metrics=Metrics(),
        readiness=dict,
        status=dict_status,
        clock=h.clock,
    )
    port = free_port()
    listening = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(serve(app, "127.0.0.1", port, listening=listening))
            async with asyncio.timeout(10):
                await listening.wait()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            task.cancel()
        assert task.cancelled()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


async def dict_status() -> dict[str, Any]:
    return {}


async def test_status_shows_callers_masked_and_last_outcomes_newest_first(h: Harness) -> None:
    ids = []
    for i in range(12):
        resp = await post(h, {"queue": "sales", "number": f"20255501{20 + i}"})
        ids.append((await resp.json())["callback"]["id"])
    for cb_id in ids:
        h.clock.advance(1)
        await h.store.cancel(cb_id, reason="test")
    doc = await build_status(
        h.store,
        h.config,
        h.clock,
        watcher_view=lambda q: {
            "ready_members": 1,
            "callers": [{"channel": "PJSIP/t-1", "caller": NUMBER, "position": 1, "hold_s": 42.25}],
        },
        in_flight=lambda q: 3 if q == "sales" else 0,
        links={"ari": True, "ami": False, "redis": True},
    )
    sales = next(q for q in doc["queues"] if q["name"] == "sales")
    assert sales["callers"] == [
        {"channel": "PJSIP/t-1", "caller": "******0143", "position": 1, "hold_s": 42.2}
    ]
    assert sales["in_flight"] == 3
    assert sales["pending"] == []
    assert [o["id"] for o in sales["last_outcomes"]] == ids[::-1][:10]
    assert sales["last_outcomes"][0] == {
        "id": ids[-1], "outcome": "cancelled", "detail": "",
        "at": "2027-01-15T08:00:12.000Z",
    }  # fmt: skip
    assert doc["links"]["ami"] is False


async def test_do_not_call_list_over_the_api(h: Harness) -> None:
    """Numbers go in the body, are kept in dial form per queue, and the API refuses junk."""
    url = "/api/v1/queues/support/dnc"
    resp = await h.client.post(url, json={"number": "(202) 555-0143"}, headers=AUTH)
    assert resp.status == 201
    assert (await resp.json())["number"] == "2025550143"
    resp = await h.client.post(url, json={"number": "+12025550143"}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["added"] is False
    resp = await h.client.get(url, headers=AUTH)
    assert (await resp.json()) == {"queue": "support", "numbers": ["2025550143"]}
    assert await h.store.dnc_list("sales") == []
    resp = await h.client.post(url, json={"number": "911"}, headers=AUTH)
    assert resp.status == 422 and (await error_of(resp))["reason"] == "emergency"
    resp = await h.client.post("/api/v1/queues/nosuch/dnc", json={"number": "2025550143"},
                               headers=AUTH)  # fmt: skip
    assert resp.status == 404
    resp = await h.client.get(url)
    assert resp.status == 401  # the token guards it like every /api/ route
    resp = await h.client.post(url + "/remove", json={"number": "2025550143"}, headers=AUTH)
    assert resp.status == 200
    resp = await h.client.post(url + "/remove", json={"number": "2025550143"}, headers=AUTH)
    assert resp.status == 404
    assert await h.store.dnc_list("support") == []

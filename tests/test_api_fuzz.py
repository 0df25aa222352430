"""Whatever a client sends, the API answers with a 4xx JSON error or success, never a 5xx."""

from __future__ import annotations

import asyncio
import io
import json
import string
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callback_ari.clock import ManualClock
from callback_ari.metrics import Metrics
from callback_ari.ops.api import create_app
from callback_ari.store.store import CallbackStore
from tests.test_api import AUTH, START_MS, write_config

FIELDS = ("queue", "number", "name", "requested_at")
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
numbers = st.one_of(
    st.from_regex(r"\+?[0-9 ().-]{0,24}", fullmatch=True),
    st.sampled_from(["911", "112", "19005550143", "+442079460018", "2025550143", ""]),
    st.text(max_size=70),
)
times = st.one_of(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 1, 1),
        timezones=st.sampled_from([UTC, None]),
    ).map(lambda d: d.isoformat()),
    st.integers(min_value=-120, max_value=3000).map(
        lambda m: (datetime.fromtimestamp(START_MS / 1000, UTC) + timedelta(minutes=m)).isoformat()
    ),
    st.text(max_size=40),
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "queue": st.sampled_from(["support", "sales", "nope", ""]) | json_values,
    "number": numbers | json_values,
    "name": st.text(max_size=100) | json_values,
    "requested_at": times | json_values,
}
plausible_bodies = st.fixed_dictionaries(
    {}, optional={k: v for k, v in field_values.items()}
) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=6)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x"]
)

TARGETS = [
    "/api/v1/callbacks",
    "/api/v1/callbacks/{x}",
    "/api/v1/callbacks/{x}/cancel",
    "/api/v1/callbacks?limit={x}",
    "/api/v1/callbacks?state={x}&cursor={x}",
    "/api/v1/status",
    "/{x}",
]
Send = Callable[[str, str, bytes, str], Coroutine[Any, Any, tuple[int, Any]]]


def run_fuzz(tmp_path: Path, redis_url: str, check: Callable[[asyncio.Runner, Send], None]) -> None:
    """Start the app on a private loop, let ``check`` drive hypothesis against it."""
    with asyncio.Runner() as runner:
        config = write_config(tmp_path)
        clock = ManualClock(START_MS)
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        store = CallbackStore(redis, prefix="fuzz", clock=clock)

        async def status() -> dict[str, Any]:
            return {"generated_at": "", "instance": "x", "links": {}, "queues": []}

        app = create_app(
            store=store,
            config=config,
            metrics=Metrics(),
            readiness=lambda: {"redis": True},
            status=status,
            clock=clock,
        )

        async def start() -> TestClient[Any, Any]:
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            return client

        client = runner.run(start())

        async def send(method: str, path: str, body: bytes, ctype: str) -> tuple[int, Any]:
            headers = dict(AUTH)
            if ctype:
                headers["Content-Type"] = ctype
            data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > 512 * 1024 else body
            resp = await client.request(method, path, data=data, headers=headers)
            raw = await resp.read()
            doc = json.loads(raw) if resp.content_type == "application/json" else None
            return resp.status, doc

        try:
            check(runner, send)
        finally:
            runner.run(client.close())
            runner.run(redis.aclose())


def assert_sane(status: int, doc: Any) -> None:
    assert status < 500, (status, doc)
    if status >= 400:
        assert isinstance(doc, dict) and set(doc) == {"error"}, doc
        assert isinstance(doc["error"]["code"], str)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow  # 150 fuzzed requests: ~20 s
def test_random_json_bodies_never_break_the_api(tmp_path: Path, redis_url: str) -> None:
    def check(runner: asyncio.Runner, send: Send) -> None:
        @FUZZ
        @given(body=plausible_bodies | json_values, ctype=content_types)
        def one(body: Any, ctype: str) -> None:
            status, doc = runner.run(
                send("POST", "/api/v1/callbacks", json.dumps(body).encode(), ctype)
            )
            assert_sane(status, doc)
            if status in (200, 201):
                assert doc["callback"]["state"] == "pending"

        one()

    run_fuzz(tmp_path, redis_url, check)


def test_random_bytes_and_paths_never_break_the_api(tmp_path: Path, redis_url: str) -> None:
    path_text = st.text(alphabet=string.ascii_letters + string.digits + "-_.%~", max_size=70)

    def check(runner: asyncio.Runner, send: Send) -> None:
        @FUZZ
        @given(
            body=st.binary(max_size=3000),
            ctype=content_types,
            method=st.sampled_from(["POST", "DELETE", "GET", "PUT", "PATCH"]),
            target=st.sampled_from(TARGETS),
            x=path_text,
        )
        def one(body: bytes, ctype: str, method: str, target: str, x: str) -> None:
            status, doc = runner.run(send(method, target.format(x=x), body, ctype))
            assert status < 500, (status, doc)
            if doc is not None and status >= 400:
                assert set(doc) == {"error"}

        one()

    run_fuzz(tmp_path, redis_url, check)


def test_huge_and_deep_bodies_are_refused_cleanly(tmp_path: Path, redis_url: str) -> None:
    def check(runner: asyncio.Runner, send: Send) -> None:
        cases = [
            (b"{" + b" " * (2 * 1024 * 1024) + b"}", 413, "payload_too_large"),
            (b'{"name": "' + b"x" * 20_000 + b'"}', 413, "payload_too_large"),
            (b"[" * 9000 + b"]" * 9000, 413, "payload_too_large"),
            (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
            (b'{"queue": "support", "number": "\xc3\x28"}', 400, "invalid_json"),
            (b'{"queue": NaN}', 400, "invalid_json"),
            (b"\xef\xbb\xbf{}", 400, "invalid_json"),
        ]
        for body, status, code in cases:
            got, doc = runner.run(send("POST", "/api/v1/callbacks", body, "application/json"))
            assert (got, doc["error"]["code"]) == (status, code), body[:40]

    run_fuzz(tmp_path, redis_url, check)

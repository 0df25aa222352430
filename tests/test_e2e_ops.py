"""What the people running it see: /metrics after a whole callback, /readyz while AMI is down,
and the status page in a real headless Chromium.

Real service, real redis-server, the simulated PBX on real sockets running our dialplan kit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callback_ari import __version__
from callback_ari.masking import mask
from callback_ari.models import State
from callback_ari.service.service import Service
from callback_ari.sim.simpbx.ari_handlers import VERSION as ASTERISK_VERSION
from callback_ari.sim.simpbx.redis_process import free_port
from callback_ari.sim.simpbx.sim import SimAsterisk
from tests.harness import (
    KIT,
    REPO,
    running_service,
    service_config,
    store_for,
    wait_for_callback,
    wait_prompt,
)

TIME_SCALE = 0.05
TOKEN = "ops-test-token-5f1c"
INCOMING = (
    "[from-trunk]\nexten => support,1,Gosub(callback-queue,support,1())\n same => n,Hangup()\n"
)
ARTIFACTS = REPO / "test-artifacts"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=TIME_SCALE, dialplan=KIT + INCOMING) as pbx:
        pbx.add_queue("support", ["agent1", "agent2"], handle_time=2.0)
        pbx.set_devstate("Custom:agent1", "INUSE")
        pbx.set_devstate("Custom:agent2", "INUSE")
        yield pbx


@contextlib.asynccontextmanager
async def http_service(
    sim: SimAsterisk, redis_url: str, **queue_keys: Any
) -> AsyncIterator[tuple[Service, str]]:
    """The service with its HTTP API on a free port; yields it and the base URL."""
    port = free_port()
    config = service_config(
        sim, redis_url, http_port=port, token=TOKEN, queues={"support": dict(queue_keys)}
    )
    async with running_service(config) as service:
        async with asyncio.timeout(5):
            await service.http_ready.wait()
        yield service, f"http://127.0.0.1:{port}"


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    """Every sample of /metrics keyed by (sample name, labels)."""
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, prefix: str) -> dict[str, float]:
    """Series under ``prefix`` whose value changed, as "name{k=v,...}" -> delta."""
    changes: dict[str, float] = {}
    for key in before.keys() | after.keys():
        name, labels = key
        if not name.startswith(prefix):
            continue
        delta = after.get(key, 0.0) - before.get(key, 0.0)
        if delta:
            shown = ",".join(f"{k}={v}" for k, v in sorted(labels))
            changes[f"{name}{{{shown}}}"] = delta
    return changes


async def offer_and_accept(sim: SimAsterisk, channel_id: str, *, since: int = 0) -> None:
    """Play the caller: "1" for a callback when offered, "1" to confirm the read-back number."""
    mark = await wait_prompt(sim, channel_id, "queue-thankyou", since=since)
    sim.press_digit(channel_id, "1")
    await wait_prompt(sim, channel_id, "if-correct-press", since=mark)
    sim.press_digit(channel_id, "1")


# --- metrics ---------------------------------------------------------------------------


async def test_metrics_count_one_whole_callback_exactly(sim: SimAsterisk, redis_url: str) -> None:
    client, store = await store_for(redis_url)
    try:
        async with (
            http_service(sim, redis_url) as (_service, base),
            aiohttp.ClientSession() as http,
        ):
            before = await scrape(http, base)
            for link in ("ari", "ami", "redis"):
                assert value(before, "callback_link_up", link=link) == 1, link

            caller = sim.caller_joins("support", "2025551234", "Alice")
            await offer_and_accept(sim, caller.id)  # withdrawn after offer_threshold (1 s)
            async with asyncio.timeout(10):
                await wait_for_callback(store, lambda cbs: len(cbs) == 1)
            await sim.wait_for(lambda: caller.destroyed, timeout=10)
            # the first attempt is held until the service has seen that hang-up (grace 0 here);
            # ready-to-dial measures a member turning ready while a callback is due
            async with asyncio.timeout(10):
                await wait_for_callback(
                    store, lambda cbs: cbs[0].next_attempt_ms <= time.time() * 1000
                )
            sim.set_devstate("Custom:agent1", "NOT_INUSE")
            async with asyncio.timeout(15):
                await wait_for_callback(store, lambda cbs: cbs and cbs[0].state is State.CONNECTED)
            await sim.wait_ami_event("AgentConnect", timeout=10)

            # the attempt counter moves right after the store records the outcome
            async with asyncio.timeout(5):
                while True:
                    after = await scrape(http, base)
                    q = {"queue": "support"}
                    if value(after, "callback_attempts_total", **q, outcome="connected"):
                        break
                    await asyncio.sleep(0.05)

        q = {"queue": "support"}
        assert moved(before, after, "callback_offers_total") == {
            "callback_offers_total{entry=withdraw,queue=support}": 1
        }
        assert moved(before, after, "callback_offer_results_total") == {
            "callback_offer_results_total{queue=support,result=stored}": 1
        }
        assert moved(before, after, "callback_requested_total") == {
            "callback_requested_total{origin=phone,queue=support}": 1
        }
        assert moved(before, after, "callback_finished_total") == {
            "callback_finished_total{origin=phone,queue=support,state=connected}": 1
        }
        assert value(after, "callback_request_to_connected_seconds_count", **q) == 1
        assert moved(before, after, "callback_attempts_total") == {
            "callback_attempts_total{outcome=connected,queue=support}": 1
        }
        assert value(after, "callback_ready_to_dial_seconds_count", **q) == 1
        latency = value(after, "callback_ready_to_dial_seconds_sum", **q)
        assert 0 <= latency < 5.0  # member ready -> originate sent, on an idle test machine
        assert value(after, "callback_hold_at_offer_seconds_count", **q) == 1
        held = value(after, "callback_hold_at_offer_seconds_sum", **q)
        assert held >= 1.0  # offered once the hold passed offer_threshold = 1 s
        # the caller held about a second: only the buckets from 15 s up contain it
        assert value(after, "callback_hold_at_offer_seconds_bucket", **q, le="15.0") == 1
        for link in ("ari", "ami", "redis"):
            assert value(after, "callback_link_up", link=link) == 1, link
        assert moved(before, after, "callback_errors_total") == {}
        assert moved(before, after, "callback_reconnects_total") == {}
        # build info: our version and the Asterisk version GET /asterisk/info reported
        assert value(after, "callback_build_info", version=__version__,
                     asterisk_version=ASTERISK_VERSION) == 1  # fmt: skip
    finally:
        await client.aclose()


# --- readiness -------------------------------------------------------------------------


async def readyz(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base}/readyz") as resp:
        return resp.status, await resp.json()


async def wait_readyz(http: aiohttp.ClientSession, base: str, status: int) -> dict[str, Any]:
    """Poll /readyz the way a load balancer does until it answers ``status``."""
    async with asyncio.timeout(10):
        while True:
            got, body = await readyz(http, base)
            if got == status:
                return body
            await asyncio.sleep(0.05)


@pytest.mark.slow  # waits out an AMI outage and its backoff
async def test_readyz_names_ami_while_it_is_down_and_recovers(
    sim: SimAsterisk, redis_url: str
) -> None:
    async with (
        http_service(sim, redis_url) as (_service, base),
        aiohttp.ClientSession() as http,
    ):
        status, body = await readyz(http, base)
        assert status == 200
        assert body == {"status": "ok", "checks": {"ari": True, "ami": True, "redis": True}}

        # half-open AMI: the socket stays up but nothing answers (pings time out after 1 s)
        sim.freeze_ami()
        body = await wait_readyz(http, base, 503)
        assert body["status"] == "unavailable"
        assert body["down"] == ["ami"]
        assert body["checks"] == {"ari": True, "ami": False, "redis": True}
        # the metric follows the link at once, not on the next gauge refresh
        down = await scrape(http, base)
        assert value(down, "callback_link_up", link="ami") == 0
        assert value(down, "callback_link_up", link="ari") == 1
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200  # alive, just not ready: no restart wanted
        sim.freeze_ami(False)
        await wait_readyz(http, base, 200)

        # AMI gone and the port closed: reconnects are refused until it listens again
        await sim.refuse_connections()
        sim.drop_ami_connections()
        body = await wait_readyz(http, base, 503)
        assert body["down"] == ["ami"]
        await sim.refuse_connections(False)
        body = await wait_readyz(http, base, 200)
        assert body["checks"] == {"ari": True, "ami": True, "redis": True}

        after = await scrape(http, base)
        assert value(after, "callback_reconnects_total", link="ami") == 2
        assert value(after, "callback_link_up", link="ami") == 1


# --- status page in a real browser --------------------------------------------------------


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class DevTools:
    """A minimal Chrome DevTools Protocol client: one page session over the browser socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._session = ""
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        await self._ws.send_str(json.dumps(message))
        while True:
            reply = json.loads(await self._ws.receive_str())
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise AssertionError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    async def open_page(self) -> None:
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self._session = attached["sessionId"]
        await self.call("Page.enable")
        await self.call("Runtime.enable")

    async def navigate(self, url: str) -> None:
        self.events.clear()
        await self.call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(json.loads(await self._ws.receive_str()))

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (promises are awaited)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[DevTools]:
    """Headless Chromium on a private profile, driven over its DevTools socket."""
    with tempfile.TemporaryDirectory(prefix="cbari-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        drain: asyncio.Task[None] | None = None
        try:
            ws_url = ""
            async with asyncio.timeout(30):
                while not ws_url:
                    line = (await proc.stderr.readline()).decode("utf-8", "replace")
                    if not line:
                        raise AssertionError("chromium exited before its DevTools socket opened")
                    found = re.search(r"DevTools listening on (ws://\S+)", line)
                    ws_url = found.group(1) if found else ""
            drain = asyncio.create_task(_drain(proc.stderr))  # a full pipe would stall it
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024) as ws,
            ):
                devtools = DevTools(ws)
                await devtools.open_page()
                yield devtools
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def visible(element_id: str) -> str:
    """JS: is the element rendered (not hidden by its attribute or by CSS)?"""
    return f"document.getElementById({json.dumps(element_id)}).checkVisibility()"


def wait_js(condition: str, result: str, timeout_ms: int = 10_000) -> str:
    """JS that resolves to ``result`` once ``condition`` holds (checked on every DOM change)."""
    return f"""new Promise((resolve, reject) => {{
        const done = () => {{ if ({condition}) {{ obs.disconnect(); resolve({result}); }} }};
        const obs = new MutationObserver(done);
        obs.observe(document, {{subtree: true, childList: true, characterData: true,
                                attributes: true}});
        setTimeout(() => {{ obs.disconnect(); reject(new Error("timed out: " +
            document.body.innerText)); }}, {timeout_ms});
        done();
    }})"""


def chart_pixels(png: Path, rect: dict[str, float], color: str) -> int:
    """How many pixels of ``color`` (#rrggbb) the screenshot has inside ``rect`` (CSS px)."""
    from PIL import Image

    want = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    with Image.open(png) as image:
        box = (
            int(rect["x"]),
            int(rect["y"]),
            int(rect["x"] + rect["w"]),
            int(rect["y"] + rect["h"]),
        )
        region = image.convert("RGB").crop(box)
        return sum(
            n
            for n, rgb in region.getcolors(maxcolors=1 << 20) or []
            if all(abs(a - b) <= 24 for a, b in zip(rgb, want, strict=True))
        )


@pytest.mark.slow  # a headless browser
async def test_status_page_shows_pending_callback_and_holding_caller(
    sim: SimAsterisk, redis_url: str
) -> None:
    binary = chromium_binary()
    if binary is None:
        message = "no chromium binary: bash .ci/install --test installs it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)

    client, store = await store_for(redis_url)
    try:
        # offer_threshold 0: nobody is offered by time; Alice asks by pressing 1 in the queue
        async with http_service(sim, redis_url, offer_threshold=0) as (service, base):
            assert service.store is not None
            trends = service.trends

            async def sample() -> None:  # the trend buffer's deterministic hook
                await service.refresh_gauges()
                await trends.sample(service.store)

            await sample()  # nobody yet
            alice = sim.caller_joins("support", "2025551234", "Alice")
            await sim.wait_for(lambda: alice in sim.queue_callers("support"), timeout=5)
            await sample()  # Alice holding
            sim.press_digit(alice.id, "1")
            await offer_and_accept(sim, alice.id)
            async with asyncio.timeout(10):
                stored = await wait_for_callback(store, lambda cbs: len(cbs) == 1)
            assert stored[0].state is State.PENDING
            await sim.wait_for(lambda: alice.destroyed, timeout=10)
            await sample()  # one callback pending, nobody holding
            bob = sim.caller_joins("support", "3125550199", "Bob")
            await sim.wait_for(lambda: bob in sim.queue_callers("support"), timeout=5)
            carol = sim.caller_joins("support", "3125550177", "Carol")
            await sim.wait_for(lambda: carol in sim.queue_callers("support"), timeout=5)
            await sample()  # two holding, one pending
            await sample()

            async with asyncio.timeout(45), chromium(binary) as page:
                await page.navigate(base + "/")
                # without the token: the health view only, no numbers and no names
                health = await page.evaluate(
                    wait_js(
                        "document.getElementById('health-state').textContent === 'ready'",
                        "document.body.innerText",
                    )
                )
                assert "ARI up" in health and "AMI up" in health and "REDIS up" in health
                for secret in ("support", "1234", "0199", "Requested today"):
                    assert secret not in health
                assert await page.evaluate(visible("token-form"))
                assert not await page.evaluate(visible("dashboard"))
                await page.evaluate(
                    f"""document.getElementById('token').value = {json.dumps(TOKEN)};
                    document.getElementById('token-form').requestSubmit(); true"""
                )
                section = "document.querySelector('section.queue[data-queue=\"support\"]')"
                pending = f"{section}?.querySelector('table.pending tbody')?.innerText ?? ''"
                callers = f"{section}?.querySelector('table.callers tbody')?.innerText ?? ''"
                rows = await page.evaluate(
                    wait_js(
                        f"({pending}).includes('1234') && ({callers}).includes('0199')",
                        f"{{pending: {pending}, callers: {callers}, "
                        f"body: document.body.innerText, url: location.href, "
                        f"kept: sessionStorage.getItem('callback-ari-token'), "
                        f"form_shown: {visible('token-form')}}}",
                    )
                )
                charts = await page.evaluate(
                    wait_js(
                        f"{section}?.querySelectorAll('.chart[data-points]').length === 4",
                        f"""Object.fromEntries([...{section}.querySelectorAll('.chart')].map(f => {{
                            const r = f.querySelector('svg')?.getBoundingClientRect();
                            return [f.dataset.series, {{points: Number(f.dataset.points),
                                polylines: f.querySelectorAll('polyline').length,
                                rect: r ? {{x: r.x + scrollX, y: r.y + scrollY, w: r.width,
                                           h: r.height}} : null}}];
                        }}))""",
                    )
                )
                tiles = await page.evaluate(
                    f"""Object.fromEntries([...{section}.querySelectorAll('.tiles div')].map(
                        d => [d.querySelector('dt').textContent,
                              d.querySelector('dd').textContent]))"""
                )
                await page.screenshot(ARTIFACTS / "status-page.png")

        # one pending callback: id, masked number, state, attempts, next attempt, reason, origin
        assert rows["pending"].split("\t") == [
            stored[0].id,
            mask("2025551234"),
            "pending",
            "0",
            "now",
            "-",
            stored[0].origin.value,
        ]
        # one caller still holding in the queue: position 1, masked number, their channel
        first_row = rows["callers"].split("\n")[0]
        position, shown, channel, _held = first_row.split("\t")
        assert (position, shown, channel) == ("1", mask("3125550199"), bob.name)
        for raw in ("2025551234", "3125550199"):
            assert raw not in rows["body"]
        assert not rows["form_shown"]  # signed in: the token form is gone
        assert "Queue support" in rows["body"]
        assert "ARI up" in rows["body"] and "AMI up" in rows["body"]
        # the token lives in this tab's sessionStorage only, never in the address bar
        assert rows["kept"] == TOKEN
        assert TOKEN not in rows["url"]
        assert (ARTIFACTS / "status-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # today's tiles: one callback requested, nothing finished yet, Bob holding longest
        assert tiles["Requested today"] == "1"
        assert tiles["Connected today"] == "0"
        assert tiles["Success today"] == "\u2013"  # nothing finished: no rate
        assert tiles["Expired today"] == "0"
        assert tiles["Longest hold now"] != "nobody"
        # the charts drew the samples; holding and pending show as lines on the screenshot
        for name in ("holding", "pending", "hold_p90_s", "attempts"):
            assert charts[name]["points"] >= 3, (name, charts[name])
        # (the sampling loop's own first sample at start-up comes on top of the five)
        assert charts["holding"]["points"] >= 5 and charts["pending"]["points"] >= 5
        for name, color in (("holding", "#0969da"), ("pending", "#8250df")):
            assert charts[name]["polylines"] == 1
            drawn = chart_pixels(ARTIFACTS / "status-page.png", charts[name]["rect"], color)
            assert drawn > 100, (name, drawn)  # a line with points, not an empty frame
    finally:
        await client.aclose()

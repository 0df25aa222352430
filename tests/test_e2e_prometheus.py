"""The shipped dashboard against a real Prometheus scraping the real service.

A throwaway Prometheus (Debian's ``prometheus``; free port, temp dir, 1 s scrape interval,
the shipped alert rules loaded) scrapes the service while a caller asks for a callback, one
declines and the callback is connected through the simulated PBX. Then every query of every
dashboard panel is evaluated through the Prometheus HTTP API the way Grafana would, and the
test fails if any returns no series or no number. The list of queries with their series
counts is written to test-artifacts/prometheus-queries.txt.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callback_ari.models import State
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
from tests.test_monitoring import ALERTS, dashboard

SCRAPE_S = 1
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for a 1 s scrape at this zoom, rounded up
INCOMING = "[from-trunk]\nexten => support,1,Goto(callback-queue,support,1)\n"
ARTIFACTS = REPO / "test-artifacts"
JOB = "callback-ari"


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[str]:
    """A Prometheus scraping ``target`` every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: bash .ci/install --test installs Debian's prometheus")
    shutil.copy(ALERTS, tmp / "alerts.yml")
    (tmp / "prometheus.yml").write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_S}s\n"
        f"  evaluation_interval: {SCRAPE_S}s\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def api(http: aiohttp.ClientSession, base: str, path: str, **params: str) -> Any:
    async with http.get(f"{base}/api/v1/{path}", params=params) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", (path, params, body)
        return body["data"]


async def until_query(http: aiohttp.ClientSession, base: str, query: str) -> None:
    """Wait until ``query`` has a non-zero sample in Prometheus."""
    while True:
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            data = await api(http, base, "query", query=query)
            if any(float(r["value"][1]) > 0 for r in data["result"]):
                return
        await asyncio.sleep(0.2)


def grafana_expr(expr: str, range_s: int) -> str:
    """The query as Grafana sends it: dashboard variables and its macros substituted."""
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", f"{range_s}s")
        .replace("$queue", ".+")
        .replace("$job", JOB)
    )


def numbers(data: dict[str, Any]) -> int:
    """How many non-NaN values a query result holds (instant or range)."""
    count = 0
    for series in data["result"]:
        values = series.get("values") or [series["value"]]
        count += sum(1 for _t, v in values if not math.isnan(float(v)))
    return count


@pytest.fixture
async def sim() -> AsyncIterator[SimAsterisk]:
    async with SimAsterisk(time_scale=0.05, dialplan=KIT + INCOMING) as pbx:
        pbx.add_queue("support", ["agent1", "agent2"], handle_time=2.0)
        pbx.set_devstate("Custom:agent1", "INUSE")
        pbx.set_devstate("Custom:agent2", "INUSE")
        yield pbx


@pytest.mark.slow  # a real Prometheus scraping the service
async def test_every_dashboard_query_returns_series_from_a_real_prometheus(
    sim: SimAsterisk, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = service_config(sim, redis_url, http_port=port, queues={"support": {}})
    client, store = await store_for(redis_url)
    report: list[str] = []
    try:
        async with (
            running_service(config) as service,
            aiohttp.ClientSession() as http,
        ):
            async with asyncio.timeout(5):
                await service.http_ready.wait()
            with prometheus(tmp_path, f"127.0.0.1:{port}") as prom:
                started = time.monotonic()
                async with asyncio.timeout(30):
                    await until_query(http, prom, f'up{{job="{JOB}"}}')

                # one caller declines, one accepts; the callback is connected to an agent
                bob = sim.caller_joins("support", "2025559876", "Bob")
                mark = await wait_prompt(sim, bob.id, "queue-thankyou")
                sim.press_digit(bob.id, "2")
                alice = sim.caller_joins("support", "2025551234", "Alice")
                mark = await wait_prompt(sim, alice.id, "queue-thankyou")
                sim.press_digit(alice.id, "1")
                await wait_prompt(sim, alice.id, "if-correct-press", since=mark)
                sim.press_digit(alice.id, "1")
                async with asyncio.timeout(10):
                    await wait_for_callback(store, lambda cbs: len(cbs) == 1)
                await sim.wait_for(lambda: alice.destroyed, timeout=10)
                # the callback is held until the service saw that hang-up: free the agent
                # once it is due, so "member ready -> dial" has a sample
                async with asyncio.timeout(10):
                    await wait_for_callback(
                        store, lambda cbs: cbs[0].next_attempt_ms <= time.time() * 1000
                    )
                sim.hangup(bob.id)
                sim.set_devstate("Custom:agent1", "NOT_INUSE")
                async with asyncio.timeout(15):
                    await wait_for_callback(
                        store, lambda cbs: cbs and cbs[0].state is State.CONNECTED
                    )
                async with asyncio.timeout(20):
                    await until_query(http, prom, 'callback_finished_total{state="connected"}')
                await asyncio.sleep(3 * SCRAPE_S)  # a few more samples after the last change

                end = time.time()
                range_s = math.ceil(time.monotonic() - started) + 5
                failures: list[str] = []
                for panel in dashboard()["panels"]:
                    for target in panel.get("targets", []):
                        expr = grafana_expr(target["expr"], range_s)
                        if panel["type"] == "timeseries":
                            data = await api(
                                http, prom, "query_range", query=expr,
                                start=str(end - range_s), end=str(end), step=str(SCRAPE_S),
                            )  # fmt: skip
                        else:
                            data = await api(http, prom, "query", query=expr, time=str(end))
                        series, points = len(data["result"]), numbers(data)
                        shown = " ".join(expr.split())
                        name = f"{panel['title']} [{target['refId']}]"
                        line = f"{series:3d} series {points:5d} values  {name}: {shown}"
                        report.append(line)
                        if series == 0 or points == 0:
                            failures.append(line)

                # the template variables resolve too
                for label, match in (
                    ("job", "callback_build_info"),
                    ("queue", f'callback_queue_callers{{job=~"{JOB}"}}'),
                ):
                    values = await api(http, prom, f"label/{label}/values", **{"match[]": match})
                    report.append(f"variable ${label}: {values}")
                    if not values:
                        failures.append(f"variable ${label} has no values")

                rules = await api(http, prom, "rules")
                loaded = [r for g in rules["groups"] for r in g["rules"]]
                report.append(f"alert rules loaded: {len(loaded)}, health: "
                              f"{sorted({r['health'] for r in loaded})}")  # fmt: skip
    finally:
        await client.aclose()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "prometheus-queries.txt").write_text("\n".join(report) + "\n")
        print("\n".join(report))
    assert not failures, "\n".join(failures)
    assert len(loaded) == 6 and {r["health"] for r in loaded} == {"ok"}
    assert len([line for line in report if " series " in line]) == sum(
        len(p.get("targets", [])) for p in dashboard()["panels"]
    )

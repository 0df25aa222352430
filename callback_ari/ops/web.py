"""The HTTP front end of a running service: the API app on the service's store, links and queues."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

from callback_ari.ops import api
from callback_ari.ops.today import TodayFigures, trend_view
from callback_ari.service.service import Service


def http_front_end(service: Service) -> Coroutine[Any, Any, None] | None:
    """Serve the HTTP API for ``service`` while it runs; None when ``[http]`` is disabled."""
    cfg = service.config
    store = service.store
    if not cfg.http.enabled or store is None:
        return None

    def reservations(queue: str) -> list[api.ReservationView]:
        now = time.monotonic()
        return [
            {
                "member": r.interface,
                "callback_id": r.callback_id,
                "held_s": round(now - r.started, 1),
                "deadline_s": round(max(0.0, r.deadline - now), 1),
            }
            for r in service.held_reservations(queue)
        ]

    def preholds(queue: str) -> list[api.PreHoldView]:
        now = time.monotonic()
        return [
            {"member": h.interface, "held_s": round(now - h.started, 1)}
            for h in service.preheld_members(queue)
            if h.paused
        ]

    today = TodayFigures(cfg, service.clock)
    trends = service.trends

    async def status() -> api.StatusDoc:
        """The status page's JSON: live queue data from the watcher, the rest from Redis,
        today's figures from the audit stream and the last hour from the trend buffer."""
        dispatcher = service.dispatcher
        doc = await api.build_status(
            store,
            service.config,  # a reload may have changed queue settings since the start
            service.clock,
            watcher_view=api.watcher_view_of(service.watcher, service.clock),
            in_flight=dispatcher.in_flight if dispatcher else (lambda _q: 0),
            links=service.readiness(),
            reservations=reservations,
            preholds=preholds,
        )
        figures = await today.get(store)
        for queue in doc["queues"]:
            queue["today"] = figures[queue["name"]]
            queue["trend"] = trend_view(trends.series(queue["name"]), trends.interval_s)
        return doc

    app = api.create_app(
        store=store,
        config=cfg,
        metrics=service.metrics,
        readiness=service.readiness,
        clock=service.clock,
        status=status,
        on_stored=service.wake_dispatch,
    )
    service.on_reload(lambda config: api.reconfigure(app, config))
    return api.serve(app, cfg.http.bind, cfg.http.port, listening=service.http_ready)

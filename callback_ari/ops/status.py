"""The status document's reads: live and recently finished callbacks per queue from the store.

``api_schema.status_doc`` turns them, with the live queue data, into the document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from callback_ari.clock import Clock
from callback_ari.config.loader import Config
from callback_ari.models import TERMINAL_STATES, Callback, State
from callback_ari.ops.api_schema import (
    OUTCOMES_SHOWN,
    PENDING_SHOWN,
    PreHoldView,
    QueueRecords,
    ReservationView,
    StatusDoc,
    WatcherView,
    status_doc,
)
from callback_ari.store.store import CallbackStore


async def build_status(
    store: CallbackStore,
    config: Config,
    clock: Clock,
    *,
    watcher_view: Callable[[str], WatcherView | Mapping[str, Any]],
    in_flight: Callable[[str], int],
    links: Mapping[str, bool],
    reservations: Callable[[str], list[ReservationView]] | None = None,
    preholds: Callable[[str], list[PreHoldView]] | None = None,
) -> StatusDoc:
    """The status document: live queue data from the caller, pending and outcomes from Redis."""
    now = clock.now_ms()
    counts = await store.counts()
    records = {
        name: await queue_records(store, name, counts.get(name, {})) for name in config.queues
    }
    return status_doc(
        config, now, records, watcher_view=watcher_view, in_flight=in_flight, links=links,
        reservations=reservations, preholds=preholds,
    )  # fmt: skip


async def queue_records(
    store: CallbackStore, queue: str, counts: Mapping[str, int]
) -> QueueRecords:
    """The live callbacks of ``queue`` and the tail of each terminal state.

    Terminal states are listed oldest update first, so each state's tail is read.
    """
    pending: list[Callback] = []
    for state in (State.DIALING, State.RETRY_WAIT, State.PENDING):
        pending += await store.list(queue=queue, state=state, limit=PENDING_SHOWN)
    finished: list[Callback] = []
    for state in TERMINAL_STATES:
        n = counts.get(state.value, 0)
        if n:
            cursor = max(0, n - OUTCOMES_SHOWN)
            finished += await store.list(queue, state, limit=OUTCOMES_SHOWN, cursor=cursor)
    return QueueRecords(pending=pending, finished=finished)

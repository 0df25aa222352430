"""Recall cancellation: a caller who joins the queue again no longer needs their callback."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from callback_ari.config.loader import Config
from callback_ari.errors import NumberRejected, StoreError
from callback_ari.metrics import Metrics
from callback_ari.models import State
from callback_ari.service.intake import number_validator
from callback_ari.service.watcher import QueueCaller
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]


class RecallCanceller:
    """Cancels a caller's live callback when they call the queue again (``on_recall = cancel``)."""

    def __init__(
        self,
        *,
        config: Config,
        store: CallbackStore,
        metrics: Metrics,
        owns_channel: Callable[[str], bool],
        spawn: Spawn,
        now_ms: Callable[[], int],
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._now_ms = now_ms
        self._owns_channel = owns_channel  # our own callback legs joining are not re-calls
        self._spawn = spawn

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s on_recall settings from now on (SIGHUP reload)."""
        self._config = config

    def caller_joined(self, queue: str, caller: QueueCaller) -> None:
        """A caller joined a queue: cancel their pending callback if they called again."""
        q = self._config.queues.get(queue)
        if q is None or q.on_recall != "cancel" or not caller.caller_number:
            return
        if self._owns_channel(caller.uniqueid):
            return
        self._spawn(self._cancel(queue, caller), f"recall:{caller.uniqueid}")

    async def _cancel(self, queue: str, caller: QueueCaller) -> None:
        q = self._config.queues[queue]
        try:
            number = number_validator(q)(caller.caller_number)
            existing = await self._store.find_live(queue, number)
            if existing is None or existing.state is State.DIALING:
                return  # a dialing callback's own customer joining the queue is not a re-call
            cancelled = await self._store.cancel(existing.id, reason="recalled")
        except (NumberRejected, StoreError):
            return
        self._metrics.callback_finished(cancelled, self._now_ms())
        log.info("callback.cancelled_on_recall", callback_id=existing.id, queue=queue)

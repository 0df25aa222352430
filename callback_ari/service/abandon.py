"""Follow-up for callers who hang up while holding (``on_abandon = callback``).

app_queue reports a caller who hangs up with QueueCallerAbandon (HoldTime, CallerIDNum). When
the queue opted in and the caller held at least ``abandon_min_hold`` seconds, a callback with
``origin=abandon`` is stored for their caller ID, through the same intake as every other
request: number policy, dedupe (a live callback for the number is kept), fairness by the
caller's original join time, and the offer gate (hours, ``max_pending``, store up).

Asterisk 22 also sends QueueCallerAbandon for a caller taken out by our own
QueueWithdrawCaller: that caller is in an offer, not gone, and is skipped. So are our own
callback legs waiting in the queue, withheld or invalid caller IDs and numbers on the queue's
do-not-call list.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from callback_ari.config.loader import Config
from callback_ari.core.queue_model import QueueCaller
from callback_ari.errors import NumberRejected, StoreError
from callback_ari.masking import mask
from callback_ari.metrics import Metrics
from callback_ari.models import Origin, is_attempt_channel
from callback_ari.service.intake import number_validator, store_request
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]


class AbandonFollowUp:
    """Turns a qualifying QueueCallerAbandon into a callback with ``origin=abandon``."""

    def __init__(
        self,
        *,
        config: Config,
        store: CallbackStore,
        metrics: Metrics,
        owns_channel: Callable[[str], bool],
        withdrew: Callable[[str], bool],
        offer_open: Callable[[str], bool],
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._owns_channel = owns_channel  # a callback leg hanging up in the queue is no abandon
        self._withdrew = withdrew  # our QueueWithdrawCaller also reads as an abandon
        self._offer_open = offer_open
        self._spawn = spawn

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s on_abandon settings from now on (SIGHUP reload)."""
        self._config = config

    def caller_abandoned(self, queue: str, caller: QueueCaller, hold_s: float) -> None:
        """QueueCallerAbandon: decide on what is known now, then store in a task of its own."""
        q = self._config.queues.get(queue)
        if q is None or q.on_abandon != "callback":
            return
        uid = caller.uniqueid
        if self._withdrew(uid) or self._owns_channel(uid) or is_attempt_channel(uid):
            return  # our offer, or our own callback leg: not a caller giving up
        reason = self._skip_reason(queue, caller, hold_s, q.abandon_min_hold)
        if reason is not None:
            log.info("callback.abandon_skipped", queue=queue, reason=reason,
                     hold_s=round(hold_s, 1), number=mask(caller.caller_number))  # fmt: skip
            return
        self._spawn(self._follow_up(queue, caller), f"abandon:{caller.uniqueid}")

    def _skip_reason(
        self, queue: str, caller: QueueCaller, hold_s: float, min_hold: int
    ) -> str | None:
        if hold_s < min_hold:
            return "short_hold"
        if not caller.caller_number:
            return "no_caller_id"
        if not self._offer_open(queue):
            return "closed"  # outside hours, max_pending reached or the store down
        return None

    async def _follow_up(self, queue: str, caller: QueueCaller) -> None:
        q = self._config.queues[queue]
        try:
            number = number_validator(q)(caller.caller_number)
            if await self._store.dnc_has(queue, number):
                log.info("callback.abandon_skipped", queue=queue, reason="do_not_call",
                         number=mask(number))  # fmt: skip
                return
            await store_request(
                self._store,
                self._metrics,
                q,
                number=number,
                caller_name=caller.caller_name,
                source_channel=caller.uniqueid,
                join_time_ms=caller.join_time_ms,  # fairness: their original turn
                origin=Origin.ABANDON,
            )
        except NumberRejected as exc:  # withheld ("anonymous"), invalid or refused by policy
            log.info("callback.abandon_skipped", queue=queue, reason=exc.reason,
                     number=mask(caller.caller_number))  # fmt: skip
        except StoreError as exc:
            self._metrics.errors.labels("store").inc()
            log.warning("callback.abandon_store_failed", queue=queue, error=str(exc))

"""Service-initiated offers: pull a holding caller out of the queue when it is time.

A caller is withdrawn (AMI ``QueueWithdrawCaller``; the dialplan then sees
``QUEUESTATUS=WITHDRAW`` and enters the offer) once their hold passes the queue's
``offer_threshold`` or the estimated wait passes ``offer_on_estimated_wait``. The loop sleeps
exactly until the next caller crosses a threshold or the queue changes: no polling. A caller is
withdrawn at most once per stay in the queue, and never again after declining an offer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from callback_ari.asterisk.ami import AmiClient
from callback_ari.clock import Clock
from callback_ari.config.loader import Config
from callback_ari.core import policy
from callback_ari.core.queue_model import QueueCaller
from callback_ari.errors import AmiError, AmiUnavailable
from callback_ari.service.watcher import QueueWatcher

log = structlog.get_logger(__name__)

NO_REOFFER_LIMIT = 10_000  # callers who declined; bounded so memory stays flat
WITHDRAW_INFO = "callback-ari"


class Withdrawer:
    """Decides when to withdraw callers and asks AMI to; owns no task but its loop."""

    def __init__(
        self,
        *,
        config: Config,
        watcher: QueueWatcher,
        clock: Clock,
        ami: Callable[[], AmiClient | None],
        ari_up: Callable[[], bool],
        offer_open: Callable[[str], bool],
        pending: Callable[[str], int],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self._cfg = config
        self._watcher = watcher
        self._clock = clock
        self._ami = ami
        self._ari_up = ari_up
        self._offer_open = offer_open
        self._pending = pending
        self._spawn = spawn
        self._withdrawn: dict[str, None] = {}  # callers asked for, until they leave the queue
        self._no_reoffer: dict[str, None] = {}  # callers who declined (insertion ordered)
        self._wake = asyncio.Event()

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s queue settings (offer thresholds, withdraw) from now on."""
        self._cfg = config

    def wake(self) -> None:
        """The queue changed (an AMI event, a resync): re-evaluate now."""
        self._wake.set()

    def caller_left(self, queue: str, caller: QueueCaller) -> None:
        """Withdrawn, served or gone: forget the withdraw so the map stays bounded."""
        del queue
        self._withdrawn.pop(caller.uniqueid, None)

    def withdrew(self, uniqueid: str) -> bool:
        """Whether this service asked Asterisk to withdraw the caller (still in their stay).

        Asterisk 22 reports such a caller with QueueCallerAbandon: that is our offer, not a
        caller hanging up.
        """
        return uniqueid in self._withdrawn

    def declined(self, channel_id: str) -> None:
        """The caller went back to the queue from an offer: never withdraw them again."""
        self._no_reoffer[channel_id] = None
        while len(self._no_reoffer) > NO_REOFFER_LIMIT:
            del self._no_reoffer[next(iter(self._no_reoffer))]

    async def run(self) -> None:
        """Withdraw due callers, then sleep until the next is due or the queue changes."""
        while True:
            next_due = self.run_once()
            timeout = None if next_due is None else max(0.05, next_due)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()

    def run_once(self) -> float | None:
        """Start a withdraw for every caller due an offer; seconds until the next one is due."""
        ami = self._ami()
        if ami is None or not ami.connected or not self._ari_up():
            return None  # without ARI, Stasis() fails and the caller only bounces back
        now_ms = self._clock.now_ms()
        soonest: float | None = None
        for name, q in self._cfg.queues.items():
            if not q.withdraw or not self._offer_open(name):
                continue
            for caller in self._watcher.callers(name):
                if caller.uniqueid in self._withdrawn or caller.uniqueid in self._no_reoffer:
                    continue
                hold_s = (now_ms - caller.join_time_ms) / 1000
                if policy.should_offer(
                    hold_s=hold_s,
                    est_wait_s=self._watcher.estimated_wait_s(name, caller.position),
                    offer_threshold=q.offer_threshold,
                    offer_on_estimated_wait=q.offer_on_estimated_wait,
                    open_now=True,  # checked above with the pending cap and the store
                    pending=self._pending(name),
                    max_pending=q.max_pending,
                    store_ok=True,
                ):
                    self._withdrawn[caller.uniqueid] = None
                    self._spawn(self._withdraw(ami, name, caller), f"withdraw:{caller.uniqueid}")
                elif q.offer_threshold > 0:
                    wait = q.offer_threshold - hold_s
                    soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    async def _withdraw(self, ami: AmiClient, queue: str, caller: QueueCaller) -> None:
        """One QueueWithdrawCaller; the withdraws of one pass run concurrently."""
        try:
            await ami.queue_withdraw_caller(queue, caller.channel, WITHDRAW_INFO)
        except AmiUnavailable as exc:
            # the link dropped: forget the attempt so the caller is offered after reconnecting
            self._withdrawn.pop(caller.uniqueid, None)
            log.info("offer.withdraw_failed", queue=queue, channel=caller.channel, error=str(exc))
            return
        except AmiError as exc:  # the caller left or was answered meanwhile
            log.info("offer.withdraw_failed", queue=queue, channel=caller.channel, error=str(exc))
            return
        log.info("offer.withdraw", queue=queue, channel=caller.channel)

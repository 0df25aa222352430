"""Retention of the callers' recorded messages: delete each once its callback is over.

A recorded message lives as an ARI stored recording named after its callback
(``core.recordings``). Every ``SWEEP_INTERVAL_S`` the sweeper lists Asterisk's stored
recordings and deletes ours whose callback became final (connected, failed, cancelled,
expired) at least ``recording_retention`` seconds ago, or is gone from the store. Because it
works from what Asterisk holds, not from what the service remembers, it also removes what a
crashed run left behind. Other applications' recordings are never touched. It sweeps only
while a queue has ``record_message`` (a reload may switch that and the retention): without it
an installation need not have a recordings directory at all.
"""

from __future__ import annotations

import asyncio
import builtins

import structlog

from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock
from callback_ari.config.settings import Config
from callback_ari.core.recordings import callback_id_of, deletable
from callback_ari.errors import (
    AriError,
    AriNotFound,
    CallbackNotFound,
    CorruptRecord,
    StoreError,
)
from callback_ari.models import Callback
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

SWEEP_INTERVAL_S = 5.0


def wanted(config: Config) -> bool:
    """Whether any queue records messages (the sweeper sweeps only then)."""
    return any(q.record_message > 0 for q in config.queues.values())


class RecordingSweeper:
    """Deletes recorded messages whose callback is over (after the retention)."""

    def __init__(
        self, *, ari: AriClient, store: CallbackStore, clock: Clock, retention_s: int
    ) -> None:
        self._ari = ari
        self._store = store
        self._clock = clock
        self._retention_s = retention_s
        self.enabled = True

    def reconfigure(self, config: Config) -> None:
        """A reload: the retention, and whether any queue still records."""
        self._retention_s = config.general.recording_retention
        self.enabled = wanted(config)

    async def run(self) -> None:
        """Sweep until cancelled; a failed sweep is logged and tried again."""
        while True:
            if self.enabled:
                try:
                    await self.sweep_once()
                except (AriError, StoreError) as exc:
                    log.warning("recording.sweep_failed", error=str(exc))
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def sweep_once(self) -> builtins.list[str]:
        """One pass; returns the names deleted. AriError/StoreError when a read fails."""
        deleted: list[str] = []
        now_ms = self._clock.now_ms()
        for name in await self._ari.stored_recordings():
            cb_id = callback_id_of(name)
            if cb_id is None:
                continue  # not ours
            cb: Callback | None
            try:
                cb = await self._store.get(cb_id)
            except CallbackNotFound:
                cb = None
            except CorruptRecord:
                continue  # the store reports it; never delete what may still be wanted
            if not deletable(cb, now_ms, self._retention_s):
                continue
            try:
                await self._ari.delete_stored_recording(name)
            except AriNotFound:
                continue  # deleted meanwhile (another instance)
            deleted.append(name)
            log.info(
                "recording.deleted", recording=name, callback_id=cb_id,
                state=str(cb.state) if cb is not None else "gone",
            )  # fmt: skip
        return deleted

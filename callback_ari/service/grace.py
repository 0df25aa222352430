"""The first attempt's grace: a booked callback waits until its caller's own call is over.

After booking, the kit hands the caller back to the admin's route (goodbye, ``Hangup()``), so
neither the end of our dialogue nor StasisEnd means the line is down, and no ARI event reaches
us once the channel has left the app. Asterisk still answers ``GET /channels/{id}`` for it:
404 is the hang-up. The first attempt then comes ``first_attempt_grace`` seconds later.
"""

from __future__ import annotations

import asyncio

import structlog

from callback_ari.asterisk.ari import AriClient
from callback_ari.clock import Clock
from callback_ari.config.loader import QueueConfig
from callback_ari.errors import AriError, AriNotFound
from callback_ari.service.intake import HeldCallback, release_after_hangup
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

POLL_S = 0.5  # the hang-up is seen at most this late: the grace is never shorter than set


async def release_when_gone(
    ari: AriClient, store: CallbackStore, q: QueueConfig, held: HeldCallback, clock: Clock
) -> bool:
    """Watch the caller's channel until Asterisk no longer has it, then release the callback.

    Gives up at ``held.until_ms`` (the callback is due then anyway); True when released. ARI
    errors other than 404 (a reconnect) keep the hold and the watch goes on.
    """
    while held.channel_id and clock.now_ms() < held.until_ms:  # no id: nothing to watch
        try:
            await ari.get_channel(held.channel_id)
        except AriNotFound:
            await release_after_hangup(store, q, held.callback_id, clock.now_ms())
            return True
        except AriError:
            pass
        await asyncio.sleep(POLL_S)
    log.warning(
        "offer.hangup_unseen", queue=q.name, channel_id=held.channel_id,
        callback_id=held.callback_id,
    )  # fmt: skip
    return False

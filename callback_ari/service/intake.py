"""Taking a callback request in: the entry point arguments, number policy and the store write.

Shared by every front end (ARI dialogue, FastAGI dialogue, web API) so that validation, dedupe,
logging and metrics are the same whichever way a caller asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from callback_ari.config.loader import QueueConfig
from callback_ari.core import offer
from callback_ari.core.phone import NumberPolicy, validate_number
from callback_ari.core.reasons import parse_reasons
from callback_ari.errors import NotReplicated, NumberRejected, StoreError
from callback_ari.masking import mask
from callback_ari.metrics import Metrics
from callback_ari.models import Callback, Origin
from callback_ari.store.store import CallbackStore

log = structlog.get_logger(__name__)

ENTRIES = ("timeout", "digit", "withdraw")
# A booked caller goes back to the kit with this channel variable; the kit's subroutine then
# returns QUEUESTATUS=CALLBACK (dialplan/extensions_callback.conf, [callback-offer]).
CB_RESULT = "CB_RESULT"
CB_RESULT_CALLBACK = "CALLBACK"


@dataclass(frozen=True, slots=True)
class OfferEntry:
    """Why and from where a caller reached the offer (the Stasis/AGI arguments of the kit)."""

    queue: str
    entry: str  # timeout | digit | withdraw
    join_time_ms: int
    position: int

    @classmethod
    def from_args(cls, args: tuple[str, ...] | list[str], now_ms: int) -> OfferEntry | None:
        """Parse ``offer,<queue>[,<entry>[,<join ms>[,<position>]]]``; None if not an offer."""
        if len(args) < 2 or args[0] != "offer" or not args[1]:
            return None
        entry = args[2] if len(args) > 2 and args[2] in ENTRIES else "timeout"
        join = _int(args[3]) if len(args) > 3 else 0
        if not 0 < join <= now_ms:
            join = now_ms  # unknown or nonsense: the caller keeps no earlier turn than now
        position = _int(args[4]) if len(args) > 4 else 0
        return cls(queue=args[1], entry=entry, join_time_ms=join, position=max(position, 0))


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def offer_settings(q: QueueConfig, *, records: bool = True) -> offer.OfferSettings:
    """The dialogue's settings for one queue (prompts, tries, timeouts).

    ``records``: the front end can record the caller's message (ARI); FastAGI does not, so
    its callers are never asked for one.
    """
    return offer.OfferSettings(
        prompts=q.prompts.as_mapping(),
        max_tries=q.max_tries,
        digit_timeout=q.digit_timeout,
        response_timeout=q.response_timeout,
        announce_wait=q.announce_wait,
        announce_position=q.announce_position,
        reasons=tuple((r.digit, r.name, r.media) for r in parse_reasons(q.reasons)),
        record_s=q.record_message if records else 0,
        record_silence_s=q.record_silence,
    )


def number_validator(q: QueueConfig) -> Callable[[str], str]:
    """``validate(raw) -> dial-safe number`` under this queue's number policy."""
    number_policy = NumberPolicy.from_queue(q)

    def validate(raw: str) -> str:
        return validate_number(raw, number_policy)

    return validate


def offer_started(
    metrics: Metrics,
    q: QueueConfig,
    entry: OfferEntry,
    now_ms: int,
    *,
    channel_id: str,
    caller: str | None,
    frontend: str,
) -> None:
    """Count an offer and its hold time, and log ``offer.started`` (every front end)."""
    hold_s = max(0.0, (now_ms - entry.join_time_ms) / 1000)
    metrics.offers.labels(q.name, entry.entry).inc()
    metrics.hold_at_offer.labels(q.name).observe(hold_s)
    log.info(
        "offer.started", queue=q.name, channel_id=channel_id, entry=entry.entry,
        frontend=frontend, hold_s=round(hold_s, 1), number=mask(caller),
    )  # fmt: skip


def offer_finished(
    metrics: Metrics,
    q: QueueConfig,
    result: offer.OfferResult,
    *,
    channel_id: str,
    frontend: str,
) -> None:
    """Count how the dialogue ended and log ``offer.finished`` (every front end)."""
    metrics.offer_ended(q.name, result.label)
    log.info(
        "offer.finished", queue=q.name, channel_id=channel_id, result=str(result), frontend=frontend
    )


async def store_request(
    store: CallbackStore,
    metrics: Metrics,
    q: QueueConfig,
    *,
    number: str,
    caller_name: str,
    source_channel: str,
    join_time_ms: int,
    origin: Origin,
    next_attempt_ms: int = 0,
    position: int = 0,
    reason: str = "",
) -> tuple[Callback, bool]:
    """Validate (again: never trust a front end) and store; returns (callback, created).

    Raises NumberRejected or StoreError; the caller decides what the person hears or sees.
    """
    safe_number = number_validator(q)(number)
    cb, created = await store.enqueue(
        queue=q.name,
        number=safe_number,
        caller_name=caller_name,
        source_channel=source_channel,
        join_time_ms=join_time_ms,
        origin=origin,
        next_attempt_ms=next_attempt_ms,
        position=position,
        reason=reason,
    )
    if created:
        metrics.requested.labels(q.name, origin.value).inc()
        log.info(
            "callback.stored",
            callback_id=cb.id,
            queue=q.name,
            number=mask(cb.number),
            join_time_ms=cb.join_time_ms,
            origin=origin.value,
            reason=cb.reason,
        )
        if cb.reason:
            metrics.reasons.labels(q.name, cb.reason).inc()
    else:
        log.info("callback.duplicate", callback_id=cb.id, queue=q.name, origin=origin.value)
    return cb, created


async def store_from_dialogue(
    store: CallbackStore,
    metrics: Metrics,
    q: QueueConfig,
    *,
    number: str,
    caller_name: str,
    source_channel: str,
    entry: OfferEntry,
    origin: Origin,
    wait_estimate: Callable[[], float | None],
    held_until_ms: int = 0,
    reason: str = "",
) -> offer.Event:
    """The dialogue's Store action, answered as the machine's next input.

    ``held_until_ms``: the first attempt waits at most until then for ``release_after_hangup``
    (the caller is still on the line while they hear "stored" and "goodbye").
    """
    try:
        cb, created = await store_request(
            store,
            metrics,
            q,
            number=number,
            caller_name=caller_name,
            source_channel=source_channel,
            join_time_ms=entry.join_time_ms,
            origin=origin,
            position=entry.position,
            next_attempt_ms=held_until_ms,
            reason=reason,
        )
    except NumberRejected as exc:
        log.error("offer.unsafe_number", queue=q.name, reason=exc.reason)
        return offer.StoreFailed(f"rejected:{exc.reason}")
    except NotReplicated as exc:
        # No promise on one copy: the caller keeps their place in the queue instead.
        metrics.errors.labels("store").inc()
        log.error("offer.not_replicated", queue=q.name, wanted=exc.wanted, confirmed=exc.confirmed)
        return offer.StoreFailed("not_replicated")
    except StoreError as exc:
        metrics.errors.labels("store").inc()
        log.error("offer.store_failed", queue=q.name, error=str(exc))
        return offer.StoreFailed("store_unavailable")
    return offer.Stored(cb.id, created, wait_estimate())


@dataclass(frozen=True, slots=True)
class HeldCallback:
    """A callback booked in a call, held back until that call's channel is gone."""

    queue: str
    callback_id: str
    channel_id: str  # the caller's inbound channel (ARI id = Asterisk uniqueid)
    until_ms: int  # the fallback: the first attempt comes then at the latest


def hold_for_hangup_ms(q: QueueConfig, now_ms: int, dialogue_timeout_s: float) -> int:
    """Until when a callback stored from a call waits for its caller's line to go down.

    The dialogue cannot outlast ``dialogue_timeout_s``; should the hang-up never be reported
    (a crash, a lost event), the first attempt still comes no earlier than that plus the grace.
    """
    return now_ms + round((dialogue_timeout_s + q.first_attempt_grace) * 1000)


async def release_after_hangup(
    store: CallbackStore, q: QueueConfig, callback_id: str, hangup_ms: int
) -> None:
    """The caller's inbound call is down: the first attempt may come after the queue's grace."""
    due = hangup_ms + q.first_attempt_grace * 1000
    try:
        moved = await store.release(callback_id, due)
    except StoreError as exc:  # the fallback deadline of hold_for_hangup_ms still applies
        log.warning("callback.release_failed", callback_id=callback_id, error=str(exc))
        return
    log.info("callback.released", callback_id=callback_id, queue=q.name, due_ms=due, moved=moved)

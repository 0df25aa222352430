"""Values shared by every layer: a callback's states, attempt outcomes, and the record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """The durable life of a callback.

    pending -> dialing -> connected
    dialing -> retry_wait -> pending (when next_attempt_ms is reached)
    pending|retry_wait|dialing -> failed | expired | cancelled
    """

    PENDING = "pending"
    DIALING = "dialing"
    RETRY_WAIT = "retry_wait"
    CONNECTED = "connected"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_live(self) -> bool:
        """True while the callback may still be dialled."""
        return self in LIVE_STATES

    @property
    def is_terminal(self) -> bool:
        return not self.is_live


LIVE_STATES = frozenset({State.PENDING, State.DIALING, State.RETRY_WAIT})
TERMINAL_STATES = frozenset(set(State) - LIVE_STATES)


class Outcome(StrEnum):
    """How one dial attempt ended (kept on the record as ``last_outcome``)."""

    CONNECTED = "connected"  # an agent answered the customer (AMI AgentConnect)
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"
    REJECTED = "rejected"  # call rejected / invalid destination / unallocated number
    NOT_CONFIRMED = "not_confirmed"  # answered but nobody pressed 1 (machine, voicemail)
    HANGUP = "hangup"  # answered then hung up before confirming
    ABANDONED = "abandoned"  # pressed 1, then hung up before an agent answered: final
    ERROR = "error"  # our side failed (ARI error, lease lost, crash)

    @property
    def is_retryable(self) -> bool:
        """Connected is done; abandoned means the customer chose to leave: never rung again."""
        return self not in (Outcome.CONNECTED, Outcome.ABANDONED)


class Origin(StrEnum):
    """Where a callback request came from."""

    PHONE = "phone"  # the ARI offer dialogue
    AGI = "agi"  # the FastAGI offer dialogue
    WEB = "web"  # HTTP API request
    ABANDON = "abandon"  # follow-up for a caller who hung up while holding (on_abandon)


@dataclass(frozen=True, slots=True)
class Callback:
    """One callback as stored. Times are integer milliseconds since the Unix epoch."""

    id: str
    queue: str
    number: str  # validated: digits with an optional leading '+', nothing else
    caller_name: str
    source_channel: str
    join_time_ms: int  # when the caller originally joined the queue (fairness key)
    created_ms: int
    state: State
    attempts: int = 0
    last_outcome: str = ""
    last_cause: str = ""  # e.g. "BUSY/17 User busy"
    next_attempt_ms: int = 0
    lease_owner: str = ""
    lease_expires_ms: int = 0
    updated_ms: int = 0
    priority: int = 0
    origin: Origin = Origin.PHONE
    position: int = 0  # queue position when the offer was made (informational)
    reason: str = ""  # from the queue's reason menu ("" = none given)
    recording: str = ""  # the caller's recorded message (core.recordings name; "" = none)

    @property
    def channel_id(self) -> str:
        """Channel id of the current attempt: derived, so a retry can never dial twice."""
        return originate_channel_id(self.id, self.attempts)


def originate_channel_id(callback_id: str, attempt: int) -> str:
    """The ARI channel id (;1 half) of attempt ``attempt`` of ``callback_id``."""
    return f"cb-{callback_id}-a{attempt}"


def is_attempt_channel(channel_id: str) -> bool:
    """Whether ``channel_id`` is one of ours (either half of an attempt's Local channel)."""
    head, _, tail = channel_id.rpartition("-a")
    attempt = tail[:-2] if tail.endswith("-2") else tail
    return head.startswith("cb-") and len(head) > 3 and attempt.isdigit()


def originate_other_channel_id(callback_id: str, attempt: int) -> str:
    """The ARI ``otherChannelId`` (;2 half of a Local channel) of one attempt."""
    return f"cb-{callback_id}-a{attempt}-2"

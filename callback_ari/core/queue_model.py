"""Values describing an Asterisk queue as app_queue reports it: callers, members, device states."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class DeviceStatus(IntEnum):
    """app_queue member ``Status``: the Asterisk device state of the state interface."""

    UNKNOWN = 0
    NOT_INUSE = 1
    INUSE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGINUSE = 7
    ONHOLD = 8


BUSY_STATUSES = frozenset(
    {
        DeviceStatus.INUSE,
        DeviceStatus.BUSY,
        DeviceStatus.RINGING,
        DeviceStatus.RINGINUSE,
        DeviceStatus.ONHOLD,
    }
)


@dataclass(frozen=True, slots=True)
class QueueCaller:
    """A caller waiting in a queue."""

    queue: str
    channel: str
    uniqueid: str
    caller_number: str
    caller_name: str
    position: int
    join_time_ms: int

    def hold_s(self, now_ms: int) -> float:
        """Seconds held so far."""
        return max(0, now_ms - self.join_time_ms) / 1000


@dataclass(frozen=True, slots=True)
class QueueMember:
    """A queue member as app_queue sees it, plus what AMI told us about its calls.

    ``wrapup_s`` is the effective wrap-up (the member's own, else the queue's);
    ``last_call_ms`` is when its last answered call ended (0 = never).
    """

    queue: str
    interface: str
    name: str
    state_interface: str
    status: int
    paused: bool
    in_call: bool
    last_call_ms: int
    wrapup_s: int
    paused_reason: str = ""  # app_queue's PausedReason; ours start with "<app>:"

    @property
    def logged_in(self) -> bool:
        return self.status not in (DeviceStatus.INVALID, DeviceStatus.UNAVAILABLE)

    @property
    def wrapup_end_ms(self) -> int | None:
        if self.last_call_ms <= 0 or self.wrapup_s <= 0:
            return None
        return self.last_call_ms + self.wrapup_s * 1000

    def in_wrapup(self, now_ms: int) -> bool:
        end = self.wrapup_end_ms
        return end is not None and now_ms < end

    def is_ready(self, now_ms: int, *, unknown_is_ready: bool = False) -> bool:
        """app_queue's ``QUEUE_MEMBER(q,ready)`` rule, and not in a call.

        Asterisk counts a member whose device is NOT_INUSE, who is not paused and whose
        wrap-up is over. We also require no call between AgentConnect and AgentComplete,
        because with ``Custom:`` state interfaces the device stays NOT_INUSE during a call.
        """
        return not self.paused and self.is_free(now_ms, unknown_is_ready=unknown_is_ready)

    def is_free(self, now_ms: int, *, unknown_is_ready: bool = False) -> bool:
        """``is_ready`` whatever the pause: app_queue would ring it now were it not paused."""
        device_free = self.status == DeviceStatus.NOT_INUSE or (
            unknown_is_ready and self.status == DeviceStatus.UNKNOWN
        )
        return device_free and not self.in_call and not self.in_wrapup(now_ms)

    def is_busy(self, now_ms: int) -> bool:
        """Logged in but not free: on a call, ringing, on hold or in wrap-up.

        app_queue rings such a member the moment it frees up, with no warning over AMI when
        that moment is the end of a wrap-up.
        """
        if self.status in BUSY_STATUSES:
            return True
        idle = self.status in (DeviceStatus.NOT_INUSE, DeviceStatus.UNKNOWN)
        return idle and (self.in_call or self.in_wrapup(now_ms))

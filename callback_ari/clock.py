"""Time as a dependency: the real clock, and a manual one for tests and simulations."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What flows need from time: wall-clock milliseconds (stored in Redis) and sleeping."""

    def now_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time and asyncio sleeping."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told; ``sleep`` yields once and advances nothing."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1000)

    def set_ms(self, now_ms: int) -> None:
        self._now = now_ms

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

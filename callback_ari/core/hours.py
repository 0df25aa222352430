"""Business hours: weekly opening windows in a queue's local time zone, DST-correct."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_ALIASES = {"daily": tuple(range(7)), "weekdays": tuple(range(5)), "weekends": (5, 6)}
_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_DAY_SECONDS = 86400
_SEARCH_DAYS = 16  # a weekly schedule repeats within 7 days; margin for DST oddities


@dataclass(frozen=True, slots=True)
class Window:
    """Open from ``start`` to ``end`` seconds after local midnight of ``day`` (0 = Monday).

    ``end`` <= ``start`` means the window runs past midnight into the next day.
    """

    day: int
    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


def zone(tz: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name, or ValueError naming the bad zone."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """When a queue dispatches callbacks. An empty spec means always open."""

    spec: str
    tz: ZoneInfo
    windows: tuple[Window, ...] = field(default=())

    @classmethod
    def parse(cls, spec: str, tz: str = "UTC") -> BusinessHours:
        """Parse e.g. "mon-fri 08:00-18:00, sat 09:00-12:00; sun 22:00-02:00".

        Days (mon..sun, ranges "mon-fri", lists "mon,wed", "daily", "weekdays", "weekends") are
        followed by one or more HH:MM-HH:MM ranges; groups are separated by ',' or ';'. A range
        whose end is not after its start runs past midnight. Raises ValueError with a message
        fit for a config problem.
        """
        zi = zone(tz)
        windows: list[Window] = []
        days: list[int] = []
        timed = False  # the current day group already has a time range
        tokens = [t for t in re.split(r"[\s,;]+", spec.strip().lower()) if t]
        for token in tokens:
            match = _TIME_RANGE.match(token)
            if match is None and token[0].isdigit():
                raise ValueError(f"bad time range {token!r} (use HH:MM-HH:MM, e.g. 08:00-18:00)")
            if match is None:
                if timed:
                    days, timed = [], False
                days.extend(_parse_days(token))
                continue
            if not days:
                raise ValueError(f"time range {token!r} has no day before it (e.g. 'mon-fri')")
            start, end = _parse_range(token, match)
            windows.extend(Window(d, start, end) for d in days)
            timed = True
        if days and not timed:
            raise ValueError(f"days {spec.strip()!r} need a time range like 08:00-18:00")
        return cls(spec=spec.strip(), tz=zi, windows=tuple(windows))

    @property
    def always_open(self) -> bool:
        return not self.windows

    def is_open(self, now_ms: int) -> bool:
        """True if the queue is within its business hours at ``now_ms`` (epoch ms)."""
        if not self.windows:
            return True
        local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(self.tz)
        weekday = local.weekday()
        secs = local.hour * 3600 + local.minute * 60 + local.second
        for w in self.windows:
            if not w.crosses_midnight:
                if w.day == weekday and w.start <= secs < w.end:
                    return True
            elif (w.day == weekday and secs >= w.start) or (
                (w.day + 1) % 7 == weekday and secs < w.end
            ):
                return True
        return False

    def next_open_ms(self, now_ms: int) -> int:
        """``now_ms`` if open now, else the first instant the hours open again."""
        if self.is_open(now_ms):
            return now_ms
        for t in self._boundaries(now_ms):
            if self.is_open(t):
                return t
        raise ValueError(f"business hours {self.spec!r} never open")  # pragma: no cover

    def next_close_ms(self, now_ms: int) -> int | None:
        """End of the open period containing ``now_ms`` (or of the next one if closed now).

        None when the hours never close (always open, or windows covering the whole week).
        """
        if not self.windows:
            return None
        start = self.next_open_ms(now_ms)
        for t in self._boundaries(start):
            if not self.is_open(t):
                return t
        return None

    def _boundaries(self, after_ms: int) -> list[int]:
        """Every instant after ``after_ms`` (sorted) at which is_open() may change."""
        today = datetime.fromtimestamp(after_ms / 1000, UTC).astimezone(self.tz).date()
        found: set[int] = set()
        for offset in range(-2, _SEARCH_DAYS):
            day = today + timedelta(days=offset)
            for w in self.windows:
                if w.day != day.weekday():
                    continue
                found.add(self._instant(day, w.start))
                end_day = day + timedelta(days=1) if w.crosses_midnight else day
                found.add(self._instant(end_day, w.end))
            transition = self._transition_on(day)
            if transition is not None:
                found.add(transition)
        return sorted(t for t in found if t > after_ms)

    def _instant(self, day: date, seconds: int) -> int:
        """Epoch ms of the first instant whose local wall time is at least ``day`` + seconds.

        Ambiguous wall times (DST fall-back) take their first occurrence; wall times in a DST
        gap (spring-forward) map to the moment the gap ends.
        """
        wall = datetime(day.year, day.month, day.day) + timedelta(seconds=seconds)
        first = wall.replace(tzinfo=self.tz)
        utc = first.astimezone(UTC)
        if utc.astimezone(self.tz).replace(tzinfo=None) == wall:
            return int(utc.timestamp() * 1000)
        lo = int(first.replace(fold=1).timestamp())
        hi = int(first.timestamp())
        lo, hi = min(lo, hi), max(lo, hi)
        while lo < hi:  # the first second whose wall time is past the gap
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).replace(tzinfo=None) >= wall:
                hi = mid
            else:
                lo = mid + 1
        return lo * 1000

    def _transition_on(self, day: date) -> int | None:
        """Epoch ms of a UTC-offset change during local ``day``, if there is one."""
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        lo = int(start.timestamp())
        hi = lo + _DAY_SECONDS + 7200
        offset = datetime.fromtimestamp(lo, self.tz).utcoffset()
        if datetime.fromtimestamp(hi, self.tz).utcoffset() == offset:
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).utcoffset() == offset:
                lo = mid + 1
            else:
                hi = mid
        return lo * 1000


def _parse_days(token: str) -> list[int]:
    if token in _DAY_ALIASES:
        return list(_DAY_ALIASES[token])
    if "-" in token:
        first, _, last = token.partition("-")
        a, b = _day(first), _day(last)
        return [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return [_day(token)]


def _day(name: str) -> int:
    if name in DAYS:
        return DAYS.index(name)
    if name in _FULL_DAYS:
        return _FULL_DAYS.index(name)
    raise ValueError(f"unknown day {name!r} (use mon, tue, wed, thu, fri, sat, sun)")


def _parse_range(token: str, match: re.Match[str]) -> tuple[int, int]:
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise ValueError(f"bad time in {token!r} (hours 00-23, minutes 00-59, end may be 24:00)")
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if start == end:
        raise ValueError(f"empty time range {token!r} (use 00:00-24:00 for a whole day)")
    return start, (0 if end == _DAY_SECONDS else end)

"""Time on the wire and on the utility's clock: RFC 3339 text, calendar months, and local calendar days."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

NS = 1_000_000_000
HOUR_NS = 3600 * NS
DAY_NS = 86400 * NS
EPOCH_DATE = dt.date(1970, 1, 1)


def iso_utc(ts_ns: int) -> str:
    """RFC 3339 UTC with a Z, to the second (or finer when the time has a fraction)."""
    sec, frac = divmod(int(ts_ns), NS)
    t = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        t += f".{frac:09d}".rstrip("0")
    return t + "Z"


def zoned_text(t: dt.datetime, timespec: str = "seconds") -> str:
    """An aware time as people read it: date, a space, the wall clock and its UTC offset ('2026-09-05 12:00 +08:00')."""
    return t.isoformat(sep=" ", timespec=timespec)[:-6] + " " + t.isoformat()[-6:]


def parse_iso_ns(text: str) -> int:
    """RFC 3339 (UTC when it carries no offset) → integer nanoseconds."""
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * NS + t.microsecond * 1000


def add_months(d: dt.date, months: int) -> dt.date:
    """Calendar months, the day clamped to the month's end (31 Aug + 6 months = 28/29 Feb)."""
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return dt.date(y, m, min(d.day, (nxt - dt.timedelta(days=1)).day))


class LocalCalendar:
    """Calendar days in the utility's time zone (CISTERN_TIMEZONE). Day numbers count local days since
    1970-01-01; conversions are vectorized, with the zone consulted once per distinct hour."""

    def __init__(self, timezone: str = "Asia/Shanghai"):
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (an IANA name such as Asia/Shanghai)") from None
        self.name = timezone
        self._offsets: dict[int, int] = {}
        self._starts: dict[int, int] = {}

    def offset_ns(self, ts_ns: int) -> int:
        hour = int(ts_ns) // HOUR_NS
        off = self._offsets.get(hour)
        if off is None:
            t = dt.datetime.fromtimestamp(hour * 3600, dt.UTC).astimezone(self.zone)
            off = int(t.utcoffset().total_seconds()) * NS  # type: ignore[union-attr]
            self._offsets[hour] = off
        return off

    def day_of(self, ts_ns: np.ndarray) -> np.ndarray:
        """Local day number of each UTC timestamp."""
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        if ts_ns.size == 0:
            return np.empty(0, dtype=np.int64)
        lo, hi = int(ts_ns.min()), int(ts_ns.max())
        off_lo = self.offset_ns(lo)
        # Most zones (Asia/Shanghai) have one offset all year; a DST zone is handled per distinct hour.
        if off_lo == self.offset_ns(hi) and hi - lo < 20 * DAY_NS and off_lo == self.offset_ns((lo + hi) // 2):
            return (ts_ns + off_lo) // DAY_NS
        hours, inverse = np.unique(ts_ns // HOUR_NS, return_inverse=True)
        offs = np.array([self.offset_ns(int(h) * HOUR_NS) for h in hours], dtype=np.int64)
        return (ts_ns + offs[inverse]) // DAY_NS

    def day_of_one(self, ts_ns: int) -> int:
        return (int(ts_ns) + self.offset_ns(ts_ns)) // DAY_NS

    def day_start_ns(self, day: int) -> int:
        """UTC nanoseconds of local midnight starting `day`."""
        t = self._starts.get(day)
        if t is None:
            d = EPOCH_DATE + dt.timedelta(days=int(day))
            t = self.midnight_ns(d)
            self._starts[day] = t
        return t

    def midnight_ns(self, date: dt.date) -> int:
        """UTC nanoseconds of local midnight starting a calendar date."""
        return int(dt.datetime(date.year, date.month, date.day, tzinfo=self.zone).timestamp()) * NS

    def add_months(self, day: int, months: int) -> int:
        """A local day number `months` calendar months later (the day clamped to the month's end)."""
        return self.day_of_date(add_months(self.date_of(day), months))

    @staticmethod
    def date_of(day: int) -> dt.date:
        return EPOCH_DATE + dt.timedelta(days=int(day))

    @staticmethod
    def weekday(day: int) -> int:
        """Monday 0 … Sunday 6 (1970-01-01 was a Thursday)."""
        return (int(day) + 3) % 7

    @staticmethod
    def day_of_date(d: dt.date) -> int:
        return (d - EPOCH_DATE).days

    def local_text(self, ts_ns: int) -> str:
        """A time as a dispatcher reads it: local wall clock to the minute, with its UTC offset (a person must never
        have to guess the zone: '2026-09-05 12:00 +08:00')."""
        return zoned_text(dt.datetime.fromtimestamp(int(ts_ns) / NS, self.zone), "minutes")

    def local_date(self, ts_ns: int) -> str:
        return dt.datetime.fromtimestamp(int(ts_ns) / NS, self.zone).date().isoformat()

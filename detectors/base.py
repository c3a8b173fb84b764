"""The shared detector machinery: the Detector interface, the utility's local calendar, and a per-batch sorted
view of meter readings that every detector reuses (one sort per batch, not one per detector)."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch, MeterReadings
from devices.registry import Registry

HOUR_NS = 3600 * NS
DAY_NS = 86400 * NS
EPOCH_DATE = dt.date(1970, 1, 1)

# Axes a state array is indexed by; restore() remaps rows by device id along them.
AXES = ("meter", "cell", "building", "tank", "scalar")


class Params(BaseModel):
    """Base of every detector's settings: unknown keys are a mistake the user must hear about."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
            t = int(dt.datetime(d.year, d.month, d.day, tzinfo=self.zone).timestamp()) * NS
            self._starts[day] = t
        return t

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
        """A time as a dispatcher reads it: local wall clock, minutes."""
        t = dt.datetime.fromtimestamp(int(ts_ns) / NS, self.zone)
        return t.strftime("%Y-%m-%d %H:%M")


class MeterView:
    """Meter readings of one batch sorted by (meter, ts), with group boundaries; computed lazily, once."""

    def __init__(self, readings: MeterReadings):
        self.readings = readings
        self.n = len(readings)

    @cached_property
    def order(self) -> np.ndarray:
        r = self.readings
        if self.n == 0:
            return np.empty(0, dtype=np.int64)
        meter = r.meter
        if int(meter.max()) < 65536 and int(meter.min()) >= 0:
            # A stable sort on the meter alone is a radix sort on uint16 (several times cheaper than a sort on a
            # wide key). Readings usually arrive in time order per meter, and then it already is the (meter,
            # second) order below; the sorted meter and time columns come out of the check for free.
            o = np.argsort(meter.astype(np.uint16), kind="stable")
            m, t = meter[o], r.ts_ns[o]
            if not np.any((t[1:] < t[:-1]) & (m[1:] == m[:-1])):
                self.__dict__["_cols"] = {"meter": m, "ts_ns": t}
                self.__dict__["ts_ordered"] = True
                return o
        # One int64 key (meter in the high bits, seconds since the batch's first reading below): a single
        # stable sort, which is timsort on int64 and so fast on the decoder's per-message runs.
        sec = r.ts_ns // NS
        key = (r.meter.astype(np.int64) << 38) | (sec - sec.min())
        return np.argsort(key, kind="stable")

    def col(self, name: str) -> np.ndarray:
        """One column in view order (shared by every detector: never write into it)."""
        order = self.order  # first: computing the order may fill the cache
        cache = self.__dict__.setdefault("_cols", {})
        c = cache.get(name)
        if c is None:
            c = getattr(self.readings, name)[order]
            cache[name] = c
        return c

    @cached_property
    def ts_ordered(self) -> bool:
        """True when time never goes back within a meter's rows (true as well of any subset of the rows): the
        order is then (meter, ts_ns, row) exactly, not only (meter, whole second, row)."""
        m, t = self.meter, self.ts
        return not np.any((t[1:] < t[:-1]) & (m[1:] == m[:-1]))

    @cached_property
    def meter(self) -> np.ndarray:
        return self.col("meter")

    @cached_property
    def ts(self) -> np.ndarray:
        return self.col("ts_ns")

    @cached_property
    def first(self) -> np.ndarray:
        """True on the first row of each meter's group."""
        m = self.meter
        f = np.empty(self.n, dtype=bool)
        if self.n:
            f[0] = True
            np.not_equal(m[1:], m[:-1], out=f[1:])
        return f

    @cached_property
    def last(self) -> np.ndarray:
        m = self.meter
        f = np.empty(self.n, dtype=bool)
        if self.n:
            f[-1] = True
            np.not_equal(m[1:], m[:-1], out=f[:-1])
        return f

    @cached_property
    def starts(self) -> np.ndarray:
        return np.flatnonzero(self.first)

    @cached_property
    def ends(self) -> np.ndarray:
        """Last row of each meter's group (the row before the next group's first)."""
        s = self.starts
        e = np.empty_like(s)
        if s.size:
            e[:-1] = s[1:] - 1
            e[-1] = self.n - 1
        return e

    @cached_property
    def meters(self) -> np.ndarray:
        """The distinct meters of the batch, in sorted order (one per group)."""
        return self.meter[self.starts]


def group_index(first: np.ndarray) -> np.ndarray:
    """Group number of each row, given the first-row flags of contiguous groups."""
    return np.cumsum(first) - 1


def round_or_none(x: Any, digits: int = 3) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def alert_id(kind: str, subject_id: str, start_ns: int) -> str:
    """Stable per incident: the same condition seen again after a restart keeps its id."""
    return f"{kind}/{subject_id}/{iso_utc(start_ns).replace('-', '').replace(':', '')}"


class Detector(ABC):
    """One detector: per-device state in numpy arrays indexed by the registry, fed whole batches.

    `update(batch, view)` folds readings into state (no Python loop over readings); `tick(now_ns)` handles
    time passing and emits incidents; `state()`/`restore()` checkpoint everything as numpy arrays.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[Params]]
    # state array name -> axis its first dimension is indexed by (for restore by device id)
    state_axes: ClassVar[dict[str, str]]
    # True when conditions are about time passing between readings (silence): a long batch is then fed in
    # slices with a tick after each, so the detector sees the clock move as it did when the data was sent
    ticks_inside_batches: ClassVar[bool] = False

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        self.registry = registry
        if params is None:
            params = self.Params()
        elif isinstance(params, dict):
            params = self.Params.model_validate(params)
        self.params = params
        self.calendar = calendar
        self._init_state()

    @abstractmethod
    def _init_state(self) -> None:
        """Fresh state arrays as attributes named in state_axes."""

    @abstractmethod
    def update(self, batch: Batch, view: MeterView) -> list[AlertEvent]: ...

    @abstractmethod
    def tick(self, now_ns: int) -> list[AlertEvent]: ...

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.array(getattr(self, k), copy=True) for k in self.state_axes}

    def restore(self, blob: dict[str, np.ndarray], remap: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Load arrays saved by state(). `remap[axis] = (new_rows, old_rows)` when the registry changed."""
        for k, axis in self.state_axes.items():
            if k not in blob:
                continue  # a field added since the checkpoint keeps its fresh value
            old = np.asarray(blob[k])
            cur = getattr(self, k)
            if axis == "scalar" or remap is None or axis not in remap:
                if old.shape != cur.shape:
                    raise ValueError(f"checkpoint {self.name}.{k} has shape {old.shape}, expected {cur.shape}")
                setattr(self, k, old.astype(cur.dtype, copy=True))
            else:
                new_rows, old_rows = remap[axis]
                fresh = cur.copy()
                fresh[new_rows] = old[old_rows].astype(cur.dtype)
                setattr(self, k, fresh)
        self._after_restore()

    def _after_restore(self) -> None:  # noqa: B027 - optional hook
        """Recompute derived caches after a restore."""

    def state_bytes(self) -> int:
        return sum(np.asarray(getattr(self, k)).nbytes for k in self.state_axes)

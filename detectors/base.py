"""The shared detector machinery: the Detector interface (parameters apart from learned state, learned state apart
from derived caches), the board of open incidents detectors may read, and a per-batch sorted view of meter readings
that every detector reuses (one sort per batch, not one per detector)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch, MeterReadings
from devices.registry import Registry
from devices.time import DAY_NS, HOUR_NS, LocalCalendar

__all__ = ["AXES", "DAY_NS", "HOUR_NS", "Board", "Detector", "LocalCalendar", "MeterView", "Params", "alert_id",
           "group_index", "param", "round_or_none", "unit_of"]

# Axes a state array is indexed by; restore() remaps rows by device id along them.
AXES = ("meter", "cell", "building", "tank", "room", "scalar")


class Params(BaseModel):
    """Base of every detector's settings: unknown keys are a mistake the user must hear about. Every field is made
    with `param()`: a default, a unit and a meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def param(default: Any, unit: str, description: str, **constraints: Any) -> Any:
    """A detector parameter: its default, its unit ("h", "m3/day", "dB", "1" for a plain number or share, "count"…)
    and what it means physically. The unit is shown beside the description in the settings reference."""
    return Field(default, description=f"{description} [{unit}]", json_schema_extra={"unit": unit}, **constraints)


def unit_of(field: Any) -> str | None:
    extra = field.json_schema_extra
    return extra.get("unit") if isinstance(extra, dict) else None


class Board:
    """Open incidents as the detectors raised and cleared them (read-only to the detectors: the DetectorSet writes
    it). Lets one detector stay quiet on a meter another already explains (a meter with an open reverse_flow is not
    also a bypass), and lets pump-room incidents name each other: for tanks and pump rooms it keeps the latest
    incident of each kind (its start, when it was raised, when it was cleared), from which its alert_id follows."""

    SUBJECTS = ("tank", "pump_room")

    def __init__(self, registry: Registry):
        self.registry = registry
        self._open: dict[str, np.ndarray] = {}
        self._latest: dict[str, np.ndarray] = {}  # "tank:<kind>" / "pump_room:<kind>" -> (n, 3) int64

    def open_mask(self, kind: str) -> np.ndarray:
        """True for each meter (registry index) with an open incident of `kind`."""
        m = self._open.get(kind)
        return m if m is not None else np.zeros(len(self.registry.meters), dtype=bool)

    def _size(self, subject_type: str) -> int:
        return len(self.registry.tanks) if subject_type == "tank" else len(self.registry.rooms)

    def latest(self, kind: str, subject_type: str) -> np.ndarray:
        """(n, 3) int64 per tank or pump room (registry index): start_ns, raised_ns (detected_at of the raise) and
        cleared_ns (0 while open) of its latest incident of `kind`; all 0 where it never had one."""
        m = self._latest.get(f"{subject_type}:{kind}")
        return m if m is not None else np.zeros((self._size(subject_type), 3), dtype=np.int64)

    def note(self, events: Sequence[AlertEvent]) -> None:
        index = self.registry.meters.index
        for e in events:
            if e.event not in ("raised", "cleared"):
                continue
            if e.subject_type in self.SUBJECTS:
                self._note_latest(e)
                continue
            if e.subject_type != "meter":
                continue
            i = index.get(e.subject_id)
            if i is None:
                continue
            mask = self._open.setdefault(e.kind, np.zeros(len(self.registry.meters), dtype=bool))
            mask[i] = e.event == "raised"

    def _note_latest(self, e: AlertEvent) -> None:
        reg = self.registry
        i = (reg.tanks.index if e.subject_type == "tank" else reg.rooms.index).get(e.subject_id)
        if i is None:
            return
        key = f"{e.subject_type}:{e.kind}"
        rows = self._latest.get(key)
        if rows is None:
            rows = self._latest[key] = np.zeros((self._size(e.subject_type), 3), dtype=np.int64)
        if e.event == "raised":
            rows[i] = (e.start_ns, e.detected_at_ns, 0)
        elif rows[i, 1]:
            rows[i, 2] = e.detected_at_ns

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in (self._open | self._latest).items()}

    def restore(self, blob: dict[str, np.ndarray], remap: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> None:
        """`remap[axis] = (new_rows, old_rows)` for the axes whose devices changed (meter, tank, room)."""
        for key, old in blob.items():
            subject, _, kind = key.rpartition(":")
            if subject:
                axis = "room" if subject == "pump_room" else subject
                fresh = np.zeros((self._size(subject), 3), dtype=np.int64)
                old = np.asarray(old, dtype=np.int64).reshape(-1, 3)
                target = self._latest
            else:
                axis = "meter"
                fresh = np.zeros(len(self.registry.meters), dtype=bool)
                old = np.asarray(old, dtype=bool)
                target = self._open
            rows = remap.get(axis) if remap else None
            if rows is None:
                if old.shape != fresh.shape:
                    raise ValueError(f"checkpoint board.{key} has shape {old.shape}, expected {fresh.shape}")
                fresh[:] = old
            else:
                fresh[rows[0]] = old[rows[1]]
            target[key] = fresh


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
        return first_rows(self.meter)

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


def _moved(values: np.ndarray, new_rows: np.ndarray, old_rows: np.ndarray) -> np.ndarray:
    """Device indexes held as values, from the old registry's rows to the new one's (-1 where the device left)."""
    size = max(int(values.max(initial=-1)), int(old_rows.max(initial=-1))) + 1
    lut = np.full(size + 1, -1, dtype=values.dtype)  # the extra last slot takes the -1s
    lut[old_rows] = new_rows
    return lut[np.where(values >= 0, values, size)]


def first_rows(keys: np.ndarray) -> np.ndarray:
    """First-row flags of the contiguous groups of equal keys (rows sorted by key)."""
    first = np.empty(keys.size, dtype=bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return first


def group_index(first: np.ndarray) -> np.ndarray:
    """Group number of each row, given the first-row flags of contiguous groups."""
    return np.cumsum(first) - 1


def row_median(rows: np.ndarray, lower: bool = False) -> np.ndarray:
    """The median of each row, NaN ignored (NaN where a row has none); `lower`: the lower of its two middle values."""
    srt = np.sort(rows, axis=1)  # (NaN last)
    cnt = np.count_nonzero(~np.isnan(rows), axis=1)
    r = np.arange(rows.shape[0])
    med = srt[r, np.maximum(cnt - 1, 0) // 2]
    if not lower:
        med = (med + srt[r, cnt // 2]) / 2
    return np.where(cnt > 0, med, np.nan)


def round_or_none(x: Any, digits: int = 3) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def alert_id(kind: str, subject_id: str, start_ns: int) -> str:
    """Stable per incident: the same condition seen again after a restart keeps its id."""
    return f"{kind}/{subject_id}/{iso_utc(start_ns).replace('-', '').replace(':', '')}"


class Detector(ABC):
    """One detector: per-device state in numpy arrays indexed by the registry, fed whole batches.

    - `params` (a `Params` model): what an operator sets; never changed by the data.
    - learned state: the arrays named in `state_axes` (name → the axis their first dimension is indexed by, so a
      restore can map rows by device id when the registry changed). `state()`/`restore()` checkpoint exactly these.
    - `state_refs`: learned arrays whose values are device indexes (a building's candidate household), by the axis
      they point into (-1: none); a restore into a changed registry points them at the same devices' new rows.
    - derived caches: the arrays named in `derived`, recomputed from learned state by `_after_restore()`.
    - everything else set in `__init__` is configuration read from the registry and must not change while running.

    `update(batch, view)` folds readings into state (no Python loop over readings) and returns the alert events it
    has to say, or None; `tick(now_ns)` handles time passing. `detectors.testing.check_detector` checks all of this.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[Params]]
    state_axes: ClassVar[dict[str, str]]
    state_refs: ClassVar[dict[str, str]] = {}
    derived: ClassVar[tuple[str, ...]] = ()
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
        self.board = Board(registry)  # replaced by the DetectorSet's shared board
        self._init_state()

    @abstractmethod
    def _init_state(self) -> None:
        """Fresh learned-state arrays (the attributes named in state_axes) and their derived caches."""

    @abstractmethod
    def update(self, batch: Batch, view: MeterView) -> Sequence[AlertEvent] | None:
        """Fold a batch in; the events it raises at once, or None."""

    @abstractmethod
    def tick(self, now_ns: int) -> Sequence[AlertEvent] | None:
        """The clock moved to `now_ns` (event time): conditions about time passing."""

    def update_sliced(self, batch: Batch, view: MeterView, ends: np.ndarray,
                      bounds: np.ndarray) -> Sequence[AlertEvent] | None:
        """A long batch (a replay chunk) in slices of rows `bounds[k]:bounds[k+1]`, with a tick at `ends[k]` after
        each, so conditions about silence are seen while they last. Detectors that `ticks_inside_batches` may
        override this with a vectorized version."""
        out: list[AlertEvent] = []
        n = len(bounds) - 1
        # pump-room rows and events go with the slice whose tick first reaches their time
        at = {name: np.minimum(np.searchsorted(ends, getattr(batch, name).ts_ns, side="left"), n - 1)
              for name in ("tanks", "rooms", "pumps")}
        ev_at = np.minimum(np.searchsorted(ends, [e.ts_ns for e in batch.events], side="left"), n - 1)
        for k in range(n):
            part = Batch(meters=batch.meters.take(np.arange(bounds[k], bounds[k + 1])),
                         tanks=batch.tanks.take(at["tanks"] == k), rooms=batch.rooms.take(at["rooms"] == k),
                         pumps=batch.pumps.take(at["pumps"] == k),
                         events=[e for e, j in zip(batch.events, ev_at, strict=True) if j == k])
            out += self.update(part, MeterView(part.meters)) or []
            out += self.tick(int(ends[k])) or []
        return out

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
            ref = self.state_refs.get(k)
            if ref is not None and remap is not None and ref in remap:
                setattr(self, k, _moved(getattr(self, k), *remap[ref]))
        self._after_restore()

    def _after_restore(self) -> None:  # noqa: B027 - optional hook
        """Recompute the derived caches from learned state."""

    def state_bytes(self) -> int:
        return sum(np.asarray(getattr(self, k)).nbytes for k in self.state_axes)

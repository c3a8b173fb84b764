"""Tank water: out of GB 5749-2022 limits for 30 minutes of consecutive readings (`water_quality`), and a sensor
stuck on one value while the water changes or reading the impossible (`sensor_fault`, a maintenance case)."""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent
from devices.batch import Batch, PumpReadings, TankReadings
from devices.registry import Registry

from ..base import HOUR_NS, Detector, LocalCalendar, MeterView, Params
from .limits import (
    COLUMNS,
    LEVEL_FLOOR_M,
    LEVEL_STEP_M,
    PARAMETERS,
    Limits,
    WaterQualityParams,
    readings_needed,
)
from .quality_events import QualityEvents
from .rows import Rows

GAPS = 5  # reporting gaps kept per tank for its interval (their median)
I16 = np.iinfo(np.int16).max


class WaterQualityDetector(Detector):
    name = "water_quality"
    kinds = ("water_quality", "sensor_fault")
    Params: ClassVar[type[Params]] = WaterQualityParams
    params: WaterQualityParams
    state_axes: ClassVar[dict[str, str]] = {
        # the tank's telemetry: last time, reporting gaps, level, the water's changes, cleanings
        "last_ts": "tank", "gaps": "tank", "level_last": "tank", "level_full": "tank", "moves": "tank",
        "last_record": "tank", "last_drawn": "tank",
        # runs out of limits per parameter, the run back in limits, the open incident
        "run": "tank", "run_start": "tank", "in_run": "tank", "open": "tank", "inc_start": "tank",
        "inc_seen": "tank", "inc_far": "tank", "inc_bucket": "tank", "inc_lo": "tank", "inc_hi": "tank",
        "inc_link": "tank",
        # sensors: the value each one repeats since when, impossible readings, the open sensor fault
        "eq_value": "tank", "eq_since": "tank", "eq_moves": "tank", "bad_run": "tank", "bad_start": "tank",
        "ok_run": "tank", "sf_open": "tank", "sf_start": "tank",
    }

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        self.limits = Limits(self.params)
        self.texts = QualityEvents(self)

    def _init_state(self) -> None:
        n = len(self.registry.tanks)
        k = len(PARAMETERS)
        self.last_ts = np.zeros(n, dtype=np.int64)
        self.gaps = np.zeros((n, GAPS), dtype=np.uint16)
        self.level_last = np.full(n, np.nan, dtype=np.float32)
        self.level_full = np.full(n, np.nan, dtype=np.float32)
        self.moves = np.zeros(n, dtype=np.int32)
        self.last_record = np.zeros(n, dtype=np.int64)
        self.last_drawn = np.zeros(n, dtype=np.int64)
        self.run = np.zeros((n, k), dtype=np.int16)
        self.run_start = np.zeros((n, k), dtype=np.int64)
        self.in_run = np.zeros(n, dtype=np.int16)
        self.open = np.zeros(n, dtype=np.int8)
        self.inc_start = np.zeros(n, dtype=np.int64)
        self.inc_seen = np.zeros(n, dtype=np.uint8)  # bit k: parameter k has been out 30 minutes in the incident
        self.inc_far = np.zeros(n, dtype=np.int8)
        self.inc_bucket = np.zeros(n, dtype=np.int16)
        self.inc_lo = np.full((n, k), np.nan, dtype=np.float32)
        self.inc_hi = np.full((n, k), np.nan, dtype=np.float32)
        self.inc_link = np.zeros(n, dtype=np.int64)  # start of the intrusion the open incident names
        self.eq_value = np.full((n, k), np.nan, dtype=np.float32)
        self.eq_since = np.zeros((n, k), dtype=np.int64)
        self.eq_moves = np.zeros((n, k), dtype=np.int32)
        self.bad_run = np.zeros(n, dtype=np.int16)
        self.bad_start = np.zeros(n, dtype=np.int64)
        self.ok_run = np.zeros(n, dtype=np.int16)
        self.sf_open = np.zeros(n, dtype=np.int8)
        self.sf_start = np.zeros(n, dtype=np.int64)

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> list[AlertEvent] | None:
        self._records(batch)
        if not len(batch.tanks):
            return None
        out = self._tanks(batch.tanks, batch.pumps)
        out.sort(key=lambda e: (e.detected_at_ns, e.kind != "water_quality", e.subject_id))
        return out or None

    def _tanks(self, tr: TankReadings, pumps: PumpReadings) -> list[AlertEvent]:
        """Tank rows of one batch. Tanks with news (a reading out of limits or impossible, an open incident or
        sensor fault, a sensor that may have stuck) go the exact way; the others only have their end state worked
        out."""
        rows = Rows(tr.tank, tr.ts_ns, self.last_ts)
        if not rows.n:
            return []
        c = _Cols(rows, np.vstack([rows.take(getattr(tr, COLUMNS[p])) for p in PARAMETERS]),
                  rows.take(tr.level_m))
        old_gaps, ring = rows.gaps(self.gaps)
        self._water(c, pumps)
        news = self._news(c)
        if not news.all():
            quiet = ~news
            self._quiet(c, quiet)
            self._keep_common(c, ring, quiet)
            if not news.any():
                return []
            c, old_gaps, ring = c.subset(news), old_gaps[news], ring[news]
        return self._exact(c, old_gaps, ring)

    def _exact(self, c: _Cols, old_gaps: np.ndarray, ring: np.ndarray) -> list[AlertEvent]:
        """Every rule, reading by reading (vectorized), for the tanks with news."""
        rows, values = c.rows, c.values
        interval = rows.interval(old_gaps, ring)
        c.interval = interval[rows.gid]
        c.need = readings_needed(interval, self.params.out_for_min)[rows.gid]
        c.need_back = readings_needed(interval, self.params.back_for_min)[rows.gid]
        self._full_water(c)
        self._stuck(c)
        lim = self.limits
        c.implausible = lim.implausible(values)
        c.bad = c.implausible.any(axis=1) | (c.level < LEVEL_FLOOR_M)
        c.low, c.high = lim.low(values), lim.high(values)
        self._sensors(c)
        self._quality(c)
        out = self.texts.events(c)
        self._keep(c)
        c.since_end, c.since_moves_end = c.since[rows.ends], c.since_moves[rows.ends]
        c.drawn_end = c.drawn[rows.ends]
        self._keep_common(c, ring)
        return out + self.texts.links(c)

    def _news(self, c: _Cols) -> np.ndarray:
        """Per tank of the batch: whether it needs the exact way. A value repeated for frozen_h needs a stretch
        that long: one that began before the batch (its start is carried), or one inside a batch at least that
        long (then every tank goes the exact way)."""
        rows, vt = c.rows, c.vt
        d, e = rows.devices, rows.ends
        lim = self.limits
        odd = ((vt < lim.lo[:, None]) | (vt > lim.hi[:, None])).any(axis=0) | (c.level < LEVEL_FLOOR_M)
        news = (np.add.reduceat(odd, rows.starts) > 0) | (self.open[d] == 1) | (self.sf_open[d] == 1)
        frozen_ns = int(self.params.frozen_h * HOUR_NS)
        news |= (rows.ts[e][:, None] - self.eq_since[d] >= frozen_ns).any(axis=1)
        if (rows.ts[e] - rows.ts[rows.starts] >= frozen_ns).any():
            news[:] = True
        return news

    def _quiet(self, c: _Cols, sel: np.ndarray) -> None:
        """Tanks with no news (`sel`, per tank of the batch): each one's end state (the value each sensor repeats,
        since when), runs out of limits end, runs in limits grow."""
        rows = c.rows
        d = rows.devices
        # parameters side by side as rows (3, readings): comparisons run along contiguous memory
        v32 = c.vt.astype(np.float32)
        before = np.empty_like(v32)
        before[:, 1:] = v32[:, :-1]
        before[:, rows.starts] = self.eq_value[d].T
        j = (np.maximum.reduceat((v32 != before) * (rows.idx + 1), rows.starts, axis=1) - 1).T
        jj = np.maximum(j, 0)
        c.since_end = np.where(j >= 0, rows.ts[jj], self.eq_since[d])
        c.since_moves_end = np.where(j >= 0, c.moves[jj], self.eq_moves[d])
        c.drawn_end = self._drawn_end(c)
        d, n = d[sel], rows.counts[sel]
        self.run[d] = 0
        self.in_run[d] = np.minimum(self.in_run[d].astype(np.int64) + n, I16)
        self.bad_run[d] = 0
        self.ok_run[d] = np.minimum(self.ok_run[d].astype(np.int64) + n, I16)

    def tick(self, now_ns: int) -> None:
        return None

    def _records(self, batch: Batch) -> None:
        """Disinfection records: high chlorine after them is expected (a record naming no tank covers the room)."""
        tanks = self.registry.tanks
        for e in batch.events:
            if e.device != "pumproom" or e.type != "disinfection":
                continue
            tid = e.fields.get("tank_id")
            targets = [tanks.index[tid]] if tid in tanks.index else np.flatnonzero(tanks.room == e.index).tolist()
            for i in targets:
                self.last_record[i] = max(int(self.last_record[i]), e.ts_ns)

    def _water(self, c: _Cols, pumps: PumpReadings) -> None:
        """Whether the water changed at each reading: the level moved, or a pump of the room ran in the batch's
        telemetry (in a live batch: that very message)."""
        rows, level = c.rows, c.level
        room = self.registry.tanks.room[rows.dev]
        moved = np.abs(level - rows.prev(level, self.level_last.astype(np.float64))) >= LEVEL_STEP_M
        ran = np.bincount(pumps.room[pumps.running == 1], minlength=len(self.registry.rooms)) > 0
        moved |= ran[room]
        c.moves = rows.counter(moved, self.moves)
        with np.errstate(invalid="ignore"):
            top = np.fmax.reduceat(level, rows.starts)
        c.full_end = np.fmax(top, self.level_full[rows.devices])

    def _drawn_end(self, c: _Cols) -> np.ndarray:
        """When each tank was last drawn near empty (a cleaning), judged against its full level at the batch's end."""
        rows = c.rows
        drawn = c.level <= self.params.drawdown_fraction * c.full_end[rows.gid]
        j = np.maximum.reduceat(drawn * (rows.idx + 1), rows.starts) - 1
        return np.where(j >= 0, rows.ts[np.maximum(j, 0)], self.last_drawn[rows.devices])

    def _full_water(self, c: _Cols) -> None:
        """The full level so far and the last cleaning at each reading (the exact way, for a batch with news)."""
        rows, level = c.rows, c.level
        seen = np.isfinite(level)
        # a running maximum per tank (an offset per tank keeps it from spilling over)
        lv = np.where(seen & (level < 1e5), level, -1e5)
        acc = np.maximum.accumulate(lv + rows.gid * 1e6) - rows.gid * 1e6
        c.full = np.fmax(np.where(acc > -1e5, acc, np.nan), self.level_full[rows.dev])
        c.drawn = rows.ffill(seen & (level <= self.params.drawdown_fraction * c.full), rows.ts, self.last_drawn)

    def _stuck(self, c: _Cols) -> None:
        """Sensors repeating one value for frozen_h while the water changed at frozen_min_changes readings."""
        rows, p = c.rows, self.params
        v32 = c.values.astype(np.float32)  # compared as kept (float32), so a batch boundary is no change of value
        same = v32 == rows.prev(v32, self.eq_value)
        j = rows.last_true(~same)
        c.since = np.where(j >= 0, rows.ts[np.maximum(j, 0)], self.eq_since[rows.dev])
        c.since_moves = np.where(j >= 0, c.moves[np.maximum(j, 0)], self.eq_moves[rows.dev])
        c.frozen = same & (rows.ts[:, None] - c.since >= int(p.frozen_h * HOUR_NS)) & \
            (c.moves[:, None] - c.since_moves >= p.frozen_min_changes)

    def _sensors(self, c: _Cols) -> None:
        """The sensor-fault switch: a stuck sensor, or impossible readings for out_for_min."""
        rows = c.rows
        bad = c.bad
        c.bad_run = rows.runs(bad, self.bad_run)
        c.bad_start = rows.run_start(bad, self.bad_start, self.bad_run)
        c.ok_run = rows.runs(~bad, self.ok_run)
        stuck = c.frozen.any(axis=1)
        c.sf = rows.latch(stuck | (c.bad_run >= c.need), ~stuck & (c.ok_run >= c.need), self.sf_open)
        c.sf_prev = rows.prev(c.sf, self.sf_open.astype(bool))
        first = np.where(c.frozen, c.since, np.iinfo(np.int64).max).min(axis=1)
        first = np.where(c.bad_run >= c.need, np.minimum(first, c.bad_start), first)
        c.sf_start = rows.ffill(c.sf & ~c.sf_prev, first, self.sf_start)

    def _quality(self, c: _Cols) -> None:
        """Runs out of limits per parameter, the incident switch, its start, severity and reasons to update it."""
        rows, v, p = c.rows, c.values, self.params
        ts = rows.ts
        high = c.high.copy()
        expected = ts - np.maximum(self.last_record[rows.dev], c.drawn) <= int(p.after_disinfection_h * HOUR_NS)
        high[:, 0] &= ~expected
        out = (c.low | high) & ~c.implausible
        c.out = out
        c.run = rows.runs(out, self.run)
        c.run_start = rows.run_start(out, self.run_start, self.run)
        qual = c.run >= c.need[:, None]
        c.qual = qual
        c.in_run = rows.runs(~out.any(axis=1), self.in_run)
        c.open = rows.latch(qual.any(axis=1), c.in_run >= c.need_back, self.open)
        c.prev_open = rows.prev(c.open, self.open.astype(bool))
        raised = c.open & ~c.prev_open
        c.raised = raised
        at_raise = np.where(qual, c.run_start, np.iinfo(np.int64).max).min(axis=1)
        c.inc_start = rows.ffill(raised, at_raise, self.inc_start)
        far = (self.limits.far(v) & out).any(axis=1)
        c.far = rows.latch(c.open & far, ~c.open | (raised & ~far), self.inc_far)
        crit_ns = int(p.critical_after_h * HOUR_NS)
        c.crit = c.open & (c.far | (ts - c.inc_start >= crit_ns))
        carry_crit = (self.open == 1) & ((self.inc_far == 1) | (self.last_ts - self.inc_start >= crit_ns))
        c.crit_prev = rows.prev(c.crit, carry_crit)
        bits = ((self.inc_seen[:, None] >> np.arange(len(PARAMETERS))) & 1).astype(bool)
        open2 = c.open[:, None]
        c.seen = rows.latch(open2 & qual, ~open2 | (raised[:, None] & ~qual), bits)
        grew = (c.seen & ~rows.prev(c.seen, bits)).any(axis=1)
        every = int(p.update_every_h * HOUR_NS)
        c.bucket = np.where(c.open, (ts - c.inc_start) // every, -1)
        prev_bucket = rows.prev(c.bucket, np.where(self.open == 1, self.inc_bucket, -1).astype(np.int64))
        c.updated = c.open & ~raised & ((c.crit & ~c.crit_prev) | grew | (c.bucket > prev_bucket))

    def _keep_common(self, c: _Cols, ring: np.ndarray, sel: np.ndarray | slice = slice(None)) -> None:
        """Each tank's telemetry state at its last reading of the batch (of the tanks `sel` selects)."""
        rows = c.rows
        d, e = rows.devices[sel], rows.ends[sel]
        self.last_ts[d] = rows.ts[e]
        self.gaps[d] = np.clip(np.nan_to_num(np.rint(ring[sel])), 0, np.iinfo(np.uint16).max)
        self.level_last[d] = c.level[e]
        self.level_full[d] = c.full_end[sel]
        self.moves[d] = c.moves[e]
        self.last_drawn[d] = c.drawn_end[sel]
        self.eq_value[d] = c.vt[:, e].T
        self.eq_since[d] = c.since_end[sel]
        self.eq_moves[d] = c.since_moves_end[sel]

    def _keep(self, c: _Cols) -> None:
        """Each tank's incident and sensor state at its last reading of the batch."""
        rows = c.rows
        d, e = rows.devices, rows.ends
        self.run[d] = np.minimum(c.run[e], I16)
        self.run_start[d] = c.run_start[e]
        self.in_run[d] = np.minimum(c.in_run[e], I16)
        self._keep_incident(c)
        self.bad_run[d] = np.minimum(c.bad_run[e], I16)
        self.bad_start[d] = c.bad_start[e]
        self.ok_run[d] = np.minimum(c.ok_run[e], I16)
        self.sf_open[d] = c.sf[e]
        self.sf_start[d] = np.where(c.sf[e], c.sf_start[e], 0)

    def _keep_incident(self, c: _Cols) -> None:
        rows = c.rows
        d, e = rows.devices, rows.ends
        was_open = self.open[d] == 1
        carried_start = self.inc_start[d]
        self.open[d] = c.open[e]
        self.inc_start[d] = np.where(c.open[e], c.inc_start[e], 0)
        self.inc_seen[d] = np.where(c.open[e], (c.seen[e] * (1 << np.arange(len(PARAMETERS)))).sum(axis=1), 0)
        self.inc_far[d] = c.far[e]
        self.inc_bucket[d] = np.clip(c.bucket[e], 0, I16)
        # extremes of the open incident: its rows in this batch, plus what was carried if it began before
        same = c.open & (c.inc_start == c.inc_start[e][rows.gid])
        lo = np.where(same[:, None], c.values, np.nan)
        lo_end = _group_reduce(np.fmin, lo, rows)
        hi_end = _group_reduce(np.fmax, lo, rows)
        keep_old = (was_open & (carried_start == self.inc_start[d]))[:, None]
        self.inc_lo[d] = np.where(keep_old, np.fmin(self.inc_lo[d], lo_end), lo_end)
        self.inc_hi[d] = np.where(keep_old, np.fmax(self.inc_hi[d], hi_end), hi_end)
        same_incident = c.open[e] & was_open & (carried_start == self.inc_start[d])
        self.inc_link[d] = np.where(same_incident, self.inc_link[d], 0)
        self.inc_link[d] = np.where(c.open[e], np.maximum(self.inc_link[d], c.linked_at_end), 0)


def _group_reduce(ufunc: np.ufunc, values: np.ndarray, rows: Rows) -> np.ndarray:
    """Per device (in `devices` order) the reduction of its rows, NaN-aware (fmin/fmax)."""
    with np.errstate(invalid="ignore"):
        return ufunc.reduceat(values, rows.starts, axis=0)


class _Cols:
    """The batch's per-reading columns, in Rows order, as the steps of an update fill them."""

    def __init__(self, rows: Rows, vt: np.ndarray, level: np.ndarray):
        self.rows = rows
        self.vt = vt  # (parameter, reading)
        self.level = level
        self.linked_at_end = np.zeros(rows.devices.size, dtype=np.int64)

    @cached_property
    def values(self) -> np.ndarray:
        """(reading, parameter)."""
        return np.ascontiguousarray(self.vt.T)

    def subset(self, sel: np.ndarray) -> _Cols:
        """The columns of the tanks `sel` picks, as far as they are worked out (the water's changes, the full
        level)."""
        keep = sel[self.rows.gid]
        out = _Cols(self.rows.subset(sel), self.vt[:, keep], self.level[keep])
        out.moves, out.full_end = self.moves[keep], self.full_end[sel]
        return out

"""Bypass: per building and local calendar day, master meter minus its households against the building's own
baseline; when the gap grows, the household whose metered use fell by about as much is the subject."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from devices.alerts import AlertEvent
from devices.batch import NS, Batch
from devices.registry import Registry

from .base import Detector, LocalCalendar, MeterView, Params, alert_id, round_or_none

OK, PENDING, OPEN, CLEAR_PENDING = 0, 1, 2, 3
EPOCH_S = 946684800  # 2000-01-01: day-end snapshots keep int32 seconds from here (good until 2068)


class BypassParams(Params):
    finalize_lag_s: int = Field(36 * 3600, gt=0, le=2 * 86400,
                                description="a day is judged this long after it ends (daily meters upload late)")
    snapshot_tolerance_s: int = Field(3 * 3600, gt=0, description="a day-end register reading may be this early")
    min_reported_fraction: float = Field(0.8, gt=0, le=1, description="share of households that must have reported")
    min_baseline_days: int = Field(3, ge=1, description="days of building history before judging")
    baseline_alpha: float = Field(0.2, gt=0, le=1, description="weight of a new day in the baselines")
    min_growth_m3: float = Field(0.1, gt=0, description="a gap growth below this (m3/day) is noise")
    growth_mad_k: float = Field(3.0, ge=0, description="… and it must exceed this many typical daily deviations")
    min_drop_m3: float = Field(0.05, gt=0, description="a household's drop below this (m3/day) is noise")
    match_tolerance: float = Field(0.35, gt=0, lt=1, description="household drop within this share of the growth")
    persist_days: int = Field(2, ge=1, description="consecutive matching days before raising")
    clear_days: int = Field(2, ge=1, description="consecutive days with the gap back before clearing")
    meter_unit: str = Field("{district} water company district unit", description="route for meter incidents")


class BypassDetector(Detector):
    name = "bypass"
    kinds = ("bypass",)
    Params: ClassVar[type[Params]] = BypassParams
    params: BypassParams
    state_axes: ClassVar[dict[str, str]] = {
        "snap_s": "meter", "snap_v": "meter", "use_ref": "meter",
        "gap_ref": "building", "gap_dev": "building", "base_days": "building", "cand": "building",
        "streak": "building", "cand_day": "building", "gap_sum": "building", "use_sum": "building",
        "status": "building", "open_day": "building", "est": "building", "gap_before": "building",
        "use_before": "building", "gap_last": "building", "use_last": "building", "calm": "building",
        "next_day": "scalar", "now": "scalar",
    }

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        m, b = registry.meters, registry.buildings
        has_master = b.master_meter >= 0
        bld = m.building.astype(np.int64)
        self.household = (bld >= 0) & ~m.is_master
        self.household &= np.where(bld >= 0, has_master[np.maximum(bld, 0)], False)
        self.in_balance = self.household.copy()
        self.in_balance[b.master_meter[has_master]] = True
        self.bld = bld
        self.n_households = np.bincount(bld[self.household], minlength=len(b))
        self.buildings = np.flatnonzero(has_master & (self.n_households > 0))

    @property
    def K(self) -> int:
        return int(np.ceil(self.params.finalize_lag_s / 86400)) + 2

    def _init_state(self) -> None:
        n, nb, K = len(self.registry.meters), len(self.registry.buildings), self.K
        self.snap_s = np.zeros((n, K), dtype=np.int32)  # ts of the latest reading of a day (0: none)
        self.snap_v = np.full((n, K), np.nan)  # its register
        self.use_ref = np.full(n, np.nan, dtype=np.float32)  # a household's usual daily use
        self.gap_ref = np.full(nb, np.nan, dtype=np.float32)
        self.gap_dev = np.zeros(nb, dtype=np.float32)
        self.base_days = np.zeros(nb, dtype=np.int16)
        self.cand = np.full(nb, -1, dtype=np.int32)
        self.streak = np.zeros(nb, dtype=np.int16)
        self.cand_day = np.zeros(nb, dtype=np.int32)
        self.gap_sum = np.zeros(nb, dtype=np.float32)
        self.use_sum = np.zeros(nb, dtype=np.float32)
        self.status = np.zeros(nb, dtype=np.int8)
        self.open_day = np.zeros(nb, dtype=np.int32)
        self.est = np.zeros(nb, dtype=np.float32)
        self.gap_before = np.zeros(nb, dtype=np.float32)
        self.use_before = np.zeros(nb, dtype=np.float32)
        self.gap_last = np.zeros(nb, dtype=np.float32)
        self.use_last = np.zeros(nb, dtype=np.float32)
        self.calm = np.zeros(nb, dtype=np.int16)
        self.next_day = np.full(1, -1, dtype=np.int64)  # next local day to judge (-1: no data yet)
        self.now = np.zeros(1, dtype=np.int64)

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> list[AlertEvent]:
        for e in batch.events:
            if e.device == "meter" and e.type == "replacement" and self.in_balance[e.index]:
                self._forget_before(e.index, e.ts_ns)
        if view.n == 0:
            return []
        keep = self.in_balance[view.meter]
        if not keep.any():
            return []
        rows = np.flatnonzero(keep)
        gm, gts = view.meter[rows], view.ts[rows]
        self.now[0] = max(int(self.now[0]), int(gts.max()))
        # a day's end belongs to it: the 00:00 reading closes the previous day
        day = self.calendar.day_of(gts - 1)
        if self.next_day[0] < 0:
            self.next_day[0] = int(day.min()) + 1
        # the latest reading of each (meter, day): rows are sorted by meter then time
        last = np.empty(rows.size, dtype=bool)
        last[-1] = True
        np.logical_or(gm[1:] != gm[:-1], day[1:] != day[:-1], out=last[:-1])
        gm, gts, day = gm[last], gts[last], day[last]
        val = view.col("total_m3")[rows[last]]
        K = self.K
        out: list[AlertEvent] = []
        # a batch spanning more days than the ring holds (no tick in between): judge the old days first
        while day.max() > self.next_day[0] + K - 2:
            cut = day <= self.next_day[0] + K - 2
            self._write(gm[cut], gts[cut], day[cut], val[cut])
            gm, gts, day, val = gm[~cut], gts[~cut], day[~cut], val[~cut]
            self._judge(int(self.next_day[0]), int(self.now[0]))
            self.next_day[0] += 1
        self._write(gm, gts, day, val)
        return out

    def _write(self, gm, gts, day, val) -> None:
        if gm.size == 0:
            return
        ok = day >= self.next_day[0] - 1  # days already judged are gone
        gm, gts, day, val = gm[ok], gts[ok], day[ok], val[ok]
        K = self.K
        slot = day % K
        sec = (gts // NS - EPOCH_S).astype(np.int32)
        cur_s = self.snap_s[gm, slot]
        cur_day = self.calendar.day_of((cur_s.astype(np.int64) + EPOCH_S) * NS - 1)
        newer = (cur_s == 0) | (cur_day != day) | (sec > cur_s)
        gm, slot, sec, val = gm[newer], slot[newer], sec[newer], val[newer]
        self.snap_s[gm, slot] = sec
        self.snap_v[gm, slot] = val

    def _forget_before(self, i: int, ts_ns: int) -> None:
        """A replacement restarts the register: no daily use across it."""
        before = (self.snap_s[i] > 0) & (self.snap_s[i].astype(np.int64) + EPOCH_S) * NS < ts_ns
        self.snap_s[i, before] = 0
        self.snap_v[i, before] = np.nan

    # ------------------------------------------------------------------ daily judgement
    def tick(self, now_ns: int) -> list[AlertEvent]:
        now = max(int(now_ns), int(self.now[0]))
        self.now[0] = now
        out = self._emit(now)
        if self.next_day[0] < 0:
            return out
        lag = self.params.finalize_lag_s * NS
        while self.calendar.day_start_ns(int(self.next_day[0]) + 1) + lag <= now:
            self._judge(int(self.next_day[0]), now)
            self.next_day[0] += 1
            out += self._emit(now)
        return out

    def _snapshot(self, day: int) -> np.ndarray:
        """Register at the end of `day` per meter (NaN when unknown or too early in the day)."""
        K = self.K
        s = self.snap_s[:, day % K].astype(np.int64)
        end_s = self.calendar.day_start_ns(day + 1) // NS - EPOCH_S
        ok = (s > 0) & (s <= end_s) & (s >= end_s - 86400) & (s >= end_s - self.params.snapshot_tolerance_s)
        return np.where(ok, self.snap_v[:, day % K], np.nan)

    def _judge(self, day: int, now: int) -> None:
        p = self.params
        reg = self.registry
        prev, cur = self._snapshot(day - 1), self._snapshot(day)
        use = cur - prev
        half = 0.5 * reg.meters.register_max_m3
        use = np.where(use < -half, use + reg.meters.register_max_m3, use)
        use[use < -p.min_drop_m3] = np.nan  # a register that ran backwards is another detector's case
        use = np.maximum(use, 0.0)
        nb = len(reg.buildings)
        hh = self.household
        valid = hh & np.isfinite(use)
        bld = np.maximum(self.bld, 0)
        n_valid = np.bincount(bld[valid], minlength=nb)
        sum_valid = np.bincount(bld[valid], weights=use[valid], minlength=nb)
        # a household that did not report counts with its usual use, so its silence does not open a gap
        missing = hh & ~np.isfinite(use) & np.isfinite(self.use_ref)
        sum_missing = np.bincount(bld[missing], weights=self.use_ref[missing].astype(np.float64), minlength=nb)
        master = np.full(nb, np.nan)
        has_master = reg.buildings.master_meter >= 0
        master[has_master] = use[reg.buildings.master_meter[has_master]]
        with np.errstate(invalid="ignore", divide="ignore"):
            day_ok = (np.isfinite(master) & (self.n_households > 0)
                      & (n_valid >= p.min_reported_fraction * self.n_households))
        gap = master - sum_valid - sum_missing
        ready = day_ok & (self.base_days >= p.min_baseline_days)
        growth = gap - self.gap_ref
        thr = np.maximum(p.min_growth_m3, p.growth_mad_k * self.gap_dev)
        grown = ready & (growth >= thr)

        # the household whose drop matches the growth
        drop = self.use_ref - use
        g_h = growth[bld]
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(drop - g_h) / g_h
        elig = valid & grown[bld] & (drop >= p.min_drop_m3) & (err <= p.match_tolerance)
        best = np.full(nb, -1, dtype=np.int64)
        ei = np.flatnonzero(elig)
        if ei.size:
            order = ei[np.lexsort((err[ei], bld[ei]))]
            b_o = bld[order]
            firsts = np.ones(order.size, dtype=bool)
            firsts[1:] = b_o[1:] != b_o[:-1]
            best[b_o[firsts]] = order[firsts]

        st = self.status
        idle = st == OK
        # the candidate streak: the same household matching on consecutive days
        same = idle & (best >= 0) & (best == self.cand)
        fresh = idle & (best >= 0) & ~same
        self.streak[same] += 1
        self.streak[fresh] = 1
        self.cand[fresh] = best[fresh]
        self.cand_day[fresh] = day
        self.gap_sum[fresh] = 0
        self.use_sum[fresh] = 0
        on = same | fresh
        cand = np.maximum(self.cand, 0)
        self.gap_sum[on] += growth[on]
        self.use_sum[on] += np.nan_to_num(use[cand[on]])
        none = idle & (best < 0) & day_ok
        self.streak[none] = 0
        self.cand[none] = -1
        rise = on & (self.streak >= p.persist_days)
        if rise.any():
            n = self.streak[rise].astype(np.float32)
            self.status[rise] = PENDING
            self.open_day[rise] = self.cand_day[rise]
            self.est[rise] = self.gap_sum[rise] / n
            self.gap_before[rise] = self.gap_ref[rise]
            self.use_before[rise] = self.use_ref[cand[rise]]
            self.gap_last[rise] = self.gap_ref[rise] + self.gap_sum[rise] / n
            self.use_last[rise] = self.use_sum[rise] / n
        # an open incident clears once the gap is back for a few days
        is_open = (st == OPEN) & day_ok
        back = is_open & (growth < 0.5 * self.est)
        self.calm[back] += 1
        self.calm[is_open & ~back] = 0
        done = back & (self.calm >= p.clear_days)
        self.status[done] = CLEAR_PENDING
        self.gap_last[done] = gap[done]

        # baselines learn from quiet days only: a suspect household and its building stay frozen
        learn = day_ok & (self.status == OK) & (self.streak == 0)
        a = p.baseline_alpha
        first = learn & ~np.isfinite(self.gap_ref)
        dev = np.abs(gap - self.gap_ref)
        upd = learn & ~first
        self.gap_dev[upd] = np.where(self.base_days[upd] <= 1, dev[upd], (1 - a) * self.gap_dev[upd] + a * dev[upd])
        self.gap_ref[upd] = (1 - a) * self.gap_ref[upd] + a * gap[upd]
        self.gap_ref[first] = gap[first]
        self.base_days[learn] = np.minimum(self.base_days[learn] + 1, 10000)
        frozen = np.zeros(len(use), dtype=bool)
        suspects = self.cand[(self.cand >= 0) & ((self.streak > 0) | (self.status != OK))]
        frozen[suspects] = True
        h_learn = valid & day_ok[bld] & ~frozen
        ref = self.use_ref[h_learn]
        self.use_ref[h_learn] = np.where(np.isfinite(ref), (1 - a) * ref + a * use[h_learn], use[h_learn])

    def _emit(self, now: int) -> list[AlertEvent]:
        out = []
        for b in np.flatnonzero(self.status == PENDING).tolist():
            self.status[b] = OPEN
            self.calm[b] = 0
            out.append(self._event("raised", b, now))
        for b in np.flatnonzero(self.status == CLEAR_PENDING).tolist():
            out.append(self._event("cleared", b, now))
            self.status[b] = OK
            self.streak[b] = 0
            self.cand[b] = -1
        return out

    def _event(self, event: str, b: int, now: int) -> AlertEvent:
        reg = self.registry
        h = int(self.cand[b])
        meter_id, district = str(reg.meters.ids[h]), str(reg.meters.district[h])
        start = self.calendar.day_start_ns(int(self.open_day[b]))
        est = float(self.est[b])
        ev = {
            "building_id": str(reg.buildings.ids[b]),
            "master_meter_id": str(reg.buildings.master_meter_id[b]),
            "building_gap_m3_per_day_before": round_or_none(self.gap_before[b]),
            "building_gap_m3_per_day_after": round_or_none(self.gap_last[b]),
            "household_use_m3_per_day_before": round_or_none(self.use_before[b]),
            "household_use_m3_per_day_after": round_or_none(self.use_last[b]),
            "estimated_unmetered_m3_per_day": round_or_none(est),
            "since_day": str(self.calendar.date_of(int(self.open_day[b]))),
        }
        addr = str(reg.buildings.address[b])
        where = f"{meter_id} ({reg.buildings.ids[b]}{', ' + addr if addr else ''})"
        if event == "raised":
            summary = (f"Meter {where}: about {est:.2f} m3/day bypasses the meter since "
                       f"{ev['since_day']} (building gap up, household use down by the same): inspect for a bypass pipe")
        else:
            summary = f"Meter {where}: building water balance back to normal"
        return AlertEvent(
            alert_id=alert_id("bypass", meter_id, start), event=event, kind="bypass",
            severity="warning", subject_type="meter", subject_id=meter_id, district=district, start_ns=start,
            detected_at_ns=now, summary=summary, route={"unit": self.params.meter_unit.format(district=district)},
            evidence=ev)


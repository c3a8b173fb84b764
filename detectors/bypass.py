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

OK, PENDING = 0, 1  # a building's status: PENDING holds a raise decided but not yet emitted
EPOCH_S = 946684800  # 2000-01-01: day-end snapshots keep int32 seconds from here (good until 2068)


class BypassParams(Params):
    finalize_lag_s: int = Field(36 * 3600, gt=0, le=2 * 86400,
                                description="a day is judged this long after it ends (daily meters upload late)")
    snapshot_tolerance_s: int = Field(3 * 3600, gt=0, description="a day-end register reading may be this early")
    min_reported_fraction: float = Field(0.8, gt=0, le=1, description="share of households that must have reported")
    min_baseline_days: int = Field(3, ge=1, description="days of building history before judging")
    baseline_alpha: float = Field(0.2, gt=0, le=1, description="weight of a new day in the baselines")
    household_alpha: float = Field(0.1, gt=0, le=1, description="weight of a new day in a household's baseline")
    min_growth_m3: float = Field(0.05, gt=0, description="a gap growth below this (m3/day) is noise")
    growth_mad_k: float = Field(3.0, ge=0, description="… and it must exceed this many typical daily deviations "
                                                       "(divided by the square root of the days averaged)")
    min_drop_m3: float = Field(0.03, gt=0, description="a household's mean drop below this (m3/day) is noise")
    min_drop_fraction: float = Field(0.4, gt=0, le=1, description="… and at least this share of its usual use "
                                                                   "(a bypass diverts most of the flow; smaller dips "
                                                                   "are a household's normal variation)")
    missing_weight: float = Field(0.3, ge=0, description="uncertainty added per m3 of usual use of households "
                                                         "that did not report that day")
    rest_days: tuple[int, ...] = Field((5, 6), description="days of the week (Monday 0) with their own household "
                                                            "baseline: rest days")
    match_z: float = Field(3.0, ge=0, description="the household's mean drop must stand this many of its own daily "
                                                   "deviations (over the square root of the days) out of its noise")
    match_tolerance: float = Field(0.5, gt=0, lt=1, description="household drop within this share of the growth")
    persist_days: int = Field(3, ge=1, description="days of grown gap averaged before naming a household")
    settle_days: int = Field(5, ge=0, description="after a raise the building's baseline moves to its new normal "
                                                   "over this many days before new episodes are looked for")
    max_episode_days: int = Field(10, ge=1, description="no household explains the growth after this many days: "
                                                        "the building's baseline adopts it (a leak)")
    meter_unit: str = Field("{district} water company district unit", description="route for meter incidents")


class BypassDetector(Detector):
    name = "bypass"
    kinds = ("bypass",)
    Params: ClassVar[type[Params]] = BypassParams
    params: BypassParams
    state_axes: ClassVar[dict[str, str]] = {
        "snap_s": "meter", "snap_v": "meter", "use_ref": "meter",
        "ep_drop": "meter", "ep_ref": "meter", "use_dev": "meter", "repl_day": "meter", "cls_days": "building", "ratio_ref": "building", "ratio_dev": "building",
        "ep_raw": "building", "gap_ref": "building", "gap_dev": "building", "base_days": "building",
        "cand": "building", "ep_len": "building", "ep_day": "building", "ep_gap": "building",
        "status": "building", "open_day": "building", "est": "building", "gap_before": "building",
        "use_before": "building", "gap_last": "building", "use_last": "building", "ep_master": "building", "h_open": "meter", "settle": "building",
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
        # a household's usual daily use on working days [:, 0] and on rest days [:, 1] (shops close at weekends)
        self.use_ref = np.full((n, 2), np.nan, dtype=np.float32)
        self.use_dev = np.zeros(n, dtype=np.float32)  # its typical daily deviation from that
        self.ep_ref = np.zeros(n, dtype=np.float32)  # its usual use summed over the episode's days
        self.cls_days = np.zeros((nb, 2), dtype=np.int16)  # days learned per kind of day
        # the building's usual gap, on working days [:, 0] and rest days [:, 1]: a fixed volume, or a share
        # of the master's volume, each with its typical deviation
        self.gap_ref = np.full((nb, 2), np.nan, dtype=np.float32)
        self.gap_dev = np.zeros((nb, 2), dtype=np.float32)
        self.ratio_ref = np.full((nb, 2), np.nan)
        self.ratio_dev = np.zeros((nb, 2))
        self.ep_raw = np.zeros(nb, dtype=np.float32)
        self.repl_day = np.full(n, -1, dtype=np.int32)  # local day of the meter's latest replacement
        self.base_days = np.zeros(nb, dtype=np.int16)
        self.cand = np.full(nb, -1, dtype=np.int32)
        self.ep_drop = np.zeros(n, dtype=np.float32)  # a household's summed drop over its building's episode
        self.ep_len = np.zeros(nb, dtype=np.int16)  # days in the building's current episode (0: none)
        self.ep_day = np.zeros(nb, dtype=np.int32)
        self.ep_gap = np.zeros(nb, dtype=np.float32)  # summed growth of the gap over the episode
        self.status = np.zeros(nb, dtype=np.int8)
        self.open_day = np.zeros(nb, dtype=np.int32)
        self.est = np.zeros(nb, dtype=np.float32)
        self.gap_before = np.zeros(nb, dtype=np.float32)
        self.use_before = np.zeros(nb, dtype=np.float32)
        self.gap_last = np.zeros(nb, dtype=np.float32)
        self.use_last = np.zeros(nb, dtype=np.float32)
        self.ep_master = np.zeros(nb, dtype=np.float32)  # the master's volume summed over the episode
        self.h_open = np.zeros(n, dtype=np.int8)
        self.settle = np.zeros(nb, dtype=np.int16)  # days left for the baseline to settle after a raise  # 1: a bypass incident was raised on this household
        self.next_day = np.full(1, -1, dtype=np.int64)  # next local day to judge (-1: no data yet)
        self.now = np.zeros(1, dtype=np.int64)

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> list[AlertEvent]:
        for e in batch.events:
            if e.device == "meter" and e.type == "replacement" and self.in_balance[e.index]:
                self._forget_before(e.index, e.ts_ns)
                self.repl_day[e.index] = self.calendar.day_of_one(e.ts_ns)
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
        use[self.repl_day == day] = np.nan  # the register restarted that day
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
        rest = int(self.calendar.weekday(day) in self.params.rest_days)
        ref_today = self.use_ref[:, rest].astype(np.float64)
        # a household that did not report is stood in for by its usual use (the other kind of day's, if young)
        stand_in = np.where(np.isfinite(ref_today), ref_today, self.use_ref[:, 1 - rest])
        missing = hh & ~np.isfinite(use)
        known_missing = missing & np.isfinite(stand_in)
        sum_missing = np.bincount(bld[known_missing], weights=stand_in[known_missing], minlength=nb)
        unknown = np.bincount(bld[missing & ~known_missing], minlength=nb) > 0
        master = np.full(nb, np.nan)
        has_master = reg.buildings.master_meter >= 0
        master[has_master] = use[reg.buildings.master_meter[has_master]]
        day_ok = (np.isfinite(master) & (self.n_households > 0) & (n_valid >= p.min_reported_fraction * self.n_households)
                  & (~unknown | (self.base_days == 0)))
        gap_ref, gap_dev = self.gap_ref[:, rest], self.gap_dev[:, rest]  # views: updated in place below
        ratio_ref, ratio_dev = self.ratio_ref[:, rest], self.ratio_dev[:, rest]
        cls_days = self.cls_days[:, rest]
        gap = master - sum_valid - sum_missing
        ready = day_ok & (cls_days >= p.min_baseline_days)
        # two views of the building's usual gap: a fixed leak (m3/day) or a share of what the master measured
        # (under-registration); whichever has fitted this building better sets today's expectation
        dev_c = gap_dev.astype(np.float64)
        dev_r = ratio_dev * master
        by_ratio = np.isfinite(ratio_ref) & (dev_r < dev_c)
        expected = np.where(by_ratio, ratio_ref * master, gap_ref)
        # a stand-in is itself uncertain
        dev = np.hypot(np.where(by_ratio, dev_r, dev_c), p.missing_weight * sum_missing)
        growth = gap - expected
        self._diag = {"gap": gap, "expected": expected, "dev": dev, "growth": growth, "use": use, "ref": ref_today}

        # an episode: days on which the gap stays above the building's baseline; each household's drop against
        # its own baseline is summed over the same days, so noise averages out before anyone is named
        st = self.status
        in_ep = self.ep_len > 0
        thr_day = np.maximum(p.min_growth_m3, p.growth_mad_k * dev)
        settling = self.settle > 0
        begin = ready & ~in_ep & (st == OK) & (growth >= thr_day) & ~settling
        go_on = ready & in_ep
        step = begin | go_on
        # a household without a baseline for this kind of day yet adds nothing to either sum
        known = valid & np.isfinite(ref_today)
        drop = np.where(known, ref_today - use, 0.0)
        ref_sum = np.where(known, ref_today, 0.0)
        h_begin = hh & begin[bld]
        h_on = hh & go_on[bld]
        self.ep_drop[h_begin] = drop[h_begin]
        self.ep_drop[h_on] += drop[h_on]
        self.ep_ref[h_begin] = ref_sum[h_begin]
        self.ep_ref[h_on] += ref_sum[h_on]
        self.ep_len[begin] = 1
        self.ep_day[begin] = day
        self.ep_gap[begin] = growth[begin]
        self.ep_raw[begin] = gap[begin]
        self.ep_master[begin] = master[begin]
        self.ep_master[go_on] += master[go_on]
        self.ep_len[go_on] += 1
        self.ep_gap[go_on] += growth[go_on]
        self.ep_raw[go_on] += gap[go_on]
        n = np.maximum(self.ep_len, 1).astype(np.float64)
        mean_g = self.ep_gap / n
        thr_mean = np.maximum(p.min_growth_m3, p.growth_mad_k * dev / np.sqrt(n))
        idle = step & (st == OK)
        faded = idle & (mean_g < thr_mean)
        self.ep_len[faded] = 0

        test = idle & ~faded & (self.ep_len >= p.persist_days)
        best = np.full(nb, -1, dtype=np.int64)
        if test.any():
            d_mean = self.ep_drop / n[bld]
            g_h = mean_g[bld]
            with np.errstate(invalid="ignore", divide="ignore"):
                err = np.abs(d_mean - g_h) / g_h
            # how far the drop stands out of the household's own day-to-day variation
            z = d_mean / np.maximum(self.use_dev, 1e-3) * np.sqrt(n[bld])
            elig = (hh & test[bld] & (d_mean >= p.min_drop_m3) & (err <= p.match_tolerance)
                    & (self.ep_drop >= p.min_drop_fraction * self.ep_ref) & (z >= p.match_z)
                    & (self.h_open == 0))
            ei = np.flatnonzero(elig)
            if ei.size:
                # the household whose drop matches the growth best, in units of its own day-to-day noise (the
                # loudest drop may be a big household's ordinary swing; the bypassed one drops by the gap's growth)
                miss = np.abs(d_mean - g_h) / np.maximum(self.use_dev, 1e-3) * np.sqrt(n[bld])
                order = ei[np.lexsort((miss[ei], bld[ei]))]
                b_o = bld[order]
                firsts = np.ones(order.size, dtype=bool)
                firsts[1:] = b_o[1:] != b_o[:-1]
                best[b_o[firsts]] = order[firsts]
        rise = best >= 0
        if rise.any():
            h = best[rise]
            self.status[rise] = PENDING
            self.cand[rise] = h
            self.open_day[rise] = self.ep_day[rise]
            self.est[rise] = mean_g[rise]
            self.gap_last[rise] = self.ep_raw[rise] / n[rise]
            self.gap_before[rise] = self.gap_last[rise] - mean_g[rise]
            self.use_before[rise] = self.ep_ref[h] / n[rise]
            self.use_last[rise] = (self.ep_ref[h] - self.ep_drop[h]) / n[rise]
            self.h_open[h] = 1
            # the building carries on from its new normal, so a second bypass in it is seen as well
            self.gap_ref[rise] += mean_g[rise, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                shift = mean_g[rise] / (self.ep_master[rise] / n[rise])
            self.ratio_ref[rise] += np.where(np.isfinite(shift), shift, 0.0)[:, None]
            self.ep_len[rise] = 0
            self.settle[rise] = p.settle_days
        # no household explains it within the window: a leak or a new normal, which the baseline adopts
        give_up = test & ~rise & (self.ep_len >= p.max_episode_days)
        self.ep_len[give_up] = 0
        self.base_days[give_up] = 0
        self.cls_days[give_up] = 0
        self.gap_ref[give_up] = np.nan
        self.ratio_ref[give_up] = np.nan

        # baselines learn from quiet days only: nothing learns while its building is under suspicion
        # … and from ordinary days only: a day far off the baseline (a smaller bypass, a bad reading) is not learned
        # … except while settling after a raise, when they move fast to the building's new normal
        usual = ~ready | (np.abs(growth) < thr_day) | settling
        learn = day_ok & (self.status == OK) & (self.ep_len == 0) & ~give_up & ~faded & usual & ~rise
        self.settle[settling & day_ok] -= 1
        # young baselines are plain means of the days so far, then exponentially weighted
        a = np.maximum(p.baseline_alpha, 1.0 / (cls_days.astype(np.float64) + 1))
        a = np.where(settling, np.maximum(a, 0.5), a)
        first = learn & ~np.isfinite(gap_ref)
        upd = learn & ~first
        a_dev = np.maximum(p.baseline_alpha, 1.0 / np.maximum(cls_days.astype(np.float64), 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(master > 0, gap / master, np.nan)
        for ref, dv, x in ((gap_ref, gap_dev, gap), (ratio_ref, ratio_dev, ratio)):
            ok = upd & np.isfinite(x) & np.isfinite(ref)
            d_now = np.abs(x - ref)
            dv[ok] = (1 - a_dev[ok]) * dv[ok] + a_dev[ok] * d_now[ok]
            ref[ok] = (1 - a[ok]) * ref[ok] + a[ok] * x[ok]
            ref[first] = x[first]
        self.base_days[learn] = np.minimum(self.base_days[learn] + 1, 10000)
        cls_days[learn] = np.minimum(cls_days[learn] + 1, 10000)
        h_learn = valid & learn[bld]
        ref = self.use_ref[h_learn, rest]
        n_cls = self.cls_days[bld[h_learn], rest].astype(np.float64)
        ah = np.maximum(p.household_alpha, 1.0 / n_cls)
        had = np.isfinite(ref)
        dv = self.use_dev[h_learn]
        a_dev = np.maximum(p.household_alpha, 1.0 / np.maximum(self.base_days[bld[h_learn]].astype(np.float64) - 1, 1))
        self.use_dev[h_learn] = np.where(had, (1 - a_dev) * dv + a_dev * np.abs(use[h_learn] - ref), dv)
        self.use_ref[h_learn, rest] = np.where(had, (1 - ah) * ref + ah * use[h_learn], use[h_learn])

    def _emit(self, now: int) -> list[AlertEvent]:
        out = []
        # a bypass stays open until the crew closes the case: the pipe does not go away by itself
        for b in np.flatnonzero(self.status == PENDING).tolist():
            self.status[b] = OK
            out.append(self._event("raised", b, now))
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


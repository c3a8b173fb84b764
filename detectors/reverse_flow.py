"""Reverse flow: a forward register that falls (installed backwards, wound back) or a reverse register that
rises beyond pressure-transient noise — but not a wrap at register_max_m3 nor an announced replacement. Backward
steps each within the noise count once they add up: a forward register standing min_reversed_m3 below the highest it
read (forward use wins the difference back; a transient rocks back and forth, a meter installed backwards in a home
that uses little keeps falling)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch
from devices.registry import Registry

from .base import (
    Detector,
    LocalCalendar,
    MeterView,
    Params,
    alert_id,
    first_rows,
    group_index,
    param,
    round_or_none,
)

OK, PENDING, OPEN = 0, 1, 2


class ReverseFlowParams(Params):
    step_noise_m3: float = param(0.01, "m3", "a single backward step this small is a pressure transient (unless "
                                 "such steps add up, net of forward ones, to min_reversed_m3)", ge=0)
    min_reversed_m3: float = param(0.05, "m3", "reversed volume that raises an incident …", gt=0)
    window_s: int = param(86400, "s", "… when accumulated with no pause longer than this", gt=0)
    clear_after_s: int = param(3 * 86400, "s", "clear when no reversal for this long …", gt=0)
    clear_forward_m3: float = param(0.05, "m3", "… and the forward register has advanced this much since the last "
                                    "reversal (a backwards meter in an empty home stays reported)", ge=0)
    record_wait_s: int = param(86400, "s", "a register that falls by more than half its reading (to near zero: a new "
                               "meter?) waits this long for a replacement record that may come after the readings",
                               ge=0)


class ReverseFlowDetector(Detector):
    name = "reverse_flow"
    kinds = ("reverse_flow",)
    Params: ClassVar[type[Params]] = ReverseFlowParams
    params: ReverseFlowParams
    state_axes: ClassVar[dict[str, str]] = {
        "last_s": "meter", "last_total": "meter", "last_rev": "meter", "acc": "meter",
        "first_s": "meter", "first_total": "meter", "rev_s": "meter", "rev_total": "meter", "status": "meter",
        "creep": "meter", "now": "scalar",
    }

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        self.half_max = 0.5 * registry.meters.register_max_m3
        self.reg_max = registry.meters.register_max_m3
        self._wrap_on_falls = not bool(np.any(self.half_max < 0))

    def _init_state(self) -> None:
        n = len(self.registry.meters)
        # times are epoch seconds (uint32, 0: none): readings carry whole seconds, and 4 bytes a meter each is
        # what keeps the state within its budget
        self.last_s = np.zeros(n, dtype=np.uint32)  # latest reading
        self.last_total = np.full(n, np.nan)
        self.last_rev = np.full(n, np.nan, dtype=np.float32)  # reverse register (float32: steps of about 0.1 l up to 1000 m3)
        self.acc = np.zeros(n, dtype=np.float32)  # reversed volume of the current run (m3)
        self.first_s = np.zeros(n, dtype=np.uint32)  # first reversal of the run
        self.first_total = np.full(n, np.nan, dtype=np.float32)  # forward register just before the run (evidence)
        self.rev_s = np.zeros(n, dtype=np.uint32)  # latest reversal
        self.rev_total = np.full(n, np.nan, dtype=np.float32)  # forward register just after it
        self.status = np.zeros(n, dtype=np.int8)
        # how far the forward register stands below the highest it read, in backward steps each within the noise
        # (m3; forward steps win it back)
        self.creep = np.zeros(n, dtype=np.float32)
        self.now = np.zeros(1, dtype=np.int64)

    def restore(self, blob: dict[str, np.ndarray], remap: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        # a checkpoint from before the times were seconds holds them as nanoseconds under their old names
        blob = dict(blob)
        for old, new in (("last_ts", "last_s"), ("first_ts", "first_s"), ("rev_ts", "rev_s")):
            if old in blob and new not in blob:
                blob[new] = np.asarray(blob.pop(old)) // NS
        super().restore(blob, remap)

    def update(self, batch: Batch, view: MeterView) -> None:
        replacements = [e for e in batch.events if e.device == "meter" and e.type == "replacement"]
        if view.n == 0:
            self._late_replacements(replacements)
            return None
        meter, ts = view.meter, view.ts
        # rows run by meter, then time: when each meter's first row is newer than its latest reading, all are
        all_fresh = bool(np.all(ts[view.starts] > self.last_s[view.meters].astype(np.int64) * NS))
        rows = None if all_fresh else np.flatnonzero(ts > self.last_s[meter].astype(np.int64) * NS)
        if rows is not None and rows.size == 0:
            self._late_replacements(replacements)
            return None
        self.now[0] = max(int(self.now[0]), int(ts.max()))
        if rows is None:
            # the usual case, every row fresh: the view's shared columns and groups as they are (read only)
            gm, gts, total, rev = meter, ts, view.col("total_m3"), view.col("reverse_m3")
            first, last, um = view.starts, view.ends, view.meters
        else:
            gm, gts = meter[rows], ts[rows]
            total = view.col("total_m3")[rows]
            rev = view.col("reverse_m3")[rows]
            first = np.flatnonzero(first_rows(gm))  # each meter's first and latest row
            last = np.append(first[1:] - 1, rows.size - 1)
            um = gm[first]
        prev_total = np.empty_like(total)
        prev_total[1:] = total[:-1]
        prev_total[first] = self.last_total[um]
        prev_rev = np.empty_like(rev)
        prev_rev[1:] = rev[:-1]
        prev_rev[first] = self.last_rev[um]
        if replacements:
            self._replacements_in_batch(replacements, gm, gts, prev_total, prev_rev)

        d = total - prev_total
        # across register_max the true delta is (max - prev) + current; with half_max >= 0 only a fall (rare) can
        # be a wrap, so the test runs on the falls alone
        if self._wrap_on_falls:
            neg = np.flatnonzero(d < 0)
            wrap = neg[d[neg] < -self.half_max[gm[neg]]]
        else:
            wrap = np.flatnonzero(d < -self.half_max[gm])
        if wrap.size:
            d[wrap] += self.reg_max[gm[wrap]]
        noise = self.params.step_noise_m3
        dr = rev - prev_rev
        # the reversed volume of each reading, kept only where it is positive (rows rr): a forward fall beyond the
        # noise, plus a reverse-register rise beyond it (NaN compares False: meters without a reverse register)
        rr = np.flatnonzero((d < -noise) | (dr > noise))
        d_r, dr_r = d[rr], dr[rr]
        v_r = np.where(d_r < -noise, -d_r, 0.0) + np.where(dr_r > noise, dr_r, 0.0)
        rr, v_r = self._creep(gm, d, first, last, um, rr, v_r)

        # state of each meter after the batch: its latest reading
        self.last_s[um] = gts[last] // NS
        self.last_total[um] = total[last]
        lr = rev[last]
        # keep the last known reverse register when the newest reading lacks one
        self.last_rev[um] = np.where(np.isnan(lr), self.last_rev[um], lr)

        self._track_runs(gm, gts, rr, v_r, prev_total, total)
        self._late_replacements(replacements)
        return None

    def _creep(self, gm, d, first, last, um, rr, v_r) -> tuple[np.ndarray, np.ndarray]:
        """Backward steps within the noise that add up, net of the forward steps between them, to min_reversed_m3
        (the register standing that far below the highest it read): a reversal of that volume at the reading where
        they do, added to the rows rr and volumes v_r. Only meters with no incident under way."""
        noise = self.params.step_noise_m3
        small = (d < 0) & (d >= -noise)
        held = self.creep[um] > 0
        if not small.any() and not held.any():
            return rr, v_r
        n_small = np.add.reduceat(small.astype(np.int64), first)
        active = ((n_small > 0) | held) & (self.status[um] == OK)
        counts = last - first + 1
        sel = np.flatnonzero(np.repeat(active, counts) & (d >= -noise))  # (NaN: no step to judge)
        if sel.size == 0:
            return rr, v_r
        x = -d[sel]  # a fall adds, a forward step wins back
        m = gm[sel]
        start = first_rows(m)
        g = group_index(start)
        cs = np.cumsum(x)
        level = cs - (cs[start] - x[start])[g] + self.creep[m[start]].astype(np.float64)[g]
        # the register's depth below its highest reading: the level less its lowest point so far, if below zero
        # (a running minimum per meter: each meter's levels shifted below every earlier meter's)
        k = 2.0 * float(np.abs(level).max()) + 1.0
        low = np.minimum.accumulate(level - k * g) + k * g
        depth = level - np.minimum(low, 0.0)
        ends = np.append(np.flatnonzero(start)[1:] - 1, sel.size - 1)
        self.creep[m[ends]] = depth[ends]
        hit = np.flatnonzero(depth >= self.params.min_reversed_m3)
        if hit.size == 0:
            return rr, v_r
        _, firsts = np.unique(g[hit], return_index=True)
        at = hit[firsts]
        self.creep[m[at]] = 0.0  # the run takes it from here
        rows, inv = np.unique(np.concatenate([rr, sel[at]]), return_inverse=True)
        vol = np.zeros(rows.size)
        np.add.at(vol, inv, np.concatenate([v_r, depth[at]]))
        return rows, vol

    def _track_runs(self, gm, gts, rr, v_r, prev_total, total) -> None:
        """Fold the reversals (rows rr of the batch's fresh readings, volumes v_r > 0) into each meter's run."""
        if rr.size == 0:
            return
        # runs of reversals: a pause longer than the window starts a new run (an open incident keeps its run)
        m_r, t_r = gm[rr], gts[rr]
        f_r = first_rows(m_r)
        prev_t = np.empty_like(t_r)
        prev_t[1:] = t_r[:-1]
        prev_t[f_r] = self.rev_s[m_r[f_r]].astype(np.int64) * NS
        st = self.status[m_r]
        win = np.where(st == OK, self.params.window_s, self.params.clear_after_s) * NS
        carry_in = f_r & (self.acc[m_r] > 0) & (t_r - prev_t <= win)
        new_run = (f_r & ~carry_in) | (~f_r & (t_r - prev_t > win) & (st == OK))
        run_start = f_r | new_run  # runs never cross meters
        seg = group_index(run_start)
        starts = np.flatnonzero(run_start)
        init = np.where(carry_in[starts], self.acc[m_r[starts]], 0.0)
        run_first_ts = np.where(carry_in[starts], self.first_s[m_r[starts]].astype(np.int64) * NS, t_r[starts])
        run_first_total = np.where(carry_in[starts], self.first_total[m_r[starts]], prev_total[rr[starts]])
        cum = np.cumsum(v_r)
        acc = cum - (cum[starts] - v_r[starts])[seg] + init[seg]

        # meters crossing the threshold for the first time: the first crossing run is the incident
        cross = (acc >= self.params.min_reversed_m3) & (st == OK)
        ends = np.flatnonzero(np.append(f_r[1:], True))
        g = group_index(f_r)
        raise_run = np.full(ends.size, -1)
        if cross.any():
            ci = np.flatnonzero(cross)
            gi = g[ci]
            firsts = np.unique(gi, return_index=True)
            raise_run[firsts[0]] = seg[ci[firsts[1]]]
        m_u = m_r[ends]
        end_seg = seg[ends]
        raised = raise_run >= 0
        # an incident's run spans the rest of the batch: its volume is everything from the run's start
        run_of = np.where(raised, raise_run, end_seg)
        acc_end = np.where(raised, cum[ends] - (cum[starts[np.maximum(raise_run, 0)]] - v_r[starts[np.maximum(raise_run, 0)]])
                           + init[np.maximum(raise_run, 0)], acc[ends])
        self.acc[m_u] = acc_end
        self.first_s[m_u] = run_first_ts[run_of] // NS
        self.first_total[m_u] = run_first_total[run_of]
        self.rev_s[m_u] = t_r[ends] // NS
        self.rev_total[m_u] = total[rr[ends]]
        self.status[m_u[raised]] = PENDING

    def _replacements_in_batch(self, events, gm, gts, prev_total, prev_rev) -> None:
        """A replacement between two readings: the reading after it follows the new register, not the old."""
        for e in events:
            lo, hi = np.searchsorted(gm, e.index, "left"), np.searchsorted(gm, e.index, "right")
            if lo == hi:
                continue
            j = lo + np.searchsorted(gts[lo:hi], e.ts_ns, "left")
            if j < hi:
                prev_total[j] = float(e.fields.get("register_m3", np.nan))
                prev_rev[j] = np.nan

    def _late_replacements(self, events) -> None:
        for e in events:
            i = e.index
            first_ns, last_ns, rev_ns = (int(x) * NS for x in (self.first_s[i], self.last_s[i], self.rev_s[i]))
            if e.ts_ns >= last_ns:
                # announced before the new meter's readings: they continue from the new register
                self.last_s[i] = e.ts_ns // NS
                self.last_total[i] = float(e.fields.get("register_m3", np.nan))
                self.last_rev[i] = np.nan
            if self.status[i] == PENDING and first_ns >= e.ts_ns - 3600 * NS:
                # the record came after the readings it explains: not a reversal after all
                self.status[i] = OK
                self.acc[i] = 0.0
            if self.status[i] == OK and first_ns >= e.ts_ns - 3600 * NS:
                self.acc[i] = 0.0
            if self.status[i] == OK:
                self.creep[i] = 0.0  # a new register
            if self.status[i] == OPEN and e.ts_ns >= rev_ns:
                # a new meter: forward use from its register clears the incident
                self.rev_total[i] = float(e.fields.get("register_m3", np.nan))

    def tick(self, now_ns: int) -> list[AlertEvent]:
        now = max(int(now_ns), int(self.now[0]))
        self.now[0] = now
        out = []
        pend = self.status == PENDING
        if pend.any():
            with np.errstate(invalid="ignore"):
                restart_like = self.acc >= 0.5 * self.first_total
            wait = pend & restart_like & (now // NS - self.first_s.astype(np.int64) < self.params.record_wait_s)
            for i in np.flatnonzero(pend & ~wait).tolist():
                self.status[i] = OPEN
                out.append(self._event("raised", i, now))
        stale = (self.status == OPEN) & (now // NS - self.rev_s.astype(np.int64) > self.params.clear_after_s)
        if stale.any():
            # cleared only once water runs forward through the meter again: idle is not fixed
            fwd = self.last_total - self.rev_total.astype(np.float64)
            fwd = np.where(fwd < -self.half_max, fwd + self.reg_max, fwd)
            with np.errstate(invalid="ignore"):
                stale &= ~(fwd < self.params.clear_forward_m3)
        for i in np.flatnonzero(stale).tolist():
            out.append(self._event("cleared", i, now))
            self.status[i] = OK
            self.acc[i] = 0.0
        return out

    def _event(self, event: str, i: int, now: int) -> AlertEvent:
        m = self.registry.meters
        meter_id, district = str(m.ids[i]), str(m.district[i])
        start = int(self.first_s[i]) * NS
        vol = float(self.acc[i])
        ev = {
            "volume_reversed_m3": round_or_none(vol),
            "first_reading": {"ts": iso_utc(start), "total_m3_before": round_or_none(self.first_total[i])},
            "last_reading": {"ts": iso_utc(int(self.last_s[i]) * NS), "total_m3": round_or_none(self.last_total[i])},
            "last_reversal": iso_utc(int(self.rev_s[i]) * NS),
            "register_max_m3": float(m.register_max_m3[i]),
        }
        b = int(m.building[i])
        where = meter_id + (f" ({m.building_id[i]}, {self.registry.buildings.address[b]})" if b >= 0 else "")
        since = self.calendar.local_text(start)
        if event == "raised":
            summary = (f"Meter {where}: {vol:.3f} m3 ran backwards since {since}: check for a meter installed "
                       f"backwards or wound back")
        else:
            summary = f"Meter {where}: no reverse flow since {self.calendar.local_text(int(self.rev_s[i]) * NS)}"
        severity = "critical" if vol >= 1.0 else "warning"
        return AlertEvent(
            alert_id=alert_id("reverse_flow", meter_id, start), event=event, kind="reverse_flow",
            severity=severity, subject_type="meter", subject_id=meter_id, district=district, start_ns=start,
            detected_at_ns=now, summary=summary,
            evidence=ev)

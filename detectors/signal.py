"""Silent meters: signal blocking (one meter silent while its cell reports), network outage (a cell silent),
and a dead battery (voltage sank before the silence) — told apart so only the first goes out as theft."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch, MeterReadings
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

# per-meter status codes
OK, BLOCKING, BATTERY, SILENCED = 0, 1, 2, 3  # SILENCED: went quiet inside a network outage of its cell
CLEAR_PENDING = 10  # added to BLOCKING/BATTERY when the meter reported again; emitted at the next tick
# per-cell status codes
# an outage seen as the whole cell falling quiet clears on any member's message; one seen as many members
# overdue (part of the cell still up) clears when one of the silenced members is heard again
CELL_OK, CELL_OUTAGE, CELL_CLEAR_PENDING, CELL_OUTAGE_QUIET = 0, 1, 2, 3


class SignalParams(Params):
    missed_reports: float = param(3.0, "report intervals", "silent for this many report intervals …", gt=0)
    missed_reports_suspect: float = param(2.0, "report intervals", "… or this many when RSRP sank or a prepaid "
                                          "balance had run out first", gt=0)
    min_silence_s: int = param(12 * 3600, "s", "… and at least this long (one lost message is not theft)", ge=0)
    grace_fraction: float = param(0.25, "1", "jitter allowed on a schedule, as a fraction of the interval", ge=0)
    grace_min_s: int = param(1800, "s", "jitter allowed on any schedule", ge=0)
    rsrp_tau_s: int = param(14 * 86400, "s", "memory of the RSRP baseline", gt=0)
    rsrp_drop_db: float = param(6.0, "dB", "RSRP this far below baseline before the silence raises severity", gt=0)
    balance_empty_cny: float = param(0.0, "CNY", "a prepaid balance at or below this had run out")
    battery_low_v: float = param(3.3, "V", "a battery this low before the silence: depleted, not theft", gt=0)
    battery_drop_v: float = param(0.15, "V", "or this far below its own best voltage", gt=0)
    outage_min_meters: int = param(3, "meters", "a cell outage silences at least this many meters", ge=2)
    outage_fraction: float = param(0.5, "1", "… or this share of the cell's meters at once", gt=0, le=1)
    cell_gap_factor: float = param(10.0, "mean message gaps", "a cell quiet this many mean message gaps is out", gt=0)
    min_cell_silence_s: int = param(2 * 3600, "s", "… and at least this long", ge=0)
    blocking_max_overdue_fraction: float = param(
        0.34, "1", "blocking only while at most this share of the other meters are overdue", ge=0, le=1)
    lone_meter_is_blocking: bool = param(True, "yes/no", "a silent meter with no cell neighbours counts as blocking")


class SignalDetector(Detector):
    name = "signal"
    ticks_inside_batches = True
    kinds = ("signal_blocking", "network_outage", "battery_depleted")
    Params: ClassVar[type[Params]] = SignalParams
    params: SignalParams
    state_axes: ClassVar[dict[str, str]] = {
        "last_ts": "meter", "last_total": "meter", "rsrp_ref": "meter", "rsrp_last": "meter",
        "bat_max": "meter", "bat_last": "meter", "balance": "meter", "status": "meter",
        "open_start": "meter", "open_total": "meter",
        "cell_status": "cell", "cell_start": "cell", "cell_end": "cell", "cell_silenced": "cell",
        "now": "scalar",
    }

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        p, m = self.params, registry.meters
        interval = m.report_interval_s.astype(np.float64)
        self.interval_ns = (interval * NS).astype(np.int64)
        grace = np.maximum(p.grace_fraction * interval, p.grace_min_s)
        self.overdue_ns = ((interval + grace) * NS).astype(np.int64)
        self.due_ns = ((interval + p.grace_min_s) * NS).astype(np.int64)  # missed its slot (a cell falling quiet)
        self.silent_ns = ((np.maximum(p.missed_reports * interval, p.min_silence_s) + grace) * NS).astype(np.int64)
        self.suspect_ns = ((np.maximum(p.missed_reports_suspect * interval, p.min_silence_s) + grace) * NS).astype(np.int64)
        self.prepaid = m.prepaid.astype(bool)
        self.alpha = (1.0 - np.exp(-interval / p.rsrp_tau_s)).astype(np.float64)
        self.cell = m.cell.astype(np.int64)
        self.n_cells = len(registry.cell_ids)
        self._cell_key16 = (self.cell + 1).astype(np.uint16)  # cell + 1 as a sort key (used when it fits)
        self._in_cell, self._cell0 = self.cell >= 0, np.maximum(self.cell, 0)
        self._msg_rate = NS / self.interval_ns.astype(np.float64)  # messages per second of each meter
        # the meters of each cell as contiguous runs (for per-cell maxima by reduceat, not ufunc.at)
        in_cell = np.flatnonzero(self.cell >= 0)
        self._cell_rows = in_cell[np.argsort(self.cell[in_cell], kind="stable")]
        sc = self.cell[self._cell_rows]
        self._cell_run = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]]) if sc.size else np.empty(0, np.int64)
        self._cell_of_run = sc[self._cell_run]
        # a cell's district: that of its first meter (cells rarely straddle districts)
        self.cell_district = np.array([""] * self.n_cells, dtype=object)
        has = self.cell >= 0
        cells, first = np.unique(self.cell[has], return_index=True)
        self.cell_district[cells] = m.district[np.flatnonzero(has)[first]]

    def _init_state(self) -> None:
        n, c = len(self.registry.meters), len(self.registry.cell_ids)
        self.last_ts = np.zeros(n, dtype=np.int64)
        self.last_total = np.full(n, np.nan)
        self.rsrp_ref = np.full(n, np.nan, dtype=np.float32)
        self.rsrp_last = np.full(n, np.nan, dtype=np.float32)
        self.bat_max = np.full(n, np.nan, dtype=np.float16)  # volts: 2 mV steps, shown to 10 mV
        self.bat_last = np.full(n, np.nan, dtype=np.float16)
        self.balance = np.full(n, np.nan, dtype=np.float32)
        self.status = np.zeros(n, dtype=np.int8)
        self.open_start = np.zeros(n, dtype=np.int64)
        self.open_total = np.full(n, np.nan)
        self.cell_status = np.zeros(c, dtype=np.int8)
        self.cell_start = np.zeros(c, dtype=np.int64)
        self.cell_end = np.zeros(c, dtype=np.int64)  # when the cell's last outage ended (0: never)
        self.cell_silenced = np.zeros(c, dtype=np.int32)  # meters silenced by the open outage (evidence)
        self.now = np.zeros(1, dtype=np.int64)

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> None:
        self._apply_events(batch)
        if view.n == 0:
            return None
        meter, ts = view.meter, view.ts
        fresh = ts > self.last_ts[meter]  # older rows are late copies of what this meter already told us
        if not fresh.any():
            return None
        self.now[0] = max(int(self.now[0]), int(ts.max()))
        if fresh.all():
            # the usual case: the view's own (shared) groups are the meters' groups
            um, lrow = view.meters, view.ends
        else:
            rows = np.flatnonzero(fresh)
            gm = meter[rows]
            first = first_rows(gm)
            last = np.empty(rows.size, dtype=bool)
            last[-1] = True
            last[:-1] = first[1:]
            um = gm[first]
            lrow = rows[last]

        # a meter with an open incident that speaks again: its incident clears at the next tick
        st = self.status[um]
        back = (st == BLOCKING) | (st == BATTERY)
        self.status[um[back]] = st[back] + CLEAR_PENDING
        self.status[um[st == SILENCED]] = OK
        c_um = self.cell[um]
        cs = np.where(c_um >= 0, self.cell_status[np.maximum(c_um, 0)], CELL_OK)
        after = ts[lrow] > self.cell_start[np.maximum(c_um, 0)]  # not a reading from before the outage began
        resumed = ((cs == CELL_OUTAGE_QUIET) | ((cs == CELL_OUTAGE) & (st == SILENCED))) & after
        if resumed.any():
            c, t = c_um[resumed], ts[lrow][resumed]
            self.cell_status[c] = CELL_CLEAR_PENDING
            # several members back in one batch: the outage ended with the first of them
            end = np.full(self.n_cells, np.iinfo(np.int64).max)
            np.minimum.at(end, c, t)
            self.cell_end[c] = end[c]

        # status fields ride on a message's latest reading (a few rows of the batch): they are picked in the view's
        # (meter, time) order, each field folded in time order, from fresh rows only
        r = batch.meters
        order = view.order
        for col in ("rsrp_dbm", "battery_v", "balance_cny"):
            allv = getattr(r, col)
            sel = np.flatnonzero(np.isfinite(allv)[order] & fresh)
            if sel.size == 0:
                continue
            r_m = meter[sel]
            if not view.ts_ordered:
                r_t = ts[sel]
                if np.any((r_t[1:] < r_t[:-1]) & (r_m[1:] == r_m[:-1])):
                    # the view sorts by whole seconds: rows of one meter within a second must still go by their
                    # nanoseconds (ties keep row order, as the view does)
                    sel = sel[np.lexsort((r_t, r_m))]
                    r_m = meter[sel]
            r_v = allv[order[sel]]
            f = first_rows(r_m)
            fi = np.flatnonzero(f)  # each meter's first and last row (index arrays: cheaper than masks)
            li = np.empty_like(fi)
            li[:-1] = fi[1:] - 1
            li[-1] = r_m.size - 1
            gmu = r_m[fi]
            if col == "rsrp_dbm":
                self.rsrp_last[gmu] = r_v[li]
                g = group_index(f)
                k = li[g] - np.arange(r_m.size)  # readings after this one in its group
                a = self.alpha[r_m]
                w = a * (1.0 - a) ** k
                ref0 = self.rsrp_ref[gmu].astype(np.float64)
                ref0 = np.where(np.isnan(ref0), r_v[fi], ref0)
                n_g = li - fi + 1
                self.rsrp_ref[gmu] = (1.0 - self.alpha[gmu]) ** n_g * ref0 + np.bincount(g, w * r_v)
            elif col == "battery_v":
                self.bat_last[gmu] = r_v[li]
                best = np.maximum.reduceat(r_v, fi)
                self.bat_max[gmu] = np.fmax(self.bat_max[gmu], best)
            else:
                self.balance[gmu] = r_v[li]
        self.last_ts[um] = ts[lrow]
        self.last_total[um] = view.col("total_m3")[lrow]
        return None

    def update_sliced(self, batch: Batch, view: MeterView, ends: np.ndarray, bounds: np.ndarray) -> list[AlertEvent]:
        """A long batch in publish order: between its slices only the cheap check for a whole cell falling quiet
        (and coming back) is run at each slice's watermark; the readings are then folded in at once."""
        m = batch.meters
        st = self.status
        heard = self.last_ts > 0
        heard[view.meters] = True  # a meter first heard in this batch counts from its start
        in_cell = self.cell >= 0
        ac = heard & in_cell & ((st == OK) | (st == SILENCED))
        nc = self.n_cells
        n_active = np.bincount(self.cell[ac], minlength=nc)
        rate = np.bincount(self.cell[ac], weights=self._msg_rate[ac], minlength=nc)
        with np.errstate(divide="ignore"):
            quiet_ns = np.maximum(self.params.cell_gap_factor / rate * NS, self.params.min_cell_silence_s * NS)
        cell_last = np.maximum(self.cell_end, self._cell_latest())
        seg_cell, seg_max, seg_lo = self._slice_cell_max(m.meter, m.ts_ns, bounds)
        out: list[AlertEvent] = []
        p = self.params
        for k in range(len(bounds) - 1):
            # the cells heard in slice k, each with its latest reading of the slice
            c, t = seg_cell[seg_lo[k]:seg_lo[k + 1]], seg_max[seg_lo[k]:seg_lo[k + 1]]
            # a cell quiet since cell_start is back if any reading of the slice is newer: then its latest is
            back = (self.cell_status[c] == CELL_OUTAGE_QUIET) & (t > self.cell_start[c])
            if back.any():
                cb = c[back]
                self.cell_status[cb] = CELL_CLEAR_PENDING
                self.cell_end[cb] = t[back]
            cell_last[c] = np.maximum(cell_last[c], t)
            if k == len(bounds) - 2:
                break
            now = max(int(ends[k]), int(self.now[0]))
            self.now[0] = now
            quiet = ((n_active >= p.outage_min_meters) & (cell_last > 0) & (now - cell_last > quiet_ns)
                     & (self.cell_status == CELL_OK))
            for cq in np.flatnonzero(quiet).tolist():
                if self._n_due(ac & (self.cell == cq), now, m, int(bounds[k + 1])) < p.outage_min_meters:
                    continue
                self.cell_status[cq] = CELL_OUTAGE_QUIET
                self.cell_start[cq] = cell_last[cq]
                self.cell_silenced[cq] = n_active[cq]
                out.append(self._outage_event("raised", cq, now, int(n_active[cq]), int(n_active[cq])))
        self.update(batch, view)
        return out

    def _n_due(self, members: np.ndarray, now: int, readings: MeterReadings, rows: int) -> int:
        """How many of `members` (a mask) have missed their slot by `now`, counting the batch's first `rows`
        readings (those received by then). A cell quiet for many of its mean message gaps is out only if some of its
        meters were due meanwhile: a cell of daily meters, each uploading at its own hour, can be quiet for hours by
        its schedule alone."""
        mem = np.flatnonzero(members)
        latest = self.last_ts[mem].copy()
        r = np.flatnonzero(members[readings.meter[:rows]])
        np.maximum.at(latest, np.searchsorted(mem, readings.meter[r]), readings.ts_ns[r])
        return int(np.count_nonzero(now - latest > self.due_ns[mem]))

    def _cell_latest(self) -> np.ndarray:
        """Latest reading of each cell's meters as held in last_ts (0: none heard)."""
        out = np.zeros(self.n_cells, dtype=np.int64)
        if self._cell_run.size:
            latest = np.maximum.reduceat(self.last_ts[self._cell_rows], self._cell_run)
            out[self._cell_of_run] = np.maximum(latest, 0)
        return out

    def _slice_cell_max(self, meter: np.ndarray, ts: np.ndarray, bounds: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latest reading of each cell within each slice (rows bounds[k]:bounds[k+1]): the cells and maxima of
        slice k are cells[lo[k]:lo[k+1]], maxima[lo[k]:lo[k+1]]. One sort of the rows by (slice, cell) and a
        maximum.reduceat, instead of a gather and np.maximum.at over the rows of every slice."""
        nk = len(bounds) - 1
        width = self.n_cells + 1  # key 0 of each slice: meters in no cell
        if meter.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.zeros(nk + 1, np.int64)
        if nk * width <= 65536:
            # uint16 keys: a stable argsort on them is a radix sort
            base = (np.arange(nk) * width).astype(np.uint16)
            key = self._cell_key16[meter] + np.repeat(base, np.diff(bounds))
        else:
            key = (self.cell + 1)[meter] + np.repeat(np.arange(nk, dtype=np.int64) * width, np.diff(bounds))
        o = np.argsort(key, kind="stable")
        ks = key[o]
        st = np.flatnonzero(first_rows(ks))
        seg_max = np.maximum.reduceat(ts[o], st)
        seg_k, seg_c = np.divmod(ks[st].astype(np.int64), width)
        seg_c -= 1
        has = seg_c >= 0
        seg_k, seg_c, seg_max = seg_k[has], seg_c[has], seg_max[has]
        lo = np.searchsorted(seg_k, np.arange(nk + 1), side="left")
        return seg_c, seg_max, lo

    def _apply_events(self, batch: Batch) -> None:
        for e in batch.events:
            if e.device == "meter" and e.type == "replacement":
                # a new meter: its battery and radio baselines start over; the register restarts
                i = e.index
                self.bat_max[i] = np.nan
                self.rsrp_ref[i] = np.nan
                self.open_total[i] = np.nan
                if e.ts_ns >= self.last_ts[i] and "register_m3" in e.fields:
                    self.last_total[i] = float(e.fields["register_m3"])

    # ------------------------------------------------------------------ tick
    def tick(self, now_ns: int) -> list[AlertEvent]:
        now = max(int(now_ns), int(self.now[0]))
        self.now[0] = now
        out: list[AlertEvent] = []
        out += self._emit_clears(now)

        seen = self.last_ts > 0
        if not seen.any():
            return out
        cell = self.cell
        in_cell, cell0 = self._in_cell, self._cell0
        cell_end = np.where(in_cell, self.cell_end[cell0], 0)
        eff = np.maximum(self.last_ts, cell_end)
        silence = now - eff
        st = self.status
        active = seen & ((st == OK) | (st == SILENCED))
        overdue = active & (silence > self.overdue_ns)
        # a meter whose RSRP sank or whose prepaid balance ran out before it went quiet is suspected sooner
        with np.errstate(invalid="ignore"):
            suspect = ((self.rsrp_ref - self.rsrp_last >= self.params.rsrp_drop_db)
                       | (self.prepaid & (self.balance <= self.params.balance_empty_cny)))
        silent = active & (silence > np.where(suspect, self.suspect_ns, self.silent_ns))

        nc = self.n_cells
        ac = active & in_cell
        n_active = np.bincount(cell[ac], minlength=nc)
        n_overdue = np.bincount(cell[ac & overdue], minlength=nc)
        rate = np.bincount(cell[ac], weights=self._msg_rate[ac], minlength=nc)
        cell_last = np.maximum(self._cell_latest(), self.cell_end)
        with np.errstate(divide="ignore"):
            quiet_ns = np.maximum(self.params.cell_gap_factor / rate * NS, self.params.min_cell_silence_s * NS)
        quiet = (n_active > 0) & (now - cell_last > quiet_ns)
        p = self.params
        if quiet.any():
            quiet &= np.bincount(cell[ac & (silence > self.due_ns)], minlength=nc) >= p.outage_min_meters
        outage = (n_active >= p.outage_min_meters) & (
            quiet | (n_overdue >= np.maximum(p.outage_min_meters, p.outage_fraction * n_active)))

        # new outages: one incident per cell; its overdue members are silenced, not suspected
        new_cells = np.flatnonzero(outage & (self.cell_status == CELL_OK))
        if new_cells.size:
            start = np.zeros(nc, dtype=np.int64)
            od = overdue & in_cell
            np.maximum.at(start, cell[od], self.last_ts[od])
            for c in new_cells.tolist():
                self.cell_status[c] = CELL_OUTAGE_QUIET if quiet[c] else CELL_OUTAGE
                self.cell_start[c] = start[c] if start[c] > 0 else cell_last[c]
                self.cell_silenced[c] = n_overdue[c]
                out.append(self._outage_event("raised", c, now, int(n_active[c]), int(n_overdue[c])))
        in_outage = np.zeros(nc, dtype=bool)
        in_outage[:] = (self.cell_status == CELL_OUTAGE) | (self.cell_status == CELL_OUTAGE_QUIET) | outage
        join = overdue & in_cell & in_outage[cell0] & (st == OK)
        self.status[join] = SILENCED
        self.cell_silenced[:] = np.where(in_outage, np.maximum(self.cell_silenced, n_overdue), self.cell_silenced)

        # individual silences where the cell is up
        cand = silent & ~(in_cell & in_outage[cell0]) & (self.status != SILENCED)
        idx = np.flatnonzero(cand)
        if idx.size:
            c = cell[idx]
            has_cell = c >= 0
            cc = np.maximum(c, 0)
            others = n_active[cc] - 1
            others_overdue = n_overdue[cc] - 1
            heard_after = cell_last[cc] > eff[idx] + self.interval_ns[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(others > 0, others_overdue / np.maximum(others, 1), 0.0)
            neighbours_ok = (others > 0) & heard_after & (frac <= p.blocking_max_overdue_fraction)
            lone = ~has_cell | (others <= 0)
            take = np.where(has_cell, neighbours_ok | (lone & p.lone_meter_is_blocking), p.lone_meter_is_blocking)
            for i in idx[take].tolist():
                out.append(self._raise_meter(i, now, int(n_active[cell[i]] - n_overdue[cell[i]]) if cell[i] >= 0 else 0))
        return out

    def _emit_clears(self, now: int) -> list[AlertEvent]:
        out = []
        for i in np.flatnonzero(self.status >= CLEAR_PENDING).tolist():
            kind = "signal_blocking" if self.status[i] - CLEAR_PENDING == BLOCKING else "battery_depleted"
            self.status[i] = OK
            out.append(self._meter_event("cleared", kind, i, now))
        for c in np.flatnonzero(self.cell_status == CELL_CLEAR_PENDING).tolist():
            self.cell_status[c] = CELL_OK
            out.append(self._outage_event("cleared", c, now, 0, int(self.cell_silenced[c])))
            self.cell_silenced[c] = 0
        return out

    # ------------------------------------------------------------------ events
    def _battery_sank(self, i: int) -> bool:
        p = self.params
        last, best = float(self.bat_last[i]), float(self.bat_max[i])
        if not np.isfinite(last):
            return False
        return last < p.battery_low_v or (np.isfinite(best) and best - last >= p.battery_drop_v)

    def _raise_meter(self, i: int, now: int, reporting: int) -> AlertEvent:
        kind = "battery_depleted" if self._battery_sank(i) else "signal_blocking"
        self.status[i] = BATTERY if kind == "battery_depleted" else BLOCKING
        self.open_start[i] = self.last_ts[i]
        self.open_total[i] = self.last_total[i]
        return self._meter_event("raised", kind, i, now, reporting)

    def _meter_event(self, event: str, kind: str, i: int, now: int, reporting: int | None = None) -> AlertEvent:
        m, p, cal = self.registry.meters, self.params, self.calendar
        meter_id, district = str(m.ids[i]), str(m.district[i])
        start = int(self.open_start[i])
        rsrp_last, rsrp_ref = float(self.rsrp_last[i]), float(self.rsrp_ref[i])
        sank = np.isfinite(rsrp_last) and np.isfinite(rsrp_ref) and rsrp_ref - rsrp_last >= p.rsrp_drop_db
        balance = float(self.balance[i])
        empty = bool(m.prepaid[i]) and np.isfinite(balance) and balance <= p.balance_empty_cny
        ev: dict = {
            "last_seen": iso_utc(start),
            "register_at_last_seen_m3": round_or_none(self.open_total[i]),
            "rsrp_dbm_last": round_or_none(rsrp_last, 1),
            "rsrp_dbm_baseline": round_or_none(rsrp_ref, 1),
            "rsrp_sank": bool(sank),
            "battery_v_last": round_or_none(self.bat_last[i], 2),
            "battery_v_best": round_or_none(self.bat_max[i], 2),
            "prepaid": bool(m.prepaid[i]),
            "balance_cny": round_or_none(balance, 2),
            "cell_id": str(m.cell_id[i]),
            "report_interval_s": int(m.report_interval_s[i]),
        }
        if reporting is not None:
            ev["cell_meters_reporting"] = reporting
        b = int(m.building[i])
        where = f"{meter_id}"
        if b >= 0:
            addr = str(self.registry.buildings.address[b])
            where += f" ({m.building_id[i]}{', ' + addr if addr else ''})"
        since = cal.local_text(start)
        if kind == "signal_blocking":
            severity = "critical" if (sank or empty) else "warning"
            why = []
            if sank:
                why.append(f"RSRP fell from {rsrp_ref:.0f} to {rsrp_last:.0f} dBm first")
            if empty:
                why.append(f"prepaid balance was {balance:.2f} CNY")
            summary = (f"Meter {where} silent since {since} while its cell {m.cell_id[i]} keeps reporting"
                       f"{'; ' + ', '.join(why) if why else ''}: inspect for signal shielding")
        else:
            severity = "info"
            summary = (f"Meter {where} silent since {since} after its battery sank to "
                       f"{float(self.bat_last[i]):.2f} V: replace the battery")
        if event == "cleared":
            advance = float(self.last_total[i]) - float(self.open_total[i])
            if np.isfinite(advance) and advance < -0.5 * float(m.register_max_m3[i]):
                advance += float(m.register_max_m3[i])
            ev["resumed_at"] = iso_utc(int(self.last_ts[i]))
            ev["register_advance_m3"] = round_or_none(advance)
            ev["silent_h"] = round((int(self.last_ts[i]) - start) / NS / 3600, 1)
            summary = f"Meter {where} reporting again (silent since {since})"
            if np.isfinite(advance):
                summary += f"; register advanced {advance:.3f} m3 over the gap"
        else:
            ev["silent_h"] = round((now - start) / NS / 3600, 1)
        return AlertEvent(
            alert_id=alert_id(kind, meter_id, start), event=event, kind=kind, severity=severity,
            subject_type="meter", subject_id=meter_id, district=district, start_ns=start, detected_at_ns=now,
            summary=summary, evidence=ev)

    def _outage_event(self, event: str, c: int, now: int, members: int, silent: int) -> AlertEvent:
        cell_id = str(self.registry.cell_ids[c])
        district = str(self.cell_district[c])
        start = int(self.cell_start[c])
        since = self.calendar.local_text(start)
        ev: dict = {"last_heard": iso_utc(start), "meters_silent": silent}
        if event == "raised":
            ev["meters_in_cell"] = members
            summary = f"Cell {cell_id}: {silent} of {members} meters silent since {since}: check the NB-IoT cell/gateway"
        else:
            ev["reporting_again_at"] = iso_utc(int(self.cell_end[c]))
            summary = f"Cell {cell_id} reporting again (outage since {since})"
        return AlertEvent(
            alert_id=alert_id("network_outage", cell_id, start), event=event, kind="network_outage",
            severity="warning", subject_type="cell", subject_id=cell_id, district=district, start_ns=start,
            detected_at_ns=now, summary=summary,
            evidence=ev)

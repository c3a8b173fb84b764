"""The report's page: one section per incident kind with its example chart, the timeline, tank deadlines and
the detection scores."""

from __future__ import annotations

import datetime as dt
import html
import math
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from devices.time import DAY_NS, NS, LocalCalendar
from ingest.tools.report import pumprooms
from ingest.tools.report.chart import KIND_COLORS, SECTIONS, Chart
from ingest.tools.report.data import (
    Data,
    _cell_rows,
    _daily_use,
    _day_start_ns,
    _local_day,
    _ns,
    _peers,
    pick_examples,
)


class Report:
    def __init__(self, out: Path, alerts: list[dict], labels: list[dict] | None, data: Data | None,
                 scores: dict | None, facts: dict[str, str], zone: ZoneInfo):
        self.out, self.alerts, self.labels, self.data = out, alerts, labels, data
        self.picks = pick_examples(alerts, labels)
        self.scores, self.facts, self.zone = scores, facts, zone
        self.charts_dir = out / "charts"
        self.charts_dir.mkdir(parents=True, exist_ok=True)
        self.sections: list[str] = []
        times = [t for a in alerts for t in (_ns(a.get("start")), _ns(a.get("detected_at"))) if t is not None]
        for lab in labels or []:
            times += [t for t in (_ns(lab.get("start")), _ns(lab.get("end"))) if t is not None]
        if data is not None and len(data.m.ts_ns):
            # the data's own period when there is data: an alert may start before it (a due date)
            times = [int(data.m.ts_ns.min()), int(data.m.ts_ns.max())]
        self.t0 = min(times) if times else 0
        self.t1 = max(times) if times else DAY_NS

    def chart(self, name: str, chart: Chart, y_ticks=None) -> str:
        path = self.charts_dir / f"{name}.svg"
        path.write_text(chart.svg(y_ticks))
        return (f'<figure><img src="charts/{name}.svg" alt="{html.escape(chart.title)}" width="{chart.w}" '
                f'height="{chart.h}"></figure>')

    def section(self, sid: str, title: str, body: str) -> None:
        self.sections.append(f'<section id="{sid}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>')

    def _missing(self, what: str) -> str:
        return f'<p class="none">{html.escape(what)}</p>'

    # ---- timeline ---------------------------------------------------------------------------------------------
    def timeline(self) -> None:
        raised = [a for a in self.alerts if a.get("event") == "raised"]
        kinds = sorted({a["kind"] for a in raised} | {lab["kind"] for lab in self.labels or [] if lab["kind"] != "none"},
                       key=lambda k: (list(KIND_COLORS).index(k) if k in KIND_COLORS else 99, k))
        if not kinds:
            self.section("timeline", "Alerts on a timeline", self._missing("No alerts were raised."))
            return
        rows = {k: i for i, k in enumerate(kinds)}
        c = Chart("Incidents raised (dot: detected; line back to where the condition began)", self.t0, self.t1,
                  -0.5, len(kinds) - 0.5, height=70 + 34 * len(kinds), left=170, zone=self.zone)
        for lab in self.labels or []:
            if lab["kind"] in rows:
                s, e = _ns(lab.get("start")), _ns(lab.get("end")) or _ns(lab.get("start"))
                if s is None:
                    continue
                y = float(c.y(rows[lab["kind"]] - 0.28))
                x0, x1 = float(c.x(max(s, c.t0))), float(c.x(min(e or s, c.t1)))
                c.raw(f'<rect x="{x0:.1f}" y="{y - 3:.1f}" width="{max(x1 - x0, 2):.1f}" height="6" fill="#bbb"/>')
        if self.labels:
            c.legend.append(("injected incident (simulator label)", "#888", "box"))
        for a in raised:
            k, s, d = a["kind"], _ns(a.get("start")), _ns(a.get("detected_at"))
            if d is None:
                continue
            y = float(c.y(rows[k]))
            color = KIND_COLORS.get(k, "#555")
            if s is not None and s < d:
                c.raw(f'<line x1="{float(c.x(s)):.1f}" x2="{float(c.x(d)):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                      f'stroke="{color}" stroke-width="2" stroke-opacity="0.6"/>')
            title = html.escape(f"{a.get('detected_at')} {a.get('summary', '')}")
            c.raw(f'<circle cx="{float(c.x(d)):.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{title}</title>'
                  f'</circle>')
        c.legend.append(("alert raised", "#d62728", "dot"))
        ticks = [(i, k) for k, i in rows.items()]
        counts = Counter(a["kind"] for a in raised)
        events = Counter(a.get("event") for a in self.alerts)
        table = "".join(f"<tr><td>{html.escape(k)}</td><td>{counts.get(k, 0)}</td></tr>" for k in kinds)
        body = (self.chart("timeline", c, ticks) +
                f"<p>{len(raised)} incidents raised; {events.get('updated', 0)} updates, "
                f"{events.get('escalated', 0)} escalations, {events.get('cleared', 0)} cleared.</p>"
                f'<table class="small"><tr><th>kind</th><th>raised</th></tr>{table}</table>')
        self.section("timeline", "Alerts on a timeline", body)

    # ---- signal blocking ----------------------------------------------------------------------------------------
    def _heatmap(self, name: str, title: str, rows: list[int], names: list[str], t0: int, t1: int,
                 bin_ns: int, highlight: int, marks: list[tuple[int, str, str]]) -> str:
        """Readings heard per meter and time bin: a silent meter is a white row among coloured ones."""
        d = self.data
        assert d is not None
        nb = max(1, int(math.ceil((t1 - t0) / bin_ns)))
        grid = np.zeros((len(rows), nb))
        for i, m in enumerate(rows):
            r = d.meter(m)
            # one row per message carries its status fields: count messages heard, not readings (a day batch
            # uploaded after a silence holds readings from inside the silence)
            heard = r.ts_ns[np.isfinite(r.rsrp_dbm) | np.isfinite(r.battery_v)]
            b = (heard - t0) // bin_ns
            b = b[(b >= 0) & (b < nb)]
            grid[i] = np.bincount(b.astype(np.int64), minlength=nb)[:nb]
        c = Chart(title, t0, t0 + nb * bin_ns, -0.5, len(rows) - 0.5, height=90 + 13 * len(rows), left=90,
                  zone=self.zone)
        # shade by the share of the messages a meter normally sends in a bin (hourly and daily meters alike)
        expected = np.maximum(1.0, bin_ns / NS / d.reg.meters.report_interval_s[np.asarray(rows)].astype(float))
        cw = (c.w - c.ml - c.mr) / nb
        rh = (c.h - c.mt - c.mb) / len(rows)
        for i in range(len(rows)):
            y = float(c.y(i)) - rh / 2
            for j in np.flatnonzero(grid[i] > 0):
                a = 0.25 + 0.75 * min(1.0, grid[i, j] / expected[i])
                color = "#d62728" if rows[i] == highlight else "#1f77b4"
                c.raw(f'<rect x="{c.ml + j * cw:.1f}" y="{y + 1:.1f}" width="{cw + 0.3:.1f}" height="{rh - 2:.1f}" '
                      f'fill="{color}" fill-opacity="{a:.2f}"/>')
            if rows[i] == highlight:
                c.raw(f'<rect x="{c.ml}" y="{y:.1f}" width="{c.w - c.ml - c.mr}" height="{rh:.1f}" fill="none" '
                      f'stroke="#d62728" stroke-width="1.5"/>')
        for t, color, text in marks:
            c.vline(t, color, text)
        c.legend += [("messages heard (darker: more)", "#1f77b4", "box"), ("the alert's subject", "#d62728", "box")]
        return self.chart(name, c, [(i, n) for i, n in enumerate(names)])

    def _rows_top_down(self, rows: list[int], names: list[str]) -> tuple[list[int], list[str]]:
        return rows[::-1], names[::-1]

    def signal_blocking(self) -> None:
        a = self.picks["signal_blocking"]
        title = "Signal blocking: a meter falls silent while its cell keeps reporting"
        if a is None or self.data is None:
            self.section("signal_blocking", title, self._missing(
                "No signal_blocking alert to show." if a is None else "Needs --capture and --registry."))
            return
        d, reg = self.data, self.data.reg
        mid = a["subject"]["id"]
        m = reg.meters.index.get(mid)
        if m is None:
            self.section("signal_blocking", title, self._missing(f"{mid} is not in the registry."))
            return
        det, last = _ns(a["detected_at"]) or self.t1, _ns(a["start"]) or self.t0
        t0, t1 = max(self.t0, last - 7 * DAY_NS), min(self.t1, det + 3 * DAY_NS)
        cell = reg.meters.cell[m]
        peers = _peers(reg, m)
        rows = [m] + peers
        names = [f"{mid} ▶"] + [str(reg.meters.ids[i]) for i in peers]
        marks = [(last, "#d62728", "last heard"), (det, "#000", "alert raised")]
        daily = reg.meters.report_interval_s[m] >= 86400
        rows, names = self._rows_top_down(rows, names)
        heat = self._heatmap("signal_blocking_cell", f"Messages per {'day' if daily else '6 hours'}: {mid} and "
                             f"meters of its cell {reg.cell_ids[cell]}", rows, names, t0, t1,
                             (DAY_NS if daily else 6 * 3600 * NS), m, marks)
        # RSRP: the subject against the cell's daily median and 10–90 % band
        r = d.meter(m)
        ok = np.isfinite(r.rsrp_dbm) & (r.ts_ns >= t0 - 14 * DAY_NS)
        pr = [d.meter(i) for i in peers]
        pt = np.concatenate([p.ts_ns for p in pr]) if pr else np.array([], dtype=np.int64)
        pv = np.concatenate([p.rsrp_dbm for p in pr]) if pr else np.array([])
        keep = np.isfinite(pv) & (pt >= t0 - 14 * DAY_NS) & (pt <= t1)
        c0 = int(min(r.ts_ns[ok].min() if ok.any() else t0, t0))
        vals = np.r_[r.rsrp_dbm[ok], pv[keep]]
        lo_y, hi_y = (float(np.nanmin(vals)) - 3, float(np.nanmax(vals)) + 3) if len(vals) else (-130.0, -70.0)
        c = Chart(f"Signal strength (RSRP) of {mid} against its cell", c0, t1, lo_y, hi_y, y_label="RSRP dBm",
                  zone=self.zone)
        if keep.any():
            day = pt[keep] // DAY_NS
            days = np.unique(day)
            med = np.array([np.median(pv[keep][day == x]) for x in days])
            p10 = np.array([np.percentile(pv[keep][day == x], 10) for x in days])
            p90 = np.array([np.percentile(pv[keep][day == x], 90) for x in days])
            mids = days * DAY_NS + DAY_NS // 2
            c.band(mids, p10, p90, "#1f77b4", "cell 10–90 %")
            c.line(mids, med, "#1f77b4", "cell median", width=1.2)
        gap = int(reg.meters.report_interval_s[m]) * NS * 2 + 3600 * NS
        c.line(r.ts_ns[ok], r.rsrp_dbm[ok], "#d62728", mid, width=1.8, max_gap_ns=gap)
        c.dots(r.ts_ns[ok], r.rsrp_dbm[ok], "#d62728", r=2)
        c.vline(last, "#d62728", "last heard")
        c.vline(det, "#000", "alert raised")
        ev = a.get("evidence") or {}
        facts = [f"last heard {a['start'][:16].replace('T', ' ')} UTC, alert at "
                 f"{a['detected_at'][:16].replace('T', ' ')} UTC"]
        if ev.get("cell_meters_reporting") is not None:
            facts.append(f"{ev['cell_meters_reporting']} meters of the cell kept reporting")
        if ev.get("rsrp_sank"):
            facts.append(f"RSRP sank from {ev.get('rsrp_dbm_baseline')} to {ev.get('rsrp_dbm_last')} dBm first")
        body = (f"<p class=alert>{html.escape(a.get('summary', ''))}</p><p>{html.escape('; '.join(facts))}.</p>"
                + heat + self.chart("signal_blocking_rsrp", c))
        self.section("signal_blocking", title, body)

    def network_outage(self) -> None:
        a = self.picks["network_outage"]
        title = "Network outage: a whole cell goes quiet (one alert for the cell, none per meter)"
        if a is None or self.data is None:
            self.section("network_outage", title, self._missing(
                "No network_outage alert to show." if a is None else "Needs --capture and --registry."))
            return
        reg = self.data.reg
        cid = a["subject"]["id"]
        rows = _cell_rows(reg, cid)
        if not rows:
            self.section("network_outage", title, self._missing(f"cell {cid} is not in the registry."))
            return
        s, det = _ns(a["start"]) or self.t0, _ns(a["detected_at"]) or self.t1
        t0, t1 = max(self.t0, s - 2 * DAY_NS), min(self.t1, det + 2 * DAY_NS)
        heat = self._heatmap("network_outage_cell", f"Messages per hour, meters of cell {cid}", rows,
                             [str(reg.meters.ids[i]) for i in rows], t0, t1, 3600 * NS, -1,
                             [(s, "#9467bd", "last heard"), (det, "#000", "alert raised")])
        self.section("network_outage", title, f"<p class=alert>{html.escape(a.get('summary', ''))}</p>" + heat)

    # ---- reverse flow -------------------------------------------------------------------------------------------
    def reverse_flow(self) -> None:
        a = self.picks["reverse_flow"]
        title = "Reverse flow: the register runs backwards"
        if a is None or self.data is None:
            self.section("reverse_flow", title, self._missing(
                "No reverse_flow alert to show." if a is None else "Needs --capture and --registry."))
            return
        reg, mid = self.data.reg, a["subject"]["id"]
        m = reg.meters.index.get(mid)
        r = self.data.meter(m) if m is not None else None
        if r is None or not len(r.ts_ns):
            self.section("reverse_flow", title, self._missing(f"no readings of {mid} in the capture."))
            return
        s, det = _ns(a["start"]) or self.t0, _ns(a["detected_at"]) or self.t1
        t0, t1 = s - 3 * DAY_NS, det + 3 * DAY_NS
        w = (r.ts_ns >= t0) & (r.ts_ns <= t1)
        v = r.total_m3[w]
        c = Chart(f"Forward register of {mid}", t0, t1, float(np.nanmin(v)) - 0.05 if len(v) else 0,
                  float(np.nanmax(v)) + 0.05 if len(v) else 1, y_label="total m³", zone=self.zone)
        c.line(r.ts_ns[w], v, "#ff7f0e", "total_m3 (forward register)", step=True)
        c.dots(r.ts_ns[w], v, "#ff7f0e", r=1.8)
        # the readings where it fell
        fell = np.r_[False, np.diff(v) < 0]
        c.dots(r.ts_ns[w][fell], v[fell], "#d62728", "register fell", r=3.5)
        c.vline(s, "#d62728", "first fall")
        c.vline(det, "#000", "alert raised")
        body = f"<p class=alert>{html.escape(a.get('summary', ''))}</p>" + self.chart("reverse_flow_register", c)
        rv = r.reverse_m3[w]
        if np.isfinite(rv).sum() > 1 and np.nanmax(rv) > np.nanmin(rv):
            c2 = Chart(f"Reverse register of {mid}", t0, t1, float(np.nanmin(rv)), float(np.nanmax(rv)),
                       y_label="reverse m³", zone=self.zone, height=200)
            c2.line(r.ts_ns[w], rv, "#8c564b", "reverse_m3", step=True)
            c2.vline(det, "#000", "alert raised")
            body += self.chart("reverse_flow_reverse_register", c2)
        self.section("reverse_flow", title, body)

    # ---- bypass -------------------------------------------------------------------------------------------------
    def bypass(self) -> None:
        a = self.picks["bypass"]
        title = "Bypass: the building uses more than its households are billed for"
        if a is None or self.data is None:
            self.section("bypass", title, self._missing(
                "No bypass alert to show." if a is None else "Needs --capture and --registry."))
            return
        reg, mid = self.data.reg, a["subject"]["id"]
        m = reg.meters.index.get(mid)
        if m is None or reg.meters.building[m] < 0:
            self.section("bypass", title, self._missing(f"{mid} has no building in the registry."))
            return
        b = int(reg.meters.building[m])
        master = int(reg.buildings.master_meter[b])
        homes = [int(i) for i in np.flatnonzero((reg.meters.building == b) & ~reg.meters.is_master)]
        ref = self.t0
        d0, d1 = int(_local_day(np.array([self.t0]), self.zone, ref)[0]), int(_local_day(np.array([self.t1]),
                                                                                         self.zone, ref)[0])
        days = np.arange(d0, d1)  # the last day is cut short by the end of the data: leave it out
        mid_ns = np.array([_day_start_ns(x, self.zone, ref) + DAY_NS // 2 for x in days])
        master_use = _daily_use(self.data.meter(master), self.zone, ref, days) if master >= 0 else \
            np.full(len(days), np.nan)
        uses = np.array([_daily_use(self.data.meter(i), self.zone, ref, days) for i in homes]) if homes else \
            np.full((1, len(days)), np.nan)
        # a day counts only when most households are known, so a late upload does not look like a gap
        known = np.isfinite(uses).sum(axis=0) >= 0.9 * len(homes)
        homes_sum = np.where(known, np.nansum(uses, axis=0), np.nan)
        s, det = _ns(a["start"]) or self.t0, _ns(a["detected_at"]) or self.t1
        hi = float(np.nanmax(np.r_[master_use, homes_sum, 0.1]))
        bid = str(reg.buildings.ids[b])
        c = Chart(f"Building {bid}: master meter against the sum of its {len(homes)} households", self.t0, self.t1,
                  0, hi * 1.1, y_label="m³ per day", zone=self.zone)
        c.band(mid_ns, homes_sum, master_use, "#d62728", "unbilled gap")
        c.line(mid_ns, master_use, "#333", "master meter")
        c.line(mid_ns, homes_sum, "#1f77b4", "households, summed")
        c.vline(s, "#d62728", "bypass begins (detector's estimate)")
        c.vline(det, "#000", "alert raised")
        hu = uses[homes.index(m)] if m in homes else np.full(len(days), np.nan)
        c2 = Chart(f"Household {mid}: its metered use went dark", self.t0, self.t1, 0,
                   float(np.nanmax(np.r_[hu, 0.05])) * 1.15, y_label="m³ per day", zone=self.zone, height=220)
        c2.line(mid_ns, hu, "#1f77b4", f"{mid} metered use", step=False)
        c2.dots(mid_ns, hu, "#1f77b4", r=2)
        c2.vline(s, "#d62728", "bypass begins")
        c2.vline(det, "#000", "alert raised")
        ev = a.get("evidence") or {}
        extra = ""
        if ev.get("estimated_unmetered_m3_per_day") is not None:
            extra = (f"<p>Gap before {ev.get('building_gap_m3_per_day_before')} m³/day, after "
                     f"{ev.get('building_gap_m3_per_day_after')} m³/day; {mid}'s use before "
                     f"{ev.get('household_use_m3_per_day_before')}, after {ev.get('household_use_m3_per_day_after')}"
                     f" m³/day.</p>")
        body = (f"<p class=alert>{html.escape(a.get('summary', ''))}</p>{extra}" + self.chart("bypass_building", c)
                + self.chart("bypass_household", c2))
        self.section("bypass", title, body)

    # ---- disinfection -------------------------------------------------------------------------------------------
    def disinfection(self) -> None:
        title = "Tank hygiene: six-monthly cleaning and disinfection deadlines"
        if self.data is None:
            self.section("disinfection", title, self._missing("Needs --capture and --registry."))
            return
        reg = self.data.reg
        tanks = reg.tanks
        last = tanks.last_disinfected.astype("datetime64[D]").astype(np.int64).copy()
        cleaned: dict[int, int] = {}  # tank → event time of the disinfection record in the stream
        for e in self.data.events:
            if e.type == "disinfection":
                tid = e.fields.get("tank_id")
                if tid in tanks.index:
                    cleaned[tanks.index[tid]] = e.ts_ns
        # the regime the detector applied (its alerts say), six months when no tank alert tells
        months = next((int(a["evidence"]["interval_months"]) for a in self.alerts
                       if isinstance(a.get("evidence", {}).get("interval_months"), int)), 6)
        cal = LocalCalendar(self.zone.key)
        due = np.array([cal.add_months(int(x), months) for x in last])
        end_day = self.t1 // DAY_NS
        order = np.argsort(due)
        n = len(order)
        c = Chart("Each tank's cleaning deadline (bar: last cleaning → due six months later)",
                  int(min(last.min(), end_day - 200)) * DAY_NS, int(max(due.max(), end_day + 30)) * DAY_NS,
                  -0.5, n - 0.5, height=80 + 16 * n, left=90, zone=self.zone)
        rh = (c.h - c.mt - c.mb) / max(n, 1)
        overdue_ids = {a["subject"]["id"] for a in self.alerts if a.get("kind") == "disinfection_overdue"
                       and a.get("event") == "raised"}
        for row, i in enumerate(order):
            y = float(c.y(row))
            x0, x1 = float(c.x(int(last[i]) * DAY_NS)), float(c.x(int(due[i]) * DAY_NS))
            tid = str(tanks.ids[i])
            color = "#d62728" if tid in overdue_ids else ("#2ca02c" if i in cleaned else "#1f77b4")
            c.raw(f'<rect x="{x0:.1f}" y="{y - rh * 0.35:.1f}" width="{max(x1 - x0, 1):.1f}" height="{rh * 0.7:.1f}"'
                  f' fill="{color}" fill-opacity="0.55"><title>{html.escape(tid)} due '
                  f'{np.datetime64(int(due[i]), "D")}</title></rect>')
            if i in cleaned:
                cx = float(c.x(cleaned[i]))
                c.raw(f'<circle cx="{cx:.1f}" cy="{y:.1f}" r="4" fill="#2ca02c" stroke="white"/>')
        c.vline(int(end_day) * DAY_NS, "#000", "end of data")
        c.legend += [("overdue (alert raised)", "#d62728", "box"), ("cleaned during the period", "#2ca02c", "box"),
                     ("in date", "#1f77b4", "box")]
        body = ""
        a = self.picks["disinfection_overdue"]
        if a is not None:
            body += f"<p class=alert>{html.escape(a.get('summary', ''))}</p>"
        body += self.chart("disinfection_deadlines", c, [(row, str(tanks.ids[i])) for row, i in enumerate(order)])
        # the cleaning drawdown: a cleaned tank's level around its disinfection record
        if cleaned:
            i, when = next(iter(sorted(cleaned.items(), key=lambda kv: kv[1])))
            r = self.data.tank(i)
            t0, t1 = when - 2 * DAY_NS, when + 2 * DAY_NS
            w = (r.ts_ns >= t0) & (r.ts_ns <= t1)
            lv = r.level_m[w]
            c2 = Chart(f"Cleaning drawdown: level of tank {tanks.ids[i]} around its disinfection record", t0, t1, 0,
                       float(np.nanmax(np.r_[lv, 0.5])) * 1.1, y_label="level m", zone=self.zone, height=220)
            c2.line(r.ts_ns[w], lv, "#2ca02c", "level_m")
            cl = r.free_chlorine_mg_l[w]
            if np.isfinite(cl).any():
                scale = float(np.nanmax(np.r_[lv, 0.5])) / max(float(np.nanmax(cl)), 1e-6)
                c2.line(r.ts_ns[w], cl * scale, "#17becf", "free chlorine (scaled)", width=1, dash="3 2")
            c2.vline(when, "#000", "disinfection recorded")
            body += self.chart("disinfection_drawdown", c2)
        else:
            body += self._missing("No disinfection was recorded in this capture, so there is no drawdown to show.")
        self.section("disinfection", title, body)

    # ---- scores -------------------------------------------------------------------------------------------------
    def score_table(self) -> None:
        title = "Detection scores against the simulator's labels"
        if not self.scores:
            counts = Counter(a["kind"] for a in self.alerts if a.get("event") == "raised")
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{n}</td></tr>" for k, n in sorted(counts.items()))
            self.section("scores", title, "<p>No labels given (--labels): alerts raised per kind.</p>"
                         f"<table><tr><th>kind</th><th>raised</th></tr>{rows}</table>")
            return

        def f(x: Any, digits: int = 2) -> str:
            return "–" if x is None else f"{x:.{digits}f}"

        head = ("<tr><th>kind</th><th>labels</th><th>alerts</th><th>true pos.</th><th>false pos.</th>"
                "<th>missed</th><th>precision</th><th>recall</th><th>F1</th><th>median delay h</th>"
                "<th>decoy hits</th></tr>")
        rows = []
        for kind, k in self.scores["kinds"].items():
            hits = ", ".join(f"{n} {c}" for n, c in k["decoy_hits"].items()) or "–"
            cls = ' class="bad"' if (k["fp"] or k["fn"]) else ""
            rows.append(f"<tr{cls}><td>{kind}</td><td>{k['labels']}</td><td>{k['alerts']}</td><td>{k['tp']}</td>"
                        f"<td>{k['fp']}</td><td>{k['fn']}</td><td>{f(k['precision'])}</td><td>{f(k['recall'])}</td>"
                        f"<td>{f(k['f1'])}</td><td>{f(k['delay_h_median'], 1)}</td><td>{html.escape(hits)}</td></tr>")
        o = self.scores["overall"]
        rows.append(f"<tr class=total><td>all scored</td><td>{o['labels']}</td><td>{o['alerts']}</td>"
                    f"<td>{o['tp']}</td><td>{o['fp']}</td><td>{o['fn']}</td><td>{f(o['precision'])}</td>"
                    f"<td>{f(o['recall'])}</td><td>{f(o['f1'])}</td><td></td><td></td></tr>")
        unscored = ", ".join(f"{k} {n}" for k, n in self.scores.get("unscored", {}).items())
        note = ("<p>An alert matches a label of the same kind and subject when it starts within a day of the labelled "
                "interval; each label matches one alert (docs/FORMATS.md). Decoy hits are false alarms on the "
                "look-alikes the simulator planted (vacancies, rollovers, meter replacements, cell outages, crews' visits, "
                "high chlorine after a disinfection, stuck sensors, single readings out of limits).</p>")
        if unscored:
            note += f"<p>Not scored (no labels for these kinds): {html.escape(unscored)}.</p>"
        self.section("scores", title, f"<table>{head}{''.join(rows)}</table>{note}")

    def write(self) -> Path:
        self.timeline()
        self.signal_blocking()
        self.network_outage()
        self.reverse_flow()
        self.bypass()
        self.disinfection()
        pumprooms.water_quality(self)
        pumprooms.intrusion(self)
        self.score_table()
        facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self.facts.items())
        period = (f"{dt.datetime.fromtimestamp(self.t0 / NS, self.zone):%Y-%m-%d} to "
                  f"{dt.datetime.fromtimestamp(self.t1 / NS, self.zone):%Y-%m-%d} ({self.zone.key})")
        nav = " · ".join(f'<a href="#{s}">{s.replace("_", " ")}</a>' for s in SECTIONS)
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Cistern report</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 960px; color: #222; }}
h1 {{ margin-bottom: 4px; }} h2 {{ border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 36px; }}
table {{ border-collapse: collapse; margin: 10px 0; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px;
text-align: left; font-size: 14px; }} th {{ background: #f4f4f4; }} tr.bad td {{ background: #fff4f0; }}
tr.total td {{ font-weight: bold; }} figure {{ margin: 12px 0; }} img {{ max-width: 100%; height: auto;
border: 1px solid #eee; }} p.alert {{ background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }}
p.none {{ color: #777; font-style: italic; }} nav {{ margin: 10px 0 0; font-size: 14px; }}
</style></head><body>
<h1>Cistern report</h1>
<p>Data from {html.escape(period)}.</p>
<table class="facts">{facts}</table>
<nav>{nav}</nav>
{chr(10).join(self.sections)}
</body></html>
"""
        path = self.out / "report.html"
        path.write_text(page)
        return path



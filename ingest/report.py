"""`cistern report`: a static HTML report with SVG charts: alerts on a timeline, one example of each incident kind
drawn from the captured data, and detection scores against the simulator's labels. No plotting library needed."""

from __future__ import annotations

import argparse
import datetime as dt
import html
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from devices.alerts import parse_iso_ns

NS = 1_000_000_000
DAY_NS = 86_400 * NS
KIND_COLORS = {"signal_blocking": "#d62728", "network_outage": "#9467bd", "reverse_flow": "#ff7f0e",
               "bypass": "#1f77b4", "disinfection_overdue": "#2ca02c", "disinfection_due_soon": "#98df8a",
               "battery_depleted": "#8c564b", "disinfection_unverified": "#bcbd22"}
SECTIONS = ("timeline", "signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection", "scores")


# ---------------------------------------------------------------------------------------------------------
# a small SVG chart: time on x, numbers on y


def _gapped(t: np.ndarray, v: np.ndarray, max_gap_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN point into every gap longer than max_gap_ns (after dropping NaN values)."""
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    if len(t) < 2:
        return t, v
    gaps = np.flatnonzero(np.diff(t) > max_gap_ns)
    return np.insert(t, gaps + 1, t[gaps] + 1), np.insert(v, gaps + 1, np.nan)


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _fmt_num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


class Chart:
    """One SVG picture. x is time in ns (UTC), shown in the utility's time zone; y is a number (or rows)."""

    def __init__(self, title: str, t0: int, t1: int, y0: float, y1: float, *, width: int = 900, height: int = 260,
                 y_label: str = "", zone: ZoneInfo | None = None, left: int = 70):
        self.title, self.w, self.h = title, width, height
        self.ml, self.mr, self.mt, self.mb = left, 20, 34, 40
        self.t0, self.t1 = int(t0), int(max(t1, t0 + 3600 * NS))
        if not (math.isfinite(y0) and math.isfinite(y1)):
            y0, y1 = 0.0, 1.0
        if y1 - y0 <= 0:
            y0, y1 = y0 - 1, y1 + 1
        self.y0, self.y1 = y0, y1
        self.zone = zone or ZoneInfo("UTC")
        self.y_label = y_label
        self.body: list[str] = []
        self.legend: list[tuple[str, str, str]] = []  # (label, color, kind: line|box|dot)
        self._marks = 0

    def x(self, t: Any) -> Any:
        return self.ml + (np.asarray(t, dtype=np.float64) - self.t0) / (self.t1 - self.t0) * (self.w - self.ml - self.mr)

    def y(self, v: Any) -> Any:
        return self.h - self.mb - (np.asarray(v, dtype=np.float64) - self.y0) / (self.y1 - self.y0) * \
            (self.h - self.mt - self.mb)

    def line(self, t: np.ndarray, v: np.ndarray, color: str, label: str = "", width: float = 1.6,
             dash: str = "", step: bool = False, max_gap_ns: int = 0) -> None:
        t, v = np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64)
        ok = np.isfinite(v)
        if max_gap_ns and len(t) > 1:
            # a silence longer than max_gap_ns is drawn as a gap, not bridged by a straight line
            t, v = _gapped(t, v, max_gap_ns)
            ok = np.isfinite(v)
        if label:
            self.legend.append((label, color, "line"))
        if not ok.any():
            return
        xs, ys = self.x(t), self.y(np.clip(v, self.y0, self.y1))
        # a gap in the data (NaN) breaks the line rather than bridging it
        breaks = np.flatnonzero(~ok)
        for seg in np.split(np.arange(len(t)), breaks):
            seg = seg[ok[seg]]
            if len(seg) == 0:
                continue
            if step and len(seg) > 1:
                px = np.repeat(xs[seg], 2)[1:]
                py = np.repeat(ys[seg], 2)[:-1]
            else:
                px, py = xs[seg], ys[seg]
            pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True))
            if len(seg) == 1:
                self.body.append(f'<circle cx="{px[0]:.1f}" cy="{py[0]:.1f}" r="2" fill="{color}"/>')
            else:
                d = f' stroke-dasharray="{dash}"' if dash else ""
                self.body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}"'
                                 f' stroke-linejoin="round"{d}/>')

    def band(self, t: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, label: str = "") -> None:
        ok = np.isfinite(lo) & np.isfinite(hi)
        if label:
            self.legend.append((label, color, "box"))
        if ok.sum() < 2:
            return
        t, lo, hi = np.asarray(t)[ok], np.clip(lo[ok], self.y0, self.y1), np.clip(hi[ok], self.y0, self.y1)
        xs = self.x(t)
        pts = [f"{a:.1f},{b:.1f}" for a, b in zip(xs, self.y(hi), strict=True)]
        pts += [f"{a:.1f},{b:.1f}" for a, b in zip(xs[::-1], self.y(lo)[::-1], strict=True)]
        self.body.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="0.25" stroke="none"/>')

    def dots(self, t: np.ndarray, v: np.ndarray, color: str, label: str = "", r: float = 2.5) -> None:
        if label:
            self.legend.append((label, color, "dot"))
        ok = np.isfinite(np.asarray(v, dtype=np.float64))
        for a, b in zip(self.x(np.asarray(t)[ok]), self.y(np.asarray(v)[ok]), strict=True):
            self.body.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{r}" fill="{color}"/>')

    def vline(self, t: int, color: str, text: str = "", dash: str = "4 3") -> None:
        if not self.t0 <= t <= self.t1:
            return
        x = float(self.x(t))
        self.body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.mt}" y2="{self.h - self.mb}" stroke="{color}"'
                         f' stroke-width="1.3" stroke-dasharray="{dash}"/>')
        if text:
            anchor = "end" if x > self.w * 0.8 else "start"
            dx = -4 if anchor == "end" else 4
            y = self.mt + 12 + 13 * (self._marks % 3)  # stagger, so marks close together stay readable
            self._marks += 1
            self.body.append(f'<text x="{x + dx:.1f}" y="{y}" font-size="11" fill="{color}" text-anchor="{anchor}" '
                             f'stroke="white" stroke-width="3" paint-order="stroke">{html.escape(text)}</text>')

    def span(self, t0: int, t1: int, color: str, label: str = "") -> None:
        a, b = float(self.x(max(t0, self.t0))), float(self.x(min(t1, self.t1)))
        if label:
            self.legend.append((label, color, "box"))
        if b > a:
            self.body.append(f'<rect x="{a:.1f}" y="{self.mt}" width="{b - a:.1f}" height="{self.h - self.mt - self.mb}"'
                             f' fill="{color}" fill-opacity="0.12"/>')

    def raw(self, svg: str) -> None:
        self.body.append(svg)

    def _time_ticks(self) -> list[tuple[int, str]]:
        span_h = (self.t1 - self.t0) / NS / 3600
        step_h = next((s for s in (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720) if span_h / s <= 9), 1440)
        start = dt.datetime.fromtimestamp(self.t0 / NS, self.zone).replace(minute=0, second=0, microsecond=0)
        if step_h >= 24:
            start = start.replace(hour=0)
        ticks, t = [], start
        fmt = "%m-%d" if step_h >= 24 else "%m-%d %H:%M"
        while t.timestamp() * NS <= self.t1:
            ns = int(t.timestamp()) * NS
            if ns >= self.t0:
                ticks.append((ns, t.strftime(fmt)))
            t = (t + dt.timedelta(hours=step_h))
            if step_h >= 24:
                t = t.replace(hour=0)  # across a daylight-saving change stay on midnights
        return ticks

    def svg(self, y_ticks: list[tuple[float, str]] | None = None) -> str:
        w, h, ml, mr, mt, mb = self.w, self.h, self.ml, self.mr, self.mt, self.mb
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
                 f'font-family="Helvetica, Arial, sans-serif">',
                 f'<rect width="{w}" height="{h}" fill="white"/>',
                 f'<text x="{ml}" y="20" font-size="14" font-weight="bold" fill="#222">{html.escape(self.title)}</text>']
        if y_ticks is None:
            step = _nice_step(self.y1 - self.y0)
            v = math.ceil(self.y0 / step) * step
            y_ticks = []
            while v <= self.y1 + 1e-9:
                y_ticks.append((v, _fmt_num(v)))
                v += step
        for v, label in y_ticks:
            y = float(self.y(v))
            parts.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
            parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" fill="#555" text-anchor="end">'
                         f'{html.escape(label)}</text>')
        for ns, label in self._time_ticks():
            x = float(self.x(ns))
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{h - mb}" stroke="#f0f0f0"/>')
            parts.append(f'<text x="{x:.1f}" y="{h - mb + 16}" font-size="11" fill="#555" text-anchor="middle">'
                         f'{label}</text>')
        parts.append(f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="none" '
                     f'stroke="#999"/>')
        if self.y_label:
            parts.append(f'<text x="14" y="{(mt + h - mb) / 2:.0f}" font-size="11" fill="#555" text-anchor="middle" '
                         f'transform="rotate(-90 14 {(mt + h - mb) / 2:.0f})">{html.escape(self.y_label)}</text>')
        # marks that begin before the plotted period (a due date, a silence) are cut at the frame, not drawn
        # over the axis labels
        clip = f"clip{id(self):x}"
        parts += [f'<clipPath id="{clip}"><rect x="{ml}" y="{mt - 2}" width="{w - ml - mr}" '
                  f'height="{h - mt - mb + 4}"/></clipPath>', f'<g class="data" clip-path="url(#{clip})">',
                  *self.body, "</g>"]
        x = ml
        for label, color, kind in self.legend:
            y = h - 8
            if kind == "line":
                parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                             f'stroke-width="2.5"/>')
            elif kind == "dot":
                parts.append(f'<circle cx="{x + 9}" cy="{y - 4}" r="4" fill="{color}"/>')
            else:
                parts.append(f'<rect x="{x}" y="{y - 10}" width="18" height="10" fill="{color}" fill-opacity="0.35"/>')
            parts.append(f'<text x="{x + 23}" y="{y}" font-size="11" fill="#333">{html.escape(label)}</text>')
            x += 30 + 6.5 * len(label)
        parts.append("</svg>")
        return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
# data: the capture decoded for the few devices the examples need


def _ns(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_iso_ns(text)
    except ValueError:
        return None


class Data:
    """Registry plus the decoded readings of the meters asked for and every device event, from one filtered pass
    over the capture (ids cut out of the topic, the rest of a line parsed only when kept); a pump room's telemetry
    is read on demand by a second pass, so memory stays small whatever the capture's size."""

    def __init__(self, registry_dir: Path, capture: Path, meters: set[str]):
        from devices.registry import Registry
        from devices.topics import TopicLayout
        from ingest.decode import Decoder, RawMessage

        self.reg = Registry.load(registry_dir)
        self.capture = capture
        wanted = {m.encode() for m in meters}
        keep: list[RawMessage] = []
        prefix = b"water"
        for parts, line in _topics(capture):
            if parts[2] == b"pumproom" and parts[4].startswith(b"telemetry"):
                continue
            if parts[3] in wanted or parts[4].startswith(b"event"):
                prefix = parts[0]
                keep.append(_raw(line, RawMessage))
        self.decoder = Decoder(self.reg, TopicLayout(prefix.decode()))
        batch, _ = self.decoder.decode(keep)
        self.events = batch.events
        m = batch.meters
        self.m = m.take(np.lexsort((m.ts_ns, m.meter)))

    def meter(self, idx: int):
        lo, hi = np.searchsorted(self.m.meter, [idx, idx + 1])
        return self.m.take(np.arange(lo, hi))

    def tank(self, idx: int):
        """Readings of one tank: its pump room's telemetry, read from the capture now."""
        from ingest.decode import RawMessage

        room = str(self.reg.tanks.room_id[idx]).encode()
        lines = [_raw(line, RawMessage) for parts, line in _topics(self.capture)
                 if parts[3] == room and parts[2] == b"pumproom" and parts[4].startswith(b"telemetry")]
        batch, _ = self.decoder.decode(lines)
        t = batch.tanks.take(batch.tanks.tank == idx)
        return t.take(np.argsort(t.ts_ns, kind="stable"))


def _topics(capture: Path):
    """(topic levels, line) of each capture line; the topic is cut out of the line's head without parsing JSON."""
    import orjson

    with capture.open("rb") as fh:
        for line in fh:
            if line.startswith(b'{"topic":"'):  # the simulator's compact form: no JSON parsing needed
                parts = line[10:120].split(b"/", 5)
            else:  # any other spacing or key order (CONTRACT §7 allows it)
                try:
                    topic = orjson.loads(line).get("topic")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if not isinstance(topic, str):
                    continue
                parts = topic.encode().split(b"/", 5)
            if len(parts) >= 5:
                yield parts, line


def _raw(line: bytes, raw_message: Any):
    import orjson

    rec = orjson.loads(line)
    p = rec["payload"]
    return raw_message(rec["topic"], p.encode() if isinstance(p, str) else orjson.dumps(p))


def _local_day(ts_ns: np.ndarray, zone: ZoneInfo, ref_ns: int) -> np.ndarray:
    """Local calendar day number (days since epoch) of each timestamp; one offset is enough for a report."""
    off = zone.utcoffset(dt.datetime.fromtimestamp(ref_ns / NS)) or dt.timedelta(0)
    return (np.asarray(ts_ns, dtype=np.int64) + int(off.total_seconds()) * NS) // DAY_NS


def _day_start_ns(day: int, zone: ZoneInfo, ref_ns: int) -> int:
    off = zone.utcoffset(dt.datetime.fromtimestamp(ref_ns / NS)) or dt.timedelta(0)
    return int(day) * DAY_NS - int(off.total_seconds()) * NS


def _daily_use(r, zone: ZoneInfo, ref_ns: int, days: np.ndarray) -> np.ndarray:
    """m³ used per local day: the register's last value of each day minus the day before's (NaN where unknown,
    and where the register went backwards or jumped as after a replacement or rollover)."""
    out = np.full(len(days), np.nan)
    if len(r.ts_ns) == 0:
        return out
    d = _local_day(r.ts_ns, zone, ref_ns)
    last = np.r_[d[1:] != d[:-1], True]
    day_v = dict(zip(d[last].tolist(), r.total_m3[last].tolist(), strict=True))
    end = np.array([day_v.get(int(x), np.nan) for x in days])
    prev = np.r_[np.nan, end[:-1]]
    use = end - prev
    use[(use < 0) | (use > 50)] = np.nan
    return use


# ---------------------------------------------------------------------------------------------------------
# the report


def _pick(alerts: list[dict], kind: str, labels: list[dict] | None, prefer=None) -> dict | None:
    """A raised alert of `kind` to draw: one that matches a label if labels are known, `prefer` breaking ties."""
    raised = [a for a in alerts if a.get("event") == "raised" and a.get("kind") == kind]
    if not raised:
        return None
    labelled = set()
    for lab in labels or []:
        if lab.get("kind") == kind:
            labelled.add((lab.get("subject") or {}).get("id"))

    def score(a: dict) -> tuple:
        return (((a.get("subject") or {}).get("id") in labelled), bool(prefer and prefer(a)))

    return max(raised, key=score)


def pick_examples(alerts: list[dict], labels: list[dict] | None) -> dict[str, dict | None]:
    """The alert drawn for each kind: a labelled one when labels are known, the most telling otherwise."""
    ev = lambda a: a.get("evidence") or {}  # noqa: E731
    return {
        "signal_blocking": _pick(alerts, "signal_blocking", labels, lambda a: ev(a).get("rsrp_sank")),
        "network_outage": _pick(alerts, "network_outage", labels),
        "reverse_flow": _pick(alerts, "reverse_flow", labels, lambda a: (ev(a).get("volume_reversed_m3") or 0) > 1),
        "bypass": _pick(alerts, "bypass", labels),
        "disinfection_overdue": _pick(alerts, "disinfection_overdue", labels),
    }


def _peers(reg: Any, m: int, n: int = 24) -> list[int]:
    """Up to n other meters of meter m's cell, spread over the cell's list."""
    peers = [int(i) for i in np.flatnonzero((reg.meters.cell == reg.meters.cell[m]) & (np.arange(len(reg.meters)) != m))]
    return peers[:: max(1, len(peers) // n)][:n]


def _cell_rows(reg: Any, cell_id: str, n: int = 30) -> list[int]:
    cells = np.flatnonzero(np.asarray(reg.cell_ids) == cell_id)
    if not len(cells):
        return []
    members = [int(i) for i in np.flatnonzero(reg.meters.cell == cells[0])]
    # hourly meters show an outage best; daily uploads hide it inside their batch
    hourly = [i for i in members if reg.meters.report_interval_s[i] <= 3600]
    return (hourly or members)[:n]


def _meters_needed(picks: dict[str, dict | None], reg: Any) -> set[str]:
    ids: set[str] = set()
    for kind, a in picks.items():
        if a is None:
            continue
        sid = a["subject"]["id"]
        m = reg.meters.index.get(sid)
        if kind == "network_outage":
            ids.update(str(reg.meters.ids[i]) for i in _cell_rows(reg, sid))
        elif m is not None:
            ids.add(sid)
            if kind == "signal_blocking":
                ids.update(str(reg.meters.ids[i]) for i in _peers(reg, m))
            if kind == "bypass" and reg.meters.building[m] >= 0:
                ids.update(str(x) for x in reg.meters.ids[reg.meters.building == reg.meters.building[m]])
    return ids


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
        from detectors.disinfection import add_months

        due = np.array([add_months(int(x), 6) for x in last])
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
                "interval; each label matches one alert (CONTRACT §9). Decoy hits are false alarms on the "
                "look-alikes the simulator planted (vacancies, rollovers, meter replacements, cell outages).</p>")
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


def write_report(out: Path, *, alerts: list[dict], labels: list[dict] | None = None, capture: Path | None = None,
                 registry_dir: Path | None = None, scores: dict | None = None, facts: dict[str, str] | None = None,
                 timezone: str = "Asia/Shanghai") -> Path:
    """Write out/report.html and out/charts/*.svg; returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = None
    if capture is not None and registry_dir is not None:
        from devices.registry import Registry

        data = Data(registry_dir, capture, _meters_needed(pick_examples(alerts, labels), Registry.load(registry_dir)))
    if scores is None and labels is not None:
        from ingest.evaluate import evaluate

        scores = evaluate(alerts, labels)
    facts = dict(facts or {})
    facts.setdefault("Alert events", f"{len(alerts):,}")
    return Report(out, alerts, labels, data, scores, facts, ZoneInfo(timezone)).write()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alerts", required=True, type=Path, help="alert events, JSON lines (CISTERN_ALERTS_FILE)")
    parser.add_argument("--capture", type=Path, default=None, help="capture file the examples are drawn from")
    parser.add_argument("--registry", type=Path, default=None, help="registry folder (needed with --capture)")
    parser.add_argument("--labels", type=Path, default=None, help="simulator labels: adds detection scores")
    parser.add_argument("--timezone", default="Asia/Shanghai", help="the utility's time zone for the axes")
    parser.add_argument("--out", required=True, type=Path, help="output folder: report.html and charts/")


def main(args: argparse.Namespace) -> int:
    from ingest.evaluate import read_jsonl

    for name in ("alerts", "capture", "labels"):
        p = getattr(args, name)
        if p is not None and not p.is_file():
            print(f"cistern report: --{name} {p}: file not found", file=sys.stderr)
            return 2
    if (args.capture is None) != (args.registry is None):
        print("cistern report: --capture and --registry go together", file=sys.stderr)
        return 2
    if args.registry is not None and not args.registry.is_dir():
        print(f"cistern report: --registry {args.registry}: folder not found", file=sys.stderr)
        return 2
    try:
        ZoneInfo(args.timezone)
    except Exception:  # noqa: BLE001 - any failure means the name is unusable
        print(f"cistern report: --timezone {args.timezone!r} is not an IANA time zone", file=sys.stderr)
        return 2
    try:
        alerts = read_jsonl(args.alerts)
        labels = read_jsonl(args.labels) if args.labels else None
    except (ValueError, OSError) as e:
        print(f"cistern report: {e}", file=sys.stderr)
        return 1
    path = write_report(args.out, alerts=alerts, labels=labels, capture=args.capture, registry_dir=args.registry,
                        timezone=args.timezone,
                        facts={"Alerts file": str(args.alerts)} | ({"Capture": str(args.capture)} if args.capture
                                                                   else {}))
    print(path.resolve())
    return 0

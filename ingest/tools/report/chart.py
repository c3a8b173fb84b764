"""A small SVG chart: time on x (in the utility's time zone), numbers on y. No plotting library needed."""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from devices.time import NS

KIND_COLORS = {"signal_blocking": "#d62728", "network_outage": "#9467bd", "reverse_flow": "#ff7f0e",
               "bypass": "#1f77b4", "disinfection_overdue": "#2ca02c", "disinfection_due_soon": "#98df8a",
               "battery_depleted": "#8c564b", "disinfection_unverified": "#bcbd22", "water_quality": "#17becf",
               "pump_room_intrusion": "#e377c2", "sensor_fault": "#7f7f7f"}
SECTIONS = ("timeline", "signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection", "water_quality",
            "pump_room_intrusion", "scores")



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



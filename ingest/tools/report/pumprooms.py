"""The report's pump-room sections: a tank's water against its GB 5749-2022 limits, and the pump-room doors (each
opening, with or without a crew's work order)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from devices.time import DAY_NS, HOUR_NS
from ingest.tools.report.chart import Chart
from ingest.tools.report.data import _ns

if TYPE_CHECKING:
    from ingest.tools.report.page import Report

# (column, title, unit, within limits from, to): the limits the detector applies by default
PARAMETERS = (("free_chlorine_mg_l", "Free chlorine", "mg/L", 0.05, 2.0),
              ("turbidity_ntu", "Turbidity", "NTU", 0.0, 1.0),
              ("ph", "pH", "pH", 6.5, 8.5))


def _cleared_at(alerts: list[dict], alert_id: str) -> int | None:
    return next((_ns(a.get("detected_at")) for a in alerts if a.get("alert_id") == alert_id
                 and a.get("event") == "cleared"), None)


def water_quality(rep: Report) -> None:
    """The example incident's tank (or, without one, a tank of the capture): each parameter against its limits."""
    title = "Water quality: a tank's water against its limits (GB 5749-2022)"
    if rep.data is None:
        rep.section("water_quality", title, rep._missing("Needs --capture and --registry."))
        return
    reg = rep.data.reg
    a = rep.picks.get("water_quality")
    tank = reg.tanks.index.get(a["subject"]["id"]) if a else None
    if tank is None:
        tank = 0 if len(reg.tanks) else None
    if tank is None:
        rep.section("water_quality", title, rep._missing("The registry has no tanks."))
        return
    r = rep.data.tank(tank)
    if a is not None:
        s, det = _ns(a["start"]) or rep.t0, _ns(a["detected_at"]) or rep.t1
        t0, t1 = s - 12 * HOUR_NS, (_cleared_at(rep.alerts, a["alert_id"]) or det) + 12 * HOUR_NS
        intro = f"<p class=alert>{html.escape(a.get('summary', ''))}</p>"
    else:
        t0 = int(r.ts_ns.min()) if len(r.ts_ns) else rep.t0
        t1, s, det = t0 + 3 * DAY_NS, None, None
        intro = rep._missing(f"No water_quality alert was raised; tank {reg.tanks.ids[tank]}'s first days are shown.")
    w = (r.ts_ns >= t0) & (r.ts_ns <= t1)
    body = intro
    for col, name, unit, lo, hi in PARAMETERS:
        v = getattr(r, col)[w]
        t = r.ts_ns[w]
        fin = v[np.isfinite(v)]
        y0 = float(min(lo, fin.min())) if fin.size else lo
        y1 = float(max(hi, fin.max())) if fin.size else hi
        pad = 0.08 * (y1 - y0 or 1)
        c = Chart(f"{name} in tank {reg.tanks.ids[tank]}", t0, t1, y0 - pad, y1 + pad, y_label=unit, zone=rep.zone,
                  height=190)
        edge = np.array([t0, t1])
        c.band(edge, np.full(2, lo), np.full(2, hi), "#2ca02c", "within limits")
        c.line(t, v, "#17becf", name.lower())
        out = (v < lo) | (v > hi)
        c.dots(t[out], v[out], "#d62728", "out of limits", r=3)
        if s is not None:
            c.vline(s, "#d62728", "first reading out")
            c.vline(det, "#000", "alert raised")
        body += rep.chart(f"water_quality_{col}", c)
    ev = (a or {}).get("evidence") or {}
    if ev.get("intrusion"):
        body += (f"<p>The pump-room door had been opened without a work order: "
                 f"{html.escape(str(ev['intrusion'].get('alert_id')))}.</p>")
    rep.section("water_quality", title, body)


def _openings(door: Any, rooms: np.ndarray) -> list[tuple[int, int, int]]:
    """(room, first telemetry with the door open, first with it closed again or the last one) of each opening."""
    out = []
    for room in rooms.tolist():
        k = door.room == room
        t, op = door.ts_ns[k], door.door_open[k] == 1
        o = np.argsort(t, kind="stable")
        t, op = t[o], op[o]
        edges = np.diff(np.r_[0, op.astype(np.int8), 0])
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            out.append((room, int(t[a]), int(t[min(b, len(t) - 1)])))
    return out


def intrusion(rep: Report) -> None:
    """Every door opening of the period, one row per room: red where no crew's work order explained it."""
    title = "Pump-room doors: openings with and without a work order"
    if rep.data is None:
        rep.section("pump_room_intrusion", title, rep._missing("Needs --capture and --registry."))
        return
    reg = rep.data.reg
    door = rep.data.rooms().rooms
    door = door.take(np.isfinite(door.door_open))
    raised = {(a["subject"]["id"], _ns(a.get("start"))): a for a in rep.alerts
              if a.get("kind") == "pump_room_intrusion" and a.get("event") == "raised"}
    rooms = np.unique(door.room[door.door_open == 1])[:40]
    opens = _openings(door, rooms)
    if not opens:
        rep.section("pump_room_intrusion", title, rep._missing("No pump-room door was opened in this capture."))
        return
    rows = {int(r): i for i, r in enumerate(rooms.tolist())}
    c = Chart("Door openings per pump room (red: raised as an intrusion; grey: a crew's work order explained it)",
              rep.t0, rep.t1, -0.5, len(rows) - 0.5, height=80 + 16 * len(rows), left=90, zone=rep.zone)
    rh = (c.h - c.mt - c.mb) / max(len(rows), 1)
    for room, a, b in opens:
        alert = raised.get((str(reg.rooms.ids[room]), a))
        color = "#d62728" if alert else "#999"
        x0, x1 = float(c.x(a)), float(c.x(b))
        y = float(c.y(rows[room]))
        tip = html.escape(alert.get("summary", "") if alert else f"{reg.rooms.ids[room]}: crew visit")
        c.raw(f'<rect x="{x0:.1f}" y="{y - rh * 0.35:.1f}" width="{max(x1 - x0, 2.5):.1f}" height="{rh * 0.7:.1f}" '
              f'fill="{color}"><title>{tip}</title></rect>')
    c.legend += [("intrusion (no work order)", "#d62728", "box"), ("crew visit (work order)", "#999", "box")]
    body = rep.chart("pump_room_doors", c, [(i, str(reg.rooms.ids[r])) for r, i in rows.items()])
    body += _intrusion_table(rep, list(raised.values()))
    rep.section("pump_room_intrusion", title, body)


def _intrusion_table(rep: Report, raised: list[dict]) -> str:
    if not raised:
        return rep._missing("Every opening had a crew's work order: no intrusion was raised.")
    last = {a["alert_id"]: a for a in rep.alerts if a.get("kind") == "pump_room_intrusion"}
    linked: dict[str, set[str]] = {}
    for a in rep.alerts:
        for w in (a.get("evidence") or {}).get("water_quality") or []:
            linked.setdefault(a["alert_id"], set()).add(str(w.get("alert_id")))
    rows = []
    for a in sorted(raised, key=lambda x: x.get("start", ""))[:30]:
        ev = last[a["alert_id"]].get("evidence") or {}
        rows.append(f"<tr><td>{html.escape(a['subject']['id'])}</td><td>{html.escape(str(ev.get('door_opened_local')))}"
                    f"</td><td>{ev.get('door_open_min', '')}</td><td>{'night' if ev.get('night') else 'day'}</td>"
                    f"<td>{html.escape(', '.join(sorted(linked.get(a['alert_id'], ()))) or '–')}</td></tr>")
    return ("<table class=small><tr><th>pump room</th><th>door opened</th><th>minutes open (latest)</th>"
            "<th></th><th>water-quality incidents it caused</th></tr>" + "".join(rows) + "</table>")

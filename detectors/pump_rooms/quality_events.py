"""The water-quality detector's alert events: one per switch of an incident (raised, updated, cleared), with the
parameters, their values and limits, and the intrusion of the room they may follow; built only where a switch is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from devices.alerts import AlertEvent, iso_utc
from devices.time import parse_iso_ns

from ..base import HOUR_NS, alert_id, round_or_none
from .limits import LEVEL_FLOOR_M, PARAMETERS, UNITS

if TYPE_CHECKING:
    from .quality import WaterQualityDetector, _Cols

NAMES = {"free_chlorine": "free chlorine", "turbidity": "turbidity", "ph": "pH"}
ACTION = {"free_chlorine": "check the chlorine dosing and flush the tank", "turbidity": "check the inlet and flush the "
          "tank", "ph": "check the dosing and the tank lining"}


def _fmt(k: int, value: float) -> str:
    unit = UNITS[PARAMETERS[k]]
    return f"{value:.2f} {unit}" if unit else f"{value:.2f}"


class QualityEvents:
    def __init__(self, detector: WaterQualityDetector):
        self.d = detector

    # ------------------------------------------------------------------ where
    def _place(self, tank: int) -> tuple[str, int, str, str]:
        reg = self.d.registry
        room = int(reg.tanks.room[tank])
        return str(reg.tanks.ids[tank]), room, str(reg.rooms.ids[room]), str(reg.rooms.district[room])

    def _event(self, kind: str, event: str, tank: int, start: int, now: int, severity: str, summary: str,
               evidence: dict[str, Any]) -> AlertEvent:
        reg = self.d.registry
        tank_id, room, room_id, district = self._place(tank)
        ev = {"room_id": room_id, "address": str(reg.rooms.address[room])} | evidence
        return AlertEvent(alert_id=alert_id(kind, tank_id, start), event=event, kind=kind, severity=severity,
                          subject_type="tank", subject_id=tank_id, district=district, start_ns=start,
                          detected_at_ns=now, summary=summary, route={"unit": str(reg.rooms.maintenance_unit[room])},
                          evidence=ev)

    def intrusion(self, tank: int, start: int, now: int) -> dict[str, Any] | None:
        """The room's intrusion (door open without a work order) the water went out during or soon after."""
        room = int(self.d.registry.tanks.room[tank])
        opened, raised, cleared = (int(x) for x in self.d.board.latest("pump_room_intrusion", "pump_room")[room])
        after = int(self.d.params.link_after_h * HOUR_NS)
        if not raised or raised > now or opened > start or (cleared and cleared < start - after):
            return None
        room_id = str(self.d.registry.rooms.ids[room])
        return {"alert_id": alert_id("pump_room_intrusion", room_id, opened), "door_opened": iso_utc(opened),
                "door_closed": iso_utc(cleared) if cleared else None}

    # ------------------------------------------------------------------ events of one update
    def events(self, c: _Cols) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        cleared = ~c.open & c.prev_open
        for i in np.flatnonzero(c.raised | c.updated | cleared).tolist():
            out.append(self._quality(c, i))
        sf_on = c.sf & ~c.sf_prev
        for i in np.flatnonzero(sf_on | (~c.sf & c.sf_prev)).tolist():
            out.append(self._sensor(c, i, bool(sf_on[i])))
        return out

    def _extremes(self, c: _Cols, i: int, start: int, through: int) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest value of each parameter in the incident from its start through row `through`."""
        rows, d = c.rows, self.d
        tank = int(rows.dev[i])
        s = int(rows.starts[rows.gid[i]])
        sl = slice(s, through + 1)
        mask = c.open[sl] & (c.inc_start[sl] == start)
        vals = c.values[sl][mask]
        # (fmin/fmax pass over a missing value: a parameter with none in the incident stays NaN)
        lo = np.fmin.reduce(vals, axis=0) if len(vals) else np.full(len(PARAMETERS), np.nan)
        hi = np.fmax.reduce(vals, axis=0) if len(vals) else np.full(len(PARAMETERS), np.nan)
        if d.open[tank] == 1 and d.inc_start[tank] == start:
            lo = np.fmin(lo, d.inc_lo[tank])
            hi = np.fmax(hi, d.inc_hi[tank])
        return lo, hi

    def _quality(self, c: _Cols, i: int) -> AlertEvent:
        rows, lim = c.rows, self.d.limits
        tank, ts = int(rows.dev[i]), int(rows.ts[i])
        first_row = bool(rows.first[i])
        if c.open[i]:
            event = "raised" if c.raised[i] else "updated"
            start, crit, through = int(c.inc_start[i]), bool(c.crit[i]), i
            which = c.qual[i] if event == "raised" else (c.seen[i] | c.out[i])
        else:
            event = "cleared"
            start = int(self.d.inc_start[tank]) if first_row else int(c.inc_start[i - 1])
            crit = bool(c.crit_prev[i])
            through = i - 1
            which = c.seen[i - 1] if not first_row else ((self.d.inc_seen[tank] >> np.arange(3)) & 1).astype(bool)
        lo, hi = self._extremes(c, i, start, through) if through >= 0 else (np.full(3, np.nan),) * 2
        interval = float(c.interval[i]) if np.isfinite(c.interval[i]) else None
        params: dict[str, Any] = {}
        parts: list[str] = []
        for k in np.flatnonzero(which).tolist():
            name = PARAMETERS[k]
            low = np.isfinite(lo[k]) and lo[k] < lim.lo[k]
            worst = float(lo[k] if low else hi[k])
            limit = float(lim.lo[k] if low else lim.hi[k])
            params[name] = {"value": round_or_none(c.values[i, k]), "worst": round_or_none(worst),
                            "limit": limit, "bound": "min" if low else "max", "unit": UNITS[name] or "pH",
                            "readings_out": int(c.run[i, k])}
            if np.isfinite(worst):
                parts.append(f"{NAMES[name]} {_fmt(k, worst)} {lim.text(k, worst)}")
        minutes = (ts - start) / 6e10 + (interval or 0) / 60
        ev: dict[str, Any] = {"parameters": params, "out_of_limits_min": round(minutes, 1),
                              "reporting_interval_s": round_or_none(interval, 0)}
        stuck = [PARAMETERS[k] for k in np.flatnonzero(c.frozen[i]).tolist()]
        if stuck:
            ev["sensor_stuck"] = stuck  # the reading repeats one value: the sensor may be at fault as well
        link = self.intrusion(tank, start, ts)
        if link:
            ev["intrusion"] = link
            c.linked_at_end[rows.gid[i]] = max(int(c.linked_at_end[rows.gid[i]]), int(self._opened(link)))
        tank_id, _, room_id, _ = self._place(tank)
        what = "; ".join(parts) or "water out of limits"
        where = f"Tank {tank_id} (pump room {room_id})"
        if event == "cleared":
            summary = f"{where}: water back within limits (was {what}, {minutes:.0f} min)"
        else:
            action = "; ".join(ACTION[n] for n in params) or "check the water"
            summary = f"{where}: {what} for {minutes:.0f} min: {action}" + (
                " (the pump-room door was opened without a work order)" if link else "")
        severity = "critical" if crit else "warning"
        return self._event("water_quality", event, tank, start, ts, severity, summary, ev)

    @staticmethod
    def _opened(link: dict[str, Any]) -> int:
        return parse_iso_ns(link["door_opened"])

    def _sensor(self, c: _Cols, i: int, on: bool) -> AlertEvent:
        rows = c.rows
        tank, ts = int(rows.dev[i]), int(rows.ts[i])
        first_row = bool(rows.first[i])
        start = int(c.sf_start[i]) if on else (int(self.d.sf_start[tank]) if first_row else int(c.sf_start[i - 1]))
        j = i if on else max(i - 1, 0)
        ev: dict[str, Any] = {}
        parts: list[str] = []
        for k in np.flatnonzero(c.frozen[j]).tolist():
            hours = (int(rows.ts[j]) - int(c.since[j, k])) / HOUR_NS
            ev[PARAMETERS[k]] = {"reason": "stuck", "value": round_or_none(c.values[j, k]),
                                 "since": iso_utc(int(c.since[j, k])), "hours": round(hours, 1),
                                 "water_changes": int(c.moves[j] - c.since_moves[j, k])}
            parts.append(f"{NAMES[PARAMETERS[k]]} stuck at {c.values[j, k]:g} for {hours:.0f} h while the water "
                         f"changed")
        for k in np.flatnonzero(c.implausible[j]).tolist():
            ev[PARAMETERS[k]] = {"reason": "impossible", "value": round_or_none(c.values[j, k]),
                                 "plausible": [round_or_none(self.d.limits.plausible_lo[k]),
                                               round_or_none(self.d.limits.plausible_hi[k])]}
            parts.append(f"{NAMES[PARAMETERS[k]]} reads an impossible {c.values[j, k]:g}")
        if np.isfinite(c.level[j]) and c.level[j] < LEVEL_FLOOR_M:
            ev["level_m"] = {"reason": "impossible", "value": round_or_none(c.level[j], 2)}
            parts.append(f"level reads {c.level[j]:.2f} m")
        tank_id, _, room_id, _ = self._place(tank)
        what = "; ".join(parts) or "a sensor fault"
        if on:
            summary = f"Tank {tank_id} (pump room {room_id}): {what}: check and recalibrate the sensor"
        else:
            summary = f"Tank {tank_id} (pump room {room_id}): the sensors read plausibly again"
        return self._event("sensor_fault", "raised" if on else "cleared", tank, start, ts, "warning", summary,
                           {"sensors": ev})

    # ------------------------------------------------------------------ late links
    def links(self, c: _Cols) -> list[AlertEvent]:
        """An open incident that did not name the room's intrusion when it was raised (the intrusion was raised
        later, or in the same batch) names it now, in an update."""
        d = self.d
        tanks = c.rows.devices[(d.open[c.rows.devices] == 1) & (d.inc_link[c.rows.devices] == 0)]
        out: list[AlertEvent] = []
        for tank in tanks.tolist():
            now = int(d.last_ts[tank])
            start = int(d.inc_start[tank])
            link = self.intrusion(tank, start, now)
            if link is None:
                continue
            d.inc_link[tank] = self._opened(link)
            tank_id, _, room_id, _ = self._place(tank)
            summary = (f"Tank {tank_id} (pump room {room_id}): the water went out of limits after the pump-room door "
                       f"was opened without a work order (see {link['alert_id']})")
            severity = "critical" if d.inc_far[tank] or now - start >= d.params.critical_after_h * HOUR_NS \
                else "warning"
            out.append(self._event("water_quality", "updated", tank, start, now, severity, summary,
                                   {"intrusion": link}))
        return out

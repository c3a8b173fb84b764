"""What turns a detector's incident into a case a crew can act on: the responsible unit (Art. 14), where the subject
is (registry), and for theft kinds the Art. 43 loss estimate (telemetry and statutory)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from devices.registry import Registry
from devices.time import DAY_NS, LocalCalendar

THEFT_KINDS = ("signal_blocking", "reverse_flow", "bypass")

# Evidence keys the detectors may use for a measured loss (first found wins); documented in the report.
REVERSED_KEYS = ("volume_reversed_m3", "reversed_m3", "reverse_m3", "reverse_volume_m3", "reversed_volume_m3",
                 "loss_m3")
UNMETERED_RATE_KEYS = ("estimated_unmetered_m3_per_day", "unmetered_m3_per_day", "unmetered_m3_day", "gap_m3_per_day",
                       "missing_m3_per_day", "baseline_m3_per_day", "usual_m3_per_day")
UNMETERED_TOTAL_KEYS = ("unmetered_m3", "gap_m3", "missing_m3", "loss_m3")


def average_flow_m3h(dn_mm: float, velocity_m_s: float) -> float:
    """Art. 43 'average flow of the pipe's diameter': Q = v·π·d²/4, in m³/h."""
    d = dn_mm / 1000.0
    return velocity_m_s * math.pi * d * d / 4.0 * 3600.0


def _number(evidence: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, float] | None:
    for k in keys:
        v = evidence.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            return k, float(v)
    return None


def _text(x: Any) -> str:
    return "" if x is None else str(x)


class Enricher:
    """Registry look-ups for routing and evidence; everything here is pure (no I/O)."""

    def __init__(self, registry: Registry, settings: Any, timezone: str):
        self.reg = registry
        self.s = settings
        self.calendar = LocalCalendar(timezone)
        self.zone = self.calendar.zone

    # ---- time as a dispatcher reads it -------------------------------------------------------------------------
    def local(self, ts_ns: int) -> str:
        return self.calendar.local_text(ts_ns)

    def local_date(self, ts_ns: int) -> str:
        return self.calendar.local_date(ts_ns)

    def local_midnight_ns(self, date: dt.date) -> int:
        return self.calendar.midnight_ns(date)

    # ---- where and who -----------------------------------------------------------------------------------------
    def _room_of(self, subject_type: str, subject_id: str) -> int:
        r = self.reg
        if subject_type == "tank":
            i = r.tanks.index.get(subject_id, -1)
            return int(r.tanks.room[i]) if i >= 0 else -1
        if subject_type == "pump_room":
            return r.rooms.index.get(subject_id, -1)
        if subject_type == "building":
            i = r.buildings.index.get(subject_id, -1)
            return int(r.buildings.room[i]) if i >= 0 else -1
        return -1

    def where(self, subject_type: str, subject_id: str, district: str) -> dict[str, Any]:
        """Address, district and the identifiers a crew needs to find the subject."""
        r = self.reg
        out: dict[str, Any] = {"type": subject_type, "id": subject_id, "district": district}
        if subject_type == "meter":
            i = r.meters.index.get(subject_id, -1)
            if i < 0:
                out["registry"] = "unknown meter"
                return out
            b = int(r.meters.building[i])
            out.update(district=_text(r.meters.district[i]), building_id=_text(r.meters.building_id[i]),
                       role=_text(r.meters.role[i]), customer_class=_text(r.meters.customer_class[i]) or None,
                       pipe_dn_mm=int(r.meters.pipe_dn_mm[i]), prepaid=bool(r.meters.prepaid[i]),
                       cell_id=_text(r.meters.cell_id[i]) or None)
            if b >= 0:
                out["address"] = _text(r.buildings.address[b])
                room = int(r.buildings.room[b])
                if room >= 0:
                    out["pump_room_id"] = _text(r.rooms.ids[room])
            return out
        if subject_type == "cell":
            members = r.meters.cell_id == subject_id
            out["meters_on_cell"] = int(members.sum())
            return out
        room = self._room_of(subject_type, subject_id)
        if subject_type == "tank":
            i = r.tanks.index.get(subject_id, -1)
            if i >= 0:
                out["capacity_m3"] = float(r.tanks.capacity_m3[i])
                out["registry_last_disinfected"] = str(r.tanks.last_disinfected[i])
        if subject_type == "building":
            i = r.buildings.index.get(subject_id, -1)
            if i >= 0:
                out["address"] = _text(r.buildings.address[i])
                out["district"] = _text(r.buildings.district[i])
        if room >= 0:
            out["pump_room_id"] = _text(r.rooms.ids[room])
            out.setdefault("address", _text(r.rooms.address[room]))
            out["district"] = _text(r.rooms.district[room])
        elif subject_type in ("tank", "pump_room"):
            out["registry"] = f"unknown {subject_type}"
        return out

    def route(self, kind: str, subject_type: str, subject_id: str, district: str) -> dict[str, Any]:
        """Art. 14: the pump room's maintenance unit for tanks and pump rooms (and buildings with a pump room),
        the utility's district unit for meters, the network unit for a cell.
        Kinds that ask an inspector to check the maintenance unit's own work go to the supervising unit."""
        room = self._room_of(subject_type, subject_id)
        unit = supervisor = ""
        if room >= 0:
            unit = _text(self.reg.rooms.maintenance_unit[room])
            supervisor = _text(self.reg.rooms.supervisor_unit[room])
        elif subject_type == "cell":
            unit = self.s.network_unit_template.format(district=district)
        # A pump room with no unit on record still needs someone to act: fall back to the district's units.
        unit = unit or self.s.district_unit_template.format(district=district)
        supervisor = supervisor or self.s.district_supervisor_template.format(district=district)
        if kind in self.s.supervisor_kinds:
            unit = supervisor
        return {"unit": unit, "escalation_unit": supervisor}

    # ---- Art. 43 -------------------------------------------------------------------------------------------------
    def loss_estimate(self, kind: str, subject_type: str, subject_id: str, start_ns: int, end_ns: int,
                      evidence: dict[str, Any]) -> dict[str, Any] | None:
        """Telemetry estimate where the data gives one, and the statutory estimate of Art. 43."""
        if kind not in THEFT_KINDS or subject_type != "meter":
            return None
        r = self.reg
        i = r.meters.index.get(subject_id, -1)
        start_known = start_ns > 0 and evidence.get("start_known", True) is not False
        days = max(1, math.ceil((end_ns - start_ns) / DAY_NS)) if start_known else None
        out: dict[str, Any] = {"article": "Art. 43", "unit": "m3"}

        tel: dict[str, Any] | None = None
        if kind == "reverse_flow":
            hit = _number(evidence, REVERSED_KEYS)
            if hit:
                tel = {"m3": round(hit[1], 3), "basis": f"reversed volume registered by the meter ({hit[0]})"}
        else:
            total = _number(evidence, UNMETERED_TOTAL_KEYS)
            rate = _number(evidence, UNMETERED_RATE_KEYS)
            if total:
                tel = {"m3": round(total[1], 3), "basis": f"unmetered volume measured ({total[0]})"}
            elif rate and days is not None:
                what = "unmetered m3/day" if kind == "bypass" else "the meter's usual m3/day before it went silent"
                tel = {"m3": round(rate[1] * days, 3), "m3_per_day": round(rate[1], 3), "days": days,
                       "basis": f"{what} ({rate[0]}) x {days} days"}
        out["telemetry"] = tel

        if i < 0:
            out["statutory"] = None
            return out
        dn = int(r.meters.pipe_dn_mm[i])
        q = average_flow_m3h(dn, self.s.flow_velocity_m_s)
        cls = _text(r.meters.customer_class[i])
        if cls == "non_residential":
            hours = float(r.meters.business_hours_per_day[i])
            if not math.isfinite(hours) or hours <= 0:
                hours = self.s.default_business_hours_per_day
            basis_h = "non-residential business hours"
        else:
            hours = self.s.residential_hours_per_day
            basis_h = "residential"
        stat: dict[str, Any] = {"pipe_dn_mm": dn, "velocity_m_s": self.s.flow_velocity_m_s,
                                "avg_flow_m3h": round(q, 3), "hours_per_day": hours, "customer_class": cls or None}
        per_day = q * hours
        if days is not None:
            stat.update(days=days, m3=round(per_day * days, 2),
                        basis=f"DN{dn} average flow {q:.2f} m3/h x {hours:g} h/day ({basis_h}) x {days} days")
        else:
            lo, hi = self.s.unknown_days_min, self.s.unknown_days_max
            stat.update(days_range=[lo, hi], m3_range=[round(per_day * lo, 2), round(per_day * hi, 2)],
                        basis=f"start unknown: DN{dn} average flow {q:.2f} m3/h x {hours:g} h/day ({basis_h}) "
                              f"x {lo}-{hi} days")
        out["statutory"] = stat
        return out

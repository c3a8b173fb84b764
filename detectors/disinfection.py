"""Tank hygiene: a tank due for cleaning and disinfection soon, or overdue (Art. 31: at least every half year),
from the registry date and disinfection records in the stream; a record with no drawdown is flagged unverified."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch
from devices.registry import Registry

from .base import DAY_NS, Detector, LocalCalendar, MeterView, Params, alert_id, param, round_or_none

OK, DUE_SOON, OVERDUE = 0, 1, 2
LEVEL_DAYS = 6  # days of tank-level minima kept to check a record against


class DisinfectionParams(Params):
    interval_months: int = param(6, "months", "a tank is overdue this many calendar months after its last "
                                 "disinfection (3 for quarterly regimes)", ge=1, le=24)
    due_soon_days: int = param(14, "days", "remind this many days before the due date (dispatch reminds at 14 and 3 "
                               "days before it)", ge=0)
    drawdown_fraction: float = param(0.3, "1", "a real cleaning draws the level below this share of the tank's "
                                     "full level", gt=0, lt=1)
    verify_days_before: int = param(2, "days", "look for the drawdown this many days before the record", ge=0, le=3)
    verify_after_s: int = param(86400, "s", "… and until this long after it", ge=0, le=2 * 86400)
    event_type: str = param("disinfection", "text", "pump-room event type of a disinfection record")


class DisinfectionDetector(Detector):
    name = "disinfection"
    kinds = ("disinfection_overdue", "disinfection_due_soon", "disinfection_unverified")
    Params: ClassVar[type[Params]] = DisinfectionParams
    params: DisinfectionParams
    state_axes: ClassVar[dict[str, str]] = {
        "done_day": "tank", "from_event": "tank", "status": "tank", "open_due": "tank", "verify_ts": "tank",
        "lvl_day": "tank", "lvl_min": "tank", "lvl_full": "tank", "now": "scalar",
    }
    derived = ("due_day", "_due_ns")  # from done_day and the interval

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        self._after_restore()

    def _init_state(self) -> None:
        t = self.registry.tanks
        n = len(t)
        self.done_day = (t.last_disinfected - np.datetime64("1970-01-01", "D")).astype(np.int32)
        self.from_event = np.zeros(n, dtype=np.int8)
        self.status = np.zeros(n, dtype=np.int8)
        self.open_due = np.zeros(n, dtype=np.int32)  # due day of the open incident
        self.verify_ts = np.zeros(n, dtype=np.int64)  # a record waiting for its telemetry check
        self.lvl_day = np.full((n, LEVEL_DAYS), -1, dtype=np.int32)
        self.lvl_min = np.full((n, LEVEL_DAYS), np.nan, dtype=np.float32)
        self.lvl_full = np.full(n, np.nan, dtype=np.float32)
        self.now = np.zeros(1, dtype=np.int64)

    def _after_restore(self) -> None:
        months = self.params.interval_months
        self.due_day = np.array([self.calendar.add_months(int(d), months) for d in self.done_day], dtype=np.int64)
        self._due_ns = np.array([self.calendar.day_start_ns(int(d)) for d in self.due_day], dtype=np.int64)

    def _renew(self, i: int, day: int) -> None:
        self.done_day[i] = day
        self.from_event[i] = 1
        self.due_day[i] = self.calendar.add_months(day, self.params.interval_months)
        self._due_ns[i] = self.calendar.day_start_ns(int(self.due_day[i]))

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> None:
        tanks = self.registry.tanks
        for e in batch.events:
            if e.device != "pumproom" or e.type != self.params.event_type:
                continue
            self.now[0] = max(int(self.now[0]), e.ts_ns)
            tid = e.fields.get("tank_id")
            # a record naming no tank covers every tank of the room
            targets = [tanks.index[tid]] if tid in tanks.index else np.flatnonzero(tanks.room == e.index).tolist()
            day = self.calendar.day_of_one(e.ts_ns)
            for i in targets:
                if day >= self.done_day[i]:
                    self._renew(i, day)
                    self.verify_ts[i] = e.ts_ns
        tr = batch.tanks
        if len(tr):
            lvl = tr.level_m
            ok = np.isfinite(lvl)
            if ok.any():
                self._levels(tr.tank[ok].astype(np.int64), tr.ts_ns[ok], lvl[ok].astype(np.float32))
        return None

    def _levels(self, tank: np.ndarray, ts: np.ndarray, lvl: np.ndarray) -> None:
        self.now[0] = max(int(self.now[0]), int(ts.max()))
        np.fmax.at(self.lvl_full, tank, lvl)
        day = self.calendar.day_of(ts)
        order = None
        if int(tank.max()) < 65536:
            # a radix sort by tank; telemetry comes in time order, so days then already ascend within each tank
            order = np.argsort(tank.astype(np.uint16), kind="stable")
            tk, dy = tank[order], day[order]
            if np.any((dy[1:] < dy[:-1]) & (tk[1:] == tk[:-1])):
                order = None
        if order is None:
            order = np.lexsort((day, tank))
        tank, day, lvl = tank[order], day[order], lvl[order]
        start = np.ones(tank.size, dtype=bool)
        start[1:] = (tank[1:] != tank[:-1]) | (day[1:] != day[:-1])
        idx = np.flatnonzero(start)
        mins = np.minimum.reduceat(lvl, idx)
        tank, day = tank[idx], day[idx]
        slot = day % LEVEL_DAYS
        cur = self.lvl_day[tank, slot]
        same = cur == day
        newer = cur < day
        self.lvl_min[tank[same], slot[same]] = np.fmin(self.lvl_min[tank[same], slot[same]], mins[same])
        self.lvl_min[tank[newer], slot[newer]] = mins[newer]
        self.lvl_day[tank[newer], slot[newer]] = day[newer]

    # ------------------------------------------------------------------ tick
    def tick(self, now_ns: int) -> list[AlertEvent]:
        now = max(int(now_ns), int(self.now[0]))
        self.now[0] = now
        out: list[AlertEvent] = []
        st = self.status
        renewed = (st != OK) & (self.open_due != self.due_day)
        for i in np.flatnonzero(renewed).tolist():
            kind = "disinfection_overdue" if st[i] == OVERDUE else "disinfection_due_soon"
            out.append(self._event("cleared", kind, i, now, int(self.open_due[i])))
            st[i] = OK
        overdue = now > self._due_ns
        soon = ~overdue & (now >= self._due_ns - self.params.due_soon_days * DAY_NS)
        for i in np.flatnonzero(overdue & (st != OVERDUE)).tolist():
            if st[i] == DUE_SOON:
                out.append(self._event("cleared", "disinfection_due_soon", i, now, int(self.open_due[i])))
            st[i] = OVERDUE
            self.open_due[i] = self.due_day[i]
            out.append(self._event("raised", "disinfection_overdue", i, now, int(self.due_day[i])))
        for i in np.flatnonzero(soon & (st == OK)).tolist():
            st[i] = DUE_SOON
            self.open_due[i] = self.due_day[i]
            out.append(self._event("raised", "disinfection_due_soon", i, now, int(self.due_day[i])))
        check = (self.verify_ts > 0) & (now >= self.verify_ts + self.params.verify_after_s * NS)
        for i in np.flatnonzero(check).tolist():
            ev = self._verify(i, now)
            if ev is not None:
                out.append(ev)
            self.verify_ts[i] = 0
        return out

    def _verify(self, i: int, now: int) -> AlertEvent | None:
        rec = int(self.verify_ts[i])
        day = self.calendar.day_of_one(rec)
        lo = day - self.params.verify_days_before
        hi = self.calendar.day_of_one(rec + self.params.verify_after_s * NS)
        days = self.lvl_day[i]
        window = (days >= lo) & (days <= hi)
        full = float(self.lvl_full[i])
        if not window.any() or not np.isfinite(full) or full <= 0:
            return None  # no telemetry to judge by
        low = float(np.nanmin(self.lvl_min[i][window]))
        if low <= self.params.drawdown_fraction * full:
            return None
        t = self.registry.tanks
        room = int(t.room[i])
        tank_id = str(t.ids[i])
        ev = {"record_at": iso_utc(rec), "lowest_level_m": round_or_none(low, 2),
              "full_level_m": round_or_none(full, 2), "room_id": str(t.room_id[i])}
        return AlertEvent(
            alert_id=alert_id("disinfection_unverified", tank_id, rec), event="raised",
            kind="disinfection_unverified", severity="warning", subject_type="tank", subject_id=tank_id,
            district=str(self.registry.rooms.district[room]), start_ns=rec, detected_at_ns=now,
            summary=(f"Tank {tank_id}: disinfection recorded {self.calendar.local_text(rec)} but the level never "
                     f"dropped below {low:.2f} m of {full:.2f} m: verify the cleaning was done"),
            evidence=ev)

    def _event(self, event: str, kind: str, i: int, now: int, due: int) -> AlertEvent:
        t, rooms, cal = self.registry.tanks, self.registry.rooms, self.calendar
        room = int(t.room[i])
        tank_id = str(t.ids[i])
        due_date = str(cal.date_of(due))
        start = cal.day_start_ns(due) if kind == "disinfection_overdue" else \
            cal.day_start_ns(due - self.params.due_soon_days)
        done = str(cal.date_of(int(self.done_day[i])))
        ev = {
            "room_id": str(t.room_id[i]), "address": str(rooms.address[room]),
            "last_disinfected": done, "source": "event" if self.from_event[i] else "registry",
            "due_date": due_date, "interval_months": self.params.interval_months,
            "supervisor_unit": str(rooms.supervisor_unit[room]),
        }
        where = f"Tank {tank_id} in pump room {t.room_id[i]}" + (f" ({rooms.address[room]})" if rooms.address[room] else "")
        if event == "cleared":
            summary = f"{where}: disinfected on {done}, next due {cal.date_of(int(self.due_day[i]))}"
            ev["next_due_date"] = str(cal.date_of(int(self.due_day[i])))
        elif kind == "disinfection_overdue":
            late = cal.day_of_one(now) - due
            ev["days_overdue"] = int(late)
            summary = f"{where}: cleaning and disinfection overdue since {due_date} (last {done}): schedule it now"
        else:
            summary = f"{where}: cleaning and disinfection due on {due_date} (last {done})"
        severity = "warning" if (kind == "disinfection_overdue" and event == "raised") else "info"
        return AlertEvent(
            alert_id=alert_id(kind, tank_id, start), event=event, kind=kind, severity=severity,
            subject_type="tank", subject_id=tank_id, district=str(rooms.district[room]), start_ns=start,
            detected_at_ns=now, summary=summary, evidence=ev)

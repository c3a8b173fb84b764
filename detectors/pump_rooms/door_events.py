"""One room's door over one batch: its openings in time order, the decision after the grace period (a crew's work
order, or an intrusion), the incident's updates and clear, and what the tanks and pumps did meanwhile."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch

from ..base import alert_id, round_or_none
from .rows import Rows

if TYPE_CHECKING:
    from .intrusion import IntrusionDetector

NONE, PENDING, RAISED, EXPLAINED = 0, 1, 2, 3
MINUTE_NS = 60 * NS
KIND = "pump_room_intrusion"


@dataclass
class Opening:
    open_ts: int
    carried: bool  # began before this batch: the detector's accumulators hold what happened until the batch
    first: int = 0  # first row of the opening in this batch
    close: int | None = None  # row where the door was seen closed; None while open
    since: int = 0  # the room's telemetry before open_ts (door shut): the door opened after it (0: not known)

    @property
    def earliest(self) -> int:
        """The earliest the door can have opened: just after the room's last telemetry with it shut (a room reports
        every few minutes, so the door was seen open up to one report late)."""
        return self.since if 0 < self.since < self.open_ts else self.open_ts


@dataclass
class Moments:
    """What the tanks and pumps did from the opening up to a time: level [at opening, now, lowest, highest],
    free chlorine [at opening, now, lowest] per tank, pumps running [at opening, now, fewest, most]."""

    level: np.ndarray
    chlorine: np.ndarray
    pumps: np.ndarray


class Snapshots:
    """The batch's tank and pump rows, sorted once (only when some door needs them)."""

    def __init__(self, detector: IntrusionDetector, batch: Batch):
        self.d = detector
        self.batch = batch

    @cached_property
    def tanks(self) -> tuple[Rows, np.ndarray, np.ndarray]:
        tr = self.batch.tanks
        rows = Rows(tr.tank, tr.ts_ns, np.zeros(len(self.d.registry.tanks), dtype=np.int64))
        return rows, rows.take(tr.level_m), rows.take(tr.free_chlorine_mg_l)

    @cached_property
    def pumps(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (room, second) keys of the pump rows and how many pumps ran at each."""
        pu = self.batch.pumps
        if not len(pu):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        keys = (pu.room.astype(np.int64) << 34) | (pu.ts_ns // NS)
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, np.bincount(inv, weights=pu.running == 1, minlength=uniq.size).astype(np.int64)

    def _tank_rows(self, tank: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Level and free chlorine of the tank's rows of the batch from `lo` through `hi`."""
        rows, level, chlorine = self.tanks
        g = int(np.searchsorted(rows.devices, tank))
        if g >= rows.devices.size or rows.devices[g] != tank:
            return np.zeros(0), np.zeros(0)
        a, b = int(rows.starts[g]), int(rows.ends[g]) + 1
        seg = rows.ts[a:b]
        i, j = a + int(np.searchsorted(seg, lo, side="left")), a + int(np.searchsorted(seg, hi, side="right"))
        return level[i:j], chlorine[i:j]

    def moments(self, room: int, open_ts: int, until: int, carried: bool) -> Moments:
        d = self.d
        tanks = d.room_tanks[room]
        level = np.full((tanks.size, 4), np.nan)
        chlorine = np.full((tanks.size, 3), np.nan)
        for k, t in enumerate(tanks.tolist()):
            lv, cl = self._tank_rows(t, open_ts, until)
            old_lv = d.tank_lvl[t].astype(np.float64) if carried else np.full(3, np.nan)
            old_cl = d.tank_cl[t].astype(np.float64) if carried else np.full(2, np.nan)
            level[k] = [_first(old_lv[0], lv), _last(lv, np.nan), _fmin(old_lv[1], lv), _fmax(old_lv[2], lv)]
            chlorine[k] = [_first(old_cl[0], cl), _last(cl, np.nan), _fmin(old_cl[1], cl)]
        keys, running = self.pumps
        lo = (room << 34) | (open_ts // NS)
        hi = (room << 34) | (until // NS)
        i, j = np.searchsorted(keys, lo, side="left"), np.searchsorted(keys, hi, side="right")
        run = running[i:j].astype(np.float64)
        old = d.pumps[room].astype(np.float64) if carried else np.full(3, -1.0)
        old[old < 0] = np.nan
        pumps = np.array([_first(old[0], run), _last(run, np.nan), _fmin(old[1], run), _fmax(old[2], run)])
        return Moments(level, chlorine, pumps)

    def keep(self, room: int, m: Moments) -> None:
        """Fold what the opening showed up to the end of the batch into the detector's accumulators."""
        d = self.d
        tanks = d.room_tanks[room]
        d.tank_lvl[tanks] = m.level[:, [0, 2, 3]]
        d.tank_cl[tanks] = m.chlorine[:, [0, 2]]
        d.pumps[room] = np.nan_to_num(m.pumps[[0, 2, 3]], nan=-1).astype(np.int8)


def _first(old: float, new: np.ndarray) -> float:
    if np.isfinite(old):
        return float(old)
    fin = new[np.isfinite(new)]
    return float(fin[0]) if fin.size else np.nan


def _last(new: np.ndarray, default: float) -> float:
    fin = new[np.isfinite(new)]
    return float(fin[-1]) if fin.size else default


def _fmin(old: float, new: np.ndarray) -> float:
    fin = new[np.isfinite(new)]
    return float(np.fmin(old, fin.min())) if fin.size else float(old)


def _fmax(old: float, new: np.ndarray) -> float:
    fin = new[np.isfinite(new)]
    return float(np.fmax(old, fin.max())) if fin.size else float(old)


class RoomWalk:
    """One room's rows of one batch (door flags in time order), walked opening by opening."""

    def __init__(self, detector: IntrusionDetector, room: int, ts: np.ndarray, is_open: np.ndarray,
                 orders: dict[int, list[int]], snaps: Snapshots):
        self.d = detector
        self.room = room
        self.ts = ts
        self.is_open = is_open
        self.orders = orders
        self.snaps = snaps
        self.out: list[AlertEvent] = []
        self.carried_phase = int(detector.phase[room])

    # ------------------------------------------------------------------ the openings of the batch
    def openings(self) -> list[Opening]:
        d, r, ts, op = self.d, self.room, self.ts, self.is_open
        prev = np.empty(op.size, dtype=bool)
        prev[0] = d.door[r] == 1
        prev[1:] = op[:-1]
        starts = np.flatnonzero(op & ~prev)
        closes = np.flatnonzero(~op & prev)
        out: list[Opening] = []
        if d.phase[r] == PENDING or (d.phase[r] != NONE and prev[0]):
            close = (int(closes[0]) if closes.size else None) if prev[0] else -1
            out.append(Opening(int(d.open_ts[r]), carried=True, first=0, close=close, since=int(d.open_lo[r])))
        else:
            d.phase[r] = NONE
        for s in starts.tolist():
            later = closes[closes > s]
            since = int(ts[s - 1]) if s > 0 else int(d.last_ts[r])
            out.append(Opening(int(ts[s]), carried=False, first=s, close=int(later[0]) if later.size else None,
                               since=since))
        return out

    def run(self) -> list[AlertEvent]:
        d, r, ts = self.d, self.room, self.ts
        grace = int(d.params.grace_min * MINUTE_NS)
        ops = self.openings()
        last: Opening | None = None
        for k, op in enumerate(ops):
            if not op.carried:
                d.phase[r], d.open_ts[r], d.open_lo[r], d.closed_ts[r] = PENDING, op.open_ts, op.since, 0
            if op.close is not None and op.close >= 0:
                d.closed_ts[r] = ts[op.close]
            nxt = ops[k + 1].first if k + 1 < len(ops) else ts.size
            row = None
            if d.phase[r] == PENDING:
                dd = min(max(int(np.searchsorted(ts, op.open_ts + grace)), op.first), nxt)
                if dd >= ts.size:
                    last = op
                    continue
                closed = None
                if op.close is not None and op.close <= dd:
                    closed = int(d.closed_ts[r])
                self.out += self.decide(op, int(ts[dd]), closed)
                row = dd
            if d.phase[r] == RAISED:
                self._while_open(op, row)
            if d.phase[r] in (RAISED, EXPLAINED) and op.close is not None and op.close >= 0:
                if d.phase[r] == RAISED:
                    self.out.append(self._event("cleared", op, int(ts[op.close])))
                d.phase[r] = NONE
            last = op
        if last is not None and d.phase[r] in (PENDING, RAISED):  # a crew's visit has nothing to report
            self.snaps.keep(r, self.snaps.moments(r, int(d.open_ts[r]), int(ts[-1]), last.carried))
        return self.out

    def decide(self, op: Opening, now: int, closed: int | None, silent_since: int | None = None) -> list[AlertEvent]:
        """The grace period is over: a crew's work order explains the opening; otherwise it is an intrusion."""
        d, r = self.d, self.room
        d.decided_ts[r] = now
        if d.explained(r, op.earliest, now, self.orders):
            d.phase[r] = EXPLAINED if closed is None else NONE
            return []
        d.phase[r] = RAISED
        out = [self._event("raised", op, now, closed=closed, silent_since=silent_since)]
        if closed is not None:
            out.append(self._event("cleared", op, now, closed=closed))
            d.phase[r] = NONE
        return out

    def _while_open(self, op: Opening, row: int | None) -> None:
        """Updates of a raised opening: as its time open grows, when a tank's water goes out of limits, when a
        crew's work order turns up late."""
        d, r, ts = self.d, self.room, self.ts
        end = op.close if op.close is not None else ts.size
        # from the decision (this batch) or from the last row of the previous batch
        since = int(ts[row]) if row is not None else max(int(d.decided_ts[r]), int(d.last_ts[r]))
        every = int(d.params.update_every_min * MINUTE_NS)
        moments: list[tuple[int, str]] = []
        lo = op.first if row is None else row + 1
        if end > lo:
            b = (ts[lo:end] - op.open_ts) // every
            b0 = (since - op.open_ts) // every
            steps = np.flatnonzero(np.diff(np.concatenate(([b0], b))) > 0) + lo
            moments += [(int(ts[j]), "time") for j in steps.tolist()]
        until = int(ts[end]) if op.close is not None else (int(ts[-1]) if ts.size else since)
        for t in self._water_quality(op.open_ts):
            at = max(t, since)
            if at <= until:
                moments.append((at, "water_quality"))
        before = op.earliest - int(d.params.window_before_h * 3600 * NS)
        for t in self.orders.get(r, ()):
            if t >= before and (t > since or row is None):
                at = max(t, since)
                if at <= until:
                    moments.append((at, "work_order"))
        for at, why in sorted(moments):
            self.out.append(self._event("updated", op, at, why=why))

    def _water_quality(self, open_ts: int) -> list[int]:
        """When water-quality incidents of the room's tanks that began during the opening were raised."""
        latest = self.d.board.latest("water_quality", "tank")
        out = []
        for t in self.d.room_tanks[self.room].tolist():
            start, raised, _cleared = (int(x) for x in latest[t])
            if raised and start >= open_ts and self.d.wq_named[t] != start:
                out.append(raised)
        return out

    # ------------------------------------------------------------------ the alert event
    def _event(self, event: str, op: Opening, now: int, why: str = "", closed: int | None = None,
               silent_since: int | None = None) -> AlertEvent:
        d, r = self.d, self.room
        reg = d.registry
        room_id = str(reg.rooms.ids[r])
        if event == "cleared" and closed is None:
            closed = int(d.closed_ts[r])
        m = self.snaps.moments(r, op.open_ts, closed or now, op.carried)
        ev = self._evidence(op, now, closed, m, silent_since)
        night = d.night(op.open_ts)
        minutes = ((closed or now) - op.open_ts) / MINUTE_NS
        where = f"Pump room {room_id}" + (f" ({reg.rooms.address[r]})" if reg.rooms.address[r] else "")
        opened = d.calendar.local_text(op.open_ts)
        if event == "cleared":
            summary = f"{where}: the door is closed again (open {minutes:.0f} min from {opened}, no work order)"
        else:
            effect = self._effect(m)
            summary = (f"{where}: door open since {opened} without a work order ({minutes:.0f} min)"
                       + (f"; {effect}" if effect else "") + ": send someone to check the room and the tanks")
            if why == "work_order":
                summary += "; a work order was logged after the opening: check it was the crew"
        return AlertEvent(alert_id=alert_id(KIND, room_id, op.open_ts), event=event, kind=KIND,
                          severity="critical" if night else "warning", subject_type="pump_room", subject_id=room_id,
                          district=str(reg.rooms.district[r]), start_ns=op.open_ts, detected_at_ns=now,
                          summary=summary, route={"unit": str(reg.rooms.maintenance_unit[r])}, evidence=ev)

    def _effect(self, m: Moments) -> str:
        tanks = self.d.registry.tanks.ids
        parts = []
        for k, t in enumerate(self.d.room_tanks[self.room].tolist()):
            at, low = m.chlorine[k, 0], m.chlorine[k, 2]
            if np.isfinite(at) and np.isfinite(low) and at > 0 and low < 0.5 * at:
                parts.append(f"free chlorine in {tanks[t]} fell from {at:.2f} to {low:.2f} mg/L")
        return "; ".join(parts)

    def _evidence(self, op: Opening, now: int, closed: int | None, m: Moments,
                  silent_since: int | None) -> dict[str, Any]:
        d, r = self.d, self.room
        reg = d.registry
        tanks: dict[str, Any] = {}
        for k, t in enumerate(d.room_tanks[r].tolist()):
            lv, cl = m.level[k], m.chlorine[k]
            tanks[str(reg.tanks.ids[t])] = {
                "level_m": {"at_opening": round_or_none(lv[0], 2), "now": round_or_none(lv[1], 2),
                            "lowest": round_or_none(lv[2], 2), "highest": round_or_none(lv[3], 2)},
                "free_chlorine_mg_l": {"at_opening": round_or_none(cl[0], 2), "now": round_or_none(cl[1], 2),
                                       "lowest": round_or_none(cl[2], 2)}}
        p = m.pumps
        ev: dict[str, Any] = {
            "address": str(reg.rooms.address[r]), "door_opened": iso_utc(op.open_ts),
            "door_opened_local": d.calendar.local_text(op.open_ts), "night": d.night(op.open_ts),
            "door_open_min": round(((closed or now) - op.open_ts) / MINUTE_NS, 1),
            "door_closed": iso_utc(closed) if closed else None,
            "pumps_running": {"at_opening": _int(p[0]), "now": _int(p[1]), "fewest": _int(p[2]), "most": _int(p[3])},
            "tanks": tanks}
        if silent_since is not None:
            ev["telemetry_silent_since"] = iso_utc(silent_since)
        effect = self._effect(m)
        if effect:
            ev["water_quality_effect"] = effect
        linked = self._linked(op.open_ts, now)
        if linked:
            ev["water_quality"] = linked
        return ev

    def _linked(self, open_ts: int, now: int) -> list[dict[str, Any]]:
        """The water-quality incidents of the room's tanks that began during the opening, raised by `now`."""
        d = self.d
        latest = d.board.latest("water_quality", "tank")
        out = []
        for t in d.room_tanks[self.room].tolist():
            start, raised, cleared = (int(x) for x in latest[t])
            if raised and start >= open_ts and raised <= now:
                tank_id = str(d.registry.tanks.ids[t])
                out.append({"alert_id": alert_id("water_quality", tank_id, start), "tank_id": tank_id,
                            "since": iso_utc(start), "cleared": iso_utc(cleared) if cleared else None})
                d.wq_named[t] = start
        return out


def _int(x: float) -> int | None:
    return int(x) if np.isfinite(x) else None

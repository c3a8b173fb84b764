"""Pump-room security: the door open with no crew's work order for that room from 2 hours before the opening (the
earliest it can have been: the room's last telemetry with the door shut) (`pump_room_intrusion`), critical at night;
one incident per opening, updated with what the tanks and pumps did meanwhile and with the water-quality incidents of
its tanks, cleared when the door closes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent
from devices.batch import NS, Batch
from devices.registry import Registry

from ..base import HOUR_NS, Detector, LocalCalendar, MeterView, Params, param
from .door_events import Opening, RoomWalk, Snapshots
from .rows import Rows

NONE, PENDING, RAISED, EXPLAINED = 0, 1, 2, 3  # the phase of a room's latest opening
MINUTE_NS = 60 * NS


class IntrusionParams(Params):
    window_before_h: float = param(2, "h", "a crew's work-order event for the room from this long before the door "
                                   "opened explains the opening", ge=0)
    grace_min: float = param(15, "min", "wait this long after the door opened for the crew's work-order event "
                             "before raising", ge=0)
    event_types: str = param("maintenance,inspection,disinfection", "text", "pump-room event types that are a crew "
                             "visit (each must carry a work order)")
    night_from_h: int = param(22, "h", "night begins at this local hour: an opening at night is critical", ge=0,
                              le=23)
    night_to_h: int = param(6, "h", "night ends at this local hour", ge=0, le=23)
    update_every_min: float = param(60, "min", "an open door is updated this often with how long it has been open",
                                    gt=0)
    silent_after_min: float = param(30, "min", "a room silent this long after its door opened is decided without "
                                    "waiting for its next telemetry (the intruder may have cut it)", gt=0)


class IntrusionDetector(Detector):
    name = "intrusion"
    kinds = ("pump_room_intrusion",)
    Params: ClassVar[type[Params]] = IntrusionParams
    params: IntrusionParams
    state_axes: ClassVar[dict[str, str]] = {
        "last_ts": "room", "door": "room", "open_ts": "room", "open_lo": "room", "closed_ts": "room", "phase": "room",
        "decided_ts": "room", "last_wo": "room", "pumps": "room",
        "tank_lvl": "tank", "tank_cl": "tank", "wq_named": "tank",
    }

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        self.types = frozenset(t.strip() for t in self.params.event_types.split(",") if t.strip())
        t = registry.tanks
        # each room's tanks in the order of their ids (the evidence reads the same whatever the registry's order)
        self.room_tanks = [np.array(sorted(np.flatnonzero(t.room == r).tolist(), key=lambda i: str(t.ids[i])),
                                    dtype=np.int64) for r in range(len(registry.rooms))]

    def _init_state(self) -> None:
        n_r, n_t = len(self.registry.rooms), len(self.registry.tanks)
        self.last_ts = np.zeros(n_r, dtype=np.int64)
        self.door = np.full(n_r, -1, dtype=np.int8)  # -1 not heard yet, 0 closed, 1 open
        self.open_ts = np.zeros(n_r, dtype=np.int64)  # first telemetry of the latest opening
        self.open_lo = np.zeros(n_r, dtype=np.int64)  # the telemetry before it, door shut (0: none)
        self.closed_ts = np.zeros(n_r, dtype=np.int64)  # first telemetry with the door closed again after it
        self.phase = np.zeros(n_r, dtype=np.int8)
        self.decided_ts = np.zeros(n_r, dtype=np.int64)  # when the opening was raised (or explained)
        self.last_wo = np.zeros(n_r, dtype=np.int64)  # latest work-order event of the room
        self.pumps = np.full((n_r, 3), -1, dtype=np.int8)  # pumps running: at the opening, fewest, most since
        self.tank_lvl = np.full((n_t, 3), np.nan, dtype=np.float32)  # level: at the opening, lowest, highest
        self.tank_cl = np.full((n_t, 2), np.nan, dtype=np.float32)  # free chlorine: at the opening, lowest
        self.wq_named = np.zeros(n_t, dtype=np.int64)  # start of the tank's water-quality incident named

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> list[AlertEvent] | None:
        orders = self._work_orders(batch)
        rr = batch.rooms
        if not (rr.door_open == 1).any() and not self.phase.any():
            # every door shut and nothing pending: nothing to follow (a door stays shut until seen open). But each
            # room's last report with the door shut moves on: an opening counts its two hours from it, whatever
            # batch that report came in
            if len(rr):
                np.maximum.at(self.last_ts, rr.room, rr.ts_ns)
                self.door[rr.room[rr.door_open == 0]] = 0
            self._note_orders(orders)
            return None
        rows = Rows(rr.room, rr.ts_ns, self.last_ts) if len(rr) else None
        out: list[AlertEvent] = []
        if rows is not None and rows.n:
            # a message without the door's state leaves it as it was (some rooms send it only when it changes)
            door = rows.take(rr.door_open)
            door = rows.ffill(np.isfinite(door), door, self.door.astype(np.float64))
            is_open = door == 1
            # only rooms whose door is or was open need a closer look; the rest just move on
            busy = (np.add.reduceat(is_open, rows.starts) > 0) | (self.phase[rows.devices] != NONE)
            if busy.any():
                snaps = Snapshots(self, batch)
                for g in np.flatnonzero(busy).tolist():
                    a, b = int(rows.starts[g]), int(rows.ends[g]) + 1
                    walk = RoomWalk(self, int(rows.devices[g]), rows.ts[a:b], is_open[a:b], orders, snaps)
                    out += walk.run()
            d, e = rows.devices, rows.ends
            self.last_ts[d] = rows.ts[e]
            self.door[d] = np.where(door[e] >= 0, is_open[e], -1)
        self._note_orders(orders)
        out.sort(key=lambda ev: (ev.detected_at_ns, ev.subject_id))
        return out or None

    def _note_orders(self, orders: dict[int, list[int]]) -> None:
        for room, times in orders.items():
            self.last_wo[room] = max(int(self.last_wo[room]), max(times))

    def _work_orders(self, batch: Batch) -> dict[int, list[int]]:
        """Times of the batch's crew visits per room: events of the crew types that carry a work order."""
        out: dict[int, list[int]] = {}
        for e in batch.events:
            if e.device == "pumproom" and e.type in self.types and str(e.fields.get("work_order") or "").strip():
                out.setdefault(e.index, []).append(e.ts_ns)
        for times in out.values():
            times.sort()
        return out

    def explained(self, room: int, opened: int, until: int, orders: dict[int, list[int]]) -> bool:
        """A crew's work order for the room from window_before_h before the opening (the earliest it can have
        been) up to `until`."""
        lo = opened - int(self.params.window_before_h * HOUR_NS)
        if lo <= int(self.last_wo[room]) <= until:
            return True
        return any(lo <= t <= until for t in orders.get(room, ()))

    def night(self, ts_ns: int) -> bool:
        hour = ((ts_ns + self.calendar.offset_ns(ts_ns)) // HOUR_NS) % 24
        a, b = self.params.night_from_h, self.params.night_to_h
        return bool(a <= hour < b) if a < b else bool(hour >= a or hour < b)

    # ------------------------------------------------------------------ tick
    def tick(self, now_ns: int) -> list[AlertEvent] | None:
        """An opening still undecided while its room has gone silent (the telemetry cut?) is decided now."""
        grace = int(self.params.grace_min * MINUTE_NS)
        silent = int(self.params.silent_after_min * MINUTE_NS)
        due = (self.phase == PENDING) & (now_ns >= self.open_ts + grace) & (now_ns - self.last_ts >= silent)
        out: list[AlertEvent] = []
        for room in np.flatnonzero(due).tolist():
            op = Opening(int(self.open_ts[room]), carried=True, since=int(self.open_lo[room]))
            walk = RoomWalk(self, room, np.zeros(0, np.int64), np.zeros(0, bool), {}, Snapshots(self, Batch()))
            closed = None if self.door[room] == 1 else int(self.closed_ts[room])
            out += walk.decide(op, now_ns, closed, silent_since=int(self.last_ts[room]))
        return out or None

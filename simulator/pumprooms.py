"""Pump rooms: each tank's level and water quality, outlet pressure, the door and two pumps on a 5-minute grid,
published at each room's own interval (5, 10 or 15 minutes); crews' visits under work orders, the plan's cleanings,
and the planted water-quality episodes, intrusions and look-alikes, with their labels read off the telemetry."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.city import DAY_S, LOCAL_OFFSET_S, NS, City, SimConfig

FIVE_S = 300
PER_DAY = DAY_S // FIVE_S
LIMITS = {"free_chlorine_mg_l": (0.05, 2.0), "turbidity_ntu": (-np.inf, 1.0), "ph": (6.5, 8.5)}
PARAMETER = {"free_chlorine_mg_l": "free_chlorine", "turbidity_ntu": "turbidity", "ph": "ph"}
WINDOW_S = 1800  # GB 5749 excursions count from 30 minutes of consecutive readings


@dataclass
class Opening:
    """The door open over fives [f0, f1): a crew's visit (its work-order event of type `crew` at `event_ns`) or,
    with no crew, an intrusion (which may tamper with a tank: chlorine falls to `to` in `tank`)."""

    room: int
    f0: int
    f1: int
    crew: str = ""
    event_ns: int = 0
    work_order: str = ""
    what: str = "intrusion"  # intrusion | inspection | cleaning | repair
    tank: int = -1
    to: float = 0.0


@dataclass
class Episode:
    """A tank's water going out of limits: `parameter` moves to `value` from five `f0` over `ramp` fives, holds for
    `hold` fives and returns over `back` fives (a spike: one to a few readings)."""

    tank: int
    parameter: str
    cause: str  # dosing_failure | main_burst | ph_drift | tampering | spike
    severity: str  # mild | severe
    f0: int
    ramp: int
    hold: int
    back: int
    value: float


@dataclass
class RoomPlan:
    step: np.ndarray  # per room: reporting interval in fives (1, 2 or 3)
    openings: list[Opening] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    stuck: list[tuple[int, str, int, int]] = field(default_factory=list)  # tank, column, f0, f1
    peaks: dict[int, float] = field(default_factory=dict)  # tank → free chlorine of its cleaning's refill
    refills: dict[int, int] = field(default_factory=dict)  # tank → five where its cleaning's refill begins


def _iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns // NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Planner:
    """Draws a city's pump-room plan with its own random stream (the rest of the city does not move)."""

    def __init__(self, city: City, cfg: SimConfig, plan: Any):
        self.city, self.cfg = city, cfg
        self.rng = np.random.default_rng([cfg.seed, 11])
        self.n_r, self.n_t = len(city.room_ids), len(city.tank_ids)
        self.F = cfg.days * PER_DAY
        self.f_local0 = ((cfg.start_ns // NS + LOCAL_OFFSET_S) % DAY_S) // FIVE_S  # local five-of-day at the start
        self.door = np.zeros((self.n_r, self.F), dtype=bool)  # taken by a planned opening (with margins)
        self.crew_ns: list[list[int]] = [[] for _ in range(self.n_r)]
        self.tank_busy = np.zeros((self.n_t, self.F), dtype=bool)
        self.cleanings = plan.cleanings
        self.wo = 0

    def work_order(self) -> str:
        self.wo += 1
        return f"WO-{self.cfg.start.year}-P{self.wo:05d}"

    def local_five(self, day: int, lo_h: float, hi_h: float) -> int:
        """A five index on local day `day` between local hours lo_h and hi_h (hi_h may pass midnight)."""
        h = self.rng.uniform(lo_h, hi_h)
        return int(day * PER_DAY + h * 12 - self.f_local0)

    def free(self, room: int, f0: int, f1: int, margin: int = 24) -> bool:
        a, b = max(0, f0 - margin), min(self.F, f1 + margin)
        return 0 <= f0 < f1 <= self.F and not self.door[room, a:b].any()

    def add_opening(self, op: Opening) -> None:
        self.door[op.room, op.f0:op.f1] = True
        if op.crew:
            self.crew_ns[op.room].append(op.event_ns)

    def crew(self, room: int, f0: int, f1: int, what: str, kind: str, lead_s: float) -> Opening:
        # a work order logged before the traffic begins is logged as it begins: a service started then has seen
        # nothing earlier, and a crew it could not know of is no look-alike of an intrusion
        event = self.cfg.start_ns + max(f0 * FIVE_S - int(lead_s), 0) * NS
        return Opening(room, f0, f1, kind, event, self.work_order(), what)

    def plan(self) -> RoomPlan:
        rng = self.rng
        # each city its own mix of reporting intervals: 5, 10 and 15 minutes
        mix = rng.dirichlet([1.0, 0.6, 2.0])
        rp = RoomPlan(step=rng.choice([1, 2, 3], self.n_r, p=mix).astype(np.int64))
        self._cleanings(rp)
        self._inspections(rp)
        self._repairs(rp)
        self._intrusions(rp)
        self._water(rp)
        self._decoys(rp)
        rp.openings.sort(key=lambda o: (o.room, o.f0))
        return rp

    def _cleanings(self, rp: RoomPlan) -> None:
        """A cleaning's crew opens the door half an hour before the drawdown, under its work order, until the refilled
        tank passes its test; the first and most others refill with water high in chlorine."""
        for k, cl in enumerate(self.cleanings):
            q = int((cl.t_ns - self.cfg.start_ns) // (900 * NS))
            if q + 30 >= self.F // 3:
                continue
            room = int(self.city.tank_room[cl.tank])
            f0, f1 = 3 * q - 6, 3 * q + 78
            op = self.crew(room, max(0, f0), f1, "cleaning", "maintenance", self.rng.uniform(5, 60) * 60)
            op.work_order = cl.work_order
            self.add_opening(op)
            rp.openings.append(op)
            self.tank_busy[cl.tank, max(0, f0 - 72):f1 + 72] = True
            if k == 0 or self.rng.random() < 0.6:
                rp.peaks[cl.tank] = round(float(self.rng.uniform(2.4, 5.0)), 2)

    def _inspections(self, rp: RoomPlan) -> None:
        """Every room weekly, in working hours, 20 to 70 minutes; the work order logged up to 90 minutes before the
        crew arrives, or a few minutes after."""
        for room in range(self.n_r):
            for week in range(0, self.cfg.days, 7):
                day = week + int(self.rng.integers(0, 7))
                f0 = self.local_five(day, 8.5, 17.0)
                f1 = f0 + int(self.rng.integers(4, 15))
                if not self.free(room, f0, f1, 12):
                    continue
                lead = self.rng.uniform(-7, 90) * 60
                op = self.crew(room, f0, f1, "inspection", "inspection", lead)
                self.add_opening(op)
                rp.openings.append(op)

    def _repairs(self, rp: RoomPlan) -> None:
        """Crews called out at any hour (a pump fault at night) under a work order: look-alikes of an intrusion."""
        n = max(2, int(round(0.15 * self.n_r * self.cfg.days / 30)))
        for _ in range(n * 4):
            if n == 0:
                break
            room, day = int(self.rng.integers(self.n_r)), int(self.rng.integers(0, self.cfg.days))
            f0 = self.local_five(day, 0, 24)
            f1 = f0 + int(self.rng.integers(6, 48))
            if not self.free(room, f0, f1):
                continue
            op = self.crew(room, f0, f1, "repair", str(self.rng.choice(["maintenance", "inspection"])),
                           self.rng.uniform(-5, 110) * 60)
            self.add_opening(op)
            rp.openings.append(op)
            n -= 1

    def _intrusions(self, rp: RoomPlan) -> None:
        """Doors opened with no work order, by day and by night, 15 minutes to hours; a third tamper with a tank
        (its chlorine falls); some come hours after a crew's visit, whose work order no longer covers them."""
        n = max(3, int(round(0.4 * self.n_r * self.cfg.days / 30)))
        placed, tries = 0, 0
        while placed < n and tries < 50 * n:
            tries += 1
            room = int(self.rng.integers(self.n_r))
            minutes = float(np.exp(self.rng.uniform(np.log(15), np.log(300))))
            if placed % 4 == 3 and self.crew_ns[room]:
                after = self.crew_ns[room][int(self.rng.integers(len(self.crew_ns[room])))]
                f0 = int((after - self.cfg.start_ns) // NS // FIVE_S) + int(self.rng.integers(32, 54))
                margin = 6  # the crew's door shut for at least one message in between
            else:
                day = int(self.rng.integers(0, self.cfg.days))
                f0 = self.local_five(day, 22, 29) if placed % 2 else self.local_five(day, 8, 19)
                margin = 36
            f1 = f0 + max(1, int(round(minutes / 5)))
            if not self.free(room, f0, f1, margin) or self._crew_near(room, f0):
                continue
            op = Opening(room, f0, f1)
            tanks = np.flatnonzero(self.city.tank_room == room)
            if placed % 3 == 1 and not self.tank_busy[tanks[0], max(0, f0 - 72):f1 + 144].any():
                op.tank, op.to = int(tanks[0]), round(float(self.rng.uniform(0.0, 0.03)), 3)
                self.tank_busy[op.tank, max(0, f0 - 72):f1 + 144] = True
                # the tampered tank's chlorine falls within the hour and stays low until the tank is flushed
                rp.episodes.append(Episode(op.tank, "free_chlorine_mg_l", "tampering", "severe", f0 + 1,
                                           int(self.rng.integers(6, 12)), f1 - f0 + int(self.rng.integers(24, 96)),
                                           12, op.to))
            self.add_opening(op)
            rp.openings.append(op)
            placed += 1

    def _crew_near(self, room: int, f0: int) -> bool:
        """A crew's work order from 2 hours 10 minutes before the opening to 30 minutes after it would explain it."""
        t = self.cfg.start_ns + f0 * FIVE_S * NS
        return any(t - 130 * 60 * NS <= e <= t + 30 * 60 * NS for e in self.crew_ns[room])

    def _slot(self, tank: int, length: int) -> int | None:
        for _ in range(40):
            f0 = int(self.rng.integers(PER_DAY // 4, self.F - PER_DAY // 8))
            if not self.tank_busy[tank, max(0, f0 - 36):f0 + length + 36].any():
                self.tank_busy[tank, max(0, f0 - 36):f0 + length + 36] = True
                return f0
        return None

    def _water(self, rp: RoomPlan) -> None:
        """Water-quality episodes: chlorine decaying after a dosing failure, turbidity after a main burst, pH drifting;
        mild and severe, 40 minutes to most of a day out of limits."""
        rng = self.rng
        n = max(4, int(round(0.5 * self.n_t * self.cfg.days / 30)))
        for k in range(n):
            cause = ("dosing_failure", "main_burst", "ph_drift")[k % 3]
            severe = k % 2 == 1
            tank = int(rng.integers(self.n_t))
            hold = int(rng.integers(8, 120 if severe else 60))
            if cause == "dosing_failure":
                ep = Episode(tank, "free_chlorine_mg_l", cause, "", 0, int(rng.integers(12, 48)), hold,
                             int(rng.integers(6, 18)), rng.uniform(0.0, 0.012) if severe else rng.uniform(0.02, 0.04))
            elif cause == "main_burst":
                ep = Episode(tank, "turbidity_ntu", cause, "", 0, int(rng.integers(1, 4)), hold // 2,
                             int(rng.integers(12, 48)), rng.uniform(4.0, 20.0) if severe else rng.uniform(1.5, 2.6))
            else:
                up = rng.random() < 0.7
                value = (rng.uniform(9.2, 10.0) if severe else rng.uniform(8.7, 8.95)) if up else \
                    (rng.uniform(5.5, 5.9) if severe else rng.uniform(6.1, 6.35))
                ep = Episode(tank, "ph", cause, "", 0, int(rng.integers(24, 72)), hold, int(rng.integers(12, 36)),
                             value)
            ep.severity = "severe" if severe else "mild"
            f0 = self._slot(tank, ep.ramp + ep.hold + ep.back)
            if f0 is not None:
                ep.f0 = f0
                rp.episodes.append(ep)

    def _decoys(self, rp: RoomPlan) -> None:
        """Stuck sensors (one value repeated 14 to 40 hours, within limits) and readings out of limits for less
        than 30 minutes (one reading, or a few from a room reporting every 5 minutes)."""
        rng = self.rng
        for _ in range(max(1, int(round(0.1 * self.n_t * self.cfg.days / 30)))):
            tank = int(rng.integers(self.n_t))
            length = int(rng.integers(14, 40)) * 12
            f0 = self._slot(tank, length)
            if f0 is not None:
                rp.stuck.append((tank, str(rng.choice(list(LIMITS))), f0, min(self.F, f0 + length)))
        for k in range(max(3, int(round(0.3 * self.n_t * self.cfg.days / 30)))):
            tank = int(rng.integers(self.n_t))
            step = int(rp.step[self.city.tank_room[tank]])
            readings = 1 if step > 1 or k % 2 == 0 else int(rng.integers(2, 5))
            col = ("turbidity_ntu", "free_chlorine_mg_l", "ph")[k % 3]
            value = {"turbidity_ntu": rng.uniform(1.5, 8.0), "free_chlorine_mg_l": rng.uniform(0.0, 0.03),
                     "ph": rng.uniform(9.0, 10.0)}[col]
            f0 = self._slot(tank, readings * step + 1)
            if f0 is not None:
                f0 -= f0 % step  # on the room's reporting grid
                rp.episodes.append(Episode(tank, col, "spike", "", f0, 0, readings * step, 0, float(value)))


def plan_rooms(city: City, cfg: SimConfig, plan: Any) -> RoomPlan:
    return _Planner(city, cfg, plan).plan()


# ---------------------------------------------------------------------------------------------------------
# what the rooms measure


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], width: int, sd: float) -> np.ndarray:
    """Slowly varying noise: white noise averaged over a moving window."""
    white = rng.normal(0.0, sd * np.sqrt(width), (shape[0], shape[1] + width))
    c = np.cumsum(white, axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def _blend(x: np.ndarray, ep: Episode) -> None:
    """Move one tank's series toward the episode's value: ramp in, hold, ramp back."""
    n = x.size
    a, b = ep.f0, min(n, ep.f0 + ep.ramp + ep.hold + ep.back)
    if a >= n:
        return
    k = np.arange(a, b) - a
    w = np.minimum(1.0, np.minimum((k + 1) / max(ep.ramp, 1), (ep.ramp + ep.hold + ep.back - k) / max(ep.back, 1)))
    w = np.clip(w, 0.0, 1.0)
    x[a:b] = x[a:b] + w * (ep.value - x[a:b])


def pump_rooms(city: City, cfg: SimConfig, plan: Any, q_use: np.ndarray, rng: np.random.Generator) -> dict:
    """Tank levels and water quality, outlet pressure, door and pumps of each room on a 5-minute grid, driven by
    the building's demand `q_use` (building x quarter, m3); the plan's cleanings draw a tank down and refill it, and
    the room plan's openings, episodes and look-alikes are applied. `rng` is the city's behaviour stream, left
    untouched: the rooms draw from their own."""
    rp = plan_rooms(city, cfg, plan)
    own = np.random.default_rng([cfg.seed, 12])
    n_r, Q = q_use.shape
    F = 3 * Q
    # demand smoothed over two hours, normalised per room: tanks draw down with it, pressure sags with it
    c = np.cumsum(np.concatenate([np.zeros((n_r, 8)), q_use], axis=1), axis=1)
    dem = np.repeat((c[:, 8:] - c[:, :-8]) / 8, 3, axis=1)
    dem = dem / np.maximum(dem.max(axis=1, keepdims=True), 1e-9)
    tr = city.tank_room
    n_t = len(tr)
    hmax = city.tank_height[:, None]
    level = hmax * (0.85 - 0.3 * dem[tr]) + own.normal(0, 0.008, (n_t, F))
    chlorine = own.uniform(0.22, 0.45, n_t)[:, None] * np.exp(_smooth_noise(own, (n_t, F), 48, 0.08)) \
        * (1 - 0.1 * dem[tr])
    turbidity = own.uniform(0.12, 0.35, n_t)[:, None] + np.abs(own.normal(0, 0.03, (n_t, F)))
    ph = own.uniform(7.1, 7.6, n_t)[:, None] + own.normal(0, 0.03, (n_t, F))
    pressure = 0.38 - 0.06 * dem + own.normal(0, 0.004, (n_r, F))
    done = _cleanings(city, cfg, plan, rp, own, level, chlorine, turbidity)
    door = np.zeros((n_r, F), dtype=bool)
    for op in rp.openings:
        door[op.room, op.f0:op.f1] = True
    series = {"free_chlorine_mg_l": chlorine, "turbidity_ntu": turbidity, "ph": ph}
    for ep in rp.episodes:
        x = series[ep.parameter][ep.tank]
        if ep.cause == "spike":
            x[ep.f0:ep.f0 + ep.hold] = ep.value
        else:
            _blend(x, ep)
            # the sensor's own noise: in proportion to what it reads for chlorine and turbidity, 0.02 for pH
            a, b = ep.f0, min(F, ep.f0 + ep.ramp + ep.hold + ep.back)
            if ep.parameter == "ph":
                x[a:b] += own.normal(0, 0.02, b - a)
            else:
                x[a:b] *= 1 + own.normal(0, 0.03, b - a)
    cols = {"free_chlorine_mg_l": np.round(np.clip(chlorine, 0.0, None), 2), "turbidity_ntu": np.round(turbidity, 2),
            "ph": np.round(ph, 2)}
    for tank, col, f0, f1 in rp.stuck:
        cols[col][tank, f0:f1] = cols[col][tank, f0]
    duty = (np.arange(F) // PER_DAY) % 2
    run_duty, run_standby = dem > 0.08, dem > 0.8
    running = np.zeros((n_r, F, 2), dtype=bool)
    running[:, :, 0] = np.where(duty == 0, run_duty, run_standby)
    running[:, :, 1] = np.where(duty == 1, run_duty, run_standby)
    current = np.where(running, 11.5 + own.normal(0, 0.4, (n_r, F, 2)), 0.0)
    return dict(tank_level=np.round(np.clip(level, 0.0, None), 2), tank_chlorine=cols["free_chlorine_mg_l"],
                tank_turbidity=cols["turbidity_ntu"], tank_ph=cols["ph"], room_pressure=np.round(pressure, 3),
                room_door=door, pump_running=running, pump_current=np.round(current, 1), cleaning_done_q=done,
                rooms=rp)


def _cleanings(city: City, cfg: SimConfig, plan: Any, rp: RoomPlan, rng: np.random.Generator, level: np.ndarray,
               chlorine: np.ndarray, turbidity: np.ndarray) -> dict[int, int]:
    """Each cleaning: drawn down over 2 hours, emptied and scrubbed for 2, refilled over 2 with freshly dosed water
    (its chlorine falls back over hours; a high dose within a few); the record once the water passed its test.
    Returns tank -> quarter of the record."""
    F = level.shape[1]
    fi = np.arange(F)
    done: dict[int, int] = {}
    for cl in plan.cleanings:
        q = int((cl.t_ns - cfg.start_ns) // (900 * NS))
        t = cl.tank
        f = 3 * q
        if q + 30 >= F // 3:
            continue
        lv = level[t, f]
        level[t, f:f + 24] = np.linspace(lv, 0.08, 24)
        level[t, f + 24:f + 48] = rng.uniform(0.03, 0.1, 24)
        level[t, f + 48:f + 72] = np.linspace(0.15, 0.85 * city.tank_height[t], 24)
        peak = rp.peaks.get(t, rng.uniform(0.8, 1.4))
        tau = 24.0 if t in rp.peaks else 120.0  # fives: a high dose is flushed within hours
        after = fi >= f + 48
        decay = np.exp(-(fi - (f + 48)) / tau)
        chlorine[t] = np.where(after, chlorine[t] + (peak - chlorine[t]) * decay, chlorine[t])
        turbidity[t, f + 48:f + 60] += 0.25
        rp.refills[t] = f + 48
        done[t] = q + 26
    return done


# ---------------------------------------------------------------------------------------------------------
# what the rooms publish


def room_rows(cfg: SimConfig, meas: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(publish time, room, five) of every telemetry message: each room on its own interval, a few seconds late,
    now and then one lost."""
    rp: RoomPlan = meas.rooms
    rng = np.random.default_rng([cfg.seed, 13])
    n_r, F = meas.room_door.shape
    pub, room, five = [], [], []
    for r in range(n_r):
        f = np.arange(0, F, int(rp.step[r]))
        f = f[rng.random(f.size) >= 0.004]
        delay = int(rng.integers(2, 30))
        pub.append(cfg.start_ns + (f * FIVE_S + delay + rng.integers(0, 5, f.size)) * NS)
        room.append(np.full(f.size, r))
        five.append(f)
    return np.concatenate(pub), np.concatenate(room), np.concatenate(five)


def crew_events(city: City, cfg: SimConfig, meas: Any, prefix: str = "water") -> list[tuple[int, int, str, dict]]:
    """(publish time, room, topic, payload) of every crew's work-order event, published a little after its time."""
    rp: RoomPlan = meas.rooms
    rng = np.random.default_rng([cfg.seed, 14])
    out = []
    for op in rp.openings:
        if not op.crew or not cfg.start_ns <= op.event_ns < cfg.end_ns:
            continue
        rid = city.room_ids[op.room]
        d = city.districts[city.building_district[op.room]]
        payload = {"room_id": rid, "ts": _iso(op.event_ns), "type": op.crew, "work_order": op.work_order,
                   "operator": city.room_maintenance[op.room]}
        out.append((op.event_ns + int(rng.integers(5, 120)) * NS, op.room, f"{prefix}/{d}/pumproom/{rid}/event",
                    payload))
    return out


class RoomLines:
    """The telemetry payloads of one chunk of the capture (the rooms' arrays turned into Python lists once)."""

    def __init__(self, city: City, cfg: SimConfig, meas: Any):
        F = meas.room_door.shape[1]
        t0 = cfg.start_ns // NS
        self.fts = [dt.datetime.fromtimestamp(t0 + i * FIVE_S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    for i in range(F)]
        self.room_ids, self.tank_ids = city.room_ids, city.tank_ids
        self.room_tanks = [city.room_tanks(r).tolist() for r in range(len(city.room_ids))]
        self.meas = meas
        self.a = 0

    def chunk(self, fives: np.ndarray) -> None:
        m = self.meas
        a = int(fives.min()) if fives.size else 0
        b = int(fives.max()) + 1 if fives.size else 0
        self.a = a
        self.lv, self.cl = m.tank_level[:, a:b].tolist(), m.tank_chlorine[:, a:b].tolist()
        self.tu, self.ph = m.tank_turbidity[:, a:b].tolist(), m.tank_ph[:, a:b].tolist()
        self.pr, self.door = m.room_pressure[:, a:b].tolist(), m.room_door[:, a:b].tolist()
        self.run, self.cur = m.pump_running[:, a:b].tolist(), m.pump_current[:, a:b].tolist()

    def payload(self, d: int, f: int) -> dict:
        k = f - self.a
        return {"room_id": self.room_ids[d], "ts": self.fts[f], "outlet_pressure_mpa": self.pr[d][k],
                "door_open": self.door[d][k],
                "tanks": [{"tank_id": self.tank_ids[t], "level_m": self.lv[t][k], "free_chlorine_mg_l": self.cl[t][k],
                           "turbidity_ntu": self.tu[t][k], "ph": self.ph[t][k]} for t in self.room_tanks[d]],
                "pumps": [{"pump_id": "1", "running": self.run[d][k][0], "current_a": self.cur[d][k][0]},
                          {"pump_id": "2", "running": self.run[d][k][1], "current_a": self.cur[d][k][1]}]}


# ---------------------------------------------------------------------------------------------------------
# labels, read off the published telemetry


def room_labels(city: City, cfg: SimConfig, meas: Any) -> list[dict]:
    """pump_room_intrusion and its look-alike maintenance_visit from the first to the last telemetry with the door
    open; water_quality from the first to the last reading out of limits of an episode whose readings stay out
    30 minutes running (shorter: the look-alike brief_spike); sensor_stuck; disinfection_chlorine."""
    rp: RoomPlan = meas.rooms
    out: list[dict] = []
    t0 = cfg.start_ns

    def ts(f: int) -> int:
        return t0 + int(f) * FIVE_S * NS

    def add(kind: str, subject: dict, start: int, end: int, room: int, **extra: Any) -> None:
        rec = {"kind": kind, "subject": subject, "start": _iso(start), "end": _iso(max(start, end)),
               "district": city.districts[city.building_district[room]]}
        rec.update(extra)
        out.append(rec)

    F = meas.room_door.shape[1]
    for op in rp.openings:
        step = int(rp.step[op.room])
        grid = np.arange(-(-op.f0 // step) * step, min(op.f1, F), step)
        if not grid.size:
            continue  # open and shut between two messages: the telemetry never saw it
        subject = {"type": "pump_room", "id": city.room_ids[op.room]}
        if op.crew:
            add("none", subject, ts(grid[0]), ts(grid[-1]), op.room, decoy="maintenance_visit", visit=op.what,
                work_order=op.work_order)
        else:
            add("pump_room_intrusion", subject, ts(grid[0]), ts(grid[-1]), op.room, tampered=op.tank >= 0)
    series = {"free_chlorine_mg_l": meas.tank_chlorine, "turbidity_ntu": meas.tank_turbidity, "ph": meas.tank_ph}
    for ep in rp.episodes:
        room = int(city.tank_room[ep.tank])
        step = int(rp.step[room])
        a, b = ep.f0, min(F, ep.f0 + ep.ramp + ep.hold + ep.back + step)
        grid = np.arange(-(-a // step) * step, b, step)
        lo, hi = LIMITS[ep.parameter]
        v = series[ep.parameter][ep.tank, grid]
        bad = (v < lo) | (v > hi)
        if not bad.any():
            continue
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, bad.astype(np.int8), 0])))[::2]
        subject = {"type": "tank", "id": city.tank_ids[ep.tank]}
        first, last = grid[np.argmax(bad)], grid[len(bad) - 1 - np.argmax(bad[::-1])]
        if runs.max() * step * FIVE_S >= WINDOW_S:
            add("water_quality", subject, ts(first), ts(last), room, parameter=PARAMETER[ep.parameter],
                cause=ep.cause, severity=ep.severity)
        else:
            add("none", subject, ts(first), ts(last) + step * FIVE_S * NS, room, decoy="brief_spike",
                parameter=PARAMETER[ep.parameter])
    for tank, col, f0, f1 in rp.stuck:
        add("none", {"type": "tank", "id": city.tank_ids[tank]}, ts(f0), ts(f1), int(city.tank_room[tank]),
            decoy="sensor_stuck", parameter=PARAMETER[col])
    for tank, f in rp.refills.items():
        room = int(city.tank_room[tank])
        step = int(rp.step[room])
        grid = np.arange(-(-f // step) * step, min(F, f + 6 * 12), step)
        high = grid[meas.tank_chlorine[tank, grid] > LIMITS["free_chlorine_mg_l"][1]]
        if high.size:
            add("none", {"type": "tank", "id": city.tank_ids[tank]}, ts(high[0]), ts(high[-1]), room,
                decoy="disinfection_chlorine")
    return out

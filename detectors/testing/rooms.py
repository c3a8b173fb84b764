"""The test town's pump rooms: every tank's level, free chlorine, turbidity and pH, the door and two pumps, each
room at its own reporting interval; injectable water-quality episodes, intrusions and their look-alikes (a crew's
visit under a work order, high chlorine after a disinfection, a stuck sensor, one reading out of limits), with
their labels read off the telemetry itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from devices.alerts import iso_utc
from devices.batch import NS, DeviceEvent, PumpReadings, RoomReadings, TankReadings
from devices.registry import Registry

HOUR = 3600 * NS
DAY = 24 * HOUR
LIMITS = {"free_chlorine_mg_l": (0.05, 2.0), "turbidity_ntu": (-np.inf, 1.0), "ph": (6.5, 8.5)}
PARAMETER = {"free_chlorine_mg_l": "free_chlorine", "turbidity_ntu": "turbidity", "ph": "ph"}


@dataclass
class RoomPlan:
    """What happens in the pump rooms; filled by the Town's injection methods before build()."""

    intervals: tuple[int, ...] = (900, 300)  # seconds, cycled over the rooms
    episodes: list[tuple[int, str, int, int, float]] = field(default_factory=list)  # tank, column, from, to, value
    openings: list[tuple[int, int, int, str, int, str]] = field(default_factory=list)
    # ^ room, from, to, crew event type ("" for an intruder), event lead s, label kind/decoy
    tamper: list[tuple[int, int, int, float]] = field(default_factory=list)  # tank, from, to, chlorine falls to
    peaks: list[tuple[int, int, float]] = field(default_factory=list)  # tank, refilled at, chlorine peak
    stuck: list[tuple[int, str, int, int]] = field(default_factory=list)  # tank, column, from, to
    spikes: list[tuple[int, str, int, float]] = field(default_factory=list)  # tank, column, at, value
    drawdowns: list[tuple[int, int]] = field(default_factory=list)  # tank, refilled at (drained 6 h before)


@dataclass
class RoomTraffic:
    tanks: TankReadings
    rooms: RoomReadings
    pumps: PumpReadings
    events: list[tuple[int, DeviceEvent]]  # (publish time, event)
    labels: list[dict]


def _label(kind: str, subject_type: str, subject_id: str, start: int, end: int, **extra) -> dict:
    lab = {"kind": kind, "subject": {"type": subject_type, "id": subject_id}, "start": iso_utc(start),
           "end": iso_utc(end)}
    lab.update(extra)
    return lab


def _smooth(rng: np.random.Generator, n: int, sd: float) -> np.ndarray:
    w = rng.normal(0, sd, n + 8)
    return np.convolve(w, np.ones(8) / np.sqrt(8), mode="valid")[:n]


def build_rooms(registry: Registry, plan: RoomPlan, start: int, days: int, seed: int) -> RoomTraffic:
    rng = np.random.default_rng([seed, 7])
    tanks, rooms = registry.tanks, registry.rooms
    t_parts: dict[str, list] = {k: [] for k in ("tank", "ts_ns", "level_m", "free_chlorine_mg_l", "turbidity_ntu",
                                                 "ph")}
    r_parts: dict[str, list] = {k: [] for k in ("room", "ts_ns", "outlet_pressure_mpa", "door_open")}
    p_parts: dict[str, list] = {k: [] for k in ("room", "pump_id", "ts_ns", "running", "current_a")}
    events: list[tuple[int, DeviceEvent]] = []
    labels: list[dict] = []
    for r in range(len(rooms)):
        step = plan.intervals[r % len(plan.intervals)] * NS
        ts = start + np.arange(days * DAY // step, dtype=np.int64) * step
        local_h = ((ts // HOUR) + 8) % 24
        door = np.zeros(ts.size, dtype=bool)
        for room, a, b, crew, lead, what in plan.openings:
            if room != r:
                continue
            k = (ts >= a) & (ts < b)
            door |= k
            if not k.any():
                continue
            t_open, t_shut = int(ts[k][0]), int(ts[k][-1])
            rid = str(rooms.ids[r])
            if crew:
                at = a - lead * NS
                events.append((at + 60 * NS, DeviceEvent("pumproom", r, rid, "d01", at, crew,
                                                         {"work_order": f"WO-T-{r}-{a // NS}", "operator": "Unit"})))
                labels.append(_label("none", "pump_room", rid, t_open, t_shut, decoy=what))
            else:
                labels.append(_label("pump_room_intrusion", "pump_room", rid, t_open, t_shut))
        r_parts["room"].append(np.full(ts.size, r))
        r_parts["ts_ns"].append(ts)
        r_parts["outlet_pressure_mpa"].append(np.round(0.36 + rng.normal(0, 0.004, ts.size), 3))
        r_parts["door_open"].append(door.astype(float))
        for pid, on in (("1", (local_h >= 5) | (local_h == 0)), ("2", ((local_h >= 7) & (local_h < 9)) |
                                                                 ((local_h >= 18) & (local_h < 21)))):
            p_parts["room"].append(np.full(ts.size, r))
            p_parts["pump_id"].append(np.full(ts.size, pid, dtype=object))
            p_parts["ts_ns"].append(ts)
            p_parts["running"].append(on.astype(float))
            p_parts["current_a"].append(np.where(on, 11.5, 0.0))
        for t in np.flatnonzero(tanks.room == r).tolist():
            cols = _tank(rng, plan, t, ts, start)
            t_parts["tank"].append(np.full(ts.size, t))
            t_parts["ts_ns"].append(ts)
            for name, v in cols.items():
                t_parts[name].append(v)
            labels += _quality_labels(plan, t, str(tanks.ids[t]), ts, cols)
    return RoomTraffic(
        tanks=TankReadings.from_columns(**{k: np.concatenate(v) for k, v in t_parts.items()}),
        rooms=RoomReadings.from_columns(**{k: np.concatenate(v) for k, v in r_parts.items()}),
        pumps=PumpReadings.from_columns(**{k: np.concatenate(v) for k, v in p_parts.items()}),
        events=events, labels=labels)


def _tank(rng: np.random.Generator, plan: RoomPlan, t: int, ts: np.ndarray, start: int) -> dict[str, np.ndarray]:
    """One tank's telemetry: a daily level cycle, water within limits with sensor noise, then the injections."""
    n = ts.size
    level = 2.5 + 0.4 * np.sin((ts - start) / DAY * 2 * np.pi)
    chlorine = rng.uniform(0.25, 0.45) + _smooth(rng, n, 0.01)
    turbidity = rng.uniform(0.15, 0.35) + np.abs(rng.normal(0, 0.03, n))
    ph = rng.uniform(7.1, 7.6) + rng.normal(0, 0.03, n)
    for tank, refill in plan.drawdowns:
        if tank == t:
            level[(ts >= refill - 6 * HOUR) & (ts < refill)] = 0.1
    for tank, refill, peak in plan.peaks:
        if tank == t:
            after = ts >= refill
            chlorine[after] += (peak - chlorine[after]) * np.exp(-(ts[after] - refill) / (2 * HOUR))
    for tank, a, b, to in plan.tamper:
        if tank == t:
            k = (ts >= a) & (ts < b)
            fall = np.clip((ts - a) / HOUR, 0, 1)
            chlorine = np.where(k, chlorine + (to - chlorine) * fall, chlorine)
    cols = {"level_m": np.round(level, 3), "free_chlorine_mg_l": np.round(np.clip(chlorine, 0, None), 2),
            "turbidity_ntu": np.round(turbidity, 2), "ph": np.round(ph, 2)}
    for tank, col, a, b, value in plan.episodes:
        if tank == t:
            k = (ts >= a) & (ts < b)
            cols[col][k] = np.round(value * (1 + rng.normal(0, 0.01, int(k.sum()))), 2)
    for tank, col, a, b in plan.stuck:
        if tank == t:
            k = (ts >= a) & (ts < b)
            if k.any():
                cols[col][k] = cols[col][np.argmax(k)]
    for tank, col, at, value in plan.spikes:
        if tank == t:
            cols[col][np.searchsorted(ts, at)] = value
    return cols


def _quality_labels(plan: RoomPlan, t: int, tank_id: str, ts: np.ndarray, cols: dict[str, np.ndarray]) -> list[dict]:
    """water_quality from the first to the last out-of-limit reading of each episode (tampering included), and the
    tank's look-alikes."""
    out: list[dict] = []

    def out_of_limits(col: str, k: np.ndarray) -> None:
        lo, hi = LIMITS[col]
        bad = np.flatnonzero(k & ((cols[col] < lo) | (cols[col] > hi)))
        if bad.size >= 2:
            out.append(_label("water_quality", "tank", tank_id, int(ts[bad[0]]), int(ts[bad[-1]]),
                              parameter=PARAMETER[col]))

    each: Callable[[int, int], np.ndarray] = lambda a, b: (ts >= a) & (ts < b)  # noqa: E731
    for tank, col, a, b, _v in plan.episodes:
        if tank == t:
            out_of_limits(col, each(a, b))
    for tank, a, b, _to in plan.tamper:
        if tank == t:
            out_of_limits("free_chlorine_mg_l", each(a, b))
    for tank, refill, _peak in plan.peaks:
        if tank == t:
            out.append(_label("none", "tank", tank_id, refill, refill + 6 * HOUR, decoy="disinfection_chlorine"))
    for tank, _col, a, b in plan.stuck:
        if tank == t:
            out.append(_label("none", "tank", tank_id, a, b, decoy="sensor_stuck"))
    for tank, _col, at, _v in plan.spikes:
        if tank == t:
            out.append(_label("none", "tank", tank_id, at, at + HOUR, decoy="brief_spike"))
    return out

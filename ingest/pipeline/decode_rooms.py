"""Pump-room telemetry decoded in bulk: the same tank, room and pump rows the schema path makes, for every message
the checks can vouch for; any other message goes to the schemas, which decide (and word the refusal)."""

from __future__ import annotations

import numpy as np

from devices.batch import PumpReadings, RoomReadings, TankReadings
from devices.registry import Registry
from ingest.pipeline.columns import (
    BOOL_OR_NONE,
    ID,
    NUM_OR_NONE,
    bad_types,
    floats,
    get,
    in_range,
)
from ingest.pipeline.timestamps import _timestamps

_MAX_ITEMS = 64  # PumpRoomTelemetry.tanks / .pumps max_length
_DICT = frozenset((dict,))
_STR = frozenset((str,))
_PUMP_ID_MAX = 32
# Tank fields with the schema's bounds (TankTelemetry), all optional.
_TANK_FIELDS = (("level_m", None, None), ("free_chlorine_mg_l", 0, None), ("turbidity_ntu", 0, None),
                ("ph", 0, 14))


class RoomParts:
    """Rows of the fast path with, for each, the position of the message it came from."""

    def __init__(self, tanks: TankReadings, tank_pos: np.ndarray, rooms: RoomReadings, room_pos: np.ndarray,
                 pumps: PumpReadings, pump_pos: np.ndarray):
        self.tanks, self.tank_pos = tanks, tank_pos
        self.rooms, self.room_pos = rooms, room_pos
        self.pumps, self.pump_pos = pumps, pump_pos


def _items(dicts: list[dict], key: str, bad: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """The objects of each message's `tanks` or `pumps` list (absent: none), flattened, with the index of the
    message each came from and each message's count. A message whose value is not a list of at most 64 objects
    is marked bad; its items are kept (as {} where not objects) so the columns stay aligned."""
    col = get(dicts, key)
    if set(map(type, col)) != {list}:
        for i, v in enumerate(col):
            if type(v) is not list:
                # absent is an empty list; anything else (null included) the schema refuses
                bad[i] |= v is not None or key in dicts[i]
                col[i] = []
    counts = np.fromiter(map(len, col), np.int64, len(col))
    bad |= counts > _MAX_ITEMS
    items = [x for v in col for x in v]
    owner = np.repeat(np.arange(len(col)), counts)
    b = bad_types(items, _DICT)
    if b is not None:
        bad[owner[b]] = True
        items = [{} if x else v for v, x in zip(items, b.tolist(), strict=True)]
    return items, owner, counts


def _room_of_tank(registry: Registry, cache: dict[str, int], tank_ids: list) -> np.ndarray:
    """The registry index of each tank id (-1: unknown, or not an id the schema accepts)."""
    out = np.empty(len(tank_ids), np.int64)
    index = registry.tanks.index
    for j, tid in enumerate(tank_ids):
        ti = cache.get(tid) if type(tid) is str else -1
        if ti is None:
            ti = index.get(tid, -1) if ID.fullmatch(tid) else -1
            if len(cache) < 1_000_000:
                cache[tid] = ti
        out[j] = ti
    return out


def decode_telemetry(registry: Registry, cache: dict[str, int], positions: list[int], rooms: list[int],
                     device_ids: list[str], dicts: list[dict]) -> tuple[RoomParts | None, list[int]]:
    """Rows for the telemetry messages at `positions` (their rooms' registry indexes and topic ids given), and the
    positions the schemas must decide."""
    n = len(dicts)
    bad = np.fromiter((a != b for a, b in zip(get(dicts, "room_id"), device_ids, strict=True)), bool, n)
    ts_ns, ts_ok = _timestamps(get(dicts, "ts"))
    bad |= ~ts_ok
    pressure = get(dicts, "outlet_pressure_mpa")
    b = bad_types(pressure, NUM_OR_NONE)
    if b is not None:
        bad |= b
    pressure_v = floats(pressure, b)
    bad |= ~in_range(pressure_v, None, None, True)
    door = get(dicts, "door_open")
    b = bad_types(door, BOOL_OR_NONE)
    if b is not None:
        bad |= b
        door = [None if x else v for v, x in zip(door, b.tolist(), strict=True)]
    door_v = np.array([np.nan if v is None else float(v) for v in door], np.float64) if door else np.empty(0)
    tanks, t_owner, n_tanks = _items(dicts, "tanks", bad)
    pumps, p_owner, n_pumps = _items(dicts, "pumps", bad)
    room = np.array(rooms, np.int32)

    # tanks: registered to this room, values within the schema's bounds
    t_bad = np.zeros(len(tanks), bool)
    tank_idx = _room_of_tank(registry, cache, get(tanks, "tank_id"))
    t_bad |= tank_idx < 0
    t_bad[~t_bad] |= registry.tanks.room[tank_idx[~t_bad]] != room[t_owner[~t_bad]]
    t_cols = {}
    for name, lo, hi in _TANK_FIELDS:
        col = get(tanks, name)
        b = bad_types(col, NUM_OR_NONE)
        if b is not None:
            t_bad |= b
        t_cols[name] = floats(col, b)
        t_bad |= ~in_range(t_cols[name], lo, hi, True)
    bad[t_owner[t_bad]] = True

    # pumps: an id of 1 to 32 characters, running a bool, current at least 0
    pump_id = get(pumps, "pump_id")
    p_bad = np.zeros(len(pumps), bool)
    b = bad_types(pump_id, _STR)
    if b is not None:
        p_bad |= b
        pump_id = ["" if x else v for v, x in zip(pump_id, b.tolist(), strict=True)]
    id_len = np.fromiter(map(len, pump_id), np.int64, len(pump_id))
    p_bad |= (id_len < 1) | (id_len > _PUMP_ID_MAX)
    running = get(pumps, "running")
    b = bad_types(running, BOOL_OR_NONE)
    if b is not None:
        p_bad |= b
        running = [None if x else v for v, x in zip(running, b.tolist(), strict=True)]
    current = get(pumps, "current_a")
    b = bad_types(current, NUM_OR_NONE)
    if b is not None:
        p_bad |= b
    current_v = floats(current, b)
    p_bad |= ~in_range(current_v, 0, None, True)
    bad[p_owner[p_bad]] = True

    pos = np.array(positions, np.int64)
    slow = pos[bad].tolist()
    good = ~bad
    if not good.any():
        return None, slow
    t_keep, p_keep = good[t_owner], good[p_owner]
    # A room row unless the message carried only tanks or pumps (as the schema path decides).
    r_keep = good & (~np.isnan(pressure_v) | ~np.isnan(door_v) | ((n_tanks == 0) & (n_pumps == 0)))
    parts = RoomParts(
        TankReadings(tank=tank_idx[t_keep].astype(np.int32), ts_ns=ts_ns[t_owner[t_keep]],
                     **{k: v[t_keep] for k, v in t_cols.items()}), pos[t_owner[t_keep]],
        RoomReadings(room=room[r_keep], ts_ns=ts_ns[r_keep], outlet_pressure_mpa=pressure_v[r_keep],
                     door_open=door_v[r_keep]), pos[r_keep],
        PumpReadings(room=room[p_owner[p_keep]], pump_id=np.array(pump_id, dtype=object)[p_keep] if pumps
                     else np.empty(0, object), ts_ns=ts_ns[p_owner[p_keep]],
                     running=np.array([np.nan if v is None else float(v) for v in running], np.float64)[p_keep]
                     if pumps else np.empty(0), current_a=current_v[p_keep]), pos[p_owner[p_keep]])
    return parts, slow

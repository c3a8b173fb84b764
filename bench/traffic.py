"""A synthetic fleet and its meter traffic for the ingest benchmarks: single-reading messages with the full status
of a smart meter, and NB-IoT daily uploads of 24 hourly readings."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

T0 = 1795334400  # 2026-11-22T00:00:00Z
DISTRICTS = [f"d{i:02d}" for i in range(1, 11)]

Message = tuple[str, bytes]  # topic, payload


def write_fleet(folder: Path, n_meters: int) -> Path:
    """A registry of `n_meters` meters in buildings of 20 (the first of each is its master meter)."""
    folder.mkdir(parents=True, exist_ok=True)
    meters = ["meter_id,district,building_id,role,customer_class,pipe_dn_mm,prepaid,report_interval_s,cell_id,"
              "register_max_m3,business_hours_per_day"]
    buildings = ["building_id,district,address,pump_room_id,master_meter_id"]
    rooms = ["room_id,district,address,maintenance_unit,supervisor_unit"]
    tanks = ["tank_id,room_id,capacity_m3,last_disinfected"]
    for b in range(0, (n_meters + 19) // 20):
        d = DISTRICTS[b % len(DISTRICTS)]
        bid, rid = f"B{b:05d}", f"P{b:05d}"
        rooms.append(f"{rid},{d},{b} Songhua Road,Unit {b % 7},Water Authority")
        tanks.append(f"{rid}-T1,{rid},50,2026-06-01")
        master = f"M{b * 20:06d}"
        buildings.append(f"{bid},{d},{b} Songhua Road,{rid},{master}")
        for k in range(20):
            i = b * 20 + k
            if i >= n_meters:
                break
            role, interval = ("master", 900) if k == 0 else ("household", 3600 if k % 2 else 86400)
            meters.append(f"M{i:06d},{d},{bid},{role},{'' if k == 0 else 'residential'},15,{k % 3 == 0:d},"
                          f"{interval},C{b // 10:04d},99999,")
    for name, rows in (("meters", meters), ("buildings", buildings), ("pump_rooms", rooms), ("tanks", tanks)):
        (folder / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _meter(i: int) -> tuple[str, str]:
    """(district, meter id) of meter `i` of a fleet written by write_fleet."""
    return DISTRICTS[(i // 20) % len(DISTRICTS)], f"M{i:06d}"


def single_messages(n_meters: int, n: int, seed: int = 1, start: int = 0) -> list[Message]:
    """Messages start..start+n of an hourly stream of single readings, each with a meter's full status; meter
    j % n_meters in hour j // n_meters, so every meter's register climbs."""
    rng = random.Random(seed * 1_000_003 + start)
    out = []
    for j in range(start, start + n):
        i = j % n_meters
        district, mid = _meter(i)
        hour = j // n_meters
        p = {"meter_id": mid, "ts": _iso(T0 + 3600 * hour), "total_m3": round(100 + i % 5000 + 0.013 * hour, 3),
             "reverse_m3": 0.0, "flow_m3h": round(rng.uniform(0, 2), 3),
             "signal": {"rsrp_dbm": float(rng.randint(-120, -70)), "snr_db": rng.randint(-5, 20) / 2,
                        "ecl": rng.randint(0, 2)},
             "battery_v": round(rng.uniform(3.4, 3.7), 2), "valve": "open",
             "balance_cny": round(rng.uniform(0, 200), 2), "status": []}
        out.append((f"water/{district}/meter/{mid}/reading", orjson.dumps(p)))
    return out


def single_chunks(n_meters: int, n: int, chunk: int = 50_000) -> Iterator[list[Message]]:
    """single_messages in chunks, for backlogs too large to hold at once."""
    for start in range(0, n, chunk):
        yield single_messages(n_meters, min(chunk, n - start), start=start)


def batch_messages(n_meters: int, n: int, seed: int = 2) -> list[Message]:
    """`n` NB-IoT daily uploads of 24 hourly readings each."""
    rng = random.Random(seed)
    out = []
    for j in range(n):
        i = j % n_meters
        district, mid = _meter(i)
        day = T0 + 86400 * (j // n_meters)
        total = 100 + i % 5000 + 0.3 * (j // n_meters)
        rows = []
        for h in range(24):
            total += rng.uniform(0, 0.0125)
            rows.append({"ts": _iso(day + 3600 * h), "total_m3": round(total, 3), "reverse_m3": 0.0})
        p = {"meter_id": mid, "readings": rows,
             "signal": {"rsrp_dbm": float(rng.randint(-120, -70)), "snr_db": rng.randint(-5, 20) / 2,
                        "ecl": rng.randint(0, 2)}, "battery_v": round(rng.uniform(3.4, 3.7), 2)}
        out.append((f"water/{district}/meter/{mid}/reading", orjson.dumps(p)))
    return out

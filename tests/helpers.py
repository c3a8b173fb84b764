"""Small hand-made registries and payloads for tests that need no simulator."""

from __future__ import annotations

from pathlib import Path

METERS = """meter_id,district,building_id,role,customer_class,pipe_dn_mm,prepaid,report_interval_s,cell_id,register_max_m3,business_hours_per_day
M000001,d01,B001,household,residential,15,0,3600,C01,9999,
M000002,d01,B001,household,residential,15,1,86400,C01,9999,
M000003,d01,B001,household,non_residential,20,0,3600,C01,9999,10
M000000,d01,B001,master,,50,0,900,C01,99999,
"""
BUILDINGS = """building_id,district,address,pump_room_id,master_meter_id
B001,d01,"1 Songhua Road, Daoli",P0001,M000000
"""
ROOMS = """room_id,district,address,maintenance_unit,supervisor_unit
P0001,d01,"1 Songhua Road, Daoli",Unit 3,Daoli Water Authority
"""
TANKS = """tank_id,room_id,capacity_m3,last_disinfected
P0001-T1,P0001,50,2026-06-01
P0001-T2,P0001,50,2026-03-15
"""


def write_registry(folder: Path, **overrides: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"meters.csv": METERS, "buildings.csv": BUILDINGS, "pump_rooms.csv": ROOMS, "tanks.csv": TANKS}
    for name, text in files.items():
        (folder / name).write_text(overrides.get(name.removesuffix(".csv"), text), encoding="utf-8")
    return folder


class WireDispatcher:
    """A Dispatcher whose emit() and tick() return the events as a receiver gets them (the JSON shape)."""

    def __init__(self, dispatcher):
        self._d = dispatcher

    def __getattr__(self, name):
        return getattr(self._d, name)

    def emit(self, events):
        return [e.to_dict() for e in self._d.emit(events)]

    def tick(self, now_ns):
        return [e.to_dict() for e in self._d.tick(now_ns)]

"""The simulated fleet: districts, buildings, meters, pump rooms, tanks and NB-IoT cells, and its registry CSVs."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulator.households import CityStyle, building_sizes, daily_use_m3, draw_style

DAY_S = 86_400
HOUR_S = 3_600
NS = 1_000_000_000
LOCAL_OFFSET_S = 8 * HOUR_S  # Asia/Shanghai has no daylight saving: a fixed +08:00 is exact
DEFAULT_START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)

HOUSEHOLD_RMAX = 9_999.0
MASTER_RMAX = 99_999.0

STREETS = ("Xinyang Rd", "Hongqi St", "Zhongshan Rd", "Youyi Rd", "Hexing Rd", "Xuefu Rd", "Changjiang Rd",
           "Huanghe Rd", "Songbei Ave", "Dazhi St", "Gongbin Rd", "Hashuang Rd", "Xidazhi St", "Jianguo St")
PROPERTY_UNITS = ("Longyuan Property Services", "Binjiang Property Management", "Hengyuan Estate Services",
                  "Songhua Property Co.", "Anju Property Management", "Jinxiu Estate Services")


@dataclass
class SimConfig:
    meters: int = 2000
    days: int = 60
    seed: int = 1
    start: dt.datetime = DEFAULT_START
    hourly_share: float = 0.25
    prepaid_share: float = 0.3
    non_residential_share: float | None = None  # None: each city draws its own (see households.draw_style)
    # incident and decoy counts per 1,000 household meters (each kind at least its minimum; see incidents.py)
    blocking_rate: float = 6.0
    reverse_rate: float = 4.0
    bypass_rate: float = 4.0
    vacancy_rate: float = 6.0
    rollover_rate: float = 4.0
    replacement_rate: float = 4.0
    battery_rate: float = 3.0
    outage_cells_per_100_cell_days: float = 0.25
    overdue_share: float = 0.05  # of tanks
    disinfected_share: float = 0.06  # of tanks: cleaned in the period just before they fell due

    @property
    def start_ns(self) -> int:
        return int(self.start.timestamp()) * NS

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.days * DAY_S * NS


@dataclass
class City:
    """Column arrays of the fleet; meter rows are grouped by building (master first, then its households)."""

    meter_ids: list[str]
    meter_district: np.ndarray  # int index into districts
    meter_building: np.ndarray  # int
    is_master: np.ndarray  # bool
    non_residential: np.ndarray  # bool
    business_hours: np.ndarray  # float, NaN for residential and masters
    open_hour: np.ndarray  # local opening hour for non-residential users
    pipe_dn: np.ndarray  # int
    prepaid: np.ndarray  # bool
    interval_s: np.ndarray  # int
    meter_cell: np.ndarray  # int index into cell_ids, -1 for masters (wired through the pump-room RTU)
    rmax: np.ndarray  # float
    districts: list[str]
    building_ids: list[str]
    building_district: np.ndarray
    building_address: list[str]
    building_master: np.ndarray  # meter index
    building_households: list[np.ndarray]
    cell_ids: list[str]
    cell_members: list[np.ndarray]
    room_ids: list[str]
    room_maintenance: list[str]
    room_supervisor: list[str]
    tank_ids: list[str]
    tank_room: np.ndarray
    tank_capacity: np.ndarray
    tank_height: np.ndarray
    style: CityStyle
    use_m3_day: np.ndarray  # each household's usual daily use (0 for masters)
    last_disinfected: list[dt.date] = field(default_factory=list)  # filled in by incidents.plan

    @property
    def n_meters(self) -> int:
        return len(self.meter_ids)

    @property
    def households(self) -> np.ndarray:
        return np.flatnonzero(~self.is_master)

    def room_tanks(self, room: int) -> np.ndarray:
        return np.flatnonzero(self.tank_room == room)


def build_city(cfg: SimConfig) -> City:
    rng = np.random.default_rng([cfg.seed, 1])
    style = draw_style(cfg.seed, cfg.meters, cfg.non_residential_share)
    sizes = building_sizes(style, cfg.meters, rng)
    n_b = len(sizes)
    n_d = max(2, min(12, round(n_b / 10)))
    districts = [f"d{i + 1:02d}" for i in range(n_d)]
    b_district = np.sort(rng.integers(0, n_d, n_b))
    b_district[: n_d] = np.arange(n_d)[: n_b]  # every district has at least one building
    b_district = np.sort(b_district)

    meter_building, is_master = [], []
    for b, n in enumerate(sizes):
        meter_building += [b] * (n + 1)
        is_master += [True] + [False] * n
    meter_building_a = np.array(meter_building, dtype=np.int64)
    is_master_a = np.array(is_master, dtype=bool)
    n_m = len(meter_building)
    meter_ids = [f"M{i + 1:06d}" for i in range(n_m)]
    building_master = np.flatnonzero(is_master_a)
    households = [np.flatnonzero((meter_building_a == b) & ~is_master_a) for b in range(n_b)]

    hh = ~is_master_a
    non_res = hh & (rng.random(n_m) < style.non_residential_share)
    bh = np.where(non_res, rng.choice([8.0, 10.0, 12.0, 14.0], n_m), np.nan)
    open_hour = rng.choice([7, 8, 9, 10], n_m)
    dn = np.where(is_master_a, 50, rng.choice([15, 20], n_m, p=[0.85, 0.15]))
    dn = np.where(non_res, rng.choice([20, 25], n_m), dn)
    prepaid = hh & (rng.random(n_m) < cfg.prepaid_share)
    interval = np.where(is_master_a, 900, np.where(rng.random(n_m) < cfg.hourly_share, 3600, 86400))
    rmax = np.where(is_master_a, MASTER_RMAX, HOUSEHOLD_RMAX)

    # NB-IoT cells: consecutive buildings of one district, two to four per cell.
    cell_of_building = np.empty(n_b, dtype=np.int64)
    cell_ids: list[str] = []
    for d in range(n_d):
        bs = np.flatnonzero(b_district == d)
        i = 0
        while i < len(bs):
            k = int(rng.integers(2, 5))
            if len(bs) - (i + k) == 1:
                k += 1
            cell_of_building[bs[i:i + k]] = len(cell_ids)
            cell_ids.append(f"C{districts[d][1:]}{len(cell_ids) + 1:04d}")
            i += k
    meter_cell = np.where(is_master_a, -1, cell_of_building[meter_building_a])
    cell_members = [np.flatnonzero(meter_cell == c) for c in range(len(cell_ids))]

    building_ids = [f"B{b + 1:04d}" for b in range(n_b)]
    addresses = [f"No. {int(rng.integers(1, 300))} {STREETS[int(rng.integers(len(STREETS)))]}, "
                 f"{districts[b_district[b]]}" for b in range(n_b)]
    room_ids = [f"P{b + 1:04d}" for b in range(n_b)]
    # Art. 14: handed-over facilities are the water company's; the rest stay with the property manager.
    maint = [f"Cistern Water Secondary Supply Unit {int(b_district[b]) % 4 + 1}" if rng.random() < 0.6
             else PROPERTY_UNITS[int(rng.integers(len(PROPERTY_UNITS)))] for b in range(n_b)]
    supervisor = [f"{districts[b_district[b]]} Housing and Urban-Rural Development Bureau" for b in range(n_b)]

    tank_ids, tank_room, cap = [], [], []
    for b in range(n_b):
        k = 2 if rng.random() < 0.4 else 1
        daily = sizes[b] * 0.35
        for t in range(k):
            tank_ids.append(f"{room_ids[b]}-T{t + 1}")
            tank_room.append(b)
            cap.append(round(float(max(8.0, daily * rng.uniform(1.2, 2.5) / k)), 1))
    cap_a = np.array(cap)
    height = np.round(np.clip(2.0 + cap_a / 60.0, 2.0, 3.5), 2)

    return City(
        meter_ids=meter_ids, meter_district=b_district[meter_building_a], meter_building=meter_building_a,
        is_master=is_master_a, non_residential=non_res, business_hours=bh, open_hour=open_hour, pipe_dn=dn,
        prepaid=prepaid, interval_s=interval, meter_cell=meter_cell, rmax=rmax, districts=districts,
        building_ids=building_ids, building_district=b_district, building_address=addresses,
        building_master=building_master, building_households=households, cell_ids=cell_ids,
        cell_members=cell_members, room_ids=room_ids, room_maintenance=maint, room_supervisor=supervisor,
        tank_ids=tank_ids, tank_room=np.array(tank_room, dtype=np.int64), tank_capacity=cap_a, tank_height=height,
        style=style, use_m3_day=np.where(hh, daily_use_m3(style, non_res, np.random.default_rng([cfg.seed, 12])), 0.0),
    )


def write_registry(city: City, folder: Path) -> None:
    """The four CSV files of the registry (docs/FORMATS.md), in a fixed row order."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, header: list[str], rows: list[list]) -> None:
        with (folder / name).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)

    rows = []
    for i, mid in enumerate(city.meter_ids):
        master = bool(city.is_master[i])
        rows.append([
            mid, city.districts[city.meter_district[i]], city.building_ids[city.meter_building[i]],
            "master" if master else "household",
            "" if master else ("non_residential" if city.non_residential[i] else "residential"),
            int(city.pipe_dn[i]), int(city.prepaid[i]), int(city.interval_s[i]),
            "" if city.meter_cell[i] < 0 else city.cell_ids[city.meter_cell[i]],
            f"{city.rmax[i]:.0f}",
            "" if np.isnan(city.business_hours[i]) else f"{city.business_hours[i]:g}",
        ])
    write("meters.csv", ["meter_id", "district", "building_id", "role", "customer_class", "pipe_dn_mm", "prepaid",
                         "report_interval_s", "cell_id", "register_max_m3", "business_hours_per_day"], rows)
    write("buildings.csv", ["building_id", "district", "address", "pump_room_id", "master_meter_id"],
          [[b, city.districts[city.building_district[i]], city.building_address[i], city.room_ids[i],
            city.meter_ids[city.building_master[i]]] for i, b in enumerate(city.building_ids)])
    write("pump_rooms.csv", ["room_id", "district", "address", "maintenance_unit", "supervisor_unit"],
          [[r, city.districts[city.building_district[i]], city.building_address[i] + " (pump room)",
            city.room_maintenance[i], city.room_supervisor[i]] for i, r in enumerate(city.room_ids)])
    write("tanks.csv", ["tank_id", "room_id", "capacity_m3", "last_disinfected"],
          [[t, city.room_ids[city.tank_room[i]], f"{city.tank_capacity[i]:g}", city.last_disinfected[i].isoformat()]
           for i, t in enumerate(city.tank_ids)])

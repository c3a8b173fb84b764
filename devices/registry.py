"""The device registry: four CSV files (docs/FORMATS.md) turned into dense integer indexes and numpy columns."""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REGISTRY_FILES = ("meters.csv", "buildings.csv", "pump_rooms.csv", "tanks.csv")

# The fastest water can run through a meter's pipe: about twice a meter's overload flow Q4 (DN15: Q3 2.5 m3/h,
# Q4 3.1 m3/h, i.e. 4.9 m/s); a utility's 0.3-0.6 MPa cannot push water faster through a meter and its fittings.
# A reading beyond it is a broken device or a forged message, not water.
MAX_PIPE_VELOCITY_M_S = 10.0


def pipe_flow_m3h(dn_mm: np.ndarray | float, velocity_m_s: float) -> np.ndarray:
    """Flow through a pipe of nominal bore `dn_mm` at `velocity_m_s`: Q = v * pi * d^2 / 4, in m3/h."""
    d_m = np.asarray(dn_mm, dtype=np.float64) / 1000.0
    return velocity_m_s * np.pi * d_m * d_m / 4.0 * 3600.0


class RegistryError(ValueError):
    """A registry file a user must fix; the message names file, line and column."""

    def __init__(self, file: str, line: int | None, column: str | None, problem: str):
        self.file, self.line, self.column, self.problem = file, line, column, problem
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"registry {where}: {problem}")


def _text(v: str) -> str:
    return v.strip()


def _nonempty(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("must not be empty")
    return v


# A device id is a topic level and a broker account: what the payload schemas accept (devices.schemas.Id).
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Topic levels the service itself uses right under the prefix: a district by that name would put device traffic
# into the alerts tree ({prefix}/alerts/{kind}, {prefix}/alerts/ack).
RESERVED_DISTRICTS = frozenset({"alerts"})


def _device_id(v: str) -> str:
    v = v.strip()
    if not _DEVICE_ID.fullmatch(v):
        raise ValueError("must be 1 to 64 letters, digits or . _ : - (it is an MQTT topic level and broker account)")
    return v


def _district(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("must not be empty")
    if any(c in v for c in "/+#\0") or v.startswith("$"):
        raise ValueError("must be one MQTT topic level: no / + # and not starting with $")
    if v in RESERVED_DISTRICTS:
        raise ValueError(f"is reserved: {{prefix}}/{v}/... is where alert events go")
    return v


def _optional_text(v: str) -> str:
    return v.strip()


def _int(v: str) -> int:
    return int(v.strip())


def _positive_int(v: str) -> int:
    n = int(v.strip())
    if n <= 0:
        raise ValueError("must be a positive whole number")
    return n


def _positive_float(v: str) -> float:
    x = float(v.strip())
    if not np.isfinite(x) or x <= 0:
        raise ValueError("must be a positive number")
    return x


def _optional_float(v: str) -> float:
    v = v.strip()
    if not v:
        return float("nan")
    x = float(v)
    if not np.isfinite(x) or x < 0:
        raise ValueError("must be a non-negative number or empty")
    return x


def _flag(v: str) -> bool:
    v = v.strip().lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no", ""):
        return False
    raise ValueError("must be 0 or 1")


def _choice(*allowed: str, empty_ok: bool = False) -> Callable[[str], str]:
    def parse(v: str) -> str:
        v = v.strip()
        if empty_ok and not v:
            return ""
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v

    return parse


def _date(v: str) -> np.datetime64:
    try:
        return np.datetime64(dt.date.fromisoformat(v.strip()), "D")
    except ValueError:
        raise ValueError("must be an ISO date (YYYY-MM-DD)") from None


Schema = dict[str, Callable[[str], object]]

METER_COLUMNS: Schema = {
    "meter_id": _device_id,
    "district": _district,
    "building_id": _text,
    "role": _choice("household", "master"),
    "customer_class": _choice("residential", "non_residential", empty_ok=True),
    "pipe_dn_mm": _positive_int,
    "prepaid": _flag,
    "report_interval_s": _positive_int,
    "cell_id": _text,
    "register_max_m3": _positive_float,
    "business_hours_per_day": _optional_float,
}
BUILDING_COLUMNS: Schema = {
    "building_id": _nonempty,
    "district": _district,
    "address": _text,
    "pump_room_id": _text,
    "master_meter_id": _text,
}
ROOM_COLUMNS: Schema = {
    "room_id": _device_id,
    "district": _district,
    "address": _text,
    "maintenance_unit": _text,
    "supervisor_unit": _text,
}
TANK_COLUMNS: Schema = {
    "tank_id": _device_id,
    "room_id": _nonempty,
    "capacity_m3": _positive_float,
    "last_disinfected": _date,
}


_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _separator_hint(header: list[str]) -> str:
    """When the header reads as one column holding another separator: say so (a spreadsheet saved with ';')."""
    if len(header) == 1:
        for sep, name in _SEPARATORS.items():
            if sep in header[0]:
                return (f" (the header is one column separated by {name}: registry files are comma-separated; "
                        f"save them as 'CSV UTF-8 (comma delimited)')")
    return ""


def _read_table(path: Path, schema: Schema, id_column: str) -> dict[str, list]:
    name = path.name
    if not path.is_file():
        raise RegistryError(name, None, None, f"file not found in {path.parent}")
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise RegistryError(name, None, None, f"cannot read: {e.strerror}") from None
    with handle:
        # strict: an unclosed quote is an error at the end of the file, not a field swallowing the rest of it
        reader = csv.reader(handle, strict=True)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise RegistryError(name, 1, None, "empty file: a header row is required") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise RegistryError(name, 1, None, f"unreadable header: {e}") from None
        missing = [c for c in schema if c not in header]
        if missing:
            raise RegistryError(name, 1, missing[0], "required column is missing from the header"
                                + _separator_hint(header))
        pos = {c: header.index(c) for c in schema}
        cols: dict[str, list] = {c: [] for c in schema}
        lines: list[int] = []
        cols["__line__"] = lines
        seen: dict[str, int] = {}
        line = reader.line_num + 1  # the line a record starts on (a quoted field may run over several)
        try:
            for row in reader:
                start, line = line, reader.line_num + 1
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < len(header):
                    row = row + [""] * (len(header) - len(row))
                for c, parse in schema.items():
                    raw = row[pos[c]]
                    try:
                        cols[c].append(parse(raw))
                    except ValueError as e:
                        raise RegistryError(name, start, c, f"{raw!r} {e}") from None
                lines.append(start)
                ident = cols[id_column][-1]
                if ident in seen:
                    raise RegistryError(name, start, id_column, f"duplicate id {ident!r} (first on line {seen[ident]})")
                seen[ident] = start
        except UnicodeDecodeError as e:
            raise RegistryError(name, line, None, f"not UTF-8 text: {e.reason} (save the file as CSV UTF-8)") from None
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise RegistryError(name, line, None, "a quoted field opened on this line is never closed (a \" "
                                                      "missing its pair)") from None
            raise RegistryError(name, line, None, f"malformed CSV: {e}") from None
    return cols


def _check_references(m: dict, b: dict, meters: Meters, buildings: Buildings) -> None:
    """Every id one file names is in the file it points to (tanks are checked where they are built): a meter's
    building, a building's pump room and master meter, and the master meter is a master of that building."""
    for i in np.flatnonzero((meters.building < 0) & (meters.building_id != "")).tolist():
        raise RegistryError("meters.csv", _line_of(m, i), "building_id",
                            f"meter {m['meter_id'][i]!r} names building {m['building_id'][i]!r}, which is not in "
                            f"buildings.csv")
    for i in np.flatnonzero((buildings.room < 0) & (buildings.pump_room_id != "")).tolist():
        raise RegistryError("buildings.csv", _line_of(b, i), "pump_room_id",
                            f"building {b['building_id'][i]!r} names pump room {b['pump_room_id'][i]!r}, which is not "
                            f"in pump_rooms.csv")
    for i, mi in enumerate(buildings.master_meter.tolist()):
        bid, mid = b["building_id"][i], b["master_meter_id"][i]
        if mid and mi < 0:
            raise RegistryError("buildings.csv", _line_of(b, i), "master_meter_id",
                                f"building {bid!r} names master meter {mid!r}, which is not in meters.csv")
        if mi >= 0 and not meters.is_master[mi]:
            raise RegistryError("buildings.csv", _line_of(b, i), "master_meter_id",
                                f"building {bid!r} names {mid!r} as its master meter, but meters.csv"
                                f"{_on_line(m, mi)} gives it role {m['role'][mi]!r}")
        if mi >= 0 and m["building_id"][mi] not in ("", bid):
            raise RegistryError("buildings.csv", _line_of(b, i), "master_meter_id",
                                f"building {bid!r} names {mid!r} as its master meter, but meters.csv"
                                f"{_on_line(m, mi)} puts it in building {m['building_id'][mi]!r}")


def _line_of(cols: dict, row: int) -> int | None:
    lines = cols.get("__line__")
    return lines[row] if lines else None


def _on_line(cols: dict, row: int) -> str:
    line = _line_of(cols, row)
    return f" (line {line})" if line is not None else ""


def _index_of(ids: np.ndarray) -> dict[str, int]:
    return {s: i for i, s in enumerate(ids.tolist())}


def _lookup(values: list[str], index: dict[str, int]) -> np.ndarray:
    """Index of each value in `index`, -1 where empty or unknown."""
    return np.array([index.get(v, -1) if v else -1 for v in values], dtype=np.int32)


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object)


@dataclass
class Meters:
    ids: np.ndarray
    district: np.ndarray
    building_id: np.ndarray
    role: np.ndarray
    customer_class: np.ndarray
    pipe_dn_mm: np.ndarray
    prepaid: np.ndarray
    report_interval_s: np.ndarray
    cell_id: np.ndarray
    register_max_m3: np.ndarray
    business_hours_per_day: np.ndarray
    building: np.ndarray  # index into Buildings, -1 if none
    cell: np.ndarray  # dense cell index (cells are only named in meters.csv), -1 if none
    is_master: np.ndarray
    index: dict[str, int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Buildings:
    ids: np.ndarray
    district: np.ndarray
    address: np.ndarray
    pump_room_id: np.ndarray
    master_meter_id: np.ndarray
    room: np.ndarray  # index into PumpRooms, -1 if none
    master_meter: np.ndarray  # index into Meters, -1 if none
    index: dict[str, int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PumpRooms:
    ids: np.ndarray
    district: np.ndarray
    address: np.ndarray
    maintenance_unit: np.ndarray
    supervisor_unit: np.ndarray
    index: dict[str, int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Tanks:
    ids: np.ndarray
    room_id: np.ndarray
    capacity_m3: np.ndarray
    last_disinfected: np.ndarray  # datetime64[D]
    room: np.ndarray  # index into PumpRooms
    index: dict[str, int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Registry:
    """All devices of one utility, each kind with a dense integer index (its row number)."""

    meters: Meters
    buildings: Buildings
    rooms: PumpRooms
    tanks: Tanks
    cell_ids: np.ndarray  # cell index -> cell id
    folder: Path | None = None

    @classmethod
    def load(cls, folder: str | Path) -> Registry:
        folder = Path(folder)
        if not folder.is_dir():
            raise RegistryError(str(folder), None, None, "registry folder not found")
        m = _read_table(folder / "meters.csv", METER_COLUMNS, "meter_id")
        b = _read_table(folder / "buildings.csv", BUILDING_COLUMNS, "building_id")
        r = _read_table(folder / "pump_rooms.csv", ROOM_COLUMNS, "room_id")
        t = _read_table(folder / "tanks.csv", TANK_COLUMNS, "tank_id")
        return cls.from_columns(m, b, r, t, folder)

    @classmethod
    def from_columns(cls, m: dict, b: dict, r: dict, t: dict, folder: Path | None = None) -> Registry:
        room_ids = _strings(r["room_id"])
        room_index = _index_of(room_ids)
        rooms = PumpRooms(
            ids=room_ids,
            district=_strings(r["district"]),
            address=_strings(r["address"]),
            maintenance_unit=_strings(r["maintenance_unit"]),
            supervisor_unit=_strings(r["supervisor_unit"]),
            index=room_index,
        )
        tank_room = _lookup(t["room_id"], room_index)
        bad = np.flatnonzero(tank_room < 0)
        if bad.size:
            raise RegistryError("tanks.csv", _line_of(t, bad[0]), "room_id",
                                f"tank {t['tank_id'][bad[0]]!r} names pump room {t['room_id'][bad[0]]!r}, which is not "
                                f"in pump_rooms.csv")
        tank_ids = _strings(t["tank_id"])
        tanks = Tanks(
            ids=tank_ids,
            room_id=_strings(t["room_id"]),
            capacity_m3=np.array(t["capacity_m3"], dtype=np.float64),
            last_disinfected=np.array(t["last_disinfected"], dtype="datetime64[D]"),
            room=tank_room,
            index=_index_of(tank_ids),
        )
        meter_ids = _strings(m["meter_id"])
        meter_index = _index_of(meter_ids)
        building_ids = _strings(b["building_id"])
        building_index = _index_of(building_ids)
        cells = sorted({c for c in m["cell_id"] if c})
        cell_index = {c: i for i, c in enumerate(cells)}
        role = _strings(m["role"])
        meters = Meters(
            ids=meter_ids,
            district=_strings(m["district"]),
            building_id=_strings(m["building_id"]),
            role=role,
            customer_class=_strings(m["customer_class"]),
            pipe_dn_mm=np.array(m["pipe_dn_mm"], dtype=np.int32),
            prepaid=np.array(m["prepaid"], dtype=bool),
            report_interval_s=np.array(m["report_interval_s"], dtype=np.int64),
            cell_id=_strings(m["cell_id"]),
            register_max_m3=np.array(m["register_max_m3"], dtype=np.float64),
            business_hours_per_day=np.array(m["business_hours_per_day"], dtype=np.float64),
            building=_lookup(m["building_id"], building_index),
            cell=_lookup(m["cell_id"], cell_index),
            is_master=role == "master",
            index=meter_index,
        )
        buildings = Buildings(
            ids=building_ids,
            district=_strings(b["district"]),
            address=_strings(b["address"]),
            pump_room_id=_strings(b["pump_room_id"]),
            master_meter_id=_strings(b["master_meter_id"]),
            room=_lookup(b["pump_room_id"], room_index),
            master_meter=_lookup(b["master_meter_id"], meter_index),
            index=building_index,
        )
        _check_references(m, b, meters, buildings)
        for i, rid in enumerate(r["room_id"]):
            if rid in meter_index:
                raise RegistryError("pump_rooms.csv", _line_of(r, i), "room_id",
                                    f"{rid!r} is also a meter id (meters.csv{_on_line(m, meter_index[rid])}): a device's "
                                    f"id is its broker account, one device each")
        return cls(meters=meters, buildings=buildings, rooms=rooms, tanks=tanks,
                   cell_ids=np.array(cells, dtype=object), folder=folder)

    def summary(self) -> str:
        return (f"{len(self.meters)} meters, {len(self.buildings)} buildings, "
                f"{len(self.rooms)} pump rooms, {len(self.tanks)} tanks, {len(self.cell_ids)} cells")

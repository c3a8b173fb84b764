"""Columnar batches: what decode produces and what sinks and detectors consume.

Every table is a set of equal-length numpy columns. Device columns hold the registry's dense index;
timestamps are int64 nanoseconds since the epoch (UTC); an absent optional value is NaN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from devices.time import NS

__all__ = ["NS", "Batch", "DeviceEvent", "MeterReadings", "PumpReadings", "RoomReadings", "TankReadings"]

VALVE_CODES = {"open": 0, "closed": 1}  # anything else: 2; absent: -1


class _Table:
    """A dataclass of equal-length numpy columns with a few shared operations."""

    dtypes: ClassVar[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ts_ns)  # type: ignore[attr-defined]

    @classmethod
    def empty(cls) -> Self:
        return cls(**{name: np.empty(0, dtype=dt) for name, dt in cls.dtypes.items()})

    @classmethod
    def from_columns(cls, **cols: Any) -> Self:
        """Build from sequences; missing optional columns are filled with NaN (or -1 for codes)."""
        n = len(cols["ts_ns"])
        out = {}
        for name, dtype in cls.dtypes.items():
            if name in cols:
                out[name] = np.asarray(cols[name], dtype=dtype)
            elif np.dtype(dtype).kind == "f":
                out[name] = np.full(n, np.nan)
            elif np.dtype(dtype).kind in "iu":
                out[name] = np.full(n, -1, dtype=dtype)
            else:
                raise TypeError(f"{cls.__name__}: column {name!r} is required")
        return cls(**out)

    def take(self, index: np.ndarray) -> Self:
        """Rows selected by a boolean mask or an integer index array."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})  # type: ignore[arg-type]

    @classmethod
    def concat(cls, tables: list[Self]) -> Self:
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.empty()
        if len(tables) == 1:
            return tables[0]
        return cls(**{name: np.concatenate([getattr(t, name) for t in tables]) for name in cls.dtypes})

    def sorted_by_time(self) -> Self:
        return self.take(np.argsort(self.ts_ns, kind="stable"))  # type: ignore[attr-defined]


@dataclass
class MeterReadings(_Table):
    """One row per meter reading. For a batch message the status fields (signal, battery, valve,
    balance) are carried only on its latest reading: they were measured at upload time."""

    meter: np.ndarray
    ts_ns: np.ndarray
    total_m3: np.ndarray
    reverse_m3: np.ndarray
    flow_m3h: np.ndarray
    rsrp_dbm: np.ndarray
    snr_db: np.ndarray
    ecl: np.ndarray
    battery_v: np.ndarray
    balance_cny: np.ndarray
    valve: np.ndarray  # int8: VALVE_CODES, 2 other, -1 absent

    dtypes: ClassVar[dict[str, Any]] = {
        "meter": np.int32, "ts_ns": np.int64, "total_m3": np.float64, "reverse_m3": np.float64,
        "flow_m3h": np.float64, "rsrp_dbm": np.float64, "snr_db": np.float64, "ecl": np.float64,
        "battery_v": np.float64, "balance_cny": np.float64, "valve": np.int8,
    }


@dataclass
class TankReadings(_Table):
    tank: np.ndarray
    ts_ns: np.ndarray
    level_m: np.ndarray
    free_chlorine_mg_l: np.ndarray
    turbidity_ntu: np.ndarray
    ph: np.ndarray

    dtypes: ClassVar[dict[str, Any]] = {
        "tank": np.int32, "ts_ns": np.int64, "level_m": np.float64, "free_chlorine_mg_l": np.float64,
        "turbidity_ntu": np.float64, "ph": np.float64,
    }


@dataclass
class RoomReadings(_Table):
    room: np.ndarray
    ts_ns: np.ndarray
    outlet_pressure_mpa: np.ndarray
    door_open: np.ndarray  # float: 1.0 open, 0.0 closed, NaN absent

    dtypes: ClassVar[dict[str, Any]] = {
        "room": np.int32, "ts_ns": np.int64, "outlet_pressure_mpa": np.float64, "door_open": np.float64,
    }


@dataclass
class PumpReadings(_Table):
    room: np.ndarray
    pump_id: np.ndarray  # object (str)
    ts_ns: np.ndarray
    running: np.ndarray  # float: 1.0 / 0.0 / NaN
    current_a: np.ndarray

    dtypes: ClassVar[dict[str, Any]] = {
        "room": np.int32, "pump_id": object, "ts_ns": np.int64, "running": np.float64, "current_a": np.float64,
    }


@dataclass(frozen=True)
class DeviceEvent:
    """A maintenance record from the field: `device` is 'meter' or 'pumproom', `index` its registry index."""

    device: str
    index: int
    device_id: str
    district: str
    ts_ns: int
    type: str
    fields: dict[str, Any] = field(default_factory=dict)  # work_order, tank_id, register_m3, operator, quality…


@dataclass
class Batch:
    """Everything decoded from one group of messages."""

    meters: MeterReadings = field(default_factory=MeterReadings.empty)
    tanks: TankReadings = field(default_factory=TankReadings.empty)
    rooms: RoomReadings = field(default_factory=RoomReadings.empty)
    pumps: PumpReadings = field(default_factory=PumpReadings.empty)
    events: list[DeviceEvent] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.meters) + len(self.tanks) + len(self.rooms) + len(self.pumps) + len(self.events)

    @property
    def readings(self) -> int:
        """Readings a user would count: meter readings plus pump-room telemetry messages' rows."""
        return len(self.meters) + len(self.tanks) + len(self.rooms) + len(self.pumps)

    def max_ts_ns(self) -> int | None:
        tops = [int(t.ts_ns.max()) for t in (self.meters, self.tanks, self.rooms, self.pumps) if len(t)]
        tops += [e.ts_ns for e in self.events]
        return max(tops) if tops else None

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        return cls(
            meters=MeterReadings.concat([b.meters for b in batches]),
            tanks=TankReadings.concat([b.tanks for b in batches]),
            rooms=RoomReadings.concat([b.rooms for b in batches]),
            pumps=PumpReadings.concat([b.pumps for b in batches]),
            events=[e for b in batches for e in b.events],
        )

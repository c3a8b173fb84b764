"""Payload schemas (docs/FORMATS.md) as pydantic models: what a device may send, and why a message is refused."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

# Readings outside these years are absurd (a meter clock reset to 1970, a corrupt 2100); they are refused.
TS_MIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
TS_MAX = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def parse_timestamp(v: Any) -> dt.datetime:
    # bool is an int in Python; a boolean timestamp is a bug on the device, not epoch 0 or 1.
    if isinstance(v, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch seconds")
    if isinstance(v, int | float):
        try:
            return dt.datetime.fromtimestamp(v, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("ts epoch seconds out of range") from None
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("ts is not an RFC 3339 timestamp") from None
        if t.tzinfo is None:
            raise ValueError("ts has no UTC offset (RFC 3339 requires Z or ±hh:mm)")
        return t
    raise ValueError("ts must be an RFC 3339 string or epoch seconds")


def check_ts_range(t: dt.datetime) -> dt.datetime:
    if not (TS_MIN <= t < TS_MAX):
        raise ValueError(f"ts {t.isoformat()} is outside {TS_MIN.year}..{TS_MAX.year - 1}")
    return t


Timestamp = Annotated[dt.datetime, BeforeValidator(parse_timestamp), AfterValidator(check_ts_range)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
NonNegative = Annotated[float, Field(ge=0)]


class _Payload(BaseModel):
    # Unknown fields are accepted and ignored (docs/FORMATS.md); NaN/Infinity never pass.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True, strict=True)


class Signal(_Payload):
    rsrp_dbm: Annotated[float, Field(ge=-200, le=0)] | None = None
    snr_db: Annotated[float, Field(ge=-50, le=60)] | None = None
    ecl: Annotated[int, Field(ge=0, le=2)] | None = None


class _MeterStatus(_Payload):
    signal: Signal | None = None
    battery_v: Annotated[float, Field(ge=0, le=10)] | None = None
    valve: Literal["open", "closed", "unknown"] | str | None = None
    balance_cny: float | None = None
    status: list[str] | None = None


class IntervalReading(_Payload):
    ts: Timestamp
    total_m3: NonNegative
    reverse_m3: NonNegative | None = None
    flow_m3h: float | None = None


class MeterReading(_MeterStatus):
    """One reading: `{prefix}/{district}/meter/{meter_id}/reading`."""

    meter_id: Id
    ts: Timestamp
    total_m3: NonNegative
    reverse_m3: NonNegative | None = None
    flow_m3h: float | None = None


class MeterBatch(_MeterStatus):
    """A day of interval readings from one meter in one message (NB-IoT)."""

    meter_id: Id
    readings: Annotated[list[IntervalReading], Field(min_length=1, max_length=10_000)]


class TankTelemetry(_Payload):
    tank_id: Id
    level_m: float | None = None
    free_chlorine_mg_l: Annotated[float, Field(ge=0)] | None = None
    turbidity_ntu: Annotated[float, Field(ge=0)] | None = None
    ph: Annotated[float, Field(ge=0, le=14)] | None = None


class PumpTelemetry(_Payload):
    pump_id: Annotated[str, Field(min_length=1, max_length=32)]
    running: bool | None = None
    current_a: Annotated[float, Field(ge=0)] | None = None


class PumpRoomTelemetry(_Payload):
    """`{prefix}/{district}/pumproom/{room_id}/telemetry`."""

    room_id: Id
    ts: Timestamp
    outlet_pressure_mpa: float | None = None
    door_open: bool | None = None
    tanks: Annotated[list[TankTelemetry], Field(max_length=64)] = []
    pumps: Annotated[list[PumpTelemetry], Field(max_length=64)] = []


class WaterQuality(_Payload):
    free_chlorine_mg_l: Annotated[float, Field(ge=0)] | None = None
    turbidity_ntu: Annotated[float, Field(ge=0)] | None = None
    ph: Annotated[float, Field(ge=0, le=14)] | None = None


class PumpRoomEvent(_Payload):
    """`{prefix}/{district}/pumproom/{room_id}/event`, e.g. a tank disinfection record."""

    room_id: Id
    ts: Timestamp
    type: Annotated[str, Field(min_length=1, max_length=64)]
    tank_id: Id | None = None
    work_order: Annotated[str, Field(max_length=128)] | None = None
    operator: Annotated[str, Field(max_length=128)] | None = None
    quality: WaterQuality | None = None


class MeterEvent(_Payload):
    """`{prefix}/{district}/meter/{meter_id}/event`, e.g. a replacement."""

    meter_id: Id
    ts: Timestamp
    type: Annotated[str, Field(min_length=1, max_length=64)]
    register_m3: NonNegative | None = None
    work_order: Annotated[str, Field(max_length=128)] | None = None

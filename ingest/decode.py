"""Decode: a group of raw MQTT messages → one columnar Batch, plus the rejects with their reasons."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from devices.batch import (
    NS,
    VALVE_CODES,
    Batch,
    DeviceEvent,
    MeterReadings,
    PumpReadings,
    RoomReadings,
    TankReadings,
)
from devices.registry import Registry
from devices.schemas import MeterBatch, MeterEvent, MeterReading, PumpRoomEvent, PumpRoomTelemetry
from devices.topics import Channel, TopicError, TopicLayout

MAX_PAYLOAD_BYTES = 256 * 1024

INVALID = "invalid"  # never valid: dead letter
UNKNOWN_DEVICE = "unknown_device"  # valid but the registry does not know the device yet: quarantine


@dataclass(slots=True)
class RawMessage:
    topic: str
    payload: bytes
    token: Any = None  # the source's handle for acknowledging this message
    received_ns: int = 0


@dataclass(slots=True)
class Reject:
    topic: str
    payload: bytes
    reason: str
    category: str = INVALID


def _nan(x: float | None) -> float:
    return np.nan if x is None else x


def _flag(x: bool | None) -> float:
    return np.nan if x is None else float(x)


def _ns(t) -> int:
    # datetime → int ns without float rounding: whole seconds plus microseconds.
    return int(t.timestamp()) * NS + t.microsecond * 1000 if t.microsecond else int(t.timestamp()) * NS


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    n = e.error_count()
    more = f" (+{n - 1} more)" if n > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


class Decoder:
    """Validates messages against the schemas, the topic layout and the registry."""

    def __init__(self, registry: Registry, layout: TopicLayout):
        self.registry = registry
        self.layout = layout
        self._topics: dict[str, tuple[Channel, int, str]] = {}

    def _route(self, topic: str) -> tuple[Channel, int, str] | Reject:
        hit = self._topics.get(topic)
        if hit is not None:
            return hit
        try:
            t = self.layout.parse(topic)
        except TopicError as e:
            return Reject(topic, b"", str(e))
        reg = self.registry
        if t.channel in (Channel.METER_READING, Channel.METER_EVENT):
            idx = reg.meters.index.get(t.device_id, -1)
            district = reg.meters.district[idx] if idx >= 0 else None
        else:
            idx = reg.rooms.index.get(t.device_id, -1)
            district = reg.rooms.district[idx] if idx >= 0 else None
        if idx < 0:
            return Reject(topic, b"", f"device {t.device_id!r} is not in the registry", UNKNOWN_DEVICE)
        if district != t.district:
            return Reject(topic, b"", f"topic district {t.district!r} but the registry puts "
                                      f"{t.device_id!r} in {district!r}")
        hit = (t.channel, idx, t.device_id)
        self._topics[topic] = hit
        return hit

    def decode(self, messages: Sequence[RawMessage]) -> tuple[Batch, list[Reject]]:
        rejects: list[Reject] = []
        # meter reading columns, appended per reading
        m_idx: list[int] = []
        m_ts: list[int] = []
        m_total: list[float] = []
        m_rev: list[float] = []
        m_flow: list[float] = []
        # status columns, one entry per message, attached to that message's latest reading (row s_row)
        s_row: list[int] = []
        s_rsrp: list[float] = []
        s_snr: list[float] = []
        s_ecl: list[float] = []
        s_bat: list[float] = []
        s_bal: list[float] = []
        s_valve: list[int] = []
        tanks: dict[str, list] = {k: [] for k in TankReadings.dtypes}
        rooms: dict[str, list] = {k: [] for k in RoomReadings.dtypes}
        pumps: dict[str, list] = {k: [] for k in PumpReadings.dtypes}
        events: list[DeviceEvent] = []
        reg = self.registry

        for msg in messages:
            route = self._route(msg.topic)
            if isinstance(route, Reject):
                route.payload = msg.payload
                rejects.append(route)
                continue
            channel, idx, device_id = route
            payload = msg.payload
            if len(payload) > MAX_PAYLOAD_BYTES:
                rejects.append(Reject(msg.topic, payload[:1024], f"payload of {len(payload)} bytes exceeds "
                                                                  f"{MAX_PAYLOAD_BYTES}"))
                continue
            try:
                if channel is Channel.METER_READING:
                    # A batch carries "readings"; a single reading does not. Peek before validating.
                    if b'"readings"' in payload:
                        p: Any = MeterBatch.model_validate_json(payload)
                    else:
                        p = MeterReading.model_validate_json(payload)
                elif channel is Channel.PUMPROOM_TELEMETRY:
                    p = PumpRoomTelemetry.model_validate_json(payload)
                elif channel is Channel.PUMPROOM_EVENT:
                    p = PumpRoomEvent.model_validate_json(payload)
                else:
                    p = MeterEvent.model_validate_json(payload)
            except ValidationError as e:
                rejects.append(Reject(msg.topic, payload, _first_error(e)))
                continue
            except (ValueError, RecursionError) as e:  # pragma: no cover - pydantic wraps most
                rejects.append(Reject(msg.topic, payload, f"unreadable payload: {e}"))
                continue

            payload_id = p.meter_id if channel in (Channel.METER_READING, Channel.METER_EVENT) else p.room_id
            if payload_id != device_id:
                rejects.append(Reject(msg.topic, payload, f"payload id {payload_id!r} does not match topic id "
                                                          f"{device_id!r}"))
                continue

            if channel is Channel.METER_READING:
                if isinstance(p, MeterBatch):
                    first = len(m_ts)
                    latest, latest_ns = first, -1
                    for r in p.readings:
                        t = _ns(r.ts)
                        if t > latest_ns:
                            latest, latest_ns = len(m_ts), t
                        m_idx.append(idx)
                        m_ts.append(t)
                        m_total.append(r.total_m3)
                        m_rev.append(_nan(r.reverse_m3))
                        m_flow.append(_nan(r.flow_m3h))
                    s_row.append(latest)
                else:
                    s_row.append(len(m_ts))
                    m_idx.append(idx)
                    m_ts.append(_ns(p.ts))
                    m_total.append(p.total_m3)
                    m_rev.append(_nan(p.reverse_m3))
                    m_flow.append(_nan(p.flow_m3h))
                sig = p.signal
                if sig is None:
                    s_rsrp.append(np.nan)
                    s_snr.append(np.nan)
                    s_ecl.append(np.nan)
                else:
                    s_rsrp.append(_nan(sig.rsrp_dbm))
                    s_snr.append(_nan(sig.snr_db))
                    s_ecl.append(_nan(sig.ecl))
                s_bat.append(_nan(p.battery_v))
                s_bal.append(_nan(p.balance_cny))
                s_valve.append(-1 if p.valve is None else VALVE_CODES.get(p.valve, 2))
            elif channel is Channel.PUMPROOM_TELEMETRY:
                t = _ns(p.ts)
                bad = None
                tank_rows = []
                for tk in p.tanks:
                    ti = reg.tanks.index.get(tk.tank_id, -1)
                    if ti < 0 or reg.tanks.room[ti] != idx:
                        bad = tk.tank_id
                        break
                    tank_rows.append((ti, tk))
                if bad is not None:
                    rejects.append(Reject(msg.topic, payload, f"tank {bad!r} is not registered to pump room "
                                                              f"{device_id!r}", UNKNOWN_DEVICE))
                    continue
                for ti, tk in tank_rows:
                    tanks["tank"].append(ti)
                    tanks["ts_ns"].append(t)
                    tanks["level_m"].append(_nan(tk.level_m))
                    tanks["free_chlorine_mg_l"].append(_nan(tk.free_chlorine_mg_l))
                    tanks["turbidity_ntu"].append(_nan(tk.turbidity_ntu))
                    tanks["ph"].append(_nan(tk.ph))
                if p.outlet_pressure_mpa is not None or p.door_open is not None or not (p.tanks or p.pumps):
                    rooms["room"].append(idx)
                    rooms["ts_ns"].append(t)
                    rooms["outlet_pressure_mpa"].append(_nan(p.outlet_pressure_mpa))
                    rooms["door_open"].append(_flag(p.door_open))
                for pu in p.pumps:
                    pumps["room"].append(idx)
                    pumps["pump_id"].append(pu.pump_id)
                    pumps["ts_ns"].append(t)
                    pumps["running"].append(_flag(pu.running))
                    pumps["current_a"].append(_nan(pu.current_a))
            else:
                fields = p.model_dump(exclude_none=True, exclude={"ts", "type", "meter_id", "room_id"})
                if channel is Channel.PUMPROOM_EVENT:
                    tank_id = fields.get("tank_id")
                    if tank_id is not None:
                        ti = reg.tanks.index.get(tank_id, -1)
                        if ti < 0 or reg.tanks.room[ti] != idx:
                            rejects.append(Reject(msg.topic, payload, f"tank {tank_id!r} is not registered to "
                                                                      f"pump room {device_id!r}", UNKNOWN_DEVICE))
                            continue
                    device, district = "pumproom", reg.rooms.district[idx]
                else:
                    device, district = "meter", reg.meters.district[idx]
                events.append(DeviceEvent(device, idx, device_id, district, _ns(p.ts), p.type, fields))

        n = len(m_ts)
        if n:
            status = {}
            rows = np.asarray(s_row, dtype=np.int64)
            for name, vals in (("rsrp_dbm", s_rsrp), ("snr_db", s_snr), ("ecl", s_ecl),
                               ("battery_v", s_bat), ("balance_cny", s_bal)):
                col = np.full(n, np.nan)
                col[rows] = vals
                status[name] = col
            valve = np.full(n, -1, dtype=np.int8)
            valve[rows] = s_valve
            meters = MeterReadings(
                meter=np.asarray(m_idx, dtype=np.int32), ts_ns=np.asarray(m_ts, dtype=np.int64),
                total_m3=np.asarray(m_total, dtype=np.float64), reverse_m3=np.asarray(m_rev, dtype=np.float64),
                flow_m3h=np.asarray(m_flow, dtype=np.float64), valve=valve, **status)
        else:
            meters = MeterReadings.empty()
        batch = Batch(
            meters=meters,
            tanks=TankReadings.from_columns(**tanks) if tanks["ts_ns"] else TankReadings.empty(),
            rooms=RoomReadings.from_columns(**rooms) if rooms["ts_ns"] else RoomReadings.empty(),
            pumps=PumpReadings.from_columns(**pumps) if pumps["ts_ns"] else PumpReadings.empty(),
            events=events,
        )
        return batch, rejects


def now_ns() -> int:
    return time.time_ns()

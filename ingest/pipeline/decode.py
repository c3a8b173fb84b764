"""Decode: a group of raw MQTT messages → one columnar Batch, plus the rejects with their reasons.

Meter readings take a vectorized fast path; any message it is not sure of goes to the pydantic schemas, which decide.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from devices.batch import (
    VALVE_CODES,
    Batch,
    DeviceEvent,
    MeterReadings,
    PumpReadings,
    RoomReadings,
    TankReadings,
)
from devices.messages import UNKNOWN_DEVICE, RawMessage, Reject
from devices.registry import MAX_PIPE_VELOCITY_M_S, Registry, pipe_flow_m3h
from devices.schemas import (
    MeterBatch,
    MeterEvent,
    MeterReading,
    PumpRoomEvent,
    PumpRoomTelemetry,
)
from devices.topics import Channel, TopicError, TopicLayout
from ingest.pipeline.columns import (
    DICT_OR_NONE,
    ID,
    INT_OR_NONE,
    LIST_OR_NONE,
    NUM,
    NUM_OR_NONE,
    STR_OR_NONE,
    bad_types,
    floats,
    get,
    in_range,
    loads_or_none,
)
from ingest.pipeline.decode_rooms import RoomParts, decode_telemetry
from ingest.pipeline.timestamps import _ns, _timestamps

MAX_PAYLOAD_BYTES = 256 * 1024

# A batch message has a "readings" key; the text "readings" inside a string value does not count.
_BATCH_KEY = re.compile(rb'"readings"\s*:')

_READINGS = b'"readings"'


def _is_batch(payload: bytes) -> bool:
    # The plain substring test is cheap and almost always decides; the pattern only confirms a real key.
    return _READINGS in payload and _BATCH_KEY.search(payload) is not None


def _nan(x: float | None) -> float:
    return np.nan if x is None else x


def _flag(x: bool | None) -> float:
    return np.nan if x is None else float(x)


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    n = e.error_count()
    more = f" (+{n - 1} more)" if n > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


# --- fast-path checks (ingest/pipeline/columns.py) ----------------------------------------------------------
_MAX_BATCH_READINGS = 10_000  # MeterBatch.readings max_length
# What decode does with a message, from its route: refuse it, the schemas, or one of the fast paths.
REJECTED, SLOW, METER, TELEMETRY = -1, 0, 1, 2
_FAST = {Channel.METER_READING: METER, Channel.PUMPROOM_TELEMETRY: TELEMETRY}


def _parsed(messages: Sequence[RawMessage], positions: list[int]) -> list[dict]:
    """The JSON objects of the messages at `positions` (a capture source parsed them already); anything that is
    not an object becomes {}, which has no id, so the schemas decide and word the refusal."""
    pre = [messages[i].parsed for i in positions]
    if None in pre:
        payloads = [messages[i].payload for i, p in zip(positions, pre, strict=True) if p is None]
        try:
            done = iter(list(map(orjson.loads, payloads)))
        except orjson.JSONDecodeError:  # some payload is not JSON: the schemas will say why
            done = iter(list(map(loads_or_none, payloads)))
        pre = [p if p is not None else next(done) for p in pre]
    if set(map(type, pre)) != {dict} and pre:
        pre = [p if type(p) is dict else {} for p in pre]
    return pre
_VALVE_OR_ABSENT = {**VALVE_CODES, None: -1}  # other strings: 2


class _Status:
    """The status fields of meter messages (signal, battery, valve, balance, status list), checked in bulk."""

    @classmethod
    def absent(cls, n: int) -> _Status:
        st = cls.__new__(cls)
        st.cols = {k: np.full(n, np.nan) for k in ("rsrp_dbm", "snr_db", "ecl", "battery_v", "balance_cny")}
        st.valve = np.full(n, -1, np.int8)
        st.bad = np.zeros(n, bool)
        return st

    def __init__(self, dicts: list[dict]):
        n = len(dicts)
        bad = np.zeros(n, bool)
        sig = get(dicts, "signal")
        b = bad_types(sig, DICT_OR_NONE)
        if b is not None:
            bad |= b
            sig = [None if x else s for s, x in zip(sig, b.tolist(), strict=True)]
        sigs = [s if s is not None else {} for s in sig] if None in sig else sig
        rsrp, snr, ecl = get(sigs, "rsrp_dbm"), get(sigs, "snr_db"), get(sigs, "ecl")
        battery, balance = get(dicts, "battery_v"), get(dicts, "balance_cny")
        cols = {}
        for name, col, allowed in (("rsrp_dbm", rsrp, NUM_OR_NONE), ("snr_db", snr, NUM_OR_NONE),
                                   ("ecl", ecl, INT_OR_NONE), ("battery_v", battery, NUM_OR_NONE),
                                   ("balance_cny", balance, NUM_OR_NONE)):
            b = bad_types(col, allowed)
            if b is not None:
                bad |= b
            cols[name] = floats(col, b)
        bad |= ~in_range(cols["rsrp_dbm"], -200, 0, True)
        bad |= ~in_range(cols["snr_db"], -50, 60, True)
        bad |= ~in_range(cols["ecl"], 0, 2, True)
        bad |= ~in_range(cols["battery_v"], 0, 10, True)
        bad |= ~in_range(cols["balance_cny"], None, None, True)
        valve = get(dicts, "valve")
        b = bad_types(valve, STR_OR_NONE)
        if b is not None:
            bad |= b
            valve = [None if x else v for v, x in zip(valve, b.tolist(), strict=True)]
        self.valve = np.fromiter(map(_VALVE_OR_ABSENT.get, valve, repeat(2)), np.int8, n)
        status = get(dicts, "status")
        b = bad_types(status, LIST_OR_NONE)
        if b is not None:
            bad |= b
        lists = [(i, s) for i, s in enumerate(status) if s and type(s) is list] if any(status) else None
        if lists:
            for i, s in lists:
                if not set(map(type, s)) <= {str}:
                    bad[i] = True
        self.cols = cols
        self.bad = bad


class _MeterLimits:
    """What a meter can physically report, from the registry: a register below its `register_max_m3` (it wraps
    there), a flow its pipe can carry. Checked in bulk on the rows of both paths, so they refuse alike."""

    def __init__(self, registry: Registry):
        m = registry.meters
        self.ids = m.ids
        self.register_max_m3 = m.register_max_m3
        self.pipe_dn_mm = m.pipe_dn_mm
        self.flow_max_m3h = pipe_flow_m3h(m.pipe_dn_mm, MAX_PIPE_VELOCITY_M_S)

    def bad_rows(self, rows: MeterReadings) -> np.ndarray | None:
        """True for each row beyond its meter's limits, or None when every row fits (the usual case)."""
        top = self.register_max_m3[rows.meter]
        with np.errstate(invalid="ignore"):  # NaN (an absent reverse register or flow) compares False
            bad = (rows.total_m3 >= top) | (rows.reverse_m3 >= top)
            bad |= np.abs(rows.flow_m3h) > self.flow_max_m3h[rows.meter]
        return bad if bad.any() else None

    def reason(self, rows: MeterReadings, i: int) -> str:
        m = int(rows.meter[i])
        top, who = self.register_max_m3[m], f"meter {self.ids[m]!r}"
        for name in ("total_m3", "reverse_m3"):
            v = float(getattr(rows, name)[i])
            if v >= top:
                return f"{name} {v:g} is at or above the register maximum {top:g} m3 of {who} (the register wraps there)"
        flow, cap = float(rows.flow_m3h[i]), float(self.flow_max_m3h[m])
        return (f"flow_m3h {flow:g} is more than a DN{int(self.pipe_dn_mm[m])} pipe can carry ({cap:.1f} m3/h at "
                f"{MAX_PIPE_VELOCITY_M_S:g} m/s) for {who}")


class Decoder:
    """Validates messages against the schemas, the topic layout and the registry.

    `fast=False` decodes every message through the pydantic models alone: the reference the fast path is
    tested against.
    """

    def __init__(self, registry: Registry, layout: TopicLayout, fast: bool = True):
        self.registry = registry
        self.layout = layout
        self.fast = fast
        self._topics: dict[str, tuple[Channel, int, str, int]] = {}
        self._limits = _MeterLimits(registry)
        self._tank_index: dict[str, int] = {}  # tank id -> registry index (-1: unknown), for the fast path

    def _route(self, topic: str) -> tuple[Channel, int, str, int] | Reject:
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
        # The fast paths take meter readings and pump-room telemetry whose id the schema's Id pattern accepts.
        fast = _FAST.get(t.channel, SLOW) if ID.fullmatch(t.device_id) is not None else SLOW
        hit = (t.channel, idx, t.device_id, fast)
        self._topics[topic] = hit
        return hit

    def decode(self, messages: Sequence[RawMessage]) -> tuple[Batch, list[Reject]]:
        out = _Collected(messages, self._limits)
        n = len(messages)
        topics = [m.topic for m in messages]
        routes: list[Any] = list(map(self._topics.get, topics))
        if None in routes:
            routes = [r if r is not None else self._route(t) for r, t in zip(routes, topics, strict=True)]
        # Bulk passes over the whole group (comprehensions run at C speed next to a per-message loop body).
        kinds = [r[3] if type(r) is tuple else REJECTED for r in routes]
        if not self.fast:
            kinds = [SLOW if k != REJECTED else k for k in kinds]
        payloads = [m.payload for m in messages]
        if max(map(len, payloads), default=0) > MAX_PAYLOAD_BYTES:  # the schema path words the refusal
            kinds = [SLOW if k > SLOW and len(p) > MAX_PAYLOAD_BYTES else k for k, p in zip(kinds, payloads,
                                                                                       strict=True)]
        if kinds.count(METER) == n:
            meters, rooms, slow = list(range(n)), [], []
        else:
            k = np.array(kinds, np.int8)
            for i in np.flatnonzero(k == REJECTED).tolist():
                routes[i].payload = payloads[i]
                out.reject(i, routes[i])
            meters = np.flatnonzero(k == METER).tolist()
            rooms = np.flatnonzero(k == TELEMETRY).tolist()
            slow = np.flatnonzero(k == SLOW).tolist()
        if meters:
            slow += self._meters(messages, meters, payloads, routes, out)
        if rooms:
            parts, more = decode_telemetry(self.registry, self._tank_index, rooms, [routes[i][1] for i in rooms],
                                           [routes[i][2] for i in rooms], _parsed(messages, rooms))
            out.room_parts(parts)
            slow += more
        for i in sorted(slow):
            self._decode_one(i, messages[i], routes[i], out)
        return out.batch(), out.rejects()

    def _meters(self, messages: Sequence[RawMessage], cand: list[int], payloads: list[bytes], routes: list,
                out: _Collected) -> list[int]:
        """Meter readings in bulk: single readings and batches apart; returns the positions for the schemas."""
        n = len(messages)
        cand_payloads = payloads if len(cand) == n else [payloads[i] for i in cand]
        parsed = _parsed(messages, cand)
        ids = list(map(dict.get, parsed, repeat("meter_id")))
        device_ids = [routes[i][2] for i in cand]
        # The same peek the schema path uses; the plain substring test runs in C over the whole group first.
        m = len(cand)
        peek = np.fromiter(map(operator.contains, cand_payloads, repeat(_READINGS)), bool, m)
        if peek.any():
            for j in np.flatnonzero(peek).tolist():
                peek[j] = _BATCH_KEY.search(cand_payloads[j]) is not None
        slow: list[int] = []
        if ids == device_ids and not peek.any():
            singles = (cand, parsed)
            batches: tuple[list[int], list[dict]] = ([], [])
        else:
            same = np.fromiter(map(operator.eq, ids, device_ids), bool, m)
            at = np.array(cand, np.int64)
            slow = at[~same].tolist()
            pick = [np.flatnonzero(same & ~peek).tolist(), np.flatnonzero(same & peek).tolist()]
            singles, batches = ((at[j].tolist(), list(map(parsed.__getitem__, j))) for j in pick)
        if singles[0]:
            slow += self._singles(singles[0], [routes[i][1] for i in singles[0]], singles[1], out)
        if batches[0]:
            slow += self._batches(batches[0], [routes[i][1] for i in batches[0]], batches[1], out)
        return slow

    # --- the fast path: meter readings ---------------------------------------------------------------------

    @staticmethod
    def _singles(positions: list[int], meters: list[int], dicts: list[dict], out: _Collected) -> list[int]:
        """Decodes single-reading messages in bulk; returns the positions the schemas must decide."""
        total, rev, flow = get(dicts, "total_m3"), get(dicts, "reverse_m3"), get(dicts, "flow_m3h")
        bad = np.zeros(len(dicts), bool)
        cols = {}
        for name, col, allowed in (("total_m3", total, NUM), ("reverse_m3", rev, NUM_OR_NONE),
                                   ("flow_m3h", flow, NUM_OR_NONE)):
            b = bad_types(col, allowed)
            if b is not None:
                bad |= b
            cols[name] = floats(col, b)
        # Messages that hold nothing but meter_id, ts and the registers (a count of their keys tells) carry no
        # status: its dozen column lookups are skipped. A message missing ts or total_m3 is refused anyway.
        bare = np.fromiter(map(len, dicts), np.int64, len(dicts)) == (
            3 + ~np.isnan(cols["reverse_m3"]) + ~np.isnan(cols["flow_m3h"]))
        st = _Status.absent(len(dicts)) if bare.all() else _Status(dicts)
        bad |= st.bad
        bad |= ~in_range(cols["total_m3"], 0, None, False)
        bad |= ~in_range(cols["reverse_m3"], 0, None, True)
        bad |= ~in_range(cols["flow_m3h"], None, None, True)
        ts_ns, ts_ok = _timestamps(get(dicts, "ts"))
        bad |= ~ts_ok
        good = ~bad
        order = np.array(positions, np.int64)
        meter = np.array(meters, np.int32)
        out.meters(order[good], MeterReadings(
            meter=meter[good], ts_ns=ts_ns[good], valve=st.valve[good],
            **{k: v[good] for k, v in cols.items()}, **{k: v[good] for k, v in st.cols.items()}))
        return order[bad].tolist()

    @staticmethod
    def _batches(positions: list[int], meters: list[int], dicts: list[dict], out: _Collected) -> list[int]:
        """Decodes batch messages in bulk: readings flattened into rows, status on each message's latest row."""
        st = _Status(dicts)
        bad = st.bad
        readings = get(dicts, "readings")
        lengths = np.fromiter((len(r) if type(r) is list else 0 for r in readings), np.int64, len(readings))
        bad |= (lengths < 1) | (lengths > _MAX_BATCH_READINGS)
        readings = [r if ok else [] for r, ok in zip(readings, (~bad).tolist(), strict=True)]
        lengths[bad] = 0
        rows = [r for rs in readings for r in rs]
        owner = np.repeat(np.arange(len(dicts)), lengths)
        row_bad = np.zeros(len(rows), bool)
        b = bad_types(rows, frozenset((dict,)))
        if b is not None:
            row_bad |= b
            rows = [{} if x else r for r, x in zip(rows, b.tolist(), strict=True)]
        cols = {}
        for name, allowed in (("total_m3", NUM), ("reverse_m3", NUM_OR_NONE), ("flow_m3h", NUM_OR_NONE)):
            if name == "flow_m3h" and (np.fromiter(map(len, rows), np.int64, len(rows)) ==
                                       2 + ~np.isnan(cols["reverse_m3"])).all():
                cols[name] = np.full(len(rows), np.nan)  # no row has a key beyond ts and the registers
                continue
            col = get(rows, name)
            b = bad_types(col, allowed)
            if b is not None:
                row_bad |= b
            cols[name] = floats(col, b)
        row_bad |= ~in_range(cols["total_m3"], 0, None, False)
        row_bad |= ~in_range(cols["reverse_m3"], 0, None, True)
        row_bad |= ~in_range(cols["flow_m3h"], None, None, True)
        ts_ns, ts_ok = _timestamps(get(rows, "ts"))
        row_bad |= ~ts_ok
        bad[owner[row_bad]] = True

        keep = ~bad[owner]
        owner, ts_ns = owner[keep], ts_ns[keep]
        cols = {k: v[keep] for k, v in cols.items()}
        n = len(ts_ns)
        good_msgs = np.flatnonzero(~bad)
        if n:
            # the latest reading of each message (the first of equal latest ones) carries its status
            starts = np.concatenate(([0], np.cumsum(lengths[good_msgs])[:-1]))
            seg_max = np.maximum.reduceat(ts_ns, starts)
            rank = np.where(ts_ns == seg_max[np.repeat(np.arange(len(good_msgs)), lengths[good_msgs])],
                            np.arange(n), n)
            latest = np.minimum.reduceat(rank, starts)
            status = {}
            for k, v in st.cols.items():
                col = np.full(n, np.nan)
                col[latest] = v[good_msgs]
                status[k] = col
            valve = np.full(n, -1, np.int8)
            valve[latest] = st.valve[good_msgs]
            order = np.array(positions, np.int64)
            meter = np.array(meters, np.int32)
            out.meters(order[owner], MeterReadings(meter=meter[owner], ts_ns=ts_ns, valve=valve, **cols, **status))
        return np.array(positions, np.int64)[bad].tolist()

    # --- the schema path: everything else, and whatever the fast path was not sure of -------------------

    _SCHEMAS: dict[Channel, Any] = {Channel.PUMPROOM_TELEMETRY: PumpRoomTelemetry,
                                     Channel.PUMPROOM_EVENT: PumpRoomEvent, Channel.METER_EVENT: MeterEvent}

    def _decode_one(self, pos: int, msg: RawMessage, route: tuple, out: _Collected) -> None:
        """One message through the pydantic schemas: refused with the first reason, or into the batch."""
        channel, idx, device_id, _ = route
        payload = msg.payload
        if len(payload) > MAX_PAYLOAD_BYTES:
            out.reject(pos, Reject(msg.topic, payload[:1024], f"payload of {len(payload)} bytes exceeds "
                                                              f"{MAX_PAYLOAD_BYTES}"))
            return
        try:
            if channel is Channel.METER_READING:
                # A batch carries "readings"; a single reading does not. Peek before validating.
                schema: Any = MeterBatch if _is_batch(payload) else MeterReading
            else:
                schema = self._SCHEMAS[channel]
            p = schema.model_validate_json(payload)
        except ValidationError as e:
            out.reject(pos, Reject(msg.topic, payload, _first_error(e)))
            return
        except (ValueError, RecursionError) as e:  # pragma: no cover - pydantic wraps most
            out.reject(pos, Reject(msg.topic, payload, f"unreadable payload: {e}"))
            return
        payload_id = p.meter_id if channel in (Channel.METER_READING, Channel.METER_EVENT) else p.room_id
        if payload_id != device_id:
            out.reject(pos, Reject(msg.topic, payload, f"payload id {payload_id!r} does not match topic id "
                                                       f"{device_id!r}"))
            return
        if channel is Channel.METER_READING:
            _meter_rows(pos, idx, p, out)
        elif channel is Channel.PUMPROOM_TELEMETRY:
            self._telemetry_rows(pos, msg, idx, device_id, p, out)
        else:
            self._event(pos, msg, channel, idx, device_id, p, out)

    def _telemetry_rows(self, pos: int, msg: RawMessage, idx: int, device_id: str, p: PumpRoomTelemetry,
                        out: _Collected) -> None:
        reg = self.registry
        t = _ns(p.ts)
        tank_rows = []
        for tk in p.tanks:
            ti = reg.tanks.index.get(tk.tank_id, -1)
            if ti < 0 or reg.tanks.room[ti] != idx:
                out.reject(pos, Reject(msg.topic, msg.payload, f"tank {tk.tank_id!r} is not registered to pump "
                                                               f"room {device_id!r}", UNKNOWN_DEVICE))
                return
            tank_rows.append((ti, tk))
        tanks, rooms, pumps = out.tanks, out.rooms, out.pumps
        for ti, tk in tank_rows:
            tanks["tank"].append(ti)
            tanks["ts_ns"].append(t)
            tanks["level_m"].append(_nan(tk.level_m))
            tanks["free_chlorine_mg_l"].append(_nan(tk.free_chlorine_mg_l))
            tanks["turbidity_ntu"].append(_nan(tk.turbidity_ntu))
            tanks["ph"].append(_nan(tk.ph))
            out.tank_pos.append(pos)
        if p.outlet_pressure_mpa is not None or p.door_open is not None or not (p.tanks or p.pumps):
            rooms["room"].append(idx)
            rooms["ts_ns"].append(t)
            rooms["outlet_pressure_mpa"].append(_nan(p.outlet_pressure_mpa))
            rooms["door_open"].append(_flag(p.door_open))
            out.room_pos.append(pos)
        for pu in p.pumps:
            pumps["room"].append(idx)
            pumps["pump_id"].append(pu.pump_id)
            pumps["ts_ns"].append(t)
            pumps["running"].append(_flag(pu.running))
            pumps["current_a"].append(_nan(pu.current_a))
            out.pump_pos.append(pos)

    def _event(self, pos: int, msg: RawMessage, channel: Channel, idx: int, device_id: str, p: Any,
               out: _Collected) -> None:
        reg = self.registry
        fields = p.model_dump(exclude_none=True, exclude={"ts", "type", "meter_id", "room_id"})
        if channel is Channel.PUMPROOM_EVENT:
            tank_id = fields.get("tank_id")
            if tank_id is not None:
                ti = reg.tanks.index.get(tank_id, -1)
                if ti < 0 or reg.tanks.room[ti] != idx:
                    out.reject(pos, Reject(msg.topic, msg.payload, f"tank {tank_id!r} is not registered to "
                                                                   f"pump room {device_id!r}", UNKNOWN_DEVICE))
                    return
            device, district = "pumproom", reg.rooms.district[idx]
        else:
            device, district = "meter", reg.meters.district[idx]
        out.events.append(DeviceEvent(device, idx, device_id, district, _ns(p.ts), p.type, fields))


def _meter_rows(pos: int, idx: int, p: MeterReading | MeterBatch, out: _Collected) -> None:
    """A validated reading or batch as rows; the status fields on its latest reading."""
    if isinstance(p, MeterBatch):
        ts = [_ns(r.ts) for r in p.readings]
        latest = ts.index(max(ts))  # the first of equal latest readings carries the status
        rows = p.readings
        total = [r.total_m3 for r in rows]
        rev = [_nan(r.reverse_m3) for r in rows]
        flow = [_nan(r.flow_m3h) for r in rows]
    else:
        ts, latest = [_ns(p.ts)], 0
        total, rev, flow = [p.total_m3], [_nan(p.reverse_m3)], [_nan(p.flow_m3h)]
    n = len(ts)
    status = {k: np.full(n, np.nan) for k in ("rsrp_dbm", "snr_db", "ecl", "battery_v", "balance_cny")}
    sig = p.signal
    if sig is not None:
        status["rsrp_dbm"][latest] = _nan(sig.rsrp_dbm)
        status["snr_db"][latest] = _nan(sig.snr_db)
        status["ecl"][latest] = _nan(sig.ecl)
    status["battery_v"][latest] = _nan(p.battery_v)
    status["balance_cny"][latest] = _nan(p.balance_cny)
    valve = np.full(n, -1, np.int8)
    valve[latest] = -1 if p.valve is None else VALVE_CODES.get(p.valve, 2)
    out.meters(np.full(n, pos, np.int64), MeterReadings(
        meter=np.full(n, idx, np.int32), ts_ns=np.array(ts, np.int64),
        total_m3=np.array(total, np.float64), reverse_m3=np.array(rev, np.float64),
        flow_m3h=np.array(flow, np.float64), valve=valve, **status))


class _Collected:
    """What one decode call produced; meter rows and rejects come back in message order."""

    def __init__(self, messages: Sequence[RawMessage], limits: _MeterLimits) -> None:
        self._messages = messages
        self._limits = limits
        self._meter_parts: list[tuple[np.ndarray, MeterReadings]] = []
        self._rejects: list[tuple[int, Reject]] = []
        self.tanks: dict[str, list] = {k: [] for k in TankReadings.dtypes}
        self.rooms: dict[str, list] = {k: [] for k in RoomReadings.dtypes}
        self.pumps: dict[str, list] = {k: [] for k in PumpReadings.dtypes}
        self.tank_pos: list[int] = []  # the message position of each row above
        self.room_pos: list[int] = []
        self.pump_pos: list[int] = []
        self._room_parts: RoomParts | None = None
        self.events: list[DeviceEvent] = []

    def room_parts(self, parts: RoomParts | None) -> None:
        self._room_parts = parts

    def reject(self, pos: int, r: Reject) -> None:
        self._rejects.append((pos, r))

    def meters(self, order: np.ndarray, rows: MeterReadings) -> None:
        """Rows decoded from the messages at positions `order`; a message with a row beyond its meter's limits is
        refused whole (as the schemas refuse a batch with one bad reading)."""
        if not len(rows):
            return
        bad = self._limits.bad_rows(rows)
        if bad is not None:
            first = {}  # message position -> its first bad row
            for i in np.flatnonzero(bad).tolist():
                first.setdefault(int(order[i]), i)
            for pos, i in first.items():
                msg = self._messages[pos]
                self.reject(pos, Reject(msg.topic, msg.payload, self._limits.reason(rows, i)))
            keep = ~np.isin(order, np.fromiter(first, np.int64, len(first)))
            order, rows = order[keep], rows.take(keep)
            if not len(rows):
                return
        self._meter_parts.append((order, rows))

    def rejects(self) -> list[Reject]:
        self._rejects.sort(key=lambda x: x[0])
        return [r for _, r in self._rejects]

    def batch(self) -> Batch:
        parts = self._meter_parts
        if not parts:
            meters = MeterReadings.empty()
        elif len(parts) == 1:
            meters = parts[0][1]
        else:
            meters = MeterReadings.concat([m for _, m in parts])
            order = np.concatenate([o for o, _ in parts])
            meters = meters.take(np.argsort(order, kind="stable"))
        f = self._room_parts
        return Batch(
            meters=meters,
            tanks=_merge(TankReadings, self.tanks, self.tank_pos, f and f.tanks, f and f.tank_pos),
            rooms=_merge(RoomReadings, self.rooms, self.room_pos, f and f.rooms, f and f.room_pos),
            pumps=_merge(PumpReadings, self.pumps, self.pump_pos, f and f.pumps, f and f.pump_pos),
            events=self.events,
        )


def _merge(table: Any, cols: dict[str, list], pos: list[int], fast: Any, fast_pos: np.ndarray | None) -> Any:
    """The rows of the schema path (columns of lists) and of the fast path, in the order of their messages."""
    slow = table.from_columns(**cols) if pos else None
    if fast is None or not len(fast):
        return slow if slow is not None else table.empty()
    if slow is None:
        return fast
    order = np.concatenate([np.array(pos, np.int64), fast_pos])
    return table.concat([slow, fast]).take(np.argsort(order, kind="stable"))

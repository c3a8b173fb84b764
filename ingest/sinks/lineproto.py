"""InfluxDB line protocol for whole batches (docs/FORMATS.md): each device's escaped measurement and tags are
computed once, and each table is formatted in one pass of compiled f-strings over its numpy columns.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from devices.alerts import AlertEvent
from devices.batch import Batch, DeviceEvent
from devices.registry import Registry
from devices.time import NS

METER_READING = "meter_reading"
TANK = "tank"
PUMP_ROOM = "pump_room"
PUMP = "pump"
DEVICE_EVENT = "device_event"
ALERT = "alert"

# Valve codes of devices.batch.VALVE_CODES as the (quoted) value of the optional `valve` string field.
VALVE_TEXT = np.array(['"open"', '"closed"', '"unknown"'], dtype=object)

# InfluxDB 1.x/2.x unescape only `\,` `\=` `\ ` in names and tags (a lone backslash stays literal), and `\"` `\\`
# in string fields. Line breaks and tabs become the visible two-character escapes so that every point stays on
# exactly one line: the writer splits bodies on newlines to find rejected points.
_TAG = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})
_TRAILING_BACKSLASHES = re.compile(r"\\+$")
_SAFE_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _no_trailing_backslash(s: str) -> str:
    # Line protocol cannot end a name or tag with a backslash (it would escape the separator after it, and
    # InfluxDB does not unescape `\\` there). Such a backslash is written as U+FF3C, which looks the same.
    return _TRAILING_BACKSLASHES.sub(lambda m: "\uff3c" * len(m.group()), s) if s.endswith("\\") else s


def escape_measurement(name: str) -> str:
    return _no_trailing_backslash(name.translate(_MEASUREMENT))


def escape_tag(text: str) -> str:
    """A tag key, tag value or field key."""
    return _no_trailing_backslash(text.translate(_TAG))


def quote_string(text: str) -> str:
    """A string field value, with its double quotes."""
    return '"' + text.translate(_STRING) + '"'


def series_prefix(measurement: str, tags: dict[str, Any]) -> str:
    """`measurement,k=v,…` with tags sorted by key (InfluxDB's own order) and empty values left out."""
    parts = [escape_measurement(measurement)]
    for k in sorted(tags):
        v = tags[k]
        v = "" if v is None else str(v)
        if v:
            parts.append(f"{escape_tag(k)}={escape_tag(v)}")
    return ",".join(parts)


# --- the compiled row formatters -------------------------------------------------------------------------

FLOAT, INT, BOOL, STR = "float", "int", "bool", "str"
_BOOL_TEXT = np.array(["false", "true"], dtype=object)


@dataclass(frozen=True)
class FieldSpec:
    """One field of a table: its key, line-protocol type, and the batch column holding it."""

    key: str
    kind: str  # FLOAT | INT | BOOL (column: 1.0/0.0/NaN) | STR (column: int code into `text`, -1 absent)
    column: str
    text: Any = None  # STR only: numpy object array, code -> quoted line-protocol string

    def __post_init__(self) -> None:
        # Keys are spliced into generated source; they are this module's constants, never device input.
        if not _SAFE_FIELD.match(self.key):
            raise ValueError(f"field key {self.key!r} is not a plain identifier")


_FORMATTERS: dict[tuple, Callable[..., list[str]]] = {}


def _formatter(fields: Sequence[FieldSpec], as_text: Sequence[bool]) -> Callable[..., list[str]]:
    """A function (prefixes, timestamps, *columns) -> lines, for rows where all `fields` are present.

    An f-string in a comprehension is the fastest formatting CPython offers (about twice `str.format` or `%`);
    one is compiled per combination of present fields and cached. A column flagged in `as_text` arrives as
    finished text (booleans, strings, and numbers rendered once per distinct value).
    """
    sig = tuple((f.key, f.kind, t) for f, t in zip(fields, as_text, strict=True))
    fn = _FORMATTERS.get(sig)
    if fn is None:
        body = []
        for j, (f, text) in enumerate(zip(fields, as_text, strict=True)):
            sep = "," if j else ""
            if text or f.kind in (BOOL, STR):
                body.append(f"{sep}{f.key}={{v{j}}}")
            elif f.kind == FLOAT:
                body.append(f"{sep}{f.key}={{v{j}!r}}")
            else:
                body.append(f"{sep}{f.key}={{v{j}}}i")
        names = ", ".join(f"v{j}" for j in range(len(fields)))
        src = (f"lambda P, T, {names}: [f'{{p}} {''.join(body)} {{t}}\\n' "
               f"for p, {names}, t in zip(P, {names}, T)]")
        fn = eval(src, {"__builtins__": {"zip": zip}})  # noqa: S307 - source built from checked identifiers
        _FORMATTERS[sig] = fn
    return fn


def _present(spec: FieldSpec, col: np.ndarray) -> np.ndarray:
    if spec.kind == STR:
        return col >= 0
    return np.isfinite(col)


_SAMPLE = 2048
_MIN_DISTINCT_ROWS = 64  # below this, sorting costs more than it saves


def _few_distinct(col: np.ndarray) -> bool:
    """Whether a column repeats values enough that rendering each distinct value once pays for the sort.

    Sorting costs a fraction of one float repr per row, so a column pays off as soon as a quarter of a
    sample repeats (signal in 0.1 dB steps, 3-decimal flows, shared timestamps); unique registers do not.
    Groups of a few thousand rows are sampled whole: their status columns repeat just as much."""
    n = len(col)
    if n < _MIN_DISTINCT_ROWS:
        return False
    sample = col[:: max(1, n // _SAMPLE)]
    return len(np.unique(sample)) < 0.75 * len(sample)


def _by_distinct(col: np.ndarray, render: Callable[[np.ndarray], list[str]]) -> list[str]:
    # Floats are told apart by their bits, so -0.0 keeps its own text instead of sharing 0.0's.
    keys = col.view(np.int64) if col.dtype == np.float64 else col
    uniq, inverse = np.unique(keys, return_inverse=True)
    if keys is not col:
        uniq = uniq.view(np.float64)
    return np.array(render(uniq), dtype=object)[inverse].tolist()


def _reprs(col: np.ndarray) -> list[str]:
    text = _float_text(col)
    return text if text is not None else list(map(repr, col.tolist()))


def _strs(col: np.ndarray) -> list[str]:
    return list(map(str, col.tolist()))


def _int_fields(col: np.ndarray) -> list[str]:
    return [f"{v}i" for v in col.tolist()]


# Floats with at most 4 decimals and below 1e5 (registers, flows, balances as devices send them) are written
# from tables of digit strings: that is exactly repr's text (the shortest digits that read back as x, in
# positional notation), and repr costs more than everything else in a line. Other values keep repr.
_DEC = 4
_DEC_SCALE = 10.0**_DEC
# Below 10**(15 - _DEC) distinct 4-decimal numbers are distinct doubles, so no shorter text reads back as x.
_DEC_MAX = 10**5


@functools.cache
def _digit_tables() -> tuple[np.ndarray, np.ndarray]:
    """Integer parts "0".."99999" and fractions ".0", ".0001", … ".9999" (trailing zeros dropped), as objects."""
    ints = np.array([str(i) for i in range(_DEC_MAX)], dtype=object)
    fracs = np.array(["." + (f"{i:0{_DEC}d}".rstrip("0") or "0") for i in range(10**_DEC)], dtype=object)
    return ints, fracs


def _float_text(col: np.ndarray) -> list[str] | None:
    """repr of each (finite) value as a list of str, or None when too few values fit the tables."""
    mag = np.abs(col)
    k = np.rint(np.minimum(mag, _DEC_MAX) * _DEC_SCALE)  # clamped: no overflow for huge values
    ok = (mag < _DEC_MAX) & (k / _DEC_SCALE == mag)
    n_ok = int(np.count_nonzero(ok))
    if n_ok * 2 < len(col):
        return None
    q, f = np.divmod(np.where(ok, k, 0).astype(np.int64), 10**_DEC)
    ints, fracs = _digit_tables()
    text = ints[q] + fracs[f]
    neg = np.signbit(col)  # -0.0 too, as repr writes it
    if neg.any():
        text[neg] = "-" + text[neg]
    out = text.tolist()
    if n_ok < len(col):
        bad = ~ok
        for i, v in zip(np.flatnonzero(bad).tolist(), col[bad].tolist(), strict=True):
            out[i] = repr(v)
    return out


def _values(spec: FieldSpec, col: np.ndarray) -> tuple[list, bool]:
    """The column as a list for the formatter, and whether it is already text.

    Float repr is the dominant cost of encoding (shortest round-trip digits); signal, battery, reverse
    register and timestamps repeat a lot within a batch, so those are rendered once per distinct value."""
    if spec.kind == FLOAT:
        if _few_distinct(col):
            return _by_distinct(col, _reprs), True
        text = _float_text(col)
        if text is not None:
            return text, True
        return col.tolist(), False
    if spec.kind == INT:
        ints = col.astype(np.int64)
        if _few_distinct(ints):
            return _by_distinct(ints, _int_fields), True
        return ints.tolist(), False
    if spec.kind == BOOL:
        return _BOOL_TEXT[(col != 0).astype(np.intp)].tolist(), True
    return spec.text[col.astype(np.intp)].tolist(), True


def _timestamps(ts_ns: np.ndarray) -> list:
    return _by_distinct(ts_ns, _strs) if _few_distinct(ts_ns) else ts_ns.tolist()


def _format_rows(prefixes: list, ts_ns: np.ndarray, specs: Sequence[FieldSpec],
                 columns: Sequence[np.ndarray]) -> list[str]:
    values = [_values(s, c) for s, c in zip(specs, columns, strict=True)]
    fn = _formatter(specs, [text for _, text in values])
    return fn(prefixes, _timestamps(ts_ns), *(v for v, _ in values))


def encode_table(prefixes: np.ndarray, ts_ns: np.ndarray, specs: Sequence[FieldSpec],
                 columns: Sequence[np.ndarray]) -> list[str]:
    """Lines for one table in row order. `prefixes` holds each row's series prefix (object array); a field
    that is NaN (or a negative code) is left out of its row, and a row with no field at all is skipped."""
    n = len(ts_ns)
    if n == 0:
        return []
    masks = [_present(s, c) for s, c in zip(specs, columns, strict=True)]
    full = [bool(m.all()) for m in masks]
    if all(full):
        return _format_rows(prefixes.tolist(), ts_ns, specs, columns)
    # Group rows by which fields they carry: one formatter per group, then put the lines back in row order.
    sparse = [j for j, f in enumerate(full) if not f]
    code = np.zeros(n, dtype=np.int64)
    for bit, j in enumerate(sparse):
        code |= masks[j].astype(np.int64) << bit
    always = [j for j, f in enumerate(full) if f]
    out = np.empty(n, dtype=object)
    keep = np.ones(n, dtype=bool)
    for c in np.unique(code).tolist():
        rows = np.flatnonzero(code == c)
        chosen = sorted(always + [j for bit, j in enumerate(sparse) if c >> bit & 1])
        if not chosen:
            keep[rows] = False
            continue
        out[rows] = _format_rows(prefixes[rows].tolist(), ts_ns[rows], [specs[j] for j in chosen],
                                 [columns[j][rows] for j in chosen])
    return out[keep].tolist() if not keep.all() else out.tolist()


METER_FIELDS = (
    FieldSpec("total_m3", FLOAT, "total_m3"),
    FieldSpec("reverse_m3", FLOAT, "reverse_m3"),
    FieldSpec("flow_m3h", FLOAT, "flow_m3h"),
    FieldSpec("rsrp_dbm", FLOAT, "rsrp_dbm"),
    FieldSpec("snr_db", FLOAT, "snr_db"),
    FieldSpec("ecl", INT, "ecl"),
    FieldSpec("battery_v", FLOAT, "battery_v"),
    FieldSpec("balance_cny", FLOAT, "balance_cny"),
    FieldSpec("valve", STR, "valve", VALVE_TEXT),
)
TANK_FIELDS = tuple(FieldSpec(k, FLOAT, k) for k in ("level_m", "free_chlorine_mg_l", "turbidity_ntu", "ph"))
ROOM_FIELDS = (FieldSpec("outlet_pressure_mpa", FLOAT, "outlet_pressure_mpa"),
               FieldSpec("door_open", BOOL, "door_open"))
PUMP_FIELDS = (FieldSpec("running", BOOL, "running"), FieldSpec("current_a", FLOAT, "current_a"))


def _field_value(v: Any) -> str | None:
    """A device-event field as line protocol text; numbers are always floats so a field keeps one type."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        x = float(v)
        return repr(x) if math.isfinite(x) else None
    if isinstance(v, str):
        return quote_string(v)
    return quote_string(orjson.dumps(v, default=str).decode())


def _flatten(fields: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in fields.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}_")
        else:
            out.append((f"{prefix}{k}", v))
    return out


class LineEncoder:
    """Turns batches and alert events into line protocol, with the registry's tags (docs/FORMATS.md)."""

    def __init__(self, registry: Registry):
        self.registry = registry
        m, r, t = registry.meters, registry.rooms, registry.tanks
        self.meter_prefix = np.array([
            series_prefix(METER_READING, {"meter_id": mid, "district": d, "building_id": bid, "role": role})
            for mid, d, bid, role in zip(m.ids.tolist(), m.district.tolist(), m.building_id.tolist(),
                                         m.role.tolist(), strict=True)], dtype=object)
        room_district = r.district.tolist()
        self.room_prefix = np.array([series_prefix(PUMP_ROOM, {"room_id": rid, "district": d})
                                     for rid, d in zip(r.ids.tolist(), room_district, strict=True)], dtype=object)
        self.tank_prefix = np.array([
            series_prefix(TANK, {"tank_id": tid, "room_id": r.ids[ri], "district": room_district[ri]})
            for tid, ri in zip(t.ids.tolist(), t.room.tolist(), strict=True)], dtype=object)
        self._pump_prefix: dict[tuple[int, str], str] = {}

    def _pump_prefixes(self, rooms: np.ndarray, pump_ids: np.ndarray) -> np.ndarray:
        cache = self._pump_prefix
        if len(cache) > 100_000:  # pump ids come from devices; a misbehaving one must not grow this forever
            cache.clear()
        r = self.registry.rooms
        out = []
        for room, pid in zip(rooms.tolist(), pump_ids.tolist(), strict=True):
            key = (room, pid)
            p = cache.get(key)
            if p is None:
                p = series_prefix(PUMP, {"room_id": r.ids[room], "pump_id": pid, "district": r.district[room]})
                cache[key] = p
            out.append(p)
        return np.array(out, dtype=object)

    def lines(self, batch: Batch, unit_ns: int = 1) -> list[str]:
        """Every point of the batch as one line each (ending in a newline), tables in order; timestamps in units
        of `unit_ns` nanoseconds (1: nanoseconds, 10**9: seconds, for a batch of whole seconds)."""
        out: list[str] = []
        m = batch.meters
        if len(m):
            out += encode_table(self.meter_prefix[m.meter], _in_units(m.ts_ns, unit_ns), METER_FIELDS,
                                [getattr(m, s.column) for s in METER_FIELDS])
        t = batch.tanks
        if len(t):
            out += encode_table(self.tank_prefix[t.tank], _in_units(t.ts_ns, unit_ns), TANK_FIELDS,
                                [getattr(t, s.column) for s in TANK_FIELDS])
        r = batch.rooms
        if len(r):
            out += encode_table(self.room_prefix[r.room], _in_units(r.ts_ns, unit_ns), ROOM_FIELDS,
                                [getattr(r, s.column) for s in ROOM_FIELDS])
        p = batch.pumps
        if len(p):
            out += encode_table(self._pump_prefixes(p.room, p.pump_id), _in_units(p.ts_ns, unit_ns), PUMP_FIELDS,
                                [getattr(p, s.column) for s in PUMP_FIELDS])
        out += [line for e in batch.events if (line := self.event_line(e, unit_ns))]
        return out

    def encode(self, batch: Batch) -> bytes:
        return "".join(self.lines(batch)).encode()

    def encode_precise(self, batch: Batch) -> tuple[bytes, str]:
        """The batch and its timestamp precision: "s" when every timestamp is a whole second (as devices send
        them), "ns" otherwise. Second-precision lines are 9 bytes shorter, and InfluxDB parses a body by the byte
        (about a tenth less of its CPU for daily batches)."""
        whole = all(not (t.ts_ns % NS).any() for t in (batch.meters, batch.tanks, batch.rooms, batch.pumps))
        if whole and all(e.ts_ns % NS == 0 for e in batch.events):
            return "".join(self.lines(batch, NS)).encode(), "s"
        return self.encode(batch), "ns"

    @staticmethod
    def event_line(e: DeviceEvent, unit_ns: int = 1) -> str | None:
        """A device event: fields from its payload (nested objects flattened with `_`), plus `device`."""
        prefix = series_prefix(DEVICE_EVENT, {"device_id": e.device_id, "type": e.type, "district": e.district})
        # `device` (meter | pumproom) is always there, so an event that carried nothing else is still stored.
        parts = [f"device={quote_string(e.device)}"]
        for k, v in sorted(_flatten(e.fields)):
            if k == "device":
                continue
            text = _field_value(v)
            if text is not None:
                parts.append(f"{escape_tag(k)}={text}")
        return f"{prefix} {','.join(parts)} {int(e.ts_ns) // unit_ns}\n"

    @staticmethod
    def alert_lines(events: Sequence[AlertEvent]) -> list[str]:
        out = []
        taken: set[tuple[str, int]] = set()
        for a in events:
            prefix = series_prefix(ALERT, {"kind": a.kind, "severity": a.severity, "event": a.event,
                                           "district": a.district})
            # Several incidents of one kind can be raised by the same clock tick; same series and timestamp
            # would overwrite each other, so later ones move by a nanosecond. The order of events is
            # deterministic, so a re-write of the same events lands on the same points.
            ts = int(a.detected_at_ns)
            while (prefix, ts) in taken:
                ts += 1
            taken.add((prefix, ts))
            fields = (f"alert_id={quote_string(a.alert_id)},subject_id={quote_string(a.subject_id)},"
                      f"subject_type={quote_string(a.subject_type)},summary={quote_string(a.summary)}")
            out.append(f"{prefix} {fields} {ts}\n")
        return out

    def encode_alerts(self, events: Sequence[AlertEvent]) -> bytes:
        return "".join(self.alert_lines(events)).encode()


def _in_units(ts_ns: np.ndarray, unit_ns: int) -> np.ndarray:
    return ts_ns if unit_ns == 1 else ts_ns // unit_ns


def encode_alerts(events: Sequence[AlertEvent]) -> bytes:
    """Alert events as points of the `alert` measurement (no registry needed)."""
    return "".join(LineEncoder.alert_lines(events)).encode()

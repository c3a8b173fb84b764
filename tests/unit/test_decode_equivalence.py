"""The fast decoder accepts and refuses exactly what the pydantic schemas do, with the same reasons and values."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices.batch import NS, VALVE_CODES, Batch
from devices.messages import RawMessage
from devices.registry import Registry
from devices.schemas import MeterBatch, MeterReading
from devices.topics import TopicError, TopicLayout
from ingest.pipeline.decode import MAX_PAYLOAD_BYTES, Decoder
from tests.helpers import write_registry

LAYOUT = TopicLayout("water")
KNOWN = ("M000001", "M000002", "M000003", "M000000")
SETTINGS = settings(max_examples=int(os.environ.get('DECODE_EXAMPLES', 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def registry() -> Registry:
    with tempfile.TemporaryDirectory() as tmp:
        return Registry.load(write_registry(Path(tmp)))


# --- what devices might send ------------------------------------------------------------------------------

def _iso(y, mo, d, h, mi, s):
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


plain_ts = st.builds(_iso, st.integers(1999, 2100), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
                     st.integers(0, 59), st.integers(0, 59))
odd_ts = st.builds(_iso, st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
                   st.integers(0, 61), st.integers(0, 61))
common_suffix = st.sampled_from(["Z", "Z", "Z", "+08:00", "-05:30", "+00:00", "-00:00", "+23:59"])
odd_suffix = st.sampled_from(["+24:00", "z", "", "+0800", "+08", ".5Z", ".123456Z", ".1234567+01:00", " Z", "Z ",
                              "+08:60", "+8:00", "Z\n"])
good_ts = st.one_of(st.builds(str.__add__, plain_ts, common_suffix), st.builds(str.__add__, plain_ts, common_suffix),
                    st.integers(946_684_800 - 10, 4_102_444_800 + 10), st.floats(946_684_800, 4_102_444_800))
bad_ts = st.one_of(
    st.builds(str.__add__, plain_ts, odd_suffix),
    st.builds(str.__add__, odd_ts, common_suffix),
    st.builds(lambda s, sep: s.replace("T", sep), st.builds(str.__add__, plain_ts, common_suffix),
              st.sampled_from([" ", "t", "x", "_"])),
    st.integers(-(2**70), 2**70), st.floats(),
    st.sampled_from(["yesterday", "", "2026-11-22", "2026-W47-1T08:00:00Z", "20261122T080000Z",
                     "\uff12026-11-22T08:00:00Z", "2026-02-29T00:00:00Z", "2028-02-29T00:00:00Z",
                     "2026-11-22T08:00:00\u00e9", True, False, None]),
    st.text(max_size=25),
)
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8), st.sampled_from(["12", "1e3", "-0", "NaN", "true", "open"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)
# Values near the schema's bounds, now and then just outside them.
def edges(lo: float, hi: float | None = None):
    """Each bound, and just inside and just outside it."""
    vals = [lo, lo + 1e-9, lo - 1e-9, int(lo) - 1]
    if hi is not None:
        vals += [hi, hi - 1e-9, hi + 1e-9, int(hi) + 1]
    return st.sampled_from(vals)


register = st.one_of(edges(0), st.floats(0, 1e6), st.integers(0, 10**6), st.just(-0.0), st.floats(-1e-9, 0), st.just(-1))
anything = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**64 - 1))
signal = st.fixed_dictionaries({}, optional={
    "rsrp_dbm": st.one_of(edges(-200, 0), st.floats(-200, 0), st.integers(-200, 0), st.none(), st.floats(-210, 10)),
    "snr_db": st.one_of(edges(-50, 60), st.floats(-50, 60), st.none(), st.floats(-60, 70)),
    "ecl": st.one_of(st.sampled_from([-1, 0, 2, 3, 1.0]), st.integers(0, 2), st.none(), st.integers(-1, 3)),
    "extra": junk})
status_fields = {
    "signal": st.one_of(signal, st.none()), "battery_v": st.one_of(edges(0, 10), st.floats(0, 10), st.just(10), st.none(), st.floats(-1, 11)),
    "valve": st.sampled_from(["open", "closed", "unknown", "half", "", None]),
    "balance_cny": st.one_of(anything, st.none()), "status": st.one_of(st.lists(st.text(max_size=6), max_size=3),
                                                                       st.none()),
    "firmware": junk,
}
reading_fields = {"reverse_m3": st.one_of(register, st.none()), "flow_m3h": st.one_of(anything, st.none())}


def single(meter_id):
    return st.fixed_dictionaries({"meter_id": st.just(meter_id), "ts": good_ts, "total_m3": register},
                                 optional=status_fields | reading_fields)


def batch(meter_id):
    row = st.fixed_dictionaries({"ts": good_ts, "total_m3": register}, optional=reading_fields)
    return st.fixed_dictionaries({"meter_id": st.just(meter_id), "readings": st.lists(row, min_size=1, max_size=5)},
                                 optional=status_fields)


# A wrong value for a key: junk of any type, a number as a string, out of range, or a bad timestamp.
wrong = st.one_of(junk, junk.map(str), st.sampled_from([-1, -0.5, 11, 300, -300, 3, 1.0, 2.0, "", True, None, []]),
                  bad_ts)


@st.composite
def mutated(draw, payload: dict) -> dict:
    """The payload with up to two keys (anywhere in it) replaced by wrong values or removed."""
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        target = payload
        readings = payload.get("readings")
        rows = [r for r in readings if isinstance(r, dict)] if isinstance(readings, list) else []
        if rows and draw(st.booleans()):
            target = draw(st.sampled_from(rows))
        elif isinstance(payload.get("signal"), dict) and draw(st.booleans()):
            target = payload["signal"]
        keys = sorted(target) + ["meter_id", "ts", "total_m3", "signal", "readings", "ecl", "rsrp_dbm"]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(wrong)
    return payload


def _mangle(raw: bytes, how: str, at: int) -> bytes:
    at = at % (len(raw) + 1)
    if how == "truncate":
        return raw[:at]
    if how == "non_utf8":
        return raw[:at] + b"\xff\xfe" + raw[at:]
    if how == "nan":
        return raw.replace(b'"total_m3":', b'"total_m3":NaN,"x":', 1)
    if how == "duplicate":  # the same key twice: the last one wins, in both parsers
        return raw.replace(b"{", b'{"total_m3":-1,', 1)
    if how == "deep":
        return b"[" * 3000 + b"]" * 3000
    if how == "deep_field":
        return raw.replace(b"{", b'{"x":' + b"[" * 1100 + b"]" * 1100 + b",", 1)
    if how == "huge_number":
        return raw.replace(b'"total_m3":', b'"total_m3":1' + b"0" * 400 + b',"y":', 1)
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "whitespace":
        return b" \n\t" + raw + b"\r\n"
    if how == "lone_surrogate":
        return raw.replace(b"{", b'{"note":"\\ud800",', 1)
    if how == "readings_word":  # a single reading that mentions "readings" in a value is still a single reading
        return raw.replace(b"{", b'{"note":"readings",', 1)
    return raw


@st.composite
def message(draw) -> RawMessage:
    meter_id = draw(st.sampled_from(KNOWN))
    topic = LAYOUT.meter_reading("d01", meter_id)
    if draw(st.integers(0, 9)) == 0:  # unknown device, wrong district, other channels, malformed topics
        meter_id = draw(st.sampled_from(KNOWN + ("M999999",)))
        topic = draw(st.sampled_from([LAYOUT.meter_reading("d01", "M999999"), LAYOUT.meter_reading("d02", meter_id),
                                      LAYOUT.meter_event("d01", meter_id), LAYOUT.pumproom_telemetry("d01", "P0001"),
                                      f"water/d01/meter/{meter_id}", "other/d01/meter/M000001/reading"]))
    payload = draw(st.one_of(single(meter_id), single(meter_id), single(meter_id), batch(meter_id),
                             batch(meter_id), junk))
    if isinstance(payload, dict):
        payload = draw(mutated(payload))
        if draw(st.integers(0, 19)) == 0:  # a meter's payload on another meter's topic
            payload["meter_id"] = draw(st.sampled_from(KNOWN + ("", 7)))
    # json, not orjson: it writes integers beyond 64 bits too
    raw = json.dumps(payload, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["none"] * 30 + ["truncate", "non_utf8", "nan", "duplicate", "deep", "deep_field",
                                                 "huge_number", "bom", "whitespace", "lone_surrogate",
                                                 "readings_word"]))
    return RawMessage(topic, _mangle(raw, how, draw(st.integers(0, 400))))


messages = st.lists(message(), min_size=1, max_size=20)


# --- the comparison -----------------------------------------------------------------------------------------

def assert_same_batch(a: Batch, b: Batch) -> None:
    for table in ("meters", "tanks", "rooms", "pumps"):
        ta, tb = getattr(a, table), getattr(b, table)
        for name in type(ta).dtypes:
            x, y = getattr(ta, name), getattr(tb, name)
            assert x.dtype == y.dtype and x.shape == y.shape, (table, name)
            if x.dtype.kind == "f":
                # same numbers, same NaNs (absent), same sign of zero
                assert np.array_equal(x, y, equal_nan=True) and (np.signbit(x) == np.signbit(y)).all(), (table, name)
            else:
                assert (x == y).all(), (table, name, x, y)
    assert a.events == b.events


def reference_meter_rows(registry: Registry, msgs: list[RawMessage]) -> tuple[list[tuple], list[str]]:
    """Meter rows and refusal reasons straight from the pydantic models, written independently of ingest.pipeline.decode."""
    rows, reasons = [], []
    for m in msgs:
        try:
            t = LAYOUT.parse(m.topic)
        except TopicError:
            reasons.append("topic")
            continue
        idx = registry.meters.index.get(t.device_id, -1)
        if t.channel.value != "meter/reading" or idx < 0 or registry.meters.district[idx] != t.district:
            reasons.append("route")
            continue
        model = MeterBatch if re.search(rb'"readings"\s*:', m.payload) else MeterReading
        if len(m.payload) > MAX_PAYLOAD_BYTES:
            reasons.append("size")
            continue
        try:
            p = model.model_validate_json(m.payload)
        except ValidationError as e:
            reasons.append(str(e.errors()[0]["loc"]))
            continue
        if p.meter_id != t.device_id:
            reasons.append("id")
            continue
        readings = p.readings if isinstance(p, MeterBatch) else [p]
        top = registry.meters.register_max_m3[idx]
        pipe_m3h = 10.0 * math.pi * (registry.meters.pipe_dn_mm[idx] / 1000) ** 2 / 4 * 3600  # at 10 m/s
        if any(r.total_m3 >= top or (r.reverse_m3 or 0) >= top or abs(r.flow_m3h or 0) > pipe_m3h
               for r in readings):
            reasons.append("beyond the meter")
            continue
        ts = [int(r.ts.timestamp()) * NS + r.ts.microsecond * 1000 for r in readings]
        latest = ts.index(max(ts))
        nan = math.nan
        for k, r in enumerate(readings):
            sig = p.signal if k == latest and p.signal is not None else None
            status = k == latest
            rows.append((idx, ts[k], r.total_m3, nan if r.reverse_m3 is None else r.reverse_m3,
                         nan if r.flow_m3h is None else r.flow_m3h,
                         nan if sig is None or sig.rsrp_dbm is None else sig.rsrp_dbm,
                         nan if sig is None or sig.snr_db is None else sig.snr_db,
                         nan if sig is None or sig.ecl is None else float(sig.ecl),
                         nan if not status or p.battery_v is None else p.battery_v,
                         nan if not status or p.balance_cny is None else p.balance_cny,
                         -1 if not status or p.valve is None else VALVE_CODES.get(p.valve, 2)))
    return rows, reasons


def rows_of(batch: Batch) -> list[tuple]:
    m = batch.meters
    cols = [m.meter, m.ts_ns, m.total_m3, m.reverse_m3, m.flow_m3h, m.rsrp_dbm, m.snr_db, m.ecl, m.battery_v,
            m.balance_cny, m.valve]
    return list(zip(*(c.tolist() for c in cols), strict=True))


def same_row(a: tuple, b: tuple) -> bool:
    return all((x == y and math.copysign(1, x) == math.copysign(1, y)) or (x != x and y != y)
               for x, y in zip(a, b, strict=True))


@SETTINGS
@given(msgs=messages)
def test_fast_path_matches_the_schemas(registry, msgs):
    fast_batch, fast_rejects = Decoder(registry, LAYOUT).decode(msgs)
    ref_batch, ref_rejects = Decoder(registry, LAYOUT, fast=False).decode(msgs)
    assert [(r.topic, r.payload, r.reason, r.category) for r in fast_rejects] == \
           [(r.topic, r.payload, r.reason, r.category) for r in ref_rejects]
    assert_same_batch(fast_batch, ref_batch)

    rows, reasons = reference_meter_rows(registry, msgs)
    got = rows_of(fast_batch)
    assert len(got) == len(rows) and all(same_row(a, b) for a, b in zip(got, rows, strict=True))
    assert len(fast_rejects) == len(reasons)


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(st.builds(RawMessage, st.one_of(st.text(max_size=40), st.sampled_from(
    [LAYOUT.meter_reading("d01", "M000001"), LAYOUT.meter_reading("d01", "M000002")])), st.binary(max_size=200)),
    max_size=8))
def test_decode_never_raises_on_arbitrary_bytes(registry, msgs):
    batch, rejects = Decoder(registry, LAYOUT).decode(msgs)
    # every message either became readings or was refused with a reason
    assert len(rejects) + len(batch.meters) >= len(msgs) - sum(b'"readings"' in m.payload for m in msgs)
    assert all(r.reason for r in rejects)


def test_common_timestamp_forms_take_the_fast_path_with_exact_values(registry):
    s = 1795334400 * NS
    forms = {"2026-11-22T08:00:00Z": s, "2026-11-22T16:00:00+08:00": s, "2026-11-22T02:30:00-05:30": s,
             "2028-02-29T23:59:59Z": 1835481599 * NS, "2026-11-22T08:00:00.25Z": s + NS // 4,
             "2026-11-22 08:00:00Z": s, 1795334400: s}
    topic = LAYOUT.meter_reading("d01", "M000001")
    msgs = [RawMessage(topic, orjson.dumps({"meter_id": "M000001", "ts": ts, "total_m3": 1.0})) for ts in forms]
    batch, rejects = Decoder(registry, LAYOUT).decode(msgs)
    assert rejects == []
    assert batch.meters.ts_ns.tolist() == list(forms.values())


@pytest.mark.parametrize("ts", ["2026-02-29T00:00:00Z", "2026-11-22T24:00:00Z", "2026-11-22T08:00:60Z",
                                "2100-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2000-01-01T00:30:00+01:00",
                                "2026-11-22T08:00:00+24:00", "2026-11-22T08:00:00"])
def test_impossible_or_out_of_range_timestamps_are_refused_like_the_schemas_do(registry, ts):
    msg = RawMessage(LAYOUT.meter_reading("d01", "M000001"),
                     orjson.dumps({"meter_id": "M000001", "ts": ts, "total_m3": 1.0}))
    fast = Decoder(registry, LAYOUT).decode([msg])
    ref = Decoder(registry, LAYOUT, fast=False).decode([msg])
    assert len(fast[0].meters) == 0 and len(fast[1]) == 1
    assert fast[1][0].reason == ref[1][0].reason and "ts" in fast[1][0].reason


# --- every field against its edge values, deterministically -------------------------------------------------

EDGE_VALUES = [
    None, True, False, 0, -0.0, 1, 1.0, 2, 2.0, 3, -1, -1e-9, 1e-9, 10, 10.000000001, 11, 60, 60.000000001, -50,
    -50.000000001, -200, -200.000000001, 2**53 + 1, 2**63, 2**64 - 1, 10**30, 1e308, -1e308, "1", "1.5", "open",
    "", [], ["a"], [1], {}, {"a": 1}, [{}],
    946_684_800, 946_684_799, 4_102_444_799, 4_102_444_800, 946_684_800.5, 1_795_334_400.123456789,
    "2026-11-22T08:00:00Z", "2026-11-22T02:00:00Z", "2026-00-22T08:00:00Z", "2026-13-22T08:00:00Z", "2026-11-00T08:00:00Z",
    "2026-11-31T08:00:00Z", "2026-02-29T08:00:00Z", "2028-02-29T08:00:00Z", "2100-02-29T08:00:00Z",
    "2026-11-22T24:00:00Z", "2026-11-22T23:60:00Z", "2026-11-22T23:59:60Z", "1999-12-31T23:59:59Z",
    "2000-01-01T00:00:00Z", "2099-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2000-01-01T07:59:59+08:00",
    "2000-01-01T08:00:00+08:00", "2099-12-31T23:59:59-00:01", "2026-11-22T08:00:00+23:59",
    "2026-11-22T08:00:00+24:00", "2026-11-22T08:00:00+08:60", "2026-11-22T08:00:00-08:00",
    "2026-11-22T08:00:00z", "2026-11-22T08:00:00", "2026-11-22 08:00:00Z", "2026-11-22T08:00:00.5Z",
    "0000-11-22T08:00:00Z", "2026-11-22T08:00:00Ｚ", "2026/11/22T08:00:00Z", "2026-11-22T08:00:00+08:00Z",
]
SINGLE_PATHS = ["meter_id", "ts", "total_m3", "reverse_m3", "flow_m3h", "signal", "signal.rsrp_dbm",
                "signal.snr_db", "signal.ecl", "battery_v", "valve", "balance_cny", "status", "status.0"]
BATCH_PATHS = ["readings", "readings.0", "readings.1.ts", "readings.1.total_m3", "readings.0.reverse_m3",
               "readings.2.flow_m3h", "signal.ecl", "battery_v", "valve", "status"]
MISSING = object()


def _with(payload: dict, path: str, value) -> dict:
    p = json.loads(json.dumps(payload))
    *parents, leaf = path.split(".")
    target = p
    for k in parents:
        target = target[int(k)] if isinstance(target, list) else target[k]
    if isinstance(target, list):
        target[int(leaf)] = None if value is MISSING else value
    elif value is MISSING:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return p


def edge_messages() -> list[RawMessage]:
    status = {"signal": {"rsrp_dbm": -95.0, "snr_db": 6.5, "ecl": 1}, "battery_v": 3.6, "valve": "open",
              "balance_cny": 42.5, "status": ["ok"]}
    single_p = {"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "total_m3": 12.5, "reverse_m3": 0.25,
                "flow_m3h": 0.1} | status
    batch_p = {"meter_id": "M000002", "readings": [
        {"ts": f"2026-11-22T0{h}:00:00Z", "total_m3": 10 + h, "reverse_m3": 0.0, "flow_m3h": 0.5} for h in range(3)]
    } | status
    out = []
    for topic, base, paths in ((LAYOUT.meter_reading("d01", "M000001"), single_p, SINGLE_PATHS),
                               (LAYOUT.meter_reading("d01", "M000002"), batch_p, BATCH_PATHS)):
        for path in paths:
            for v in [*EDGE_VALUES, MISSING]:
                out.append(RawMessage(topic, json.dumps(_with(base, path, v), ensure_ascii=False).encode()))
    return out


def test_every_field_at_its_edges_decodes_like_the_schemas(registry):
    msgs = edge_messages()
    fast_batch, fast_rejects = Decoder(registry, LAYOUT).decode(msgs)
    ref_batch, ref_rejects = Decoder(registry, LAYOUT, fast=False).decode(msgs)
    assert [(r.payload, r.reason) for r in fast_rejects] == [(r.payload, r.reason) for r in ref_rejects]
    assert_same_batch(fast_batch, ref_batch)
    # both accepted and refused cases are in the table (registers and flows beyond the meter among the refused)
    assert 0.2 < len(fast_rejects) / len(msgs) < 0.85
    for m in msgs:  # alone, too: a message's neighbours must not change how it is read
        one_batch, one_rejects = Decoder(registry, LAYOUT).decode([m])
        ref_batch, ref_rejects = Decoder(registry, LAYOUT, fast=False).decode([m])
        assert [r.reason for r in one_rejects] == [r.reason for r in ref_rejects]
        assert_same_batch(one_batch, ref_batch)

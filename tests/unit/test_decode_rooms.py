"""Pump-room telemetry through the fast path reads exactly as through the pydantic schemas: the same tank, room and
pump rows in the same order, and the same refusals with the same reasons; and a capture file gives the decoder
the same messages whatever the layout of its lines."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.decode import Decoder
from ingest.sources.capture import CaptureSource
from tests.helpers import ROOMS, TANKS, write_registry
from tests.unit.test_decode_equivalence import (
    EDGE_VALUES,
    MISSING,
    SETTINGS,
    _mangle,
    _with,
    assert_same_batch,
    good_ts,
    junk,
    wrong,
)

LAYOUT = TopicLayout("water")
ROOM_IDS = ("P0001", "P0002")
TANK_IDS = ("P0001-T1", "P0001-T2", "P0002-T1", "P0009-T1")  # the last is nobody's; P0002-T1 is not P0001's


@pytest.fixture(scope="module")
def registry() -> Registry:
    with tempfile.TemporaryDirectory() as tmp:
        return Registry.load(write_registry(Path(tmp), pump_rooms=ROOMS + "P0002,d01,2 Songhua Road,Unit 3,DWA\n",
                                            tanks=TANKS + "P0002-T1,P0002,20,2026-05-01\n"))


def _num(lo=None, hi=None):
    return st.one_of(st.none(), st.floats(lo if lo is not None else -1e6, hi if hi is not None else 1e6),
                     st.integers(-5, 20), st.sampled_from([-1e-9, 0, -0.0, 14, 14.000001, True]))


tank = st.fixed_dictionaries({"tank_id": st.sampled_from(TANK_IDS)}, optional={
    "level_m": _num(), "free_chlorine_mg_l": _num(0), "turbidity_ntu": _num(0), "ph": _num(0, 14), "extra": junk})
pump = st.fixed_dictionaries({"pump_id": st.one_of(st.sampled_from(["1", "2", "P-3"]), st.text(max_size=34))},
                             optional={"running": st.one_of(st.booleans(), st.none(), st.just(1)),
                                       "current_a": _num(0), "extra": junk})


def telemetry(room_id: str):
    return st.fixed_dictionaries({"room_id": st.just(room_id), "ts": good_ts}, optional={
        "outlet_pressure_mpa": _num(), "door_open": st.one_of(st.booleans(), st.none(), st.just(0)),
        "tanks": st.one_of(st.lists(tank, max_size=3), st.none()),
        "pumps": st.one_of(st.lists(pump, max_size=3), st.none()), "note": junk})


@st.composite
def room_message(draw) -> RawMessage:
    room_id = draw(st.sampled_from(ROOM_IDS))
    payload = draw(telemetry(room_id))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        items = [x for k in ("tanks", "pumps") if isinstance(payload.get(k), list) for x in payload[k]
                 if isinstance(x, dict)]  # an earlier round may have put a wrong value in the list
        target = draw(st.sampled_from(items)) if items and draw(st.booleans()) else payload
        key = draw(st.sampled_from(sorted(target) + ["room_id", "ts", "tanks", "pumps", "tank_id", "pump_id"]))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(wrong)
    raw = json.dumps(payload).encode()
    how = draw(st.sampled_from(["none"] * 20 + ["truncate", "duplicate", "whitespace", "huge_number"]))
    kind = draw(st.integers(0, 9))
    if kind == 0:  # its neighbours: meter readings and events, which take their own paths
        return RawMessage(LAYOUT.meter_reading("d01", "M000001"),
                          orjson.dumps({"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "total_m3": 5.0}))
    if kind == 1:
        return RawMessage(LAYOUT.pumproom_event("d01", room_id),
                          orjson.dumps({"room_id": room_id, "ts": 1795334400, "type": "inspection"}))
    return RawMessage(LAYOUT.pumproom_telemetry("d01", room_id),
                      _mangle(raw, how, draw(st.integers(0, 300))).replace(b"total_m3", b"level_m"))


def _same(registry, msgs) -> None:
    fast_batch, fast_rejects = Decoder(registry, LAYOUT).decode(msgs)
    ref_batch, ref_rejects = Decoder(registry, LAYOUT, fast=False).decode(msgs)
    assert [(r.topic, r.payload, r.reason, r.category) for r in fast_rejects] == \
           [(r.topic, r.payload, r.reason, r.category) for r in ref_rejects]
    assert_same_batch(fast_batch, ref_batch)
    assert fast_batch.pumps.pump_id.tolist() == ref_batch.pumps.pump_id.tolist()


@SETTINGS
@given(msgs=st.lists(room_message(), min_size=1, max_size=20))
def test_telemetry_fast_path_matches_the_schemas(registry, msgs):
    _same(registry, msgs)


BASE = {"room_id": "P0001", "ts": "2026-11-22T08:00:00Z", "outlet_pressure_mpa": 0.34, "door_open": False,
        "tanks": [{"tank_id": "P0001-T1", "level_m": 2.1, "free_chlorine_mg_l": 0.31, "turbidity_ntu": 0.2,
                   "ph": 7.4}, {"tank_id": "P0001-T2", "level_m": 1.9}],
        "pumps": [{"pump_id": "1", "running": True, "current_a": 11.8}, {"pump_id": "2"}]}
PATHS = ["room_id", "ts", "outlet_pressure_mpa", "door_open", "tanks", "tanks.0", "tanks.0.tank_id",
         "tanks.0.level_m", "tanks.1.free_chlorine_mg_l", "tanks.0.turbidity_ntu", "tanks.1.ph", "pumps",
         "pumps.0", "pumps.1.pump_id", "pumps.0.running", "pumps.1.current_a"]


def test_every_telemetry_field_at_its_edges_decodes_like_the_schemas(registry):
    topic = LAYOUT.pumproom_telemetry("d01", "P0001")
    values = [*EDGE_VALUES, MISSING, "P0002-T1", "P0009-T1", "x" * 32, "x" * 33, [{"tank_id": "P0001-T1"}] * 65]
    msgs = [RawMessage(topic, json.dumps(_with(BASE, path, v)).encode()) for path in PATHS for v in values]
    msgs += [RawMessage(topic, orjson.dumps({"room_id": "P0001", "ts": 1795334400, **extra}))
             for extra in ({}, {"tanks": []}, {"pumps": []}, {"door_open": None, "tanks": [{"tank_id": "P0001-T2"}]})]
    _same(registry, msgs)
    for m in msgs:  # alone, too
        _same(registry, [m])
    fast = Decoder(registry, LAYOUT).decode(msgs)
    assert 0.2 < len(fast[1]) / len(msgs) < 0.9  # both accepted and refused cases are in the table


def _capture(tmp_path: Path, lines: list[bytes]) -> list[RawMessage]:
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    src = CaptureSource(path)
    out = []
    while not src.exhausted:
        out += src.poll(3)
    out_rejects = src.take_rejects()
    src.close()
    return out + [RawMessage("reject", r.reason.encode()) for r in out_rejects]


def _view(m: RawMessage) -> tuple:
    return m.topic, orjson.loads(m.payload) if m.payload[:1] == b"{" else m.payload


def test_a_capture_gives_the_same_messages_whatever_the_layout_of_its_lines(tmp_path):
    records = [{"topic": "water/d01/meter/M000001/reading", "payload": {"meter_id": "M000001", "ts": 1, "total_m3": 1.5}},
               {"topic": "water/d01/pumproom/P0001/telemetry", "payload": {"room_id": "P0001", "ts": 2}},
               {"topic": "water/d01/meter/M000001/reading", "payload": "not json at all"},
               {"topic": "water/d01/meter/M\u00e9/reading", "payload": {"a": [1, {"b": None}]}}]
    plain = _capture(tmp_path, [orjson.dumps(r) for r in records])  # as Cistern writes captures
    spaced = _capture(tmp_path, [json.dumps(r, separators=(", ", ": ")).encode() for r in records])
    expected = [(r["topic"], r["payload"] if isinstance(r["payload"], dict) else r["payload"].encode())
                for r in records]
    assert [_view(m) for m in plain] == [_view(m) for m in spaced] == expected
    assert plain[0].parsed == records[0]["payload"]  # parsed once, for decode
    assert plain[2].parsed is None

    odd = _capture(tmp_path, [b'{"payload": {"a": 1}, "topic": "water/x"}',
                              b'{"topic":"water/x","payload":{"a":1},"extra":2}',
                              b'{"topic":"water/x","payload":{"a":1}}  ', b"", b"not a record",
                              b'{"topic":"water/x","payload":{"a":'])
    assert [_view(m) for m in odd[:3]] == [("water/x", {"a": 1})] * 3
    assert [m.topic for m in odd[3:]] == ["reject", "reject"]
    assert b"line 5" in odd[3].payload and b"line 6" in odd[4].payload

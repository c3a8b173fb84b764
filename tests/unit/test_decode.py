"""Decode turns messages into columns; every refused message keeps its reason; ids, topics and registry agree."""

import math

import numpy as np
import orjson
import pytest

from devices.messages import INVALID, UNKNOWN_DEVICE, RawMessage
from devices.registry import Registry
from devices.topics import Channel, TopicError, TopicLayout
from ingest.pipeline.decode import Decoder
from tests.helpers import write_registry

T = "water/d01/meter/M000001/reading"


@pytest.fixture
def decoder(tmp_path):
    return Decoder(Registry.load(write_registry(tmp_path)), TopicLayout("water"))


def msg(topic, payload):
    return RawMessage(topic, payload if isinstance(payload, bytes) else orjson.dumps(payload))


def reading(**kw):
    p = {"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "total_m3": 12.5}
    p.update(kw)
    return p


def test_single_reading_becomes_one_row_with_its_status(decoder):
    batch, rejects = decoder.decode([msg(T, reading(reverse_m3=0.25, flow_m3h=0.12, battery_v=3.61, valve="closed",
                                                    signal={"rsrp_dbm": -95.0, "snr_db": 6.5, "ecl": 1},
                                                    balance_cny=42.5, status=[], firmware="x"))])
    assert rejects == []
    m = batch.meters
    assert len(m) == 1 and m.meter[0] == 0
    assert m.ts_ns[0] == 1795334400 * 10**9
    assert (m.total_m3[0], m.reverse_m3[0], m.flow_m3h[0]) == (12.5, 0.25, 0.12)
    assert (m.rsrp_dbm[0], m.snr_db[0], m.ecl[0], m.battery_v[0], m.balance_cny[0]) == (-95.0, 6.5, 1, 3.61, 42.5)
    assert m.valve[0] == 1


def test_epoch_seconds_timestamp(decoder):
    batch, _ = decoder.decode([msg(T, reading(ts=1795334400.5))])
    assert batch.meters.ts_ns[0] == 1795334400 * 10**9 + 500_000_000


def test_batch_message_puts_status_on_latest_reading(decoder):
    topic = "water/d01/meter/M000002/reading"
    rows = [{"ts": f"2026-11-22T0{h}:00:00Z", "total_m3": 10 + h / 10} for h in (2, 0, 1)]
    batch, rejects = decoder.decode([msg(topic, {"meter_id": "M000002", "readings": rows,
                                                 "signal": {"rsrp_dbm": -101.0}, "battery_v": 3.6})])
    assert rejects == []
    m = batch.meters
    assert m.meter.tolist() == [1, 1, 1]
    assert m.total_m3.tolist() == [10.2, 10.0, 10.1]
    assert m.rsrp_dbm[0] == -101.0 and np.isnan(m.rsrp_dbm[1:]).all()
    assert m.battery_v[0] == 3.6 and np.isnan(m.reverse_m3).all()


@pytest.mark.parametrize("payload,why", [
    (b"not json", "json"),
    (b'{"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "total_m3": NaN}', "total_m3"),
    (reading(total_m3=-1), "total_m3"),
    (reading(total_m3="12"), "total_m3"),
    (reading(ts="yesterday"), "ts"),
    (reading(ts="2026-11-22T08:00:00"), "UTC offset"),
    (reading(ts="1970-01-01T00:00:00Z"), "outside"),
    (reading(ts=4102444800 + 10), "outside"),
    (reading(ts=True), "ts"),
    ({"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z"}, "total_m3"),
    (reading(meter_id="M000002"), "does not match"),
    ({"meter_id": "M000001", "readings": []}, "readings"),
    (reading(signal={"ecl": 7}), "ecl"),
    ([1, 2, 3], "input"),
])
def test_bad_payloads_are_refused_with_a_reason_and_good_ones_still_land(decoder, payload, why):
    good = msg(T, reading(ts="2026-11-22T09:00:00Z"))
    batch, rejects = decoder.decode([msg(T, payload), good])
    assert len(batch.meters) == 1 and batch.meters.ts_ns[0] == 1795338000 * 10**9
    assert len(rejects) == 1
    assert why.lower() in rejects[0].reason.lower()
    assert rejects[0].category == INVALID and rejects[0].topic == T


def test_unknown_device_is_quarantined_not_stored(decoder):
    topic = "water/d01/meter/M999999/reading"
    batch, rejects = decoder.decode([msg(topic, reading(meter_id="M999999"))])
    assert len(batch.meters) == 0
    assert rejects[0].category == UNKNOWN_DEVICE and b"M999999" in rejects[0].payload


def test_wrong_district_in_topic_is_refused(decoder):
    batch, rejects = decoder.decode([msg("water/d02/meter/M000001/reading", reading())])
    assert len(batch) == 0 and "district" in rejects[0].reason


def test_bad_topic_is_refused(decoder):
    _, rejects = decoder.decode([msg("water/d01/meter/M000001", reading())])
    assert rejects and "topic" in rejects[0].reason


def test_pumproom_telemetry_rows(decoder):
    p = {"room_id": "P0001", "ts": "2026-11-22T08:00:00Z", "outlet_pressure_mpa": 0.34, "door_open": True,
         "tanks": [{"tank_id": "P0001-T1", "level_m": 2.1, "free_chlorine_mg_l": 0.31, "turbidity_ntu": 0.2,
                    "ph": 7.4}, {"tank_id": "P0001-T2", "level_m": 1.0}],
         "pumps": [{"pump_id": "1", "running": True, "current_a": 11.8}, {"pump_id": "2", "running": False}]}
    batch, rejects = decoder.decode([msg("water/d01/pumproom/P0001/telemetry", p)])
    assert rejects == []
    assert batch.tanks.tank.tolist() == [0, 1] and batch.tanks.level_m.tolist() == [2.1, 1.0]
    assert math.isnan(batch.tanks.ph[1])
    assert batch.rooms.door_open.tolist() == [1.0] and batch.rooms.outlet_pressure_mpa.tolist() == [0.34]
    assert batch.pumps.pump_id.tolist() == ["1", "2"] and batch.pumps.running.tolist() == [1.0, 0.0]


def test_telemetry_of_a_tank_of_another_room_is_refused(decoder):
    p = {"room_id": "P0001", "ts": "2026-11-22T08:00:00Z", "tanks": [{"tank_id": "P0009-T1", "level_m": 2.1}]}
    batch, rejects = decoder.decode([msg("water/d01/pumproom/P0001/telemetry", p)])
    assert len(batch.tanks) == 0 and "P0009-T1" in rejects[0].reason


def test_events(decoder):
    dis = {"room_id": "P0001", "ts": "2026-11-22T08:00:00Z", "type": "disinfection", "tank_id": "P0001-T1",
           "work_order": "WO-2026-1187", "operator": "Unit 3", "quality": {"free_chlorine_mg_l": 0.45}}
    rep = {"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "type": "replacement", "register_m3": 0.0,
           "work_order": "WO-2026-2203"}
    batch, rejects = decoder.decode([msg("water/d01/pumproom/P0001/event", dis),
                                     msg("water/d01/meter/M000001/event", rep)])
    assert rejects == []
    e1, e2 = batch.events
    assert (e1.device, e1.index, e1.type, e1.fields["tank_id"]) == ("pumproom", 0, "disinfection", "P0001-T1")
    assert e1.fields["quality"] == {"free_chlorine_mg_l": 0.45}
    assert (e2.device, e2.device_id, e2.type, e2.fields["register_m3"]) == ("meter", "M000001", "replacement", 0.0)


def test_topic_layout_build_and_parse():
    lay = TopicLayout("city/water")
    t = lay.meter_reading("d07", "M1")
    assert t == "city/water/d07/meter/M1/reading"
    parsed = lay.parse(t)
    assert (parsed.district, parsed.channel, parsed.device_id) == ("d07", Channel.METER_READING, "M1")
    assert lay.build(parsed) == t
    assert lay.parse(lay.pumproom_event("d1", "P1")).channel is Channel.PUMPROOM_EVENT
    assert "city/water/+/meter/+/reading" in lay.subscriptions()
    for bad in ("water/d07/meter/M1/reading", "city/water/d07/valve/M1/reading", "city/water/d07/meter//reading"):
        with pytest.raises(TopicError):
            lay.parse(bad)
    with pytest.raises(ValueError):
        TopicLayout("water/#")


def test_oversized_and_deeply_nested_payloads_are_refused_and_the_batch_goes_on(decoder):
    good = msg(T, reading(ts="2026-11-22T09:00:00Z"))
    huge = msg(T, reading(status=["x" * 1000] * 400))  # ~400 kB
    deep = msg(T, b'{"meter_id": "M000001", "ts": 1795334400, "total_m3": 1, "x": ' + b"[" * 5000 + b"]" * 5000
               + b"}")
    batch, rejects = decoder.decode([huge, good, deep])
    assert len(batch.meters) == 1 and batch.meters.ts_ns[0] == 1795338000 * 10**9
    reasons = sorted(r.reason for r in rejects)
    assert len(reasons) == 2 and any("exceeds" in r for r in reasons)


@pytest.mark.parametrize("payload,why", [
    (reading(total_m3=9999), "register maximum 9999"),  # M000001's register wraps at 9,999 m3
    (reading(total_m3=10_000), "register maximum 9999"),
    (reading(total_m3=1e12), "register maximum"),
    (reading(total_m3=1.7e308), "register maximum"),
    (reading(reverse_m3=1e12), "reverse_m3"),
    (reading(flow_m3h=500.0), "DN15 pipe"),
    (reading(flow_m3h=-500.0), "DN15 pipe"),
    ({"meter_id": "M000001", "readings": [{"ts": "2026-11-22T07:00:00Z", "total_m3": 12.0},
                                          {"ts": "2026-11-22T08:00:00Z", "total_m3": 1e12}]}, "register maximum"),
])
@pytest.mark.parametrize("fast", [True, False])
def test_a_reading_its_meter_cannot_make_is_dead_lettered_with_the_reason(tmp_path, payload, why, fast):
    decoder = Decoder(Registry.load(write_registry(tmp_path)), TopicLayout("water"), fast=fast)
    good = msg(T, reading(ts="2026-11-22T09:00:00Z", total_m3=9998.9, flow_m3h=2.0))
    batch, rejects = decoder.decode([msg(T, payload), good])
    assert batch.meters.total_m3.tolist() == [9998.9]
    assert len(rejects) == 1 and rejects[0].category == INVALID
    assert why in rejects[0].reason and "M000001" in rejects[0].reason


def test_a_master_meter_keeps_its_larger_register_and_pipe(decoder):
    t = "water/d01/meter/M000000/reading"  # DN50, register to 99,999 m3
    batch, rejects = decoder.decode([msg(t, reading(meter_id="M000000", total_m3=50_000.0, flow_m3h=40.0))])
    assert rejects == [] and batch.meters.total_m3.tolist() == [50_000.0]


@pytest.mark.parametrize("topic", ["water/d01/meter/+/reading", "water/d01/meter/#/reading",
                                   "water/+/meter/M000001/reading", "water/d01/pumproom/+/telemetry",
                                   "water/d01/meter/M+1/event"])
def test_a_topic_holding_a_wildcard_is_a_dead_letter_not_an_unknown_device(decoder, topic):
    batch, rejects = decoder.decode([msg(topic, reading())])
    assert len(batch) == 0
    assert rejects[0].category == INVALID and "wildcard" in rejects[0].reason

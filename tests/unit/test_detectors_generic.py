"""Checks every registered detector passes: quiet on clean traffic, split invariance, checkpoint round trip,
device-order invariance, and alert events that serialize as the contract says."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest

from detectors import DETECTORS, DetectorSet
from detectors.checks import Town, run
from devices.batch import Batch
from devices.registry import Registry


def _town(seed: int = 3, incidents: bool = True) -> Town:
    t = Town(seed=seed, buildings=4, households=8, days=18, overdue_tanks=1 if incidents else 0)
    if incidents:
        hh = t.households
        t.block(int(hh[2]), t.t(8))
        t.block(int(hh[9]), t.t(6), t.t(10))
        t.cell_outage(2, t.t(12), t.t(12.5))
        t.battery_dies(int(hh[5]), t.t(9))
        t.backwards(int(hh[12]), t.t(7))
        t.wind_back(int(hh[14]), t.t(9), 30.0)
        t.reverse_register(int(hh[26]), t.t(10), 0.01)
        t.transients(int(hh[17]))
        t.replace(int(hh[18]), t.t(11), 0.0)
        t.bypass(int(hh[28]), t.t(8), 0.9)
        t.vacancy(int(hh[30]), t.t(8))
        t.disinfect(1, t.t(5), True)
        t.disinfect(2, t.t(6), False)
    return t.build()


@pytest.fixture(scope="module")
def busy_town() -> Town:
    return _town()


def _key(e) -> tuple:
    return (e.alert_id, e.event, e.kind, e.subject_id, e.start_ns, e.detected_at_ns, e.severity)


def _split(batch: Batch, rng: np.random.Generator, pieces: int) -> list[Batch]:
    """The same readings cut into smaller batches, each meter's readings still in time order across them."""
    m = batch.meters.take(np.argsort(batch.meters.ts_ns, kind="stable"))
    cuts = np.sort(rng.integers(0, len(m) + 1, pieces - 1))
    parts = np.split(np.arange(len(m)), cuts)
    t_cut = np.array_split(rng.permutation(len(batch.tanks)), pieces)
    out = []
    for k, idx in enumerate(parts):
        out.append(Batch(meters=m.take(rng.permutation(idx)), tanks=batch.tanks.take(t_cut[k]),
                         events=batch.events if k == 0 else []))
    return out


@pytest.mark.parametrize("name", list(DETECTORS))
def test_quiet_on_clean_traffic(name):
    town = _town(seed=11, incidents=False)
    events = run(DetectorSet(town.registry, only=[name]), town)
    raised = [e for e in events if e.event == "raised" and e.kind != "disinfection_due_soon"]
    assert raised == []


@pytest.mark.parametrize("name", list(DETECTORS))
def test_split_invariance(name, busy_town):
    whole = DetectorSet(busy_town.registry, only=[name], tick_every_s=0)
    cut = DetectorSet(busy_town.registry, only=[name], tick_every_s=0)
    rng = np.random.default_rng(5)
    a: list = []
    b: list = []
    for batch, wm in busy_town.chunks(messages=600, shuffle=True):
        a += whole.update(batch)
        a += whole.tick(wm)
        for piece in _split(batch, rng, int(rng.integers(2, 6))):
            b += cut.update(piece)
        b += cut.tick(wm)
    a += whole.tick(busy_town.end_ns())
    b += cut.tick(busy_town.end_ns())
    assert a, "the busy town must raise something for every detector"
    assert [_key(e) for e in a] == [_key(e) for e in b]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_state_round_trip_mid_stream(name, busy_town):
    straight = run(DetectorSet(busy_town.registry, only=[name]), busy_town)
    chunks = list(busy_town.chunks())
    ds = DetectorSet(busy_town.registry, only=[name])
    events: list = []
    half = len(chunks) // 2
    for batch, wm in chunks[:half]:
        events += ds.update(batch)
        events += ds.tick(wm)
    buf = io.BytesIO()
    np.savez(buf, **ds.state())
    buf.seek(0)
    blob = dict(np.load(buf, allow_pickle=False))
    resumed = DetectorSet(busy_town.registry, only=[name])
    resumed.restore(blob)
    for batch, wm in chunks[half:]:
        events += resumed.update(batch)
        events += resumed.tick(wm)
    events += resumed.tick(busy_town.end_ns())
    assert [_key(e) for e in events] == [_key(e) for e in straight]


def _permuted(reg: Registry, rng: np.random.Generator) -> tuple[Registry, np.ndarray, np.ndarray]:
    m, b, t = reg.meters, reg.buildings, reg.tanks
    pm = rng.permutation(len(m))
    pt = rng.permutation(len(t))
    meters = {"meter_id": list(m.ids[pm]), "district": list(m.district[pm]), "building_id": list(m.building_id[pm]),
              "role": list(m.role[pm]), "customer_class": list(m.customer_class[pm]),
              "pipe_dn_mm": list(m.pipe_dn_mm[pm]), "prepaid": list(m.prepaid[pm]),
              "report_interval_s": list(m.report_interval_s[pm]), "cell_id": list(m.cell_id[pm]),
              "register_max_m3": list(m.register_max_m3[pm]),
              "business_hours_per_day": list(m.business_hours_per_day[pm])}
    pb = rng.permutation(len(b))
    buildings = {"building_id": list(b.ids[pb]), "district": list(b.district[pb]), "address": list(b.address[pb]),
                 "pump_room_id": list(b.pump_room_id[pb]), "master_meter_id": list(b.master_meter_id[pb])}
    rooms = {"room_id": list(reg.rooms.ids), "district": list(reg.rooms.district), "address": list(reg.rooms.address),
             "maintenance_unit": list(reg.rooms.maintenance_unit), "supervisor_unit": list(reg.rooms.supervisor_unit)}
    tanks = {"tank_id": list(t.ids[pt]), "room_id": list(t.room_id[pt]), "capacity_m3": list(t.capacity_m3[pt]),
             "last_disinfected": list(t.last_disinfected[pt])}
    new = Registry.from_columns(meters, buildings, rooms, tanks)
    meter_map = np.empty(len(m), dtype=np.int32)
    meter_map[pm] = np.arange(len(m))
    tank_map = np.empty(len(t), dtype=np.int32)
    tank_map[pt] = np.arange(len(t))
    return new, meter_map, tank_map


@pytest.mark.parametrize("name", list(DETECTORS))
def test_device_order_changes_nothing(name, busy_town):
    straight = run(DetectorSet(busy_town.registry, only=[name]), busy_town)
    reg, meter_map, tank_map = _permuted(busy_town.registry, np.random.default_rng(9))
    ds = DetectorSet(reg, only=[name])
    events: list = []
    for batch, wm in busy_town.chunks():
        meters = batch.meters.take(np.arange(len(batch.meters)))
        meters.meter = meter_map[meters.meter]
        tanks = batch.tanks.take(np.arange(len(batch.tanks)))
        tanks.tank = tank_map[tanks.tank]
        evs = [type(e)(e.device, int(meter_map[e.index]) if e.device == "meter" else e.index, e.device_id,
                       e.district, e.ts_ns, e.type, e.fields) for e in batch.events]
        events += ds.update(Batch(meters=meters, tanks=tanks, events=evs))
        events += ds.tick(wm)
    events += ds.tick(busy_town.end_ns())

    def as_set(evs):
        return sorted((e.alert_id, e.event, e.kind, e.subject_id, e.start_ns, e.detected_at_ns) for e in evs)

    assert as_set(events) == as_set(straight)


def test_events_follow_the_contract(busy_town):
    events = run(DetectorSet(busy_town.registry), busy_town)
    assert {e.kind for e in events} >= {"signal_blocking", "network_outage", "reverse_flow", "bypass",
                                        "disinfection_overdue"}
    seen: dict[str, str] = {}
    for e in events:
        d = orjson.loads(orjson.dumps(e.to_dict()))
        assert d["event"] in ("raised", "updated", "cleared")
        assert d["route"]["unit"] and d["summary"] and d["district"]
        assert d["start"] <= d["detected_at"] or d["kind"].startswith("disinfection")
        # one incident, one id: raised before anything else happens to it, cleared at most once
        if e.event == "raised":
            assert e.alert_id not in seen
        else:
            assert seen.get(e.alert_id) == "raised"
        seen[e.alert_id] = e.event


def test_unknown_settings_are_refused(busy_town):
    with pytest.raises(ValueError, match="signal"):
        DetectorSet(busy_town.registry, params={"signal": {"no_such_setting": 1}})
    with pytest.raises(ValueError, match="unknown detector"):
        DetectorSet(busy_town.registry, params={"nope": {}})
    with pytest.raises(ValueError, match="time zone"):
        DetectorSet(busy_town.registry, timezone="Mars/Olympus")

"""The simulated pump rooms: each room at its own reporting interval, crews' visits under work orders, and labels
that agree with the telemetry (an intrusion has no work order near it, a water-quality episode stays out of limits
30 minutes, a look-alike does not)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.decode import Decoder
from simulator.city import SimConfig
from simulator.run import simulate

CFG = SimConfig(meters=400, days=20, seed=7)
MIN_NS = 60 * 10**9
LIMITS = {"free_chlorine": ("free_chlorine_mg_l", 0.05, 2.0), "turbidity": ("turbidity_ntu", -np.inf, 1.0),
          "ph": ("ph", 6.5, 8.5)}


def ns(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp()) * 10**9


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("rooms")
    result = simulate(CFG, out)
    reg = Registry.load(out / "registry")
    lines = [orjson.loads(x) for x in (out / "capture.jsonl").read_bytes().splitlines()]
    batch, rejects = Decoder(reg, TopicLayout("water")).decode(
        [RawMessage(o["topic"], orjson.dumps(o["payload"])) for o in lines if "/pumproom/" in o["topic"]])
    assert rejects == []
    return result.labels, reg, batch


def labels(city, kind: str, decoy: str | None = None) -> list[dict]:
    return [r for r in city[0] if r["kind"] == kind and (decoy is None or r.get("decoy") == decoy)]


def door(reg, batch, room_id: str) -> tuple[np.ndarray, np.ndarray]:
    r = batch.rooms
    sel = r.room == reg.rooms.index[room_id]
    return r.ts_ns[sel], r.door_open[sel] == 1


def series(reg, batch, tank_id: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    t = batch.tanks
    sel = t.tank == reg.tanks.index[tank_id]
    return t.ts_ns[sel], getattr(t, column)[sel]


def test_each_room_reports_at_its_own_interval_and_a_city_has_several(city):
    _, reg, batch = city
    intervals = set()
    for room in range(len(reg.rooms)):
        ts = np.sort(batch.rooms.ts_ns[batch.rooms.room == room])
        gaps = np.diff(ts) // MIN_NS
        step = int(np.median(gaps))
        assert step in (5, 10, 15) and (gaps % step == 0).all()  # a lost message leaves a double gap, no more
        intervals.add(step)
    assert len(intervals) >= 2


def test_every_kind_and_look_alike_is_planted(city):
    kinds = {(r["kind"], r.get("decoy")) for r in city[0] if r["subject"]["type"] in ("tank", "pump_room")}
    assert {("water_quality", None), ("pump_room_intrusion", None), ("none", "maintenance_visit"),
            ("none", "disinfection_chlorine"), ("none", "sensor_stuck"), ("none", "brief_spike")} <= kinds
    causes = {(r["cause"], r["severity"]) for r in labels(city, "water_quality")}
    assert {c for c, _ in causes} >= {"dosing_failure", "main_burst", "ph_drift", "tampering"}
    assert {s for _, s in causes} == {"mild", "severe"}
    hours = {(ns(r["start"]) // 3600 // 10**9 + 8) % 24 for r in labels(city, "pump_room_intrusion")}
    assert hours & set(range(8, 20)) and hours & {22, 23, 0, 1, 2, 3, 4, 5}  # by day and at night


def test_door_labels_agree_with_the_door_and_the_work_orders(city):
    _, reg, batch = city
    orders = defaultdict(list)
    for e in batch.events:
        if e.device == "pumproom" and e.fields.get("work_order") and e.type in ("maintenance", "inspection"):
            orders[e.device_id].append(e.ts_ns)
    for kind, decoy in (("pump_room_intrusion", None), ("none", "maintenance_visit")):
        for lab in labels(city, kind, decoy):
            ts, op = door(reg, batch, lab["subject"]["id"])
            s, e = ns(lab["start"]), ns(lab["end"])
            inside = (ts >= s) & (ts <= e)
            assert op[inside].all() and inside.any()
            before = ts < s
            assert not before.any() or not op[before][-1]  # the label starts with the opening
            near = [t for t in orders[lab["subject"]["id"]] if s - 120 * MIN_NS <= t <= s + 8 * MIN_NS]
            assert bool(near) == (decoy == "maintenance_visit"), lab


def test_water_quality_labels_stay_out_of_limits_30_minutes_and_look_alikes_do_not(city):
    _, reg, batch = city
    for kind, decoy in (("water_quality", None), ("none", "brief_spike")):
        for lab in labels(city, kind, decoy):
            column, lo, hi = LIMITS[lab["parameter"]]
            ts, v = series(reg, batch, lab["subject"]["id"], column)
            sel = (ts >= ns(lab["start"])) & (ts <= ns(lab["end"]))
            out = (v[sel] < lo) | (v[sel] > hi)
            assert out[0] and (out[-1] or decoy)
            step = int(np.median(np.diff(np.sort(ts)))) // MIN_NS
            longest = max(len(r) for r in "".join("x" if o else " " for o in out).split())
            assert (longest * step >= 30) == (kind == "water_quality"), lab


def test_tampering_lowers_a_tank_of_the_room_while_the_door_is_open(city):
    tampered = [r for r in labels(city, "pump_room_intrusion") if r["tampered"]]
    assert tampered
    water = labels(city, "water_quality")
    for lab in tampered:
        assert any(w["subject"]["id"].startswith(lab["subject"]["id"] + "-") and w["cause"] == "tampering"
                   and ns(lab["start"]) <= ns(w["start"]) <= ns(lab["end"]) + 60 * MIN_NS for w in water)


def test_high_chlorine_follows_a_cleanings_drawdown_and_a_stuck_sensor_repeats_one_value(city):
    _, reg, batch = city
    for lab in labels(city, "none", "disinfection_chlorine"):
        ts, level = series(reg, batch, lab["subject"]["id"], "level_m")
        _, cl = series(reg, batch, lab["subject"]["id"], "free_chlorine_mg_l")
        s = ns(lab["start"])
        assert cl[ts == s][0] > 2.0
        drained = ts[(level < 0.2) & (ts <= s)]
        assert drained.size and s - drained[-1] <= 6 * 60 * MIN_NS
    for lab in labels(city, "none", "sensor_stuck"):
        column = LIMITS[lab["parameter"]][0]
        ts, v = series(reg, batch, lab["subject"]["id"], column)
        sel = (ts >= ns(lab["start"])) & (ts < ns(lab["end"]))
        assert np.unique(v[sel]).size == 1 and (ns(lab["end"]) - ns(lab["start"])) >= 12 * 60 * MIN_NS


def test_a_crew_at_the_start_of_the_traffic_has_its_work_order_in_it():
    # a crew arriving in the first minutes, its work order logged an hour earlier (before the traffic begins): the
    # order is logged as the traffic begins, so a service started then can tell the crew from an intruder
    from simulator.pumprooms import _Planner
    city = SimpleNamespace(room_ids=["P1"], tank_ids=["P1-T1"])
    planner = _Planner(city, CFG, SimpleNamespace(cleanings=[]))
    op = planner.crew(0, 2, 10, "inspection", "inspection", 3600.0)
    assert op.event_ns == CFG.start_ns
    later = planner.crew(0, 24, 30, "inspection", "inspection", 600.0)
    assert later.event_ns == CFG.start_ns + (24 * 300 - 600) * 10**9

"""Pump rooms: a tank's water out of GB 5749-2022 limits for 30 minutes (two readings at 15 minutes, six at 5), its
look-alikes (one reading out, high chlorine after a disinfection, a stuck sensor), sensor faults, and the door
opened without a crew's work order, one incident per opening naming the water-quality incident it caused."""

from __future__ import annotations

import numpy as np

from detectors import DetectorSet
from detectors.testing import HOUR, Town, run
from devices.batch import NS, Batch

MIN = 60 * NS


def small(days: int = 4, intervals: tuple[int, ...] = (900, 300), seed: int = 1) -> Town:
    """Two pump rooms (P000 every 15 minutes with tanks 0 and 1, P001 every 5 with tanks 2 and 3)."""
    return Town(seed=seed, buildings=4, households=2, days=days, room_intervals=intervals)


def events(t: Town, only: tuple[str, ...] = ("water_quality", "intrusion"), **kw) -> list:
    return [e for e in run(DetectorSet(t.registry, only=list(only)), t.build(), **kw)
            if e.kind in ("water_quality", "sensor_fault", "pump_room_intrusion")]


def label(t: Town, kind: str) -> dict:
    (lab,) = [x for x in t.labels if x["kind"] == kind]
    return lab


def test_thirty_minutes_out_of_limits_is_two_readings_at_15_minutes_and_six_at_5():
    t = small()
    t.water(0, "free_chlorine_mg_l", t.t(1.5), t.t(1.5) + 2 * HOUR, 0.02)  # P000: 15 minutes
    t.water(2, "turbidity_ntu", t.t(2.5), t.t(2.5) + 2 * HOUR, 2.2)  # P001: 5 minutes
    ev = [e for e in events(t) if e.event == "raised"]
    assert [(e.kind, e.subject_id) for e in ev] == [("water_quality", "P000-T1"), ("water_quality", "P001-T1")]
    slow, fast = ev
    assert (slow.start_ns, slow.detected_at_ns - slow.start_ns) == (t.t(1.5), 15 * MIN)
    assert (fast.start_ns, fast.detected_at_ns - fast.start_ns) == (t.t(2.5), 25 * MIN)
    chlorine = slow.evidence["parameters"]["free_chlorine"]
    assert chlorine["limit"] == 0.05 and chlorine["bound"] == "min" and chlorine["value"] < 0.05
    assert fast.evidence["parameters"]["turbidity"]["worst"] > 1.0
    assert slow.route == {"unit": "Unit 0"} and "free chlorine" in slow.summary


def test_an_incident_is_updated_while_it_lasts_turns_critical_and_clears_after_30_minutes_back_in_limits():
    t = small()
    t.water(1, "ph", t.t(1.5), t.t(1.5) + 5 * HOUR, 8.75)
    ev = [e for e in events(t) if e.subject_id == "P000-T2"]
    assert ev[0].event == "raised" and ev[0].severity == "warning" and ev[-1].event == "cleared"
    assert {e.alert_id for e in ev} == {ev[0].alert_id} and len(ev) >= 5  # updated hour by hour
    critical = [e for e in ev if e.severity == "critical"]
    assert critical and critical[0].detected_at_ns - ev[0].start_ns >= 4 * HOUR
    last_out = t.t(1.5) + 5 * HOUR - 15 * MIN
    assert ev[-1].detected_at_ns == last_out + 30 * MIN  # two readings back in limits


def test_far_out_of_limits_is_critical_at_once():
    t = small()
    t.water(2, "free_chlorine_mg_l", t.t(1.5), t.t(1.5) + HOUR, 4.5)
    raised = [e for e in events(t) if e.event == "raised"]
    assert [(e.subject_id, e.severity) for e in raised] == [("P001-T1", "critical")]


def test_one_reading_out_and_25_minutes_out_at_5_minute_reporting_raise_nothing():
    t = small()
    t.spike(0, "turbidity_ntu", t.t(1.5), 5.0)
    t.spike(1, "free_chlorine_mg_l", t.t(1.7), 0.0)
    t.water(2, "ph", t.t(2.2), t.t(2.2) + 25 * MIN, 5.9)  # five readings at 5 minutes
    assert events(t) == []


def test_high_chlorine_after_a_disinfection_is_expected_even_when_its_record_comes_hours_later():
    t = small()
    t.disinfect(0, t.t(1.5), True, chlorine_peak=3.5)  # record at the refill
    t.disinfect(2, t.t(2.5), True, chlorine_peak=4.0, record_late_h=3)  # record after the test; the drawdown shows
    t.water(3, "free_chlorine_mg_l", t.t(2.5), t.t(2.5) + 2 * HOUR, 3.5)  # the same water with no disinfection
    ev = [e for e in events(t) if e.event == "raised"]
    assert [(e.kind, e.subject_id) for e in ev] == [("water_quality", "P001-T2")]


def test_a_stuck_sensor_is_a_sensor_fault_for_maintenance_never_a_water_quality_incident():
    t = small(days=3)
    t.stuck(0, "ph", t.t(0.5), t.t(2))
    t.water(1, "ph", t.t(1), t.t(1) + HOUR, 13.2)  # an electrode reading the impossible
    ev = events(t)
    assert {e.kind for e in ev} == {"sensor_fault"}
    stuck = [e for e in ev if e.subject_id == "P000-T1"]
    assert [e.event for e in stuck] == ["raised", "cleared"]
    assert stuck[0].detected_at_ns - stuck[0].start_ns == 12 * HOUR and stuck[0].evidence["sensors"]["ph"][
        "reason"] == "stuck"
    assert stuck[0].route == {"unit": "Unit 0"}
    impossible = [e for e in ev if e.subject_id == "P000-T2" and e.event == "raised"]
    assert impossible[0].evidence["sensors"]["ph"]["reason"] == "impossible"


def test_a_sensor_frozen_while_the_water_stands_still_is_not_called_stuck():
    t = small(days=3)
    t.stuck(0, "ph", t.t(0.5), t.t(2))
    t.build()
    # the level stands still and the pumps are off: nothing shows the water should have changed
    tanks = t.tank_rows
    tanks.level_m[tanks.tank == 0] = 2.5
    t.pump_rows.running[:] = 0.0
    ev = [e for e in run(DetectorSet(t.registry, only=["water_quality"]), t) if e.kind == "sensor_fault"]
    assert ev == []


def test_a_stuck_sensor_does_not_hide_the_water_going_out_of_limits():
    t = small(days=3)
    t.stuck(0, "ph", t.t(0.5), t.t(2.5))
    t.water(0, "free_chlorine_mg_l", t.t(1.5), t.t(1.5) + HOUR, 0.01)
    kinds = [(e.kind, e.event) for e in events(t) if e.event == "raised"]
    assert kinds == [("sensor_fault", "raised"), ("water_quality", "raised")]


def test_door_open_without_a_work_order_is_an_intrusion_critical_at_night_one_incident_per_opening():
    t = small()
    t.intrusion(0, t.t(1.1), t.t(1.1) + 40 * MIN)  # 02:24 local
    t.intrusion(1, t.t(2.5), t.t(2.5) + 3 * HOUR)  # noon
    ev = events(t)
    night = [e for e in ev if e.subject_id == "P000"]
    assert [e.event for e in night] == ["raised", "cleared"] and night[0].severity == "critical"
    lab = [x for x in t.labels if x["subject"]["id"] == "P000"][0]
    assert night[0].to_dict()["start"] == lab["start"]
    assert night[0].detected_at_ns - night[0].start_ns == 15 * MIN
    assert night[1].evidence["door_open_min"] == 45.0 and night[1].evidence["door_closed"]
    day = [e for e in ev if e.subject_id == "P001"]
    assert day[0].severity == "warning" and [e.event for e in day].count("updated") == 2  # each hour it stays open
    assert {e.alert_id for e in day} == {day[0].alert_id} and day[-1].event == "cleared"
    tanks = day[-1].evidence["tanks"]
    assert set(tanks) == {"P001-T1", "P001-T2"} and tanks["P001-T1"]["level_m"]["at_opening"] is not None
    assert day[-1].evidence["pumps_running"]["at_opening"] is not None


def test_a_crews_work_order_explains_the_opening_from_two_hours_before_and_a_little_after():
    t = small()
    t.visit(0, t.t(1.4), t.t(1.4) + 2 * HOUR, "maintenance", lead_min=90)
    t.visit(1, t.t(1.5), t.t(1.5) + HOUR, "inspection", lead_min=-5)  # logged on arrival
    t.visit(0, t.t(2.4), t.t(2.4) + HOUR, "disinfection", lead_min=150)  # too early: no longer explains
    t.visit(1, t.t(2.6), t.t(2.6) + HOUR, "meter_reading", lead_min=10)  # not a crew's work order
    ev = [e for e in events(t) if e.event == "raised"]
    starts = sorted(x["start"] for x in t.labels if x["subject"]["type"] == "pump_room")
    assert [(e.subject_id, e.to_dict()["start"]) for e in ev] == [("P000", starts[2]), ("P001", starts[3])]


def test_the_two_hours_count_from_the_last_report_with_the_door_shut():
    # P000 reports every 15 minutes: a crew that opens the door 5 minutes after a report is seen 10 minutes later.
    # Its work order, logged 1 h 58 min before it opened, is 2 h 8 min before the door was first seen open
    t = small()
    t.visit(0, t.t(1) + 10 * HOUR + 5 * MIN, t.t(1) + 12 * HOUR, "maintenance", lead_min=118)
    t.visit(0, t.t(2) + 10 * HOUR + 5 * MIN, t.t(2) + 12 * HOUR, "maintenance", lead_min=130)  # 2 h 5 min: too early
    ev = [e for e in events(t) if e.event == "raised"]
    assert [(e.subject_id, e.start_ns) for e in ev] == [("P000", t.t(2) + 10 * HOUR + 15 * MIN)]


def test_the_two_hours_count_from_the_last_report_with_the_door_shut_whatever_batch_it_came_in():
    # a crew's inspection at 10:00 (work order logged at 09:20); the door is shut again at 10:15, and opens at 12:05
    # with no work order: 2 h 45 min after the crew's. The last report with the door shut before it is 12:00, so the
    # opening is an intrusion, read one message at a time as the live service may, or in bulk. (Batches of reports
    # with every door shut used to leave the room's last report where it was, and the two hours counted from 10:15)
    t = small()
    t.visit(0, t.t(1) + 10 * HOUR, t.t(1) + 10 * HOUR + 15 * MIN, "inspection", lead_min=40)
    t.intrusion(0, t.t(1) + 12 * HOUR + 5 * MIN, t.t(1) + 14 * HOUR)
    for messages in (1, 3, 50, None):
        kw = {} if messages is None else {"messages": messages}
        ev = [e for e in events(t, only=("intrusion",), **kw) if e.event == "raised"]
        assert [(e.subject_id, e.start_ns) for e in ev] == [("P000", t.t(1) + 12 * HOUR + 15 * MIN)], messages


def test_an_intrusion_that_lowers_the_chlorine_is_one_intrusion_naming_one_water_quality_incident():
    t = small()
    t.intrusion(1, t.t(1.1), t.t(1.1) + 3 * HOUR, chlorine_to=0.01)
    ev = events(t, messages=3)  # small batches, as the live service sees the traffic
    assert {(e.kind, e.subject_id) for e in ev} == {("pump_room_intrusion", "P001"), ("water_quality", "P001-T1")}
    wq = [e for e in ev if e.kind == "water_quality"]
    door = [e for e in ev if e.kind == "pump_room_intrusion"]
    assert len({e.alert_id for e in wq}) == 1 and len({e.alert_id for e in door}) == 1
    named = [e for e in door if e.evidence.get("water_quality")]
    assert named and named[0].evidence["water_quality"][0]["alert_id"] == wq[0].alert_id
    assert "fell from" in named[0].summary and named[0].evidence["water_quality_effect"]
    assert wq[0].evidence["intrusion"]["alert_id"] == door[0].alert_id  # named from its raise on
    assert wq[0].to_dict()["start"] == label(t, "water_quality")["start"]


def test_water_that_goes_bad_after_a_short_intrusion_names_it_even_when_one_batch_holds_both():
    t = small()
    t.intrusion(1, t.t(1.1), t.t(1.1) + 20 * MIN, chlorine_to=0.01, low_until=t.t(1.1) + 4 * HOUR)
    ev = events(t, messages=10**6)  # a replay's batch spans hours: both incidents are raised in the same one
    door = [e for e in ev if e.kind == "pump_room_intrusion"]
    wq = [e for e in ev if e.kind == "water_quality"]
    assert [e.event for e in door] == ["raised", "cleared"] and wq[0].event == "raised"
    assert wq[0].start_ns > door[-1].detected_at_ns  # the water went out of limits after the door closed
    assert wq[0].evidence["intrusion"]["alert_id"] == door[0].alert_id
    assert wq[0].evidence["intrusion"]["door_closed"] is not None


def test_a_door_opened_and_then_silent_is_raised_when_the_room_goes_quiet():
    t = small(days=2)
    t.intrusion(0, t.t(1.1), t.t(1.3))
    t.build()
    cut = t.t(1.1) + 10 * MIN  # the telemetry stops right after the door was seen open (at 02:30)
    for name in ("tank_rows", "room_rows", "pump_rows"):
        tab = getattr(t, name)
        keep = ~((tab.ts_ns > cut) & ((tab.room if name != "tank_rows" else tab.tank // 2) == 0))
        setattr(t, name, tab.take(keep))
    ev = [e for e in run(DetectorSet(t.registry, only=["intrusion"]), t) if e.subject_id == "P000"]
    assert [e.event for e in ev] == ["raised"]
    assert ev[0].evidence["telemetry_silent_since"] and ev[0].severity == "critical"


def test_telemetry_delivered_twice_changes_nothing():
    t = small()
    t.water(0, "free_chlorine_mg_l", t.t(1.5), t.t(1.5) + 2 * HOUR, 0.02)
    t.intrusion(1, t.t(2.5), t.t(2.5) + HOUR)
    once = events(t)
    twice = []
    ds = DetectorSet(t.registry, only=["water_quality", "intrusion"])
    for batch, wm in t.chunks():
        doubled = Batch(meters=batch.meters, tanks=type(batch.tanks).concat([batch.tanks, batch.tanks]),
                        rooms=type(batch.rooms).concat([batch.rooms, batch.rooms]),
                        pumps=type(batch.pumps).concat([batch.pumps, batch.pumps]), events=batch.events)
        twice += ds.update(doubled) + ds.update(batch) + ds.tick(wm)
    twice += ds.tick(t.end_ns())
    assert [(e.alert_id, e.event, e.detected_at_ns) for e in twice] == \
        [(e.alert_id, e.event, e.detected_at_ns) for e in once]


def test_a_room_reporting_every_10_minutes_needs_three_readings():
    t = small(intervals=(600,))
    t.water(0, "free_chlorine_mg_l", t.t(1.5), t.t(1.5) + 20 * MIN, 0.02)  # two readings: 20 minutes
    t.water(1, "free_chlorine_mg_l", t.t(2.5), t.t(2.5) + 30 * MIN, 0.02)  # three: 30 minutes
    ev = [e for e in events(t) if e.event == "raised"]
    assert [(e.subject_id, e.detected_at_ns - e.start_ns) for e in ev] == [("P000-T2", 20 * MIN)]
    assert np.isclose(ev[0].evidence["reporting_interval_s"], 600)


def test_a_room_that_sends_its_door_only_when_it_changes_is_judged_on_its_other_telemetry():
    t = small()
    t.intrusion(0, t.t(1.5), t.t(1.5) + 2 * HOUR)
    t.build()
    rooms = t.room_rows
    for room in (0, 1):
        k = np.flatnonzero(rooms.room == room)
        d = rooms.door_open[k]
        same = np.r_[False, d[1:] == d[:-1]]
        rooms.door_open[k[same]] = np.nan
    ev = [e for e in run(DetectorSet(t.registry, only=["intrusion"]), t) if e.subject_id == "P000"]
    assert [e.event for e in ev if e.event != "updated"] == ["raised", "cleared"]
    assert ev[0].detected_at_ns - ev[0].start_ns == 15 * MIN and "telemetry_silent_since" not in ev[0].evidence
    assert ev[-1].evidence["door_open_min"] == 120.0

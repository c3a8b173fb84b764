"""Silent meters: shielding raises signal_blocking, a cell outage raises one network_outage (not its members),
a dying battery is a maintenance incident, and each clears when the meter or cell is heard again."""

from __future__ import annotations

from detectors import DetectorSet
from detectors.testing import DAY, Town, run


def _events(town: Town) -> list:
    return run(DetectorSet(town.registry, only=["signal"]), town.build())


def _raised(events, kind=None):
    return [e for e in events if e.event == "raised" and (kind is None or e.kind == kind)]


def test_shielded_meter_is_blocking_with_rsrp_evidence_and_clears_on_return():
    t = Town(seed=2, days=16)
    i = int(t.households[4])
    t.block(i, t.t(6), t.t(11), rsrp_sinks=True)
    ev = _events(t)
    raised = _raised(ev)
    assert [(e.kind, e.subject_id) for e in raised] == [("signal_blocking", t.mid(i))]
    r = raised[0]
    assert r.severity == "critical" and r.evidence["rsrp_sank"]
    assert t.t(6) - 2 * DAY <= r.start_ns <= t.t(6)  # the last message heard before the silence
    assert r.detected_at_ns <= t.t(11)
    cleared = [e for e in ev if e.event == "cleared"]
    assert [c.alert_id for c in cleared] == [r.alert_id]
    assert cleared[0].evidence["register_advance_m3"] > 0


def test_abrupt_silence_without_rsrp_drop_is_a_warning():
    t = Town(seed=4, days=14)
    i = int(t.households[10])
    t.block(i, t.t(5), None, rsrp_sinks=False)
    raised = _raised(_events(t))
    assert [(e.kind, e.subject_id, e.severity) for e in raised] == [("signal_blocking", t.mid(i), "warning")]


def test_cell_outage_is_one_incident_for_the_cell_not_its_meters():
    t = Town(seed=5, days=14, cells=2)
    t.cell_outage(1, t.t(7), t.t(8))
    ev = _events(t)
    raised = _raised(ev)
    assert [(e.kind, e.subject_type, e.subject_id) for e in raised] == [("network_outage", "cell", "C1")]
    assert [e.kind for e in ev if e.event == "cleared"] == ["network_outage"]
    assert t.t(7) - 2 * 3600 * 10**9 <= raised[0].start_ns <= t.t(7)


def test_late_data_after_an_outage_raises_nothing_more():
    t = Town(seed=6, days=16, cells=2)
    t.cell_outage(0, t.t(5), t.t(7.5))
    raised = _raised(_events(t))
    assert {e.kind for e in raised} == {"network_outage"}


def test_dead_battery_is_not_theft():
    t = Town(seed=7, days=16)
    i = int(t.households[3])
    t.battery_dies(i, t.t(8))
    raised = _raised(_events(t))
    assert [(e.kind, e.subject_id) for e in raised] == [("battery_depleted", t.mid(i))]


def test_prepaid_meter_silent_with_empty_balance_is_critical():
    t = Town(seed=8, days=14)
    i = next(int(h) for h in t.households if t.registry.meters.prepaid[h])
    t.block(i, t.t(6), None, rsrp_sinks=False)
    t.build()
    t.meter_rows.balance_cny[(t.meter_rows.meter == i) & (t.meter_rows.ts_ns > t.t(5))] = -3.0
    events = run(DetectorSet(t.registry, only=["signal"]), t)
    raised = _raised(events, "signal_blocking")
    assert len(raised) == 1 and raised[0].severity == "critical"
    assert raised[0].evidence["balance_cny"] == -3.0 and raised[0].evidence["prepaid"]


def test_short_outage_inside_one_replay_chunk_is_still_seen():
    t = Town(seed=9, days=10, cells=2)
    t.cell_outage(1, t.t(5), t.t(5) + 4 * 3600 * 10**9)
    t.build()
    whole_chunk = 10**6  # the whole capture in one batch, as a replay of a quiet city might deliver it

    def outages(ds):
        return [e for e in run(ds, t, messages=whole_chunk) if e.kind == "network_outage" and e.event == "raised"]

    assert [e.subject_id for e in outages(DetectorSet(t.registry, only=["signal"]))] == ["C1"]
    # fed whole, with one tick at the end, the four hours of silence are never seen while they last
    assert outages(DetectorSet(t.registry, only=["signal"], tick_every_s=0)) == []


def test_a_cell_of_daily_meters_quiet_between_their_upload_times_is_not_an_outage():
    # 24 daily meters on a cell, each uploading at its own time between 06:00 and 18:00 UTC: every night the cell is
    # quiet for 12 hours, ten times its mean gap between messages, yet no meter has missed its slot
    t = Town(seed=11, days=10, households=12, cells=2, hourly_every=0, upload_hours=(6, 18),
             masters_in_cell=False)
    assert _raised(_events(t)) == []
    # a real outage in those hours silences meters that were due: one incident for the cell
    t = Town(seed=11, days=10, households=12, cells=2, hourly_every=0, upload_hours=(6, 18),
             masters_in_cell=False)
    t.cell_outage(0, t.t(5), t.t(6))
    raised = _raised(_events(t))
    assert [(e.kind, e.subject_id) for e in raised] == [("network_outage", "C0")]
    assert t.t(5) - DAY <= raised[0].start_ns <= t.t(5)

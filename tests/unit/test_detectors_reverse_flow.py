"""Reverse flow: backwards installation, a wound-back register and a rising reverse register are raised;
a register wrap, an announced replacement and pressure transients of a few litres are not."""

from __future__ import annotations

import numpy as np

from detectors import DetectorSet
from detectors.testing import Town, run


def _raised(t: Town) -> list:
    ev = run(DetectorSet(t.registry, only=["reverse_flow"]), t.build())
    return [e for e in ev if e.event == "raised"]


def test_backwards_wound_back_and_reverse_register_are_raised():
    t = Town(seed=1, days=14)
    hh = [int(h) for h in t.households]
    t.backwards(hh[1], t.t(4))
    t.wind_back(hh[9], t.t(6), 25.0)
    t.reverse_register(hh[20], t.t(8), 0.02)
    raised = {e.subject_id: e for e in _raised(t)}
    assert set(raised) == {t.mid(hh[1]), t.mid(hh[9]), t.mid(hh[20])}
    wb = raised[t.mid(hh[9])]
    assert abs(wb.evidence["volume_reversed_m3"] - 25.0) < 1.0
    assert t.t(6) - 2 * 3600 * 10**9 <= wb.start_ns <= t.t(6) + 3600 * 10**9
    assert wb.evidence["first_reading"]["total_m3_before"] is not None


def test_wrap_replacement_and_transients_stay_quiet():
    t = Town(seed=2, days=14)  # the town always has one meter that wraps at register_max_m3
    hh = [int(h) for h in t.households]
    t.replace(hh[4], t.t(5), 0.0)
    t.replace(hh[11], t.t(7), 3.5)
    t.transients(hh[15])
    # a forward register rocking back 4 litres in a tenth of its readings, won back by the next one: the backward
    # steps add up to far more than min_reversed_m3, but the register never stands that far below its highest
    t.transients(hh[16], forward=True)
    t.transients(hh[17], forward=True)
    t.scale_use(hh[17], 0.05)  # (in a home that uses almost nothing too)
    assert _raised(t) == []


def test_a_small_households_meter_installed_backwards_is_raised():
    # a home using about 50 litres a day: each hour's step back is a few litres, within the noise of a pressure
    # transient, but the register keeps falling, and stands min_reversed_m3 below its highest within a day or two
    t = Town(seed=1, days=14)
    i = int(t.households[1])
    t.scale_use(i, 0.15)
    t.backwards(i, t.t(4))
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    e = raised[0]
    assert t.t(4) <= e.start_ns and e.detected_at_ns <= t.t(7)
    assert e.evidence["volume_reversed_m3"] >= 0.05


def test_replacement_recorded_hours_after_the_new_meters_readings_is_not_reverse_flow():
    # the crew's record reaches the system after the new meter has already reported from zero
    t = Town(seed=2, days=14)
    i = int(next(h for h in t.households if t.registry.meters.report_interval_s[h] == 3600))  # reports hourly
    t.replace(i, t.t(5), 0.0, record_late_s=5 * 3600)
    assert _raised(t) == []
    # with no record at all, a register set back to zero is raised once the wait for a record is over
    t = Town(seed=2, days=14)
    t.replace(i, t.t(5), 0.0, record_late_s=None)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert raised[0].detected_at_ns >= t.t(6)


def test_reverse_flow_clears_once_the_register_runs_forward_again():
    t = Town(seed=3, days=14)
    i = int(t.households[6])
    t.wind_back(i, t.t(3), 10.0)
    ev = run(DetectorSet(t.registry, only=["reverse_flow"]), t.build())
    assert [e.event for e in ev] == ["raised", "cleared"]


def test_a_backwards_meter_in_an_empty_home_stays_reported():
    # no water used for days: no reversal, but nothing was fixed either, so the incident must not clear
    t = Town(seed=3, days=14)
    i = int(t.households[6])
    t.backwards(i, t.t(3))
    t.vacancy(i, t.t(5))
    ev = run(DetectorSet(t.registry, only=["reverse_flow"]), t.build())
    assert [e.event for e in ev] == ["raised"]
    # the same meter with use going on keeps its one incident open as well (reversals keep coming)
    t = Town(seed=3, days=14)
    t.backwards(i, t.t(3))
    ev = run(DetectorSet(t.registry, only=["reverse_flow"]), t.build())
    assert [e.event for e in ev] == ["raised"]


def test_a_checkpoint_with_nanosecond_times_resumes_with_the_same_incidents():
    # checkpoints written before the times were held as seconds keep them as nanoseconds under the old names
    t = Town(seed=3, days=16)
    hh = t.households
    t.backwards(int(hh[3]), t.t(5))
    t.wind_back(int(hh[6]), t.t(6), 20.0)  # open at the checkpoint, cleared after it
    t.build()
    straight = [(e.alert_id, e.event, e.start_ns) for e in run(DetectorSet(t.registry, only=["reverse_flow"]), t)]
    chunks = list(t.chunks())
    half = len(chunks) // 2
    ds = DetectorSet(t.registry, only=["reverse_flow"])
    events = []
    for batch, wm in chunks[:half]:
        events += ds.update(batch) + ds.tick(wm)
    blob = ds.state()
    for old, new in (("last_ts", "last_s"), ("first_ts", "first_s"), ("rev_ts", "rev_s")):
        blob[f"reverse_flow.{old}"] = blob.pop(f"reverse_flow.{new}").astype(np.int64) * 1_000_000_000
    resumed = DetectorSet(t.registry, only=["reverse_flow"])
    resumed.restore(blob)
    for batch, wm in chunks[half:]:
        events += resumed.update(batch) + resumed.tick(wm)
    events += resumed.tick(t.end_ns())
    assert [(e.alert_id, e.event, e.start_ns) for e in events] == straight
    assert {e.event for e in events} == {"raised", "cleared"}

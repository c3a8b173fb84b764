"""Bypass: the two judged days a pattern must show on. A pipe is there on both days, and its hours show it on each;
how much water it takes is judged on the window of days, where a rise too small to stand out of one day's noise
adds up."""

from __future__ import annotations

from detectors.base import HOUR_NS
from detectors.testing import Town
from tests.unit.test_detectors_bypass import _households, _raised


def test_a_first_day_whose_own_hours_show_the_pipe_counts_before_its_buildings_rise_stands_clear():
    # a household whose meter now registers half its water, from mid-afternoon: on its first whole day its own hours
    # follow the building's unmetered use by z_pattern, but that one day's rise is not yet z_min clear of the
    # building's noise. That day is the first of the two: named on the second (81 h after the pipe went in, where
    # waiting for a first day with the rise clear too named it a day later, at 105 h)
    t = Town(seed=6, days=18)
    i = [int(k) for k in _households(t, 1) if t.registry.meters.report_interval_s[k] == 3600][0]
    t.bypass(i, start := t.t(8) + 15 * HOUR_NS, 0.5)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert raised[0].evidence["days_observed"] == 2
    assert raised[0].detected_at_ns - start <= 84 * HOUR_NS

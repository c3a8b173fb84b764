"""Bypass: the two judged days a pattern must show on. A pipe is there on both days, and its hours show it on each;
how much water it takes is judged on the window of days, where a rise too small to stand out of one day's noise
adds up; and a small pipe's pattern that builds up over more than a week is followed until it does. One day is
enough when it shows what two would, on more than one hour, or when the meter fell in the very hour its building's
rise began."""

from __future__ import annotations

import numpy as np

from detectors.base import HOUR_NS
from detectors.testing import Town
from tests.unit.test_detectors_bypass import _P, _events, _households, _raised


def _half_bypass(seed: int) -> tuple[Town, int, int]:
    """A town whose first hourly household of building 1 loses half its water round its meter from 15 hours into
    day 8: the town, the household and the pipe's start."""
    t = Town(seed=seed, days=18)
    i = [int(k) for k in _households(t, 1) if t.registry.meters.report_interval_s[k] == 3600][0]
    t.bypass(i, start := t.t(8) + 15 * HOUR_NS, 0.5)
    return t, i, start


def test_a_first_day_whose_own_hours_show_the_pipe_counts_before_its_buildings_rise_stands_clear():
    # a household whose meter now registers half its water, from mid-afternoon: on its first whole day its own hours
    # follow the building's unmetered use by z_pattern, but that one day's rise is not yet z_min clear of the
    # building's noise. That day is the first of the two: named on the second (81 h after the pipe went in, where
    # waiting for a first day with the rise clear too named it a day later, at 105 h)
    t, i, start = _half_bypass(6)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert raised[0].evidence["days_observed"] == 2
    assert raised[0].detected_at_ns - start <= 84 * HOUR_NS


def test_a_small_pipe_whose_pattern_builds_up_for_more_than_a_week_is_still_named():
    # a small household (a fifth to a quarter of the usual water) loses about half of it round its meter: its hours
    # follow its building's unmetered use by a little more each day, and the pattern reaches naming's evidence only
    # after more than the seven days a rise no one explains is followed. While the pattern is under way (3 standard
    # errors, the meter's loss about the rise) the building's rise is followed on; closing it would have thrown that
    # evidence away and let the loss model learn the pipe (nothing was raised at all)
    for seed, scale, share in ((7, 0.25, 0.45), (8, 0.18, 0.6)):
        t = Town(seed=seed, days=26)
        i = int(_households(t, 1)[2])
        t.scale_use(i, scale)
        t.bypass(i, t.t(6), share)
        raised = [e for e in _events(t) if e.event == "raised"]
        assert [(e.kind, e.subject_id) for e in raised] == [("bypass", t.mid(i))], seed
        assert raised[0].detected_at_ns - t.t(6) > 7 * 24 * HOUR_NS, seed


def test_a_first_day_resting_on_one_metered_hour_waits_for_a_second_day(monkeypatch):
    # the clear bypass above, from the last hour of the day before: it is named on its first whole day alone. Were
    # that day's fit resting on one metered hour (as when a family home for an hour after a trip meets a spike of its
    # building's rise), one day would not be enough: the pattern must show again the next day
    from detectors.bypass import day as day_mod
    evidence = day_mod.DayStep.evidence
    for seed in (4, 6):
        def town(seed: int = seed) -> tuple[Town, int]:
            t = Town(seed=seed, days=16)
            i = [int(i) for i in _households(t, 1) if t.registry.meters.report_interval_s[i] == 3600][0]
            t.scale_use(i, 4.0)
            t.bypass(i, t.t(8) - HOUR_NS, 0.8)
            return t, i

        t, i = town()
        first = _raised(t)
        assert [e.subject_id for e in first] == [t.mid(i)], seed
        assert first[0].evidence["days_observed"] == 1, seed

        def one_hour(step, fresh, i=i):
            evidence(step, fresh)
            step.top_hour[step.hh == i] = 1.0
            step.zb_rest[step.hh == i] = 0.0  # (the other hours show nothing)

        monkeypatch.setattr(day_mod.DayStep, "evidence", one_hour)
        t, i = town()
        later = _raised(t)
        monkeypatch.undo()
        assert [e.subject_id for e in later] in ([], [t.mid(i)]), seed
        assert all(e.detected_at_ns > first[0].detected_at_ns and e.evidence["days_observed"] >= 2 for e in later), seed


def test_the_share_of_a_days_fit_in_its_biggest_hour(monkeypatch):
    # a household home for one hour of the day (a trip away, back for a bath): that hour is nearly all of its fit.
    # On its ordinary days (bursty: a shower hour can hold half of it) no hour holds that much
    from detectors.bypass import day as day_mod
    t = Town(seed=4, days=16)
    i = int(_households(t, 1)[3])
    t.scale_use(i, 3.0)
    t.trip(i, t.t(8) + 12 * HOUR_NS, t.t(9) + 23 * HOUR_NS)
    t.burst(i, t.t(9) + 23 * HOUR_NS, 0.15)
    t.leak(1, t.t(9), 0.03)  # (a rise, so that the building's hours are fitted)
    seen: dict[int, float] = {}
    evidence = day_mod.DayStep.evidence

    def record(step, fresh):
        evidence(step, fresh)
        at = np.flatnonzero(step.hh == i)
        if at.size and step.act[at[0]]:
            seen[step.day] = float(step.top_hour[at[0]])

    monkeypatch.setattr(day_mod.DayStep, "evidence", record)
    _events(t)
    home = (t.t(9) // 10**9 + 8 * 3600) // 86400  # the local day it came home on, in its last hour
    assert seen[home] > 0.9
    assert max(v for d, v in seen.items() if d != home) < 0.9


def test_a_days_pattern_resting_on_one_hour_shows_nothing_in_its_other_hours(monkeypatch):
    # a family away all day but its last hour, in which its building's unmetered use happens to follow its use: the
    # whole day's fit is that hour. Refitted without it (every sum centred again: that hour pulled the means up), the
    # other hours show nothing, so one day is not enough. A meter that registers a trickle past a pipe shows the pipe
    # in its other hours too
    from detectors.bypass import day as day_mod
    evidence = day_mod.DayStep.evidence

    def days(t: Town, i: int) -> dict[int, tuple[float, float]]:
        seen: dict[int, tuple[float, float]] = {}

        def record(step, fresh):
            evidence(step, fresh)
            at = np.flatnonzero(step.hh == i)
            if at.size and step.act[at[0]]:
                seen[step.day] = (float(step.top_hour[at[0]]), float(step.zb_rest[at[0]]))

        monkeypatch.setattr(day_mod.DayStep, "evidence", record)
        raised = _raised(t)
        monkeypatch.undo()
        assert raised == [] or [e.subject_id for e in raised] == [t.mid(i)]
        return seen

    def day8(t: Town) -> int:
        return (t.t(8) // 10**9 + 8 * 3600) // 86400  # (the town's local day 8)

    for seed, home in ((2, 1), (6, 2)):
        t = Town(seed=seed, days=16)
        i = [int(i) for i in _households(t, 1) if t.registry.meters.report_interval_s[i] == 3600][0]
        t.scale_use(i, 3.0)
        t.trip(i, t.t(7) + 20 * HOUR_NS, t.t(9) - home * HOUR_NS)
        t.chance_fit(i, t.t(8), 1.0, gap_falls=False)
        top, rest = days(t, i)[day8(t)]
        assert top > 0.9 and rest < _P.z_pattern, seed
    t = Town(seed=4, days=16)
    i = [int(i) for i in _households(t, 1) if t.registry.meters.report_interval_s[i] == 3600][0]
    t.scale_use(i, 3.0)
    t.bypass(i, t.t(8) + 2 * HOUR_NS, 0.97)
    assert days(t, i)[day8(t)][1] >= _P.z_pattern


def test_a_trickle_that_fell_in_the_hour_its_buildings_rise_began_is_named_on_the_next_days_balance():
    # the pipe goes in at 14:00 and the meter registers 3 % from then on: the building's unmetered use steps up in
    # that very hour by what the meter lost (ONSET). That step is the first day's evidence of the pipe; the hourly
    # pattern of the trickle the next day is the second, so it is named with the next day's balance (the day ends 34
    # hours after the start, and the building's daily meters upload it within a day) instead of a day later
    for seed in (2, 6):
        t = Town(seed=seed, days=16)
        i = [int(i) for i in _households(t, 1) if t.registry.meters.report_interval_s[i] == 3600][0]
        t.scale_use(i, 3.0)
        start = t.t(8) + 14 * HOUR_NS
        t.bypass(i, start, 0.97)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed
        assert raised[0].detected_at_ns - start <= 58 * HOUR_NS, seed


def test_a_first_day_is_kept_across_a_day_on_which_only_a_size_fell_short(monkeypatch):
    # a half bypass as in the first test above (another town), named on its second day (81 h). Were a size to fall
    # short on that second day (the rise 2.8 SE against 3, say) while the window's hours and its own hours still
    # follow the rise, the pipe showed in its hours that day too: its first day is kept, and it is named on the third
    # day, not forgotten and named two days later
    from detectors.bypass import judge
    pattern = judge._pattern
    t, i, start = _half_bypass(7)
    plain = _raised(t)
    assert [(e.subject_id, e.evidence["days_observed"]) for e in plain] == [(t.mid(i), 2)]
    assert plain[0].detected_at_ns - start <= 84 * HOUR_NS
    passed: list[int] = []

    def short_on_its_second_day(w, p):
        ok = pattern(w, p)
        at = np.flatnonzero(w.hh == i)
        if at.size and ok[at].any():
            passed.append(1)
            if len(passed) == 2:
                ok = ok.copy()
                ok[at] = False  # (its hours still follow the rise: only a size fell short)
        return ok

    monkeypatch.setattr(judge, "_pattern", short_on_its_second_day)
    t, i, start = _half_bypass(7)
    raised = _raised(t)
    assert [(e.subject_id, e.evidence["days_observed"]) for e in raised] == [(t.mid(i), 3)]
    assert raised[0].detected_at_ns - plain[0].detected_at_ns <= 24 * HOUR_NS

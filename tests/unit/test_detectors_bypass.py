"""Bypass: the building's water balance grows while one household's metered use drops by as much; a vacancy
(the master drops too) and a leak (no household explains it) are not a bypass."""

from __future__ import annotations

import numpy as np

from detectors import DetectorSet
from detectors.checks import Town, run


def _raised(t: Town) -> list:
    ev = run(DetectorSet(t.registry, only=["bypass"]), t.build())
    return [e for e in ev if e.event == "raised"]


def _biggest_household(t: Town, building: int) -> int:
    # the injected use is random per meter; take a household whose use stands out of the noise
    t.build()
    m = t.registry.meters
    members = np.flatnonzero((m.building == building) & ~m.is_master)
    rows = t.meter_rows
    use = [np.ptp(rows.total_m3[rows.meter == i]) for i in members]
    return int(members[int(np.argmax(use))])


def test_bypass_names_the_household_and_estimates_the_volume():
    probe = Town(seed=4, days=18)
    i = _biggest_household(probe, 1)
    t = Town(seed=4, days=18)
    t.bypass(i, t.t(8), 0.9)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    e = raised[0]
    assert t.t(7) <= e.start_ns <= t.t(10)
    ev = e.evidence
    assert ev["household_use_m3_per_day_after"] < 0.5 * ev["household_use_m3_per_day_before"]
    assert ev["building_gap_m3_per_day_after"] > ev["building_gap_m3_per_day_before"]
    assert ev["estimated_unmetered_m3_per_day"] > 0.1


def test_vacancy_and_leak_are_not_bypass():
    probe = Town(seed=4, days=18)
    i = _biggest_household(probe, 1)
    t = Town(seed=4, days=18)
    t.vacancy(i, t.t(8))
    t.leak(2, t.t(9), 0.03)
    assert _raised(t) == []

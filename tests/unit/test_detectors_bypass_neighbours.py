"""Bypass beside neighbours in other incidents: what such a neighbour's meter still measured stays in its building's
balance, and only what it did not measure is estimated."""

from __future__ import annotations

from detectors import DetectorSet
from detectors.testing import Town, run
from tests.unit.test_detectors_bypass import _biggest_households, _households, _partial_bypass_town


def test_a_neighbour_with_backflow_on_its_reverse_register_is_measured_not_estimated():
    # a neighbour's reverse register counts a backflow now and then (its own reverse_flow incident), while its forward
    # register goes on counting its household's water: that is measured use, so the bypass beside it is named with
    # the neighbour among the measured, not the estimated (an estimate of a big household widens the balance by its
    # day-to-day swing)
    t, i = _partial_bypass_town()
    j = next(int(k) for k in _households(t, int(t.registry.meters.building[i])) if k != i)
    t.scale_use(j, 4.0)
    t.reverse_register(j, t.t(5), 0.02)
    events = run(DetectorSet(t.registry, only=["reverse_flow", "bypass"]), t.build())
    raised = {(e.kind, e.subject_id): e for e in events if e.event == "raised"}
    assert ("reverse_flow", t.mid(j)) in raised
    bypass = [e for (k, _), e in raised.items() if k == "bypass"]
    assert [e.subject_id for e in bypass] == [t.mid(i)]
    assert t.mid(j) not in bypass[0].evidence["uncertain_neighbours"]


def test_a_neighbours_register_set_back_teaches_the_building_nothing():
    # a neighbour's register is set back 3 m3 in an hour (under what its 15 mm pipe could carry backwards in an
    # hour, so it reads as water run backwards): the households used 3 m3 more than the master delivered that day,
    # which water cannot do. The day is a fault, not the building's loss: learned, it held the loss model 3 m3 a
    # day low for weeks, the building was reported for a rise it never had, and a full bypass a week later was
    # named on 5 of 8 seeds in a probe (8 of 8 now, and no building reported)
    for seed in (1, 4, 7):
        i, j = _biggest_households(seed, 30, 1, 2)
        t = Town(seed=seed, days=30)
        t.wind_back(j, t.t(8.3), 3.0)
        t.bypass(i, t.t(14.4), 1.0)
        events = run(DetectorSet(t.registry, only=["reverse_flow", "bypass"]), t.build())
        raised = [(e.kind, e.subject_id) for e in events if e.event == "raised"]
        assert raised == [("reverse_flow", t.mid(j)), ("bypass", t.mid(i))], seed

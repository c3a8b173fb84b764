"""Bypass beside neighbours in other incidents: what such a neighbour's meter still measured stays in its building's
balance, and only what it did not measure is estimated. And beside a family that left before the rise began."""

from __future__ import annotations

from detectors import DetectorSet
from detectors.base import HOUR_NS
from detectors.testing import Town, run
from tests.unit.test_detectors_bypass import _households, _partial_bypass_town, _raised


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


def test_a_full_bypass_is_named_beside_a_family_that_left_two_days_before_it():
    # a family of the building leaves on day 8; on day 10 at 10:00 a neighbour of about its size has its meter
    # stopped by a full bypass, and the building's unmetered use steps up by its use in that very hour. Both meters
    # now register nothing, but the family's did so before the rise began: a pipe takes the water off its meter in
    # the hour the rise begins. Only the neighbour is named (it was reported as the building's, both as candidates)
    for seed in (4, 6):
        t = Town(seed=seed, days=20)
        hs = _households(t, 1)
        away, culprit = int(hs[2]), int(hs[5])
        t.scale_use(away, 2.0)
        t.scale_use(culprit, 2.0)
        t.vacancy(away, t.t(8))
        t.bypass(culprit, t.t(10) + 10 * HOUR_NS, 1.0)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(culprit)], seed
        assert raised[0].evidence["how"] == "meter_nearly_stopped"

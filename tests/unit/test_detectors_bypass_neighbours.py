"""Bypass beside neighbours in other incidents: what such a neighbour's meter still measured stays in its building's
balance, and only what it did not measure is estimated."""

from __future__ import annotations

from detectors import DetectorSet
from detectors.testing import run
from tests.unit.test_detectors_bypass import _households, _partial_bypass_town


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

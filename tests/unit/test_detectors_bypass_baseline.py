"""Bypass: a household's usual use is learned from its own ordinary days, and in its first days only from days
someone was home. A household away in its first days used to keep a baseline of next to nothing for good: every
later day was "far off" it and never learned, its drop against that baseline was never positive, and a pipe around
its meter was never named (nor, silent, was its use guessed as more than nothing)."""

from __future__ import annotations

from detectors.testing import Town
from tests.unit.test_detectors_bypass import _biggest_households, _raised


def test_a_household_away_in_its_first_days_is_still_watched():
    # away from the first hour for four days, then home as usual; a pipe takes 90 % of its water from day 20
    # (before the fix, none of the three seeds' pipes was named)
    for seed in (1, 2, 3):
        hh = _biggest_households(seed, 34, 1, 1)[0]
        t = Town(seed=seed, days=34)
        t.trip(hh, t.t(0), t.t(4))
        t.bypass(hh, t.t(20), 0.9)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(hh)], seed
        assert raised[0].start_ns >= t.t(19), seed

"""Bypass: a household's pattern against its building's other households. The rise must follow one household's hours
more than any other's; how much more is the evidence of the two fits, the log of their likelihood ratio, so a
neighbour with the same daily habits may follow a big rise a little more without hiding the pipe."""

from __future__ import annotations

import numpy as np

from detectors.bypass.judge import _beats_rivals
from detectors.bypass.params import BypassParams


def _named(*zb: float) -> list[bool]:
    z = np.array(zb, dtype=float)
    return _beats_rivals(z, z >= 5.0, np.zeros(z.size, dtype=np.int64), 1, BypassParams()).tolist()


def test_at_the_naming_threshold_a_pattern_must_beat_its_rivals_by_z_shape():
    # z_pattern 5, z_shape 2: a neighbour at 3 standard errors leaves the pattern standing, one at 3.2 does not
    assert _named(5.0, 3.0) == [True, False]
    assert _named(5.0, 3.2) == [False, False]


def test_a_stronger_pattern_may_have_a_proportionally_stronger_rival():
    # a 9 SE pattern beside a 7.5 SE neighbour: the difference is under z_shape, but the evidence for the first
    # household over the second (81 - 56 in squared standard errors) is more than at the threshold (25 - 9)
    assert _named(9.0, 7.5, 1.0) == [True, False, False]
    assert _named(9.0, 8.2, 1.0) == [False, False, False]


def test_rivals_are_counted_within_their_own_building_only():
    # a household alone in its building at 9 SE is named, whatever the next building's households show; there, two
    # households at 8.9 and 8.5 SE hide each other
    z = np.array([9.0, 8.9, 8.5, 1.0])
    pos = np.array([0, 1, 1, 1])
    assert _beats_rivals(z, z >= 5.0, pos, 2, BypassParams()).tolist() == [True, False, False, False]


def test_a_rise_that_runs_against_a_neighbours_hours_is_no_rival():
    assert _named(5.0, -6.0) == [True, False]

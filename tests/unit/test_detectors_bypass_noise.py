"""Bypass: the building's hourly noise, against which every household's pattern is weighed, is the noise of the hours
the fit uses. A lost uplink leaves an hour's use known only with the next hour's: spread over both, it makes a pair
of spikes in the building's unmetered use, one up and one down. The fit leaves such hours out; learning the noise on
them (and as a mean of squares, which one such pair holds up for weeks) made every pattern in the building look
several times weaker than it was."""

from __future__ import annotations

import numpy as np

from detectors.base import HOUR_NS
from detectors.testing import Town
from tests.unit.test_detectors_bypass import _households, _raised


def test_a_partial_bypass_is_named_in_a_building_whose_busy_meters_lost_uplinks_in_its_first_days():
    # two big hourly users of the building (four times the usual household) lose an uplink each at a busy hour on
    # the first four days; a week later a household's meter starts registering 60 % of its water. Learned on the
    # spread hours, the building's noise stayed high for the rest of the month and the bypass was never named
    for seed in (1, 2):
        t = Town(seed=seed, days=18)
        m = t.registry.meters
        members = _households(t, 1)
        hourly = [int(k) for k in members if m.report_interval_s[k] == 3600]
        i = int([k for k in members if k not in hourly][1])
        for j in hourly:
            t.scale_use(j, 4.0)
        rng = np.random.default_rng(seed)
        for n in range(4):
            t.lose(hourly[n % len(hourly)], t.t(1 + n) + int(rng.choice([23, 0, 1, 10, 11, 12])) * HOUR_NS)
        t.scale_use(i, 0.5)
        t.bypass(i, t.t(8), 0.4)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed

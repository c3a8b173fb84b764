"""Bypass: the building's water balance grows while one household's metered use drops by as much; a vacancy
(the master drops too) and a leak (no household explains it) are not a bypass."""

from __future__ import annotations

import numpy as np

from detectors import DetectorSet
from detectors.base import HOUR_NS
from detectors.bypass_hourly import HourlyBypassParams
from detectors.testing import Town, run

_P = HourlyBypassParams()


def _raised(t: Town) -> list:
    ev = run(DetectorSet(t.registry, only=["bypass"]), t.build())
    return [e for e in ev if e.event == "raised"]


def _biggest_households(t: Town, building: int, k: int) -> list[int]:
    # the injected use is random per meter; take the households whose use stands out of the noise, biggest first
    t.build()
    m = t.registry.meters
    members = np.flatnonzero((m.building == building) & ~m.is_master)
    rows = t.meter_rows
    use = np.array([np.ptp(rows.total_m3[rows.meter == i]) for i in members])
    return [int(i) for i in members[np.argsort(-use, kind="stable")[:k]]]


def _biggest_household(t: Town, building: int) -> int:
    return _biggest_households(t, building, 1)[0]


def _town_and_big_user(seed: int, days: int, building: int) -> tuple[Town, int]:
    """A fresh town and its household in `building` whose use stands out most (found on a twin of the town)."""
    return Town(seed=seed, days=days), _biggest_household(Town(seed=seed, days=days), building)


def _town_with_two_big_users(seed: int, first: int, second: int, scale: float) -> tuple[Town, int, int]:
    """A fresh town and two households of building 1 (by position) using `scale` times the usual water."""
    t = Town(seed=seed, days=20)
    m = t.registry.meters
    hs = np.flatnonzero((m.building == 1) & ~m.is_master)
    x, y = int(hs[first]), int(hs[second])
    t.scale_use(x, scale)
    t.scale_use(y, scale)
    return t, x, y


def _small_household(seed: int, scale: float) -> tuple[Town, int]:
    """A fresh town and the third household of building 1, using `scale` times the usual water all along."""
    t = Town(seed=seed, days=20)
    m = t.registry.meters
    i = int(np.flatnonzero((m.building == 1) & ~m.is_master)[2])
    t.scale_use(i, scale)
    return t, i


def _partial_bypass_town() -> tuple[Town, int]:
    # a meter that still registers 40 % of the use from day 7
    t, i = _town_and_big_user(5, 16, 2)
    t.bypass(i, t.t(7), 0.6)
    return t, i


def test_bypass_names_the_household_and_estimates_the_volume():
    t, i = _town_and_big_user(4, 18, 1)
    t.bypass(i, t.t(8), 0.9)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    e = raised[0]
    assert t.t(7) <= e.start_ns <= t.t(10)
    ev = e.evidence
    assert ev["household_use_m3_per_day_after"] < 0.5 * ev["household_use_m3_per_day_before"]
    assert ev["building_gap_m3_per_day_after"] > ev["building_gap_m3_per_day_before"]
    assert ev["estimated_unmetered_m3_per_day"] > 0.1
    assert ev["evidence_strength"] >= 8 and ev["days_observed"] >= 2  # how sure, for the inspector


def test_vacancy_and_leak_are_not_bypass():
    t, i = _town_and_big_user(4, 18, 1)
    t.vacancy(i, t.t(8))
    t.leak(2, t.t(9), 0.03)
    assert _raised(t) == []


def test_partial_bypass_is_found_by_its_hourly_pattern():
    # a meter that still registers 40 % of the use: the daily drop is small next to a household's day-to-day
    # swing, but the building gap now follows this household's hours
    t, i = _partial_bypass_town()
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert t.t(6) <= raised[0].start_ns <= t.t(10)
    assert 0.2 <= raised[0].evidence["estimated_registered_fraction"] <= 0.6


def test_a_backlog_delivered_at_once_finds_the_same_bypass():
    # after the ingester was down, days of traffic arrive in one batch, reaching far beyond the hours held: each
    # day is still judged with all its hours, so the bypass is named as in the live stream, from the same day
    t, i = _partial_bypass_town()
    live = _raised(t)
    backlog = run(DetectorSet(t.registry, only=["bypass"]), t, messages=10**9)  # all traffic in one batch
    raised = [e for e in backlog if e.event == "raised"]
    assert [e.subject_id for e in live] == [t.mid(i)]
    assert [(e.alert_id, e.start_ns, e.evidence["since_day"]) for e in raised] == \
        [(e.alert_id, e.start_ns, e.evidence["since_day"]) for e in live]


def test_two_bypasses_in_one_building_are_both_named():
    t = Town(seed=6, days=20)
    m = t.registry.meters
    members = np.flatnonzero((m.building == 0) & ~m.is_master)
    t.bypass(int(members[1]), t.t(6), 0.9)
    t.bypass(int(members[4]), t.t(11), 0.9)
    assert sorted(e.subject_id for e in _raised(t)) == sorted([t.mid(int(members[1])), t.mid(int(members[4]))])


def test_four_bypasses_in_one_building_are_all_named():
    # each named bypass's unmetered share stays out of the building gap while its case is open, so the next one in
    # the building still stands out (holding one per building, the older ones' hours came back into the gap)
    big = _biggest_households(Town(seed=1, days=24, households=20), 0, 4)
    t = Town(seed=1, days=24, households=20)
    for k, i in enumerate(big):
        t.bypass(i, t.t(6 + 3 * k), 0.85)
    assert sorted(e.subject_id for e in _raised(t)) == sorted(t.mid(i) for i in big)


def test_a_burst_beyond_the_pipe_does_not_spoil_the_building_balance():
    # a neighbour fills a tank faster than its pipe's nominal flow on the first day: its meter's hour is dropped as
    # broken, but the master saw the water; that hour is left out of the balance, so the gap the bypass is measured
    # against (and shown to the inspector) is the building's usual one
    def bypass_evidence(burst: bool) -> dict:
        t, i = _town_and_big_user(4, 18, 1)
        t.bypass(i, t.t(8), 0.9)
        if burst:
            m = t.registry.meters
            other = int(np.flatnonzero((m.building == 1) & ~m.is_master & (np.arange(len(m)) != i))[0])
            t.burst(other, t.t(1.5), 8.0)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(i)]
        return raised[0].evidence

    clean, burst = bypass_evidence(False), bypass_evidence(True)
    assert abs(burst["building_gap_m3_per_day_before"] - clean["building_gap_m3_per_day_before"]) < 0.1


def test_clean_town_and_silent_households_raise_nothing():
    t = Town(seed=7, days=16)
    hh = t.households
    t.block(int(hh[3]), t.t(5))  # silent, still using water: the gap grows without anyone's hourly pattern
    t.cell_outage(1, t.t(8), t.t(9))
    assert _raised(t) == []


def test_full_bypass_with_a_still_meter_is_found_and_a_vacancy_of_the_same_household_is_not():
    # all the water goes round the meter: there is no hourly pattern left to follow, but the household's metered
    # day collapses while the building gap rises by what it used to register
    t, i = _town_and_big_user(4, 18, 1)
    t.bypass(i, t.t(8), 1.0)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert t.t(7) <= raised[0].start_ns <= t.t(11)
    assert raised[0].evidence["estimated_registered_fraction"] < 0.2
    assert raised[0].evidence["evidence_strength"] >= 3 and raised[0].evidence["days_observed"] >= 3
    quiet = Town(seed=4, days=18)
    quiet.vacancy(i, quiet.t(8))
    assert _raised(quiet) == []


def test_meters_reading_a_few_minutes_off_the_hour_still_balance():
    # household meters whose clocks read up to five minutes either side of the hour: each whole hour's register is
    # interpolated between the readings around it, so the bypass is still named (and nothing else)
    t, i = _partial_bypass_town()
    t.build()
    rows, m = t.meter_rows, t.registry.meters
    skew = np.random.default_rng(3).integers(-300, 301, len(m)) * 1_000_000_000
    skew[m.is_master] = 0
    rows.ts_ns = rows.ts_ns + skew[rows.meter]
    raised = [e for e in run(DetectorSet(t.registry, only=["bypass"]), t) if e.event == "raised"]
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert t.t(6) <= raised[0].start_ns <= t.t(10)


def test_a_small_households_partial_bypass_is_found_from_days_of_weak_evidence():
    # a household using a fifth of the usual water, 40 % still registered: no single day stands out of the
    # building's noise, but day after day its hours show in the gap, and its meter lost about what the gap gained
    for seed, scale in ((7, 0.25), (8, 0.15)):
        t, i = _small_household(seed, scale)
        t.bypass(i, t.t(6), 0.6)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed
        e = raised[0]
        assert t.t(5) <= e.start_ns <= t.t(8)
        assert e.evidence["days_observed"] >= 5  # the evidence says it took days
        assert e.evidence["household_use_m3_per_day_after"] < e.evidence["household_use_m3_per_day_before"]


def test_a_deep_drop_of_the_meter_needs_fewer_days_of_hourly_evidence():
    # a small household's bypass a week before the data ends, its meter registering a fifth: its hours show in the gap
    # only weakly, too few days for the usual bar, but day after day its meter lost most of its use
    for seed, scale, start in ((7, 0.25, 13), (8, 0.15, 14)):
        t, i = _small_household(seed, scale)
        t.bypass(i, t.t(start), 0.8)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed
        e = raised[0]
        assert e.start_ns == t.t(start), seed
        assert e.evidence["days_observed"] >= _P.cusum_drop_days
        assert e.evidence["household_use_m3_per_day_after"] <= (
            _P.cusum_drop_share * e.evidence["household_use_m3_per_day_before"])
        # the same household using a quarter of its water from that day (someone moved out) is no bypass: the
        # master fell with it, and the gap does not follow its hours
        t = Town(seed=seed, days=20)
        t.scale_use(i, 0.25, since=t.t(start))
        assert _raised(t) == [], seed


def test_a_meter_left_with_a_trickle_needs_even_less_hourly_evidence_over_more_days():
    # a small household's bypass that leaves its meter a tenth: the trickle barely shows its hours in the gap, but
    # four days of a meter that lost nine tenths of its use, while the gap follows what is left, name it
    for seed, scale, start in ((8, 0.15, 13), (8, 0.25, 14)):
        t, i = _small_household(seed, scale)
        t.bypass(i, t.t(start), 0.9)
        raised = _raised(t)
        assert [(e.subject_id, e.start_ns) for e in raised] == [(t.mid(i), t.t(start))], seed
        e = raised[0]
        assert e.evidence["days_observed"] >= _P.cusum_deeper_days
        assert e.evidence["evidence_strength"] < _P.cusum_drop_h  # less than the deep drop's bar
        # the household using a tenth of its water from that day, with no bypass: the gap does not follow it
        t = Town(seed=seed, days=20)
        t.scale_use(i, 0.1, since=t.t(start))
        assert _raised(t) == [], seed


def test_a_building_with_a_household_under_suspicion_every_day_still_learns_its_households_usual_use():
    # a chance fit every other day keeps some household of the building under suspicion from the start, so the
    # building never has a quiet day; a household's usual use is still learned, and its bypass is then found
    for seed in (1, 2, 4):
        t = Town(seed=seed, days=20)
        hs = _biggest_households(Town(seed=seed, days=20), 1, 5)
        for k, day in enumerate((1, 3, 5, 7)):
            t.chance_fit(hs[k + 1], t.t(day) + 10 * HOUR_NS, 3.0, gap_falls=False)
        t.bypass(hs[0], t.t(9), 0.8)
        raised = _raised(t)
        assert [(e.subject_id, e.start_ns) for e in raised] == [(t.mid(hs[0]), t.t(9))], seed


def test_a_vacancy_as_a_neighbour_falls_silent_is_not_bypass():
    # the family leaves on the day a neighbour's meter is shielded: the neighbour's use now sits in the gap, about
    # what the empty home stopped using. The silent neighbour counts at its usual use, so the gap did not rise.
    for seed in (2, 4):
        t, away, shielded = _town_with_two_big_users(seed, 1, 4, 2.5)
        t.vacancy(away, t.t(8))
        t.block(shielded, t.t(8))
        assert _raised(t) == [], seed


def test_a_bypass_beside_a_meter_installed_backwards_is_still_found():
    # a neighbour's meter installed backwards counts its water down: that water still passes the master, so its
    # fall is its use in the balance (else the gap swings by the neighbour's whole use and hides the bypass)
    t, i = _partial_bypass_town()
    m = t.registry.meters
    j = next(int(k) for k in np.flatnonzero((m.building == m.building[i]) & ~m.is_master) if k != i)
    t.scale_use(j, 4.0)
    t.backwards(j, t.t(5))
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert t.t(6) <= raised[0].start_ns <= t.t(10)


def test_a_bypass_as_the_household_uses_more_is_vouched_for_by_the_gap():
    # the household's use doubles as the bypass starts (a relative moves in): its meter shows hardly any loss, but
    # the building gap rose by what the hourly fit says goes round the meter, far beyond its usual swing
    t, i = _town_and_big_user(5, 16, 2)
    t.scale_use(i, 2.0, since=t.t(7))
    t.bypass(i, t.t(7), 0.6)
    raised = _raised(t)
    assert [e.subject_id for e in raised] == [t.mid(i)]
    assert t.t(6) <= raised[0].start_ns <= t.t(10)
    ev = raised[0].evidence
    assert ev["building_gap_m3_per_day_after"] - ev["building_gap_m3_per_day_before"] > 0.5 * ev[
        "estimated_unmetered_m3_per_day"]


def test_a_vacancy_is_not_named_when_a_neighbours_full_bypass_raises_the_gap_days_later():
    # a family leaves on day 5 (the gap stays); on day 10 a neighbour's meter stops behind a full bypass (the gap
    # rises by about what the family used to use). Only the neighbour is named: the empty home collapsed days before
    # the gap rose
    for seed in (4, 6):
        t, away, culprit = _town_with_two_big_users(seed, 2, 5, 2.0)
        t.vacancy(away, t.t(5))
        t.bypass(culprit, t.t(10), 1.0)
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(culprit)], seed
        assert t.t(9) <= raised[0].start_ns <= t.t(13)



def test_strong_slow_evidence_is_named_when_the_gap_vouches_though_the_households_use_rose():
    # the household's use doubles as its bypass starts, so its meter shows no loss; a silent neighbour's use in the
    # gap keeps each day's fit weak. Day after day the gap follows its hours, and the gap rose by what the fits
    # imply: once the slow evidence is twice the bar, that is enough
    for seed in (8, 9):
        t = Town(seed=seed, days=26)
        m = t.registry.meters
        hs = np.flatnonzero((m.building == 1) & ~m.is_master)
        i = int(hs[2])
        t.scale_use(i, 2.0, since=t.t(6))
        t.bypass(i, t.t(6), 0.6)
        t.block(int(hs[4]), t.t(3))
        raised = _raised(t)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed
        e = raised[0]
        assert t.t(5) <= e.start_ns <= t.t(8)
        # named by the slow evidence at twice its bar, over more days than a streak needs
        assert e.evidence["evidence_strength"] >= _P.cusum_strong * _P.cusum_h
        assert e.evidence["days_observed"] >= 3
        assert e.evidence["household_use_m3_per_day_after"] >= 0.75 * e.evidence["household_use_m3_per_day_before"]


def _bypass_after_a_chance_fit(seed: int, beta: float, gap_falls: bool) -> tuple[Town, int, list]:
    """A small household of building 1 (a quarter of the usual use) with a chance fit on day 5 and a bypass
    (40 % still registered) from day 6; returns the town, the household and the raised events."""
    t = Town(seed=seed, days=20)
    m = t.registry.meters
    i = int(np.flatnonzero((m.building == 1) & ~m.is_master)[2])
    t.scale_use(i, 0.25)
    t.chance_fit(i, t.t(5), beta, gap_falls=gap_falls)
    t.bypass(i, t.t(6), 0.6)
    return t, i, _raised(t)


def test_a_chance_fit_the_day_before_a_bypass_does_not_set_its_start():
    # the day before the bypass the gap follows a small household's hours by chance, but it used twice its usual
    # water and the building's gap fell: nothing was lost and nothing gained, so the evidence starts with the bypass
    for seed in (8, 9):
        t, i, raised = _bypass_after_a_chance_fit(seed, 1.5, gap_falls=True)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed
        assert t.t(6) <= raised[0].start_ns <= t.t(8), seed


def test_slow_evidence_dates_the_bypass_from_the_first_day_the_meter_lost_use():
    # the day before the bypass the gap rises and follows a small household's hours a little, while it used twice
    # its usual water: its slow evidence starts that day, but the bypass is dated from the first day its meter fell
    for seed in (6, 9, 12, 13):
        t, i, raised = _bypass_after_a_chance_fit(seed, 0.9, gap_falls=False)
        assert [e.subject_id for e in raised] == [t.mid(i)], seed
        assert raised[0].start_ns == t.t(6), seed  # the town's days start at local midnight


def test_a_checkpoint_holding_one_open_bypass_per_building_restores_its_share():
    # checkpoints written before every open bypass was held per household kept one per building (open_h, open_beta)
    big = _biggest_households(Town(seed=1, days=24, households=20), 0, 2)
    t = Town(seed=1, days=24, households=20)
    t.bypass(big[0], t.t(6), 0.85)
    t.build()
    ds = DetectorSet(t.registry, only=["bypass"])
    run(ds, t)
    d = ds.detectors["bypass"]
    blob = d.state()
    share = blob.pop("open_share")
    assert share[big[0]] > 0
    nb = len(t.registry.buildings)
    blob["open_h"] = np.full(nb, -1, dtype=np.int32)
    blob["open_beta"] = np.zeros(nb, dtype=np.float32)
    blob["open_h"][0], blob["open_beta"][0] = big[0], share[big[0]]
    fresh = DetectorSet(t.registry, only=["bypass"]).detectors["bypass"]
    fresh.restore(blob)
    assert np.array_equal(fresh.open_share, share)

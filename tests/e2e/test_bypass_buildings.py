"""Buildings cut from simulated cities where a household was once accused of a neighbour's bypass, or one pipe was
reported twice (tests/data/buildings/README.md). Replayed end to end, the family that was away is never accused; the
household that took the pipe is named, or, where the building's evidence cannot tell the two apart, the building is
reported with both as candidates; a rise a household was named for is not reported as the building's as well."""

from __future__ import annotations

import json
import lzma
import os
from pathlib import Path

import pytest

from ingest.cli import main

BUILDINGS = Path(__file__).resolve().parents[1] / "data" / "buildings"


def _raised(tmp_path: Path, monkeypatch, name: str, batch: int = 500) -> list[dict]:
    for k in [k for k in os.environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    src = BUILDINGS / name
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(lzma.decompress((src / "capture.jsonl.xz").read_bytes()))
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", str(capture), "--registry", str(src / "registry"), "--state-dir", str(tmp_path / "state"),
                 "--alerts-file", str(alerts), "--log-level", "WARNING", "--replay-workers", "0",
                 # (batches as small as a live service's: a master meter reading every 15 minutes is not a flood)
                 "--batch-max-messages", str(batch)]) == 0
    events = [json.loads(line) for line in alerts.read_text().splitlines()]
    return [e for e in events if e["event"] == "raised" and e["kind"] in ("bypass", "building_unmetered_use")]


@pytest.mark.parametrize(("name", "culprit", "away", "named"), [
    # The family left twelve minutes after the neighbour's pipe went in: its meter fell to nothing in the hour the
    # building's unmetered use rose by about its use. The neighbour still registers 27 %, and the rise follows its
    # metered hours: it could hold the rise, so the family is not named by the hour it fell; the neighbour is
    ("away-at-the-hour-of-a-neighbours-bypass", "M000276", "M000268", True),
    # The family left on the day a neighbour's full bypass began and came back three days later. The rise followed
    # the few hours its meter registered before it left; on the days away it registered nothing, so nothing showed
    # the pattern again, and a pattern of one day is not named. The neighbour's meter, left with nothing, had been
    # away two days itself the week before: its drop is not taken to begin with the rise, and its building is
    # reported with both households as candidates
    ("away-beside-a-full-bypass", "M000190", "M000169", False),
    # The family moved out on the afternoon a neighbour's partial bypass began; its meter fell in the hour the pipe
    # went in, and the rise came to about the use it lost. The rise follows the neighbour's metered hours (8 to 36
    # standard errors), and by about what the fit puts beside them, but that household used more than usual those
    # days, so its drop against its baseline was a third of the rise: the neighbour could hold the rise all the
    # same, and the building is reported with both as candidates. The next day the neighbour's own hours have shown
    # the pipe two days running and its drop stands a standard error out: it is named (pattern 20, drop 1.2)
    ("moved-out-as-a-neighbours-partial-bypass-began", "M001322", "M001321", True),
])
def test_the_neighbours_pipe_is_not_pinned_on_a_family_away(tmp_path: Path, monkeypatch, name: str, culprit: str,
                                                            away: str, named: bool) -> None:
    raised = _raised(tmp_path, monkeypatch, name)
    accused = [e["subject"]["id"] for e in raised if e["kind"] == "bypass"]
    assert away not in accused
    if named:
        assert accused == [culprit]
    else:
        assert accused == []
        reports = [e for e in raised if e["kind"] == "building_unmetered_use"]
        assert reports and all(culprit in e["evidence"]["candidates"] for e in reports)


def test_a_family_away_the_day_after_a_rise_that_followed_its_hours_is_not_accused(tmp_path: Path, monkeypatch) -> None:
    # No bypass in this building of 37 flats: a neighbour's dead battery, another's shielded meter. One day the
    # building's unmetered use rose and followed M000276's metered hours (5.7 standard errors); the next day its
    # meter registered nothing, and the building's rise was gone. That second day shows a family away, not a pipe:
    # it cannot be the second day of the pattern. The rise is reported as the building's
    raised = _raised(tmp_path, monkeypatch, "away-the-day-after-a-rise-followed-its-hours")
    assert [e["subject"]["id"] for e in raised if e["kind"] == "bypass"] == []
    assert [e["subject"]["id"] for e in raised if e["kind"] == "building_unmetered_use"] == ["B0008"]


def test_a_rise_a_household_was_named_for_is_not_also_reported_as_the_buildings(tmp_path: Path, monkeypatch) -> None:
    # A building of 9 flats: M001410's partial bypass (25 % still registered) and, the same morning, part of
    # M001406's family moves out. The household is named on the seventh day of its building's rise, the day an
    # unexplained rise becomes the building's own: one pipe makes one case, not a bypass and a building report too
    raised = _raised(tmp_path, monkeypatch, "named-on-the-day-its-buildings-rise-turned-a-week-old")
    assert [e["subject"]["id"] for e in raised if e["kind"] == "bypass"] == ["M001410"]
    assert [e for e in raised if e["kind"] == "building_unmetered_use"] == []


def test_a_bypass_is_not_dated_from_a_chance_low_day_before_its_pipe(tmp_path: Path, monkeypatch) -> None:
    # A building of 60 flats whose unmetered use had been rising for other reasons since 7 September (reported as
    # the building's). M000343's partial bypass (40 % still registered) begins at 11:17 local time on 19 September;
    # the day before, its household happened to use little, a drop standing out of its swing, but its hours that day
    # did not follow the rise. The bypass is dated from the day the pipe went in (local midnight, 16:00 UTC the day
    # before), not from that low day: dated a day early, it would claim a day's loss that never went round the meter
    raised = _raised(tmp_path, monkeypatch, "dated-from-a-chance-low-day-before-the-pipe")
    named = [e for e in raised if e["kind"] == "bypass"]
    assert [e["subject"]["id"] for e in named] == ["M000343"]
    assert named[0]["start"] == "2026-09-18T16:00:00Z"


def test_a_meter_left_with_nothing_whose_fall_no_hour_showed_is_its_buildings_candidate(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    # A building of 42 flats. M000658's full bypass (0.9 % still registered) begins at 08:36 local time on 8 September;
    # no hour shows its fall (the building is too noisy for the step, and its meter had been silent in a cell outage
    # the day before), and two days later a second rise on top of it restarts the building's episode. Its meter keeps
    # to a trickle and the building's unmetered use stays up by about its use. Day by day a family away beside a
    # rise of another cause looks the same, and only the hour a meter fell tells them apart: the building is
    # reported with the household as its candidate, and the household is not accused. (It used to be named after a
    # week of that balance, quiet nights and every neighbour measured: on held-out cities that was wrong two times
    # in three.) (Replayed in the batches of a bulk replay: cut out of its city, the building alone balances its days
    # at other hours in batches of 500.)
    # The case was raised before the household's meter qualified, naming another household: it is sent again,
    # naming M000658, and the case's latest event carries it
    raised = _raised(tmp_path, monkeypatch, "left-with-nothing-its-fall-hidden-by-a-second-rise", batch=5000)
    assert {e["kind"] for e in raised} == {"building_unmetered_use"}
    events = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    case = [e for e in events if e["kind"] == "building_unmetered_use"]
    assert "M000658" not in case[0]["evidence"]["candidates"] and "M000658" in case[-1]["evidence"]["candidates"]


def test_a_full_bypass_of_a_business_is_named_on_a_day_it_used_less_than_usual(tmp_path: Path, monkeypatch) -> None:
    # A building of 36 flats beside a leak (reported as the building's in mid-September). The meter of M000780, a
    # business using about 3 m³ a day that swings by a third of that from day to day, registers 2 % from 24 September
    # (a full bypass); two days later M000777's meter does the same. On 26 September (local) the business used less
    # than usual: its building's unmetered use rose by 1.2 m³ while its meter lost 3.1 against its usual use. Judged
    # against the building's day alone (0.19 m³) that is a family away, and no day away names anyone, so the pipe was
    # never named before the data ended. Judged against the business's own swing as well (the drop is its usual use
    # less the trickle, and a pipe carries what it used that day, not its usual), it is a day with water: both pipes
    # are named, and the family that moved out beside them (M000755) is not
    raised = _raised(tmp_path, monkeypatch, "full-bypass-of-a-business-on-a-day-it-used-less")
    named = {e["subject"]["id"]: e for e in raised if e["kind"] == "bypass"}
    assert sorted(named) == ["M000777", "M000780"]
    assert named["M000780"]["evidence"]["how"] == "hourly_pattern"
    assert named["M000780"]["detected_at"] < named["M000777"]["detected_at"]

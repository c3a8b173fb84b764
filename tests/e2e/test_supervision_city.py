"""A simulated city replayed with nobody acknowledging anything: every theft and tank case left open goes through
the reminders and both levels of escalation exactly on its schedule, and is reminded at its interval once at
accountability, as a supervision office would read it in the alerts file."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson

from ingest.cli import main

H = 3600
DAY = 24 * H
THEFT = ("signal_blocking", "reverse_flow", "bypass")


def _s(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp())


def expected(raised: dict, until: int) -> list[tuple[str, int]]:
    """(step, time) of a case nobody answers, up to `until`: theft — yellow 6 h before the 24-h deadline, red at it,
    level 2 a day later, two daily reminders, level 3, then a reminder every day; a tank raised overdue — reminders
    every 7 days, level 2 at 21 days, level 3 at 42, then a reminder every 7 days."""
    t0, d = _s(raised["detected_at"]), _s(raised["deadline"])
    if raised["kind"] == "disinfection_overdue":
        every, steps = 7 * DAY, [("reminder", t0 + 7 * DAY), ("reminder", t0 + 14 * DAY)]
    else:
        every, steps = DAY, [("reminder", d - 6 * H), ("reminder", d)]
    t = steps[-1][1] + every
    for step in ("level 2", "reminder", "reminder", "level 3"):
        steps.append((step, t))
        t += every
    while t <= until:
        steps.append(("reminder", t))
        t += every
    return [(step, at) for step, at in steps if at <= until]


def test_with_no_acknowledgements_every_long_open_case_goes_up_the_levels_on_schedule(tmp_path: Path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    city = tmp_path / "city"
    # (seed 15: a city with a tank overdue from its first week and never cleaned, beside its theft cases)
    assert main(["simulate", "--out", str(city), "--meters", "300", "--days", "60", "--seed", "15", "--quiet"]) == 0
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", str(city / "capture.jsonl"), "--registry", str(city / "registry"),
                 "--state-dir", str(tmp_path / "state"), "--alerts-file", str(alerts), "--log-level", "WARNING"]) == 0
    events = [orjson.loads(x) for x in alerts.read_bytes().splitlines()]
    end = max(_s(e["detected_at"]) for e in events)
    by_case: dict[str, list[dict]] = {}
    for e in events:
        by_case.setdefault(e["alert_id"], []).append(e)
    top = {"theft": 0, "tank": 0}
    for evs in by_case.values():
        raised = evs[0]
        if raised["kind"] not in THEFT + ("disinfection_overdue",):
            continue
        assert raised["event"] == "raised" and raised["light"] in ("green", "red")
        closed = next((_s(e["detected_at"]) for e in evs if e["event"] == "cleared"), None)
        # the clock only moves as far as the capture goes, and a case stops at its clear
        horizon = min(closed if closed is not None else end + 1, end + 1)
        want = expected(raised, end if closed is None else horizon - 1)
        got = [("reminder" if e["event"] == "updated" else f"level {e['evidence']['level']}", _s(e["detected_at"]))
               for e in evs if e["event"] == "escalated" or "reminder" in e]
        assert got == want, raised["alert_id"]
        levels = [e["route"]["level"] for e in evs if e["event"] != "cleared"]
        assert levels == sorted(levels)
        if any(step == "level 3" for step, _ in want):
            top["tank" if raised["kind"] == "disinfection_overdue" else "theft"] += 1
            up = [e for e in evs if e["event"] == "escalated"]
            assert [e["route"]["unit"] for e in up][1].endswith("district accountability office")
            assert [h["step"] for h in up[1]["evidence"]["history"]].count("reminder") == 4
            assert all(e["route"]["level"] == 3 for e in evs if _s(e["detected_at"]) > _s(up[1]["detected_at"]))
    assert top["theft"] >= 3 and top["tank"] >= 1, top  # the city had long-open cases of both sorts

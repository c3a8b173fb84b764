"""A simulated city replayed with nobody acknowledging anything: every theft and tank case left open goes through
the reminders and both levels of escalation exactly on its schedule, as a supervision office would read it in the
alerts file."""

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


def expected(raised: dict) -> list[tuple[str, int]]:
    """(step, time) of a case nobody answers: theft — yellow 6 h before the 24-h deadline, red at it, level 2 a day
    later, two daily reminders, level 3; a tank raised overdue — reminders every 7 days, level 2 at 21 days, level 3
    at 42."""
    t0, d = _s(raised["detected_at"]), _s(raised["deadline"])
    if raised["kind"] == "disinfection_overdue":
        return [("reminder", t0 + 7 * DAY), ("reminder", t0 + 14 * DAY), ("level 2", t0 + 21 * DAY),
                ("reminder", t0 + 28 * DAY), ("reminder", t0 + 35 * DAY), ("level 3", t0 + 42 * DAY)]
    return [("reminder", d - 6 * H), ("reminder", d), ("level 2", d + DAY), ("reminder", d + 2 * DAY),
            ("reminder", d + 3 * DAY), ("level 3", d + 4 * DAY)]


def test_with_no_acknowledgements_every_long_open_case_goes_up_the_levels_on_schedule(tmp_path: Path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    city = tmp_path / "city"
    assert main(["simulate", "--out", str(city), "--meters", "300", "--days", "60", "--seed", "1", "--quiet"]) == 0
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
        want = [(step, t) for step, t in expected(raised) if t < horizon or (closed is None and t <= end)]
        got = [("reminder" if e["event"] == "updated" else f"level {e['evidence']['level']}", _s(e["detected_at"]))
               for e in evs if e["event"] == "escalated" or "reminder" in e]
        assert got == want, raised["alert_id"]
        levels = [e["route"]["level"] for e in evs if e["event"] != "cleared"]
        assert levels == sorted(levels)
        if want and want[-1][0] == "level 3":
            top["tank" if raised["kind"] == "disinfection_overdue" else "theft"] += 1
            up = [e for e in evs if e["event"] == "escalated"]
            assert [e["route"]["unit"] for e in up][1].endswith("district accountability office")
            assert [h["step"] for h in up[1]["evidence"]["history"]].count("reminder") == 4
    assert top["theft"] >= 3 and top["tank"] >= 1, top  # the city had long-open cases of both sorts

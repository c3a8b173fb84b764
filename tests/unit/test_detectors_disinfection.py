"""Tank hygiene: overdue from the registry date (start = the due date), a reminder before it, renewal by a
disinfection record, and a record without a drawdown flagged as unverified."""

from __future__ import annotations

import datetime as dt

import numpy as np

from detectors import DetectorSet
from detectors.testing import DAY, Town, run


def _events(t: Town) -> list:
    return run(DetectorSet(t.registry, only=["disinfection"]), t.build())


def test_overdue_from_the_registry_starts_on_the_due_date():
    t = Town(seed=1, days=5, overdue_tanks=1)  # tank 0 last disinfected 200 days before the start
    ev = [e for e in _events(t) if e.kind == "disinfection_overdue"]
    assert [(e.event, e.subject_id) for e in ev] == [("raised", "P000-T1")]
    last = t.registry.tanks.last_disinfected[0].astype(dt.date)
    month = last.month + 6
    due = last.replace(year=last.year + (month - 1) // 12, month=(month - 1) % 12 + 1)
    assert ev[0].to_dict()["start"] == (dt.datetime(due.year, due.month, due.day) - dt.timedelta(hours=8)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert ev[0].evidence["source"] == "registry"


def test_due_soon_then_overdue_then_renewed_by_an_event():
    t = Town(seed=2, days=20)  # the town starts on 2026-03-01
    # tank 3 last disinfected 2025-09-06: due 2026-03-06, reminded a week before, renewed on 2026-03-10
    t.registry.tanks.last_disinfected[3] = np.datetime64("2025-09-06", "D")
    t.disinfect(3, t.t(9), True)
    ev = [e for e in _events(t) if e.subject_id == str(t.registry.tanks.ids[3])]
    assert [(e.kind, e.event) for e in ev] == [
        ("disinfection_due_soon", "raised"), ("disinfection_due_soon", "cleared"),
        ("disinfection_overdue", "raised"), ("disinfection_overdue", "cleared")]
    overdue = ev[2]
    assert overdue.to_dict()["start"] == "2026-03-05T16:00:00Z"  # 2026-03-06 00:00 in Asia/Shanghai
    assert overdue.detected_at_ns - overdue.start_ns < DAY
    assert ev[3].evidence["source"] == "event" and ev[3].evidence["next_due_date"] == "2026-09-10"


def test_record_without_drawdown_is_flagged_unverified():
    t = Town(seed=3, days=10)
    t.disinfect(0, t.t(3), True)
    t.disinfect(1, t.t(4), False)
    flagged = [e for e in _events(t) if e.kind == "disinfection_unverified"]
    assert [e.subject_id for e in flagged] == [str(t.registry.tanks.ids[1])]
    assert flagged[0].evidence["lowest_level_m"] > flagged[0].evidence["full_level_m"] * 0.3


def test_reminder_goes_out_two_weeks_before_the_due_date_by_default():
    t = Town(seed=2, days=20)  # the town starts on 2026-03-01
    # tank 3 due on 2026-03-13: the reminder is raised when the stream starts (already within 14 days), and
    # its start is the day 14 days before the due date
    t.registry.tanks.last_disinfected[3] = np.datetime64("2025-09-13", "D")
    ev = [e for e in _events(t) if e.subject_id == str(t.registry.tanks.ids[3])]
    soon = [e for e in ev if e.kind == "disinfection_due_soon" and e.event == "raised"]
    assert len(soon) == 1
    assert soon[0].to_dict()["start"] == "2026-02-26T16:00:00Z"  # local midnight of 2026-02-27
    assert soon[0].evidence["due_date"] == "2026-03-13"

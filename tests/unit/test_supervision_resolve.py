"""A case that is acknowledged but never resolved, as a supervision office sees it: once a unit acknowledges, the case
runs on to its resolve deadline (yellow, then red, then reminders at its kind's interval) and, urged twice without a
result, goes up to the supervising unit and then to accountability; at accountability the reminders go on at the same
interval. The clock survives a restart, an acknowledgement over MQTT counts like one over the API, a state folder left
by the previous release picks the clock up, and the supervisors' report counts these escalations."""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
from pathlib import Path

from devices.alerts import AlertEvent
from devices.time import iso_utc
from ingest.dispatch.store import DB_NAME
from tests.unit.test_supervision import DAY, NS, H, T, make, registry, tank_event, theft

WEEK_H = 7 * 24


def timeline(sent: list[dict], t0: int) -> list[tuple]:
    """(event, hours after the raise, reminder, level, light, unit) of one case's events after the raise."""
    return [(e["event"], (dt.datetime.fromisoformat(e["detected_at"]).timestamp() * NS - t0) / H, e.get("reminder"),
             e["route"]["level"], e.get("light"), e["route"]["unit"]) for e in sent]


def run(d, start: int, end: int, step: int = H) -> list[dict]:
    out = []
    for t in range(start, end + 1, step):
        out += d.tick(t)
    return out


def quality(t0: int) -> AlertEvent:
    return AlertEvent("water_quality/T3/1", "raised", "water_quality", "critical", "tank", "T3", "d03", t0 - H // 2,
                      t0, "Tank T3: free chlorine 0.02 mg/L", {}, {"out_of_limits_min": 30})


def test_an_acknowledged_theft_case_never_resolved_goes_up_on_its_resolve_clock(tmp_path):
    reg, state = registry(tmp_path), tmp_path / "state"
    d = make(reg, state)
    t0 = T + H
    aid = d.emit([theft("M1", "d01", t0 - 12 * H, t0)])[0]["alert_id"]
    d.act(aid, "ack", by="d01 desk", note="crew 4 sent", at_ns=t0 + 2 * H)
    sent = run(d, t0 + 3 * H, t0 + 150 * H)
    d.close()  # a restart half-way: the clock goes on from the state folder
    d = make(reg, state)
    sent += run(d, t0 + 151 * H, t0 + 14 * 24 * H)
    # resolve within 7 days: yellow for the last quarter (42 h), red at 168 h, then every 24 h; two reminders without a
    # result take it up a level, at accountability the reminders go on
    w, s, a = "d01 water service", "d01 district water supply authority", "d01 district accountability office"
    assert timeline(sent, t0) == [
        ("updated", WEEK_H - 42, 1, 1, "yellow", w), ("updated", WEEK_H, 2, 1, "red", w),
        ("escalated", WEEK_H + 24, None, 2, "red", s), ("updated", WEEK_H + 48, 3, 2, "red", s),
        ("updated", WEEK_H + 72, 4, 2, "red", s), ("escalated", WEEK_H + 96, None, 3, "red", a),
        ("updated", WEEK_H + 120, 5, 3, "red", a), ("updated", WEEK_H + 144, 6, 3, "red", a),
        ("updated", WEEK_H + 168, 7, 3, "red", a)]
    assert {e["deadline"] for e in sent} == {iso_utc(t0 + 7 * DAY)}  # the resolve deadline, once acknowledged
    assert all(e["acknowledged"]["by"] == "d01 desk" for e in sent)
    up = [e for e in sent if e["event"] == "escalated"]
    assert [(e["evidence"]["level"], e["route"]["escalated_from"]) for e in up] == [(2, w), (3, s)]
    hist = up[1]["evidence"]["history"]
    assert [h["step"] for h in hist] == ["raised", "acknowledged", "reminder", "reminder", "escalated", "reminder",
                                         "reminder", "escalated"]
    assert hist[1]["by"] == "d01 desk" and hist[1]["at"] == iso_utc(t0 + 2 * H)
    assert "still not resolved" in up[0]["summary"]
    # closing it stops the clock
    _, out = d.act(aid, "close", by="d01 desk", result="repaired", at_ns=t0 + 15 * DAY)
    assert [e.event for e in out] == ["cleared"] and run(d, t0 + 15 * DAY, t0 + 20 * DAY, 6 * H) == []
    d.close()


def test_water_quality_acknowledged_over_mqtt_and_never_resolved_reaches_accountability_in_hours(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    t0 = T + 3 * H
    d.emit([quality(t0)])
    ack = f'{{"alert_id": "water_quality/T3/1", "by": "Unit Never duty desk", "ts": "{iso_utc(t0 + H // 2)}"}}'
    assert d.handle_ack_message(ack.encode())
    sent = run(d, t0 + H, t0 + 32 * H)
    # resolve within 24 h: yellow at 18 h (its last quarter), red at 24 h, then hourly
    w, s, a = "Unit Never", "d03 supervision office", "d03 discipline office"
    assert timeline(sent, t0) == [
        ("updated", 18, 1, 1, "yellow", w), ("updated", 24, 2, 1, "red", w), ("escalated", 25, None, 2, "red", s),
        ("updated", 26, 3, 2, "red", s), ("updated", 27, 4, 2, "red", s), ("escalated", 28, None, 3, "red", a),
        ("updated", 29, 5, 3, "red", a), ("updated", 30, 6, 3, "red", a), ("updated", 31, 7, 3, "red", a),
        ("updated", 32, 8, 3, "red", a)]
    assert {e["acknowledged"]["by"] for e in sent} == {"Unit Never duty desk"}
    d.close()


def test_an_acknowledgement_dated_before_the_last_reminder_sends_nothing_out_of_order(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    aid = d.emit([tank_event("T1", "d01", "disinfection_overdue", "raised", T, T)])[0]["alert_id"]
    assert [e["reminder"] for e in run(d, T + DAY, T + 15 * DAY, DAY)] == [1, 2]  # at 7 and 14 days
    # the desk's message says it acknowledged on day 3; it arrives on day 15
    ack = f'{{"alert_id": "{aid}", "by": "Unit Prompt", "ts": "{iso_utc(T + 3 * DAY)}"}}'
    assert d.handle_ack_message(ack.encode())
    sent = run(d, T + 16 * DAY, T + 36 * DAY, DAY)
    # not a second reminder at 14 days: the count starts again from the next weekly point
    assert [x[:4] for x in timeline(sent, T)] == [("updated", 21 * 24, 3, 1), ("updated", 28 * 24, 4, 1),
                                                  ("escalated", 35 * 24, None, 2)]
    d.close()


def test_a_late_acknowledgement_keeps_the_level_and_the_resolve_clock_takes_it_further(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    t0 = T + H
    aid = d.emit([theft("M2", "d02", t0 - 12 * H, t0)])[0]["alert_id"]
    before = run(d, t0 + H, t0 + 60 * H)
    assert [x[:4] for x in timeline(before, t0)] == [("updated", 18, 1, 1), ("updated", 24, 2, 1),
                                                     ("escalated", 48, None, 2)]
    inc, _ = d.act(aid, "ack", by="d02 supervision desk", at_ns=t0 + 60 * H)
    assert inc.level == 2  # acknowledging does not take a case back down
    after = run(d, t0 + 61 * H, t0 + 11 * 24 * H)
    assert [x[:5] for x in timeline(after, t0)] == [
        ("updated", WEEK_H - 42, 3, 2, "yellow"), ("updated", WEEK_H, 4, 2, "red"),
        ("escalated", WEEK_H + 24, None, 3, "red"), ("updated", WEEK_H + 48, 5, 3, "red"),
        ("updated", WEEK_H + 72, 6, 3, "red"), ("updated", WEEK_H + 96, 7, 3, "red")]
    d.close()


def test_a_case_that_reached_accountability_is_still_urged_after_a_restart(tmp_path):
    reg, state = registry(tmp_path), tmp_path / "state"
    d = make(reg, state)
    t0 = T + 3 * H
    d.emit([quality(t0)])
    assert [e["event"] for e in run(d, t0 + H, t0 + 5 * H)][-1] == "escalated"  # level 3 at 5 h
    d.close()
    d = make(reg, state)
    top = run(d, t0 + 6 * H, t0 + 9 * H)
    assert [x[:5] for x in timeline(top, t0)] == [("updated", h, h - 1, 3, "red") for h in (6, 7, 8, 9)]
    d.close()


def test_a_state_folder_left_by_the_previous_release_picks_up_the_clock(tmp_path):
    """The previous release stopped the clock of acknowledged cases and of cases at accountability (no next
    reminder stored). This release urges them again from the time it starts on: no burst of back-dated reminders."""
    reg, state = registry(tmp_path), tmp_path / "state"
    d = make(reg, state)
    t0 = T + H
    acked = d.emit([theft("M1", "d01", t0 - 12 * H, t0)])[0]["alert_id"]
    d.act(acked, "ack", by="d01 desk", at_ns=t0 + 2 * H)
    top = d.emit([theft("M3", "d03", t0 - 12 * H, t0)])[0]["alert_id"]
    run(d, t0 + H, t0 + 121 * H)  # the d03 case reached level 3 at 120 h; the d01 case is not yellow yet
    d.close()
    with sqlite3.connect(state / DB_NAME) as db:  # as the previous release left them, having run on to 200 h
        db.execute("UPDATE incidents SET next_ns = NULL WHERE ack_ns IS NOT NULL OR level = 3")
        db.execute("UPDATE meta SET value = ? WHERE key = 'clock_ns'", (t0 + 200 * H,))
    d = make(reg, state)
    sent = run(d, t0 + 201 * H, t0 + 240 * H)
    d.close()
    by = {aid: timeline([e for e in sent if e["alert_id"] == aid], t0) for aid in (acked, top)}
    # both are overdue: reminded at the next of their daily points after 200 h, numbered on
    assert [x[:5] for x in by[acked]] == [("updated", 216, 1, 1, "red"), ("updated", 240, 2, 1, "red")]
    assert [x[:5] for x in by[top]] == [("updated", 216, 5, 3, "red"), ("updated", 240, 6, 3, "red")]


# ---- the supervisors' report --------------------------------------------------------------------------------------
def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return {r.get("name") or r["unit"]: r for r in csv.DictReader(fh)}


def test_the_report_counts_the_escalations_of_an_acknowledged_case_in_the_month_they_happened(tmp_path, capsys):
    from ingest.cli import main

    reg, state = registry(tmp_path), tmp_path / "state"
    d = make(reg, state)
    t0 = int(dt.datetime(2026, 3, 25, 9, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * NS
    aid = d.emit([theft("M1", "d01", t0 - 12 * H, t0)])[0]["alert_id"]
    d.act(aid, "ack", by="d01 desk", at_ns=t0 + 2 * H)
    sent = run(d, t0 + H, t0 + 21 * DAY, 3 * H)  # to 2026-04-15
    d.close()
    # level 2 at 8 days (2026-04-02), level 3 at 11 days (2026-04-05): both in April, none in March
    ups = {e["evidence"]["level"]: e["detected_at"][:10] for e in sent if e["event"] == "escalated"}
    assert ups == {2: "2026-04-02", 3: "2026-04-05"}
    flags = ["--state-dir", str(state), "--registry", str(tmp_path / "registry"), "--out", str(tmp_path / "r")]
    for period in ("2026-03", "2026-04", "2026-H1"):
        assert main(["report", "--period", period, *flags]) == 0
    capsys.readouterr()
    march = _csv(tmp_path / "r" / "supervision-2026-03-districts.csv")["d01"]
    april = _csv(tmp_path / "r" / "supervision-2026-04-districts.csv")["d01"]
    half = _csv(tmp_path / "r" / "supervision-2026-H1-units.csv")["d01 water service"]
    # raised (and acknowledged in time) in March, its resolve deadline (April 1) missed
    assert (march["cases"], march["ack_on_time"], march["resolve_missed"]) == ("1", "1", "1")
    assert (march["escalated_level2"], march["escalated_level3"]) == ("0", "0")
    assert (april["cases"], april["escalated_level2"], april["escalated_level3"]) == ("0", "1", "1")
    # the escalations count against the unit the case was raised to, not the units it went up to
    assert (half["cases"], half["escalated_level2"], half["escalated_level3"]) == ("1", "1", "1")
    ranking = _csv(tmp_path / "r" / "supervision-2026-04-ranking.csv")
    assert ranking["d01 water service"]["overdue_at_month_end"] == "1"

"""Supervision of cases as the units and the supervision office notice it: a simulated year in which one district's
units answer on time, one late and one never, checked event by event (deadlines, lights, reminders, the three levels,
closure with a result, no re-raise after no_fault_found); dispatch's actions and the refusals that change nothing;
the dispatch database's schema version (an older file migrated, a newer one refused)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import orjson
import pytest

from devices.alerts import AlertEvent
from devices.registry import Registry
from devices.time import iso_utc
from ingest.dispatch import Dispatcher, DispatchSettings, InvalidTransition, UnknownCase
from ingest.dispatch.schema import SCHEMA_VERSION, SchemaError
from ingest.dispatch.store import DB_NAME, Store
from tests.helpers import WireDispatcher, write_registry

NS = 1_000_000_000
H = 3600 * NS
DAY = 24 * H
YEAR_START = 1_767_196_800 * NS  # 2026-01-01T00:00:00+08:00 (Asia/Shanghai)

METERS = """meter_id,district,building_id,role,customer_class,pipe_dn_mm,prepaid,report_interval_s,cell_id,register_max_m3,business_hours_per_day
M1,d01,B1,household,residential,15,0,3600,C1,9999,
M2,d02,B2,household,residential,15,0,3600,C2,9999,
M3,d03,B3,household,residential,15,0,3600,C3,9999,
"""
BUILDINGS = """building_id,district,address,pump_room_id,master_meter_id
B1,d01,1 Prompt Road,P1,
B2,d02,2 Late Road,P2,
B3,d03,3 Never Road,P3,
"""
ROOMS = """room_id,district,address,maintenance_unit,supervisor_unit
P1,d01,1 Prompt Road,Unit Prompt,d01 supervision office
P2,d02,2 Late Road,Unit Late,d02 supervision office
P3,d03,3 Never Road,Unit Never,d03 supervision office
"""
TANKS = """tank_id,room_id,capacity_m3,last_disinfected
T1,P1,50,2025-12-10
T2,P2,50,2025-12-10
T3,P3,50,2025-12-10
"""
# (growth updates of theft cases are left out: this is about the clock)
SETTINGS = {"district_unit_template": "{district} water service", "accountability_units": "d03=d03 discipline office",
            "growth_kinds": []}


def registry(tmp_path: Path) -> Registry:
    return Registry.load(write_registry(tmp_path / "registry", meters=METERS, buildings=BUILDINGS,
                                        pump_rooms=ROOMS, tanks=TANKS))


def make(reg: Registry, state: Path, **settings) -> WireDispatcher:
    return WireDispatcher(Dispatcher(reg, state, DispatchSettings(**{**SETTINGS, **settings}), alerts_file=None,
                                     webhook_url="", webhook_secret="", mqtt_publish=None))


def theft(meter: str, district: str, start: int, at: int, event: str = "raised", **evidence) -> AlertEvent:
    return AlertEvent(f"signal_blocking/{meter}/{start}", event, "signal_blocking", "warning", "meter", meter, district,
                      start, at, f"Meter {meter} silent", {}, {"silent_hours": 30, **evidence})


def tank_event(tank: str, district: str, kind: str, event: str, due: int, at: int) -> AlertEvent:
    start = due if kind == "disinfection_overdue" else due - 14 * DAY
    return AlertEvent(f"{kind}/{tank}/{start}", event, kind, "warning", "tank", tank, district, start, at,
                      f"Tank {tank}: {kind}", {}, {"due_date": dt.datetime.fromtimestamp(due / NS, dt.UTC)
                                                 .astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()})


# How each district's units behave: hours after the raise they acknowledge, days after the raise they close
# (None: never), and days after the due date they disinfect a tank (None: never).
UNITS = {"d01": {"ack_h": 2, "close_d": 2, "tank_d": -5},
         "d02": {"ack_h": 30, "close_d": 9, "tank_d": 10},
         "d03": {"ack_h": None, "close_d": None, "tank_d": None}}
METER_OF = {"d01": "M1", "d02": "M2", "d03": "M3"}
TANK_OF = {"d01": "T1", "d02": "T2", "d03": "T3"}


def simulate_year(d: WireDispatcher) -> list[dict]:
    """A theft case in each district every 30 days (the detector clears it after 20 days if nobody closed it), and
    each tank's half-yearly disinfection; units act as UNITS says; the clock ticks every hour of the year."""
    sent: list[dict] = []
    raises = {dist: [YEAR_START + (10 + 30 * k) * DAY + 9 * H for k in range(11)] for dist in UNITS}
    actions: list[tuple[int, str, str, dict]] = []  # (time, district, action, kwargs)
    due = {dist: YEAR_START + 160 * DAY for dist in UNITS}  # 2026-06-10 local midnight (2025-12-10 + 6 months)
    tank_state = dict.fromkeys(UNITS, "ok")
    for hour in range(365 * 24):
        now = YEAR_START + hour * H
        for dist, times in raises.items():
            meter = METER_OF[dist]
            for t0 in times:
                if now == t0:
                    out = d.emit([theft(meter, dist, t0 - 12 * H, now)])
                    sent += out
                    u = UNITS[dist]
                    if u["ack_h"] is not None:
                        actions.append((t0 + u["ack_h"] * H, dist, "ack", {}))
                    if u["close_d"] is not None:
                        actions.append((t0 + u["close_d"] * DAY, dist, "close", {"result": "repaired"}))
                if now == t0 + 20 * DAY:
                    sent += d.emit([theft(meter, dist, t0 - 12 * H, now, "cleared")])
        for at, dist, action, kw in [a for a in actions if a[0] == now]:
            case = next(e for e in reversed(sent) if e["district"] == dist and e["kind"] == "signal_blocking")
            _, out = d.act(case["alert_id"], action, by=f"{dist} desk", at_ns=at, **kw)
            sent += [e.to_dict() for e in out]
        for dist in UNITS:  # the tank detector: due-soon 14 days ahead, overdue from the due date, cleared when done
            tank, lag = TANK_OF[dist], UNITS[dist]["tank_d"]
            if tank_state[dist] != "ok" and lag is not None and now >= due[dist] + lag * DAY:
                kind = "disinfection_overdue" if tank_state[dist] == "overdue" else "disinfection_due_soon"
                sent += d.emit([tank_event(tank, dist, kind, "cleared", due[dist], now)])
                tank_state[dist], due[dist] = "ok", due[dist] + 182 * DAY
            elif tank_state[dist] == "ok" and now >= due[dist] - 14 * DAY and (lag is None or lag > -14):
                sent += d.emit([tank_event(tank, dist, "disinfection_due_soon", "raised", due[dist], now)])
                tank_state[dist] = "soon"
            elif tank_state[dist] == "soon" and now >= due[dist]:
                sent += d.emit([tank_event(tank, dist, "disinfection_due_soon", "cleared", due[dist], now),
                                tank_event(tank, dist, "disinfection_overdue", "raised", due[dist], now)])
                tank_state[dist] = "overdue"
        sent += d.tick(now)
    return sent


YEAR_DIR: dict[str, Path] = {}


@pytest.fixture(scope="module")
def year(tmp_path_factory) -> tuple[list[dict], WireDispatcher]:
    tmp = tmp_path_factory.mktemp("year")
    YEAR_DIR["tmp"] = tmp
    d = make(registry(tmp), tmp / "state")
    sent = simulate_year(d)
    yield sent, d
    d.close()


def steps(sent: list[dict], alert_id: str) -> list[tuple]:
    """(event, hours after the raise, reminder, level, light) of one case."""
    evs = [e for e in sent if e["alert_id"] == alert_id]
    t0 = dt.datetime.fromisoformat(evs[0]["detected_at"])
    return [(e["event"], (dt.datetime.fromisoformat(e["detected_at"]) - t0).total_seconds() / 3600,
             e.get("reminder"), e["route"]["level"], e.get("light")) for e in evs]


def first_theft(sent: list[dict], district: str) -> str:
    return next(e["alert_id"] for e in sent if e["district"] == district and e["kind"] == "signal_blocking")


def test_a_unit_that_answers_on_time_gets_no_reminder(year):
    sent, d = year
    aid = first_theft(sent, "d01")
    assert steps(sent, aid) == [("raised", 0, None, 1, "green"), ("cleared", 48, None, 1, None)]
    raised, cleared = [e for e in sent if e["alert_id"] == aid]
    assert raised["deadline"] == iso_utc(dt.datetime.fromisoformat(raised["detected_at"]).timestamp() * NS + DAY)
    assert raised["route"]["unit"] == "d01 water service"
    assert cleared["evidence"]["result"] == "repaired" and cleared["evidence"]["closed_by"] == "d01 desk"
    inc = d.store.incident(aid)
    assert inc.ack_ns - inc.raised_ns == 2 * H and inc.closed_ns - inc.raised_ns == 2 * DAY


def test_a_late_unit_is_reminded_to_acknowledge_then_to_resolve_and_goes_up_once(year):
    sent, _ = year
    aid = first_theft(sent, "d02")
    # 24 h to acknowledge: yellow for its last quarter (6 h), red at 24 h; acknowledged at 30 h. Then 7 days to
    # resolve: yellow for its last quarter (42 h), red at 168 h, up a level a day later; closed at 9 days
    assert steps(sent, aid) == [("raised", 0, None, 1, "green"), ("updated", 18, 1, 1, "yellow"),
                                ("updated", 24, 2, 1, "red"), ("updated", 126, 3, 1, "yellow"),
                                ("updated", 168, 4, 1, "red"), ("escalated", 192, None, 2, "red"),
                                ("cleared", 216, None, 2, None)]


def test_a_unit_that_never_answers_goes_up_two_levels_on_schedule(year):
    sent, _ = year
    aid = first_theft(sent, "d03")
    assert steps(sent, aid) == [
        ("raised", 0, None, 1, "green"), ("updated", 18, 1, 1, "yellow"), ("updated", 24, 2, 1, "red"),
        ("escalated", 48, None, 2, "red"), ("updated", 72, 3, 2, "red"), ("updated", 96, 4, 2, "red"),
        ("escalated", 120, None, 3, "red"),
        # at accountability it is reminded every day until the detector clears it at 20 days
        *[("updated", 120 + 24 * k, 4 + k, 3, "red") for k in range(1, 15)], ("cleared", 480, None, 3, None)]
    up = [e for e in sent if e["alert_id"] == aid and e["event"] == "escalated"]
    assert [(e["evidence"]["level"], e["route"]["unit"], e["route"]["escalated_from"]) for e in up] == [
        (2, "d03 district water supply authority", "d03 water service"),
        (3, "d03 discipline office", "d03 district water supply authority")]
    # the history in the last step: the raise, four reminders, two escalations
    hist = up[1]["evidence"]["history"]
    assert [h["step"] for h in hist] == ["raised", "reminder", "reminder", "escalated", "reminder", "reminder",
                                         "escalated"]
    assert [h.get("light") for h in hist if h["step"] == "reminder"] == ["yellow", "red", "red", "red"]
    assert hist[3]["at"] == up[0]["detected_at"] and hist[6]["unit"] == "d03 discipline office"
    # every theft case of that district went the same way
    cases = {e["alert_id"] for e in sent if e["district"] == "d03" and e["kind"] == "signal_blocking"}
    assert len(cases) == 11
    assert all(sum(1 for e in sent if e["alert_id"] == a and e["event"] == "escalated") == 2 for a in cases)


def test_tank_cases_run_to_the_due_date(year):
    sent, _ = year

    def tank(t):
        return [(e["kind"].removeprefix("disinfection_"), e["event"], e.get("reminder"), e["route"]["level"],
                 e.get("light"), e.get("deadline", "")[:10]) for e in sent if e["subject"]["id"] == t][:12]

    # due 2026-06-10 (local): yellow 3 days before, red from the due date; 7 days between reminders once overdue
    assert tank("T1")[:2] == [("due_soon", "raised", None, 1, "green", "2026-06-09"),
                              ("due_soon", "cleared", None, 1, None, "")]
    assert tank("T2")[:5] == [("due_soon", "raised", None, 1, "green", "2026-06-09"),
                              ("due_soon", "updated", 1, 1, "yellow", "2026-06-09"),
                              ("due_soon", "cleared", None, 1, None, ""),
                              ("overdue", "raised", None, 1, "red", "2026-06-09"),
                              ("overdue", "updated", 1, 1, "red", "2026-06-09")]
    assert tank("T2")[5][:2] == ("overdue", "cleared")
    never = [x for x in tank("T3") if x[0] == "overdue"]
    assert [x[1:4] for x in never[:7]] == [("raised", None, 1), ("updated", 1, 1), ("updated", 2, 1),
                                           ("escalated", None, 2), ("updated", 3, 2), ("updated", 4, 2),
                                           ("escalated", None, 3)]
    assert [x[1:4] for x in never[7:]] == [("updated", n, 3) for n in range(5, 5 + len(never) - 7)]
    # every 7 days from the due date to the end of the year, at accountability too
    times = [dt.datetime.fromisoformat(e["detected_at"]) for e in sent
             if e["subject"]["id"] == "T3" and e["kind"] == "disinfection_overdue"]
    assert [(t - times[0]).days for t in times] == list(range(0, 7 * len(times), 7))
    assert (dt.datetime.fromisoformat(sent[-1]["detected_at"]) - times[-1]).days < 7


def test_every_action_is_recorded_with_who_and_when(year):
    _, d = year
    acts = d.store.actions()
    assert {(a["action"], a["by"]) for a in acts} == {("ack", "d01 desk"), ("close", "d01 desk"),
                                                     ("ack", "d02 desk"), ("close", "d02 desk")}
    assert all(a["at_ns"] > YEAR_START and a["recorded"] > 0 and a["via"] == "api" for a in acts)
    assert {a["result"] for a in acts if a["action"] == "close"} == {"repaired"}


# ---- dispatch's actions, and what is refused ---------------------------------------------------------------------
T = YEAR_START + 40 * DAY


def test_no_fault_found_is_not_raised_again_unless_the_evidence_grows(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    aid = d.emit([theft("M1", "d01", T, T + H)])[0]["alert_id"]
    _, out = d.act(aid, "close", by="inspector Wang", result="no_fault_found", note="meter fine on site",
                   at_ns=T + 5 * H)
    assert [e.event for e in out] == ["cleared"] and out[0].evidence["result"] == "no_fault_found"
    # the detector keeps the condition open, then raises it again with the same evidence: nothing goes out
    assert d.emit([theft("M1", "d01", T, T + 6 * H, "updated", silent_hours=40)]) == []
    assert d.emit([theft("M1", "d01", T + 2 * DAY, T + 3 * DAY, silent_hours=35)]) == []
    assert d.tick(T + 10 * DAY) == []
    # ... until it has grown by at least half: a new case
    again = d.emit([theft("M1", "d01", T + 2 * DAY, T + 11 * DAY, "updated", silent_hours=50)])
    assert [e["event"] for e in again] == ["raised"] and again[0]["alert_id"] != aid
    # a case closed with another result is raised again as soon as the detector says so
    _, _ = d.act(again[0]["alert_id"], "close", by="desk", result="repaired", at_ns=T + 12 * DAY)
    assert [e["event"] for e in d.emit([theft("M1", "d01", T + 13 * DAY, T + 13 * DAY)])] == ["raised"]
    d.close()


def test_refused_actions_change_nothing(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    aid = d.emit([theft("M2", "d02", T, T + H)])[0]["alert_id"]
    before = d.store.incident(aid)
    with pytest.raises(UnknownCase):
        d.act("signal_blocking/nope/1", "ack", by="desk")
    with pytest.raises(InvalidTransition, match="only a closed case"):
        d.act(aid, "reopen", by="desk")
    with pytest.raises(InvalidTransition, match="not one of"):
        d.act(aid, "close", by="desk", result="fixed")
    assert d.store.incident(aid) == before and d.store.actions() == []
    d.act(aid, "ack", by="desk", at_ns=T + 2 * H)
    with pytest.raises(InvalidTransition, match="already acknowledged by desk"):
        d.act(aid, "ack", by="someone else", at_ns=T + 3 * H)
    d.act(aid, "close", by="desk", result="confirmed", at_ns=T + 4 * H)
    with pytest.raises(InvalidTransition, match="already closed"):
        d.act(aid, "close", by="desk", result="repaired")
    with pytest.raises(InvalidTransition, match="is closed"):
        d.act(aid, "ack", by="desk")
    assert [a["action"] for a in d.store.actions()] == ["ack", "close"]
    d.close()


def test_a_reopened_case_starts_its_clock_again(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    aid = d.emit([theft("M3", "d03", T, T + H)])[0]["alert_id"]
    d.tick(T + 3 * DAY)  # escalated to level 2 meanwhile
    d.act(aid, "close", by="desk", result="repaired", at_ns=T + 3 * DAY + H)
    inc, out = d.act(aid, "reopen", by="supervisor Li", note="still silent", at_ns=T + 4 * DAY)
    ev = out[0].to_dict()
    assert (ev["event"], ev["light"], ev["route"]["level"], ev["deadline"]) == (
        "updated", "green", 1, iso_utc(T + 5 * DAY))
    assert ev["reopened"]["by"] == "supervisor Li" and "result" not in ev["evidence"]
    assert [(e["event"], e.get("reminder"), e.get("light")) for e in d.tick(T + 5 * DAY)] == [
        ("updated", 3, "yellow"), ("updated", 4, "red")]  # reminders are numbered on
    history = [orjson.loads(b)["event"] for b in d.store.events(aid)]
    assert history == ["raised", "updated", "updated", "escalated", "cleared", "updated", "updated", "updated"]
    d.close()


# ---- schema versions ---------------------------------------------------------------------------------------------
V1 = """
CREATE TABLE incidents (alert_id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject_type TEXT NOT NULL,
 subject_id TEXT NOT NULL, district TEXT NOT NULL, open INTEGER NOT NULL, seq INTEGER NOT NULL, severity TEXT NOT NULL,
 start_ns INTEGER NOT NULL, raised_ns INTEGER NOT NULL, sent_ns INTEGER NOT NULL, closed_ns INTEGER, due_ns INTEGER,
 leads_done TEXT NOT NULL DEFAULT '[]', reminders INTEGER NOT NULL DEFAULT 0, next_ns INTEGER, grow_ns INTEGER,
 escalated INTEGER NOT NULL DEFAULT 0, ack_by TEXT, ack_ns INTEGER, ack_note TEXT, summary TEXT NOT NULL,
 evidence TEXT NOT NULL, route TEXT NOT NULL DEFAULT '{}', cap_ref TEXT);
CREATE INDEX incidents_subject ON incidents(kind, subject_type, subject_id, open);
CREATE INDEX incidents_next ON incidents(open, next_ns);
CREATE INDEX incidents_grow ON incidents(open, grow_ns);
CREATE TABLE aliases (alias TEXT PRIMARY KEY, alert_id TEXT NOT NULL);
CREATE TABLE acks (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, by TEXT NOT NULL, note TEXT NOT NULL,
 at_ns INTEGER NOT NULL, via TEXT NOT NULL, recorded REAL NOT NULL, known INTEGER NOT NULL);
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, alert_id TEXT NOT NULL,
 idem TEXT NOT NULL, topic TEXT NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL,
 attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, created REAL NOT NULL, delivered REAL, last_error TEXT);
"""


def v1_state(folder: Path) -> Path:
    """A state folder as Cistern 0.1 left it: an escalated tank case, an open theft case, an ack, an undelivered
    outbox row."""
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / DB_NAME)
    db.executescript(V1)
    row = ("INSERT INTO incidents (alert_id, kind, subject_type, subject_id, district, open, seq, severity, start_ns, "
           "raised_ns, sent_ns, due_ns, reminders, next_ns, escalated, summary, evidence) "
           "VALUES (?,?,?,?,?,1,?,?,?,?,?,?,?,?,?,?,?)")
    db.execute(row, ("disinfection_overdue/T3/x", "disinfection_overdue", "tank", "T3", "d03", 4, "critical", T, T,
                     T + 21 * DAY, T, 2, None, 1, "Tank T3 overdue", "{}"))
    db.execute(row, ("signal_blocking/M1/x", "signal_blocking", "meter", "M1", "d01", 1, "warning", T, T + 30 * DAY,
                     T + 30 * DAY, None, 0, None, 0, "Meter M1 silent", '{"silent_hours": 30}'))
    db.execute("INSERT INTO acks (alert_id, by, note, at_ns, via, recorded, known) VALUES "
               "('signal_blocking/M1/x', 'desk 9', 'seen', ?, 'mqtt', 1.0, 1)", (T + 30 * DAY + H,))
    db.execute("UPDATE incidents SET ack_by = 'desk 9', ack_ns = ?, ack_note = 'seen' WHERE alert_id = "
               "'signal_blocking/M1/x'", (T + 30 * DAY + H,))
    db.execute("INSERT INTO outbox (sink, alert_id, idem, topic, content_type, body, next_try, created) VALUES "
               "('webhook', 'signal_blocking/M1/x', 'signal_blocking/M1/x:raised:1', '', 'application/json', "
               "x'7b7d', 0, 0)")
    db.commit()
    db.close()
    return folder


def test_an_older_dispatch_database_is_migrated_and_its_open_cases_keep_going(tmp_path):
    state = v1_state(tmp_path / "state")
    d = make(registry(tmp_path), state)
    assert d.store.found_version == 1
    assert (state / f"{DB_NAME}.v1.bak").is_file()  # the old file, kept as it was
    tank = d.store.incident("disinfection_overdue/T3/x")
    assert (tank.level, tank.reminders, tank.ack_due_ns) == (2, 2, T)  # escalated once: level 2, due by its due date
    theft_case = d.store.incident("signal_blocking/M1/x")
    assert theft_case.ack_by == "desk 9" and theft_case.resolve_due_ns == T + 37 * DAY
    assert [(a["by"], a["via"]) for a in d.store.acks("signal_blocking/M1/x")] == [("desk 9", "mqtt")]
    assert d.store.pending() == {"webhook": 1}  # the undelivered alert is still there
    # the escalated tank case goes on at level 2: two reminders, then accountability, reminded weekly there; the
    # acknowledged theft case runs on to its resolve deadline (T + 37 days) and goes up when not resolved
    out = [e for day in range(1, 30) for e in d.tick(T + (21 + day) * DAY)]

    def steps_of(aid):
        return [(e["event"], e.get("reminder"), e["route"]["level"]) for e in out if e["alert_id"] == aid]

    assert steps_of("disinfection_overdue/T3/x") == [("updated", 3, 2), ("updated", 4, 2), ("escalated", None, 3),
                                                     ("updated", 5, 3)]
    assert steps_of("signal_blocking/M1/x")[:6] == [("updated", 1, 1), ("updated", 2, 1), ("escalated", None, 2),
                                                    ("updated", 3, 2), ("updated", 4, 2), ("escalated", None, 3)]
    d.close()
    with sqlite3.connect(state / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_dispatch_database_is_refused_with_a_clear_message(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / DB_NAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="written by a newer Cistern"):
        Store(state)


# ---- cistern cases ------------------------------------------------------------------------------------------------
def test_cistern_cases_lists_open_cases_with_their_lights(tmp_path, capsys, monkeypatch):
    from ingest.cli import main

    for k in [k for k in __import__("os").environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    state = tmp_path / "state"
    d = make(registry(tmp_path), state)
    now = 2_000_000_000 * NS  # 2033: later than the wall clock, so the lights are judged at the cases' clock
    def raise_(meter, district, start, at):  # emit also sends the reminders that fell due before it
        return next(e["alert_id"] for e in d.emit([theft(meter, district, start, at)]) if e["event"] == "raised")

    late = raise_("M3", "d03", now - 3 * DAY, now - 2 * DAY)
    soon = raise_("M2", "d02", now - 20 * H, now - 20 * H)
    fresh = raise_("M1", "d01", now - H, now - H)
    d.tick(now)
    d.close()
    flags = ["--state-dir", str(state)]
    assert main(["cases", *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 open case(s) as of 2033-05-18T03:33:20Z: 1 red, 1 yellow, 1 green")
    assert [line.split()[0] for line in out[1:]] == ["RED", "YELLOW", "green"]
    assert late in out[1] and "level 2: d03 district water supply authority" in out[1]
    assert main(["cases", "--light", "yellow", "--json", *flags]) == 0
    rows = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["alert_id"], r["deadline"]) for r in rows] == [(soon, iso_utc(now + 4 * H))]
    assert main(["cases", "--district", "d01", "--json", *flags]) == 0
    assert [orjson.loads(x)["alert_id"] for x in capsys.readouterr().out.splitlines()] == [fresh]
    assert main(["cases", "--state-dir", str(tmp_path / "nothing")]) == 2
    assert "no dispatch state" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["cases", "--help"])
    assert e.value.code == 0 and "--light" in capsys.readouterr().out


# ---- the dispatch API's settings ------------------------------------------------------------------------------
def test_api_settings_are_checked_at_start_up_and_tokens_never_shown(tmp_path, capsys, monkeypatch):
    from ingest.cli import main
    from ingest.config import ConfigError, load_settings

    for k in [k for k in __import__("os").environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    with pytest.raises(ConfigError, match="CISTERN_ALERT_API_TOKENS.*shorter than 16") as e:
        load_settings(environ={"CISTERN_ALERT_API_TOKENS": "hotline:tooshort"})
    assert "tooshort" not in str(e.value)
    with pytest.raises(ConfigError, match="CISTERN_ALERT_API_LISTEN.*host:port"):
        load_settings(environ={"CISTERN_ALERT_API_LISTEN": "everywhere"})
    s = load_settings(environ={"CISTERN_ALERT_API_TOKENS": "hotline:0123456789abcdef, city:fedcba9876543210"})
    assert "0123456789abcdef" not in str(s.redacted())
    reg = write_registry(tmp_path / "registry")
    assert main(["run", "--registry", str(reg), "--alert-api-listen", "127.0.0.1:8480"]) == 2
    assert "CISTERN_ALERT_API_TOKENS (--alert-api-tokens): required" in capsys.readouterr().err


# ---- the supervisors' report, its numbers recomputed from the events the receivers got ---------------------------
def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp()) * NS


def recompute(sent: list[dict], p0: int, p1: int, as_of: int) -> dict:
    """From the wire alone: cases raised in the period, their deadlines (the raise's `deadline` to acknowledge; 7 days
    or the tank's due date to resolve), when they were acknowledged (`acknowledged` on a later event) or closed."""
    cases: dict[str, dict] = {}
    for e in sent:
        c = cases.setdefault(e["alert_id"], {"events": []})
        c["events"].append(e)
    out: dict = {"kinds": {}, "districts": {}, "up": {}, "overdue_tanks": {}}
    for c in cases.values():
        evs = c["events"]
        raised = evs[0]
        t0 = _ns(raised["detected_at"])
        end = next((e for e in evs if e["event"] == "cleared"), None)
        # a due-soon case that ends on its due date ends because the tank went overdue
        superseded = end is not None and raised["kind"] == "disinfection_due_soon" and \
            end["detected_at"] >= raised["deadline"]
        closed = _ns(end["detected_at"]) if end and not superseded else None
        acked = next((_ns(e["acknowledged"]["at"]) for e in evs if e.get("acknowledged")), closed)
        tank = raised["kind"].startswith("disinfection")
        resolve_due = _ns(raised["deadline"]) if tank else t0 + 7 * DAY
        for lvl in (e["evidence"]["level"] for e in evs if e["event"] == "escalated" and p0 <= _ns(e["detected_at"]) < p1):
            key = (raised["district"], lvl)
            out["up"][key] = out["up"].get(key, 0) + 1
        if raised["kind"] == "disinfection_overdue":
            a, b = max(_ns(raised["start"]), p0), min(_ns(end["detected_at"]) if end else as_of, p1)
            if b > a:
                out["overdue_tanks"][raised["subject"]["id"]] = (b - a) / DAY
        if not p0 <= t0 < p1:
            continue

        def judge(done, due):
            if done is not None:
                return "on_time" if done <= due else "late"
            return "missed" if as_of >= due else "pending"

        for table, key in (("kinds", raised["kind"]), ("districts", raised["district"])):
            row = out[table].setdefault(key, {"cases": 0, "ack": [], "resolve": []})
            row["cases"] += 1
            row["ack"].append(judge(acked, _ns(raised["deadline"])))
            row["resolve"].append(judge(closed, resolve_due))
    return out


def share(outcomes: list[str]) -> str:
    judged = [o for o in outcomes if o != "pending"]
    return str(round(outcomes.count("on_time") / len(judged), 4)) if judged else ""


def test_the_half_year_report_matches_the_events(year, capsys):
    from ingest.cli import main

    sent, d = year
    tmp = YEAR_DIR["tmp"]
    assert main(["report", "--period", "2026-H1", "--state-dir", str(tmp / "state"), "--registry",
                 str(tmp / "registry"), "--out", str(tmp / "report")]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page.name == "supervision-2026-H1.html" and "<svg" in page.read_text()
    p0, p1 = YEAR_START, _ns("2026-07-01T00:00:00+08:00")
    as_of = d.store.clock()
    want = recompute(sent, p0, p1, as_of)
    rows = {r["name"]: r for r in _csv(tmp / "report" / "supervision-2026-H1-kinds.csv")}
    assert set(rows) == set(want["kinds"])
    for kind, w in want["kinds"].items():
        got = rows[kind]
        assert int(got["cases"]) == w["cases"], kind
        for what in ("ack", "resolve"):
            for o in ("on_time", "late", "missed", "pending"):
                assert int(got[f"{what}_{o}"]) == w[what].count(o), (kind, what, o)
            assert got[f"{what}_on_time_share"] == share(w[what]), (kind, what)
    districts = {r["name"]: r for r in _csv(tmp / "report" / "supervision-2026-H1-districts.csv")}
    for dist in UNITS:
        got, w = districts[dist], want["districts"][dist]
        assert int(got["cases"]) == w["cases"]
        assert got["ack_on_time_share"] == share(w["ack"]) and got["resolve_on_time_share"] == share(w["resolve"])
        assert int(got["escalated_level2"]) == want["up"].get((dist, 2), 0)
        assert int(got["escalated_level3"]) == want["up"].get((dist, 3), 0)
        overdue = [t for t in want["overdue_tanks"] if t == TANK_OF[dist]]
        assert (int(got["tanks"]), int(got["tanks_overdue"]), int(got["tanks_on_time"])) == (1, len(overdue),
                                                                                           1 - len(overdue))
        assert float(got["overdue_tank_days"]) == round(sum(want["overdue_tanks"][t] for t in overdue), 1)
    # what the simulation was built to show: d01 on time, d02 late, d03 never
    assert [districts[x]["ack_on_time_share"] for x in ("d01", "d02", "d03")] == ["1.0", "0.0", "0.0"]
    assert (districts["d03"]["escalated_level3"], districts["d01"]["escalated_level2"]) == ("6", "0")
    # the monthly ranking: each month, a unit of the prompt district first
    ranking = _csv(tmp / "report" / "supervision-2026-H1-ranking.csv")
    assert sorted({r["month"] for r in ranking}) == [f"2026-0{m}" for m in range(1, 7)]
    firsts = {r["month"]: r["unit"] for r in ranking if r["rank"] == "1"}
    assert set(firsts.values()) <= {"d01 water service", "Unit Prompt"} and len(firsts) == 6
    month = [r for r in ranking if r["month"] == "2026-03"]
    assert [(r["unit"], r["closed_on_time"], r["closed_late"]) for r in month][:3] == [
        ("d01 water service", "1", "0"), ("d02 water service", "0", "1"), ("d03 water service", "0", "1")]
    june = {r["unit"]: r for r in ranking if r["month"] == "2026-06"}
    assert june["Unit Never"]["overdue_at_month_end"] == "1"  # the overdue tank once, not its due-soon case too
    cases = _csv(tmp / "report" / "supervision-2026-H1-cases.csv")
    assert len(cases) == sum(w["cases"] for w in want["kinds"].values())


def test_a_month_report_and_what_the_report_refuses(year, tmp_path, capsys):
    from ingest.cli import main

    state = YEAR_DIR["tmp"] / "state"
    assert main(["report", "--period", "2026-03", "--state-dir", str(state), "--out", str(tmp_path / "m")]) == 0
    kinds = {r["name"]: r for r in _csv(tmp_path / "m" / "supervision-2026-03-kinds.csv")}
    assert kinds["signal_blocking"]["cases"] == "3"  # one a district, raised on 2026-03-12
    assert {r["month"] for r in _csv(tmp_path / "m" / "supervision-2026-03-ranking.csv")} == {"2026-03"}
    capsys.readouterr()
    assert main(["report", "--period", "2026-H3", "--state-dir", str(state), "--out", str(tmp_path / "x")]) == 2
    assert "give a half-year (2026-H1, 2026-H2) or a month (2026-05)" in capsys.readouterr().err
    assert main(["report", "--period", "2026-13", "--state-dir", str(state), "--out", str(tmp_path / "x")]) == 2
    assert main(["report", "--period", "2026-H1", "--state-dir", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no dispatch state" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "x")]) == 2
    assert "--alerts FILE (the detection report) or --period" in capsys.readouterr().err


def test_water_quality_and_intrusion_cases_run_on_an_hour(tmp_path):
    d = make(registry(tmp_path), tmp_path / "state")
    t0 = T + 3 * H
    quality = AlertEvent("water_quality/T3/1", "raised", "water_quality", "critical", "tank", "T3", "d03", t0 - H // 2,
                         t0, "Tank T3: free chlorine 0.02 mg/L", {}, {"out_of_limits_min": 30})
    door = AlertEvent("pump_room_intrusion/P3/1", "raised", "pump_room_intrusion", "warning", "pump_room", "P3", "d03",
                      t0, t0, "Pump room P3: door open, no work order", {}, {"door_open_min": 5})
    raised = d.emit([quality, door])
    assert [(e["route"]["unit"], e["deadline"], e["light"]) for e in raised] == [
        ("Unit Never", iso_utc(t0 + H), "green")] * 2
    out = [(e["kind"], e["event"], e.get("reminder"), e["route"]["level"], e["light"],
            (dt.datetime.fromisoformat(e["detected_at"]).timestamp() * NS - t0) / 60 / NS) for e in d.tick(t0 + 6 * H)]
    for kind in ("water_quality", "pump_room_intrusion"):  # yellow at 45 min, red at 1 h, up every hour after
        assert [x[1:] for x in out if x[0] == kind] == [
            ("updated", 1, 1, "yellow", 45), ("updated", 2, 1, "red", 60), ("escalated", None, 2, "red", 120),
            ("updated", 3, 2, "red", 180), ("updated", 4, 2, "red", 240), ("escalated", None, 3, "red", 300),
            ("updated", 5, 3, "red", 360)]
    top = d.tick(t0 + 7 * H)  # accountability is reminded every hour
    assert [(e["reminder"], e["route"]["unit"]) for e in top] == [(6, "d03 discipline office")] * 2
    case = d.store.incident("water_quality/T3/1")
    assert (case.level, case.resolve_due_ns) == (3, t0 + 24 * H)
    door_steps = d.store.incident("pump_room_intrusion/P3/1").history
    assert [h["unit"] for h in door_steps if h["step"] == "escalated"][-1] == "d03 discipline office"
    d.close()

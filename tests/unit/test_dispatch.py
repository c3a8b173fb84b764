"""Dispatcher behaviour a dispatch desk notices: one incident one alert_id, routing, Art. 43 estimates, reminders and
escalation on a year of tank deadlines, acknowledgements, CAP 1.2 output (no receiver needed here)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from devices.alerts import AlertEvent
from devices.registry import Registry
from ingest.dispatch import Dispatcher, DispatchSettings, sign
from ingest.dispatch.formats import cap
from ingest.tools import ack as ack_cli
from tests.helpers import WireDispatcher, write_registry

NS = 1_000_000_000
DAY = 86400 * NS
T0 = 1_795_334_400 * NS  # 2026-11-22T08:00:00Z
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry.load(write_registry(tmp_path / "registry"))


def make(registry: Registry, state: Path, alerts: Path | None = None, **settings) -> WireDispatcher:
    # These tests are about a case's life and its tank deadlines: reminders of other kinds stay out of them unless a
    # test asks (the clock of every kind is tested in test_supervision.py).
    settings.setdefault("remind_kinds", ["disinfection_overdue"])
    return WireDispatcher(Dispatcher(registry, state, DispatchSettings(**settings), alerts_file=alerts, webhook_url="",
                      webhook_secret="", mqtt_publish=None))


def meter_event(event: str = "raised", kind: str = "signal_blocking", meter: str = "M000001", start: int = T0,
                at: int = T0 + DAY, alert_id: str | None = None, severity: str = "warning", **evidence) -> AlertEvent:
    return AlertEvent(alert_id or f"{kind}/{meter}/{start}", event, kind, severity, "meter", meter, "d01", start, at,
                      f"Meter {meter}: {kind}", {"unit": "detector's unit"}, evidence)


def test_an_incident_is_raised_once_keeps_its_id_and_is_cleared_once(registry, tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    d = make(registry, tmp_path / "state", alerts)
    first = d.emit([meter_event()])
    assert [e["event"] for e in first] == ["raised"]
    # The detector raising again (same id, or a new id after moving the start) is the same incident.
    assert d.emit([meter_event(at=T0 + DAY + 3600 * NS)]) == []
    assert d.emit([meter_event(alert_id="signal_blocking/M000001/other", start=T0 - 3600 * NS)]) == []
    # A clear under the other id closes the one incident, under its original id.
    done = d.emit([meter_event("cleared", alert_id="signal_blocking/M000001/other", at=T0 + 2 * DAY)])
    assert [(e["event"], e["alert_id"], e["sequence"]) for e in done] == [("cleared", first[0]["alert_id"], 2)]
    assert d.emit([meter_event("cleared", at=T0 + 3 * DAY)]) == []
    d.close()
    lines = [orjson.loads(x) for x in alerts.read_bytes().splitlines()]
    assert [x["event"] for x in lines] == ["raised", "cleared"]
    assert lines[1]["start"] == "2026-11-22T07:00:00Z"  # the start moved earlier with the evidence


def test_an_open_incident_is_not_raised_again_after_a_restart(registry, tmp_path):
    d = make(registry, tmp_path / "state")
    assert len(d.emit([meter_event()])) == 1
    d.close()
    d2 = make(registry, tmp_path / "state")
    assert d2.emit([meter_event(at=T0 + 2 * DAY)]) == []  # the detector, restarted, raises it again
    assert [e["event"] for e in d2.emit([meter_event("cleared", at=T0 + 3 * DAY)])] == ["cleared"]
    # history replayed after the clear stays quiet; a later recurrence is a new incident with a new id
    assert d2.emit([meter_event(at=T0 + 2 * DAY)]) == []
    again = d2.emit([meter_event(at=T0 + 5 * DAY)])
    assert [e["event"] for e in again] == ["raised"]
    assert again[0]["alert_id"] != f"signal_blocking/M000001/{T0}"
    d2.close()


def test_updates_go_out_only_when_the_evidence_grows_materially(registry, tmp_path):
    d = make(registry, tmp_path / "state", growth_kinds=[])
    d.emit([meter_event(kind="reverse_flow", volume_reversed_m3=1.0)])
    small = d.emit([meter_event("updated", kind="reverse_flow", at=T0 + 2 * DAY, volume_reversed_m3=1.2)])
    big = d.emit([meter_event("updated", kind="reverse_flow", at=T0 + 3 * DAY, volume_reversed_m3=4.0)])
    soon = d.emit([meter_event("updated", kind="reverse_flow", at=T0 + 3 * DAY + 60 * NS, volume_reversed_m3=40.0)])
    worse = d.emit([meter_event("updated", kind="reverse_flow", at=T0 + 3 * DAY + 120 * NS, severity="critical",
                                volume_reversed_m3=41.0)])
    assert small == [] and soon == []
    assert [(e["event"], e["sequence"]) for e in big + worse] == [("updated", 2), ("updated", 3)]
    assert worse[0]["severity"] == "critical"
    assert worse[0]["evidence"]["volume_reversed_m3"] == 41.0
    d.close()


def test_open_theft_incidents_are_updated_as_their_loss_grows(registry, tmp_path):
    d = make(registry, tmp_path / "state", remind_kinds=["disinfection_overdue"])  # growth updates alone
    d.emit([meter_event(start=T0, at=T0 + 2 * DAY)])
    sent = []
    for day in range(3, 40):
        sent += d.tick(T0 + day * DAY)
    days = [e["evidence"]["loss_estimate"]["statutory"]["days"] for e in sent]
    assert 3 <= len(sent) <= 8  # spaced out geometrically, not daily
    assert days == sorted(days) and days[-1] >= 25
    d.close()


def test_routing_follows_art_14_and_escalation_goes_to_the_supervisor(registry, tmp_path):
    d = make(registry, tmp_path / "state", district_unit_template="Water service {district}", remind_kinds=["*"])
    meter = d.emit([meter_event()])[0]
    assert meter["route"]["unit"] == "Water service d01"
    tank = d.emit([AlertEvent("disinfection_overdue/P0001-T2/x", "raised", "disinfection_overdue", "warning", "tank",
                              "P0001-T2", "d01", T0, T0, "Tank overdue", {}, {})])[0]
    assert tank["route"]["unit"] == "Unit 3"
    assert tank["evidence"]["where"]["address"] == "1 Songhua Road, Daoli"
    assert tank["evidence"]["where"]["pump_room_id"] == "P0001"
    escalated = [e for day in range(1, 30) for e in d.tick(T0 + day * DAY) if e["event"] == "escalated"]
    tank_up = [e for e in escalated if e["kind"] == "disinfection_overdue"]
    assert len(tank_up) == 1
    assert tank_up[0]["route"]["unit"] == "Daoli Water Authority"
    assert tank_up[0]["route"]["escalated_from"] == "Unit 3"
    assert tank_up[0]["severity"] == "critical"
    # the meter's case (24 h to acknowledge) went up both levels in those days: the district's units
    meter_up = [(e["evidence"]["level"], e["route"]["unit"], e["route"]["escalated_from"]) for e in escalated
                if e["kind"] == "signal_blocking"]
    assert meter_up == [(2, "d01 district water supply authority", "Water service d01"),
                        (3, "d01 district accountability office", "d01 district water supply authority")]
    d.close()


def test_art_43_estimates_for_theft(registry, tmp_path):
    d = make(registry, tmp_path / "state")
    rev = d.emit([meter_event(kind="reverse_flow", start=T0, at=T0 + 3 * DAY, volume_reversed_m3=2.5)])[0]
    loss = rev["evidence"]["loss_estimate"]
    assert loss["telemetry"]["m3"] == 2.5
    q15 = 1.0 * math.pi * 0.015 ** 2 / 4 * 3600  # DN15 at 1 m/s ≈ 0.64 m3/h
    assert loss["statutory"]["avg_flow_m3h"] == pytest.approx(0.64, abs=0.005)
    assert loss["statutory"]["m3"] == pytest.approx(q15 * 3 * 3, abs=0.01)  # residential 3 h/day, 3 days

    # non-residential: the registry's business hours (10 h), DN20; bypass: unmetered m3/day x days
    byp = d.emit([meter_event(kind="bypass", meter="M000003", start=T0, at=T0 + 4 * DAY,
                              estimated_unmetered_m3_per_day=0.8)])[0]
    loss = byp["evidence"]["loss_estimate"]
    assert loss["telemetry"]["m3"] == pytest.approx(3.2)
    q20 = 1.0 * math.pi * 0.020 ** 2 / 4 * 3600
    assert loss["statutory"]["hours_per_day"] == 10
    assert loss["statutory"]["m3"] == pytest.approx(q20 * 10 * 4, abs=0.01)

    # start unknown: the statutory 180-360 day range
    unk = d.emit([meter_event(kind="signal_blocking", meter="M000002", start_known=False)])[0]
    stat = unk["evidence"]["loss_estimate"]["statutory"]
    assert stat["days_range"] == [180, 360]
    assert stat["m3_range"] == pytest.approx([q15 * 3 * 180, q15 * 3 * 360], abs=0.01)
    # tank kinds carry no loss estimate
    d.close()


# ---- a year of tank deadlines ------------------------------------------------------------------------------------
TANKS = """tank_id,room_id,capacity_m3,last_disinfected
T-prompt,P0001,50,2026-06-01
T-lastday,P0001,50,2026-06-05
T-late,P0001,50,2026-06-10
T-never,P0001,50,2026-06-15
T-acked,P0001,50,2026-06-20
"""
# when each tank's unit disinfects, in days after the due date (None: never; the acked one much later)
POLICY = {"T-prompt": -5, "T-lastday": 1, "T-late": 10, "T-never": None, "T-acked": 30}


def add_months(d: dt.date, n: int) -> dt.date:
    y, m = divmod(d.month - 1 + n, 12)
    return d.replace(year=d.year + y, month=m + 1, day=min(d.day, 28))


def midnight(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()) * NS


class TankUnit:
    """Stands in for the disinfection detector (due-soon 14 days ahead, overdue on the day, cleared by a
    disinfection) and for the maintenance unit that does (or does not) disinfect."""

    def __init__(self, tank: str, last: dt.date):
        self.tank, self.last = tank, last
        self.state, self.id = "ok", ""

    def due(self) -> dt.date:
        return add_months(self.last, 6)

    def step(self, today: dt.date, now: int) -> list[AlertEvent]:
        due, out = self.due(), []
        lag = POLICY[self.tank]

        def ev(event, kind, start, **evidence):
            return AlertEvent(f"{kind}/{self.tank}/{start}", event, kind, "warning", "tank", self.tank, "d01", start,
                              now, f"Tank {self.tank}: {kind} (due {due})", {}, {"due_date": str(due), **evidence})

        if lag is not None and today >= due + dt.timedelta(days=lag) and self.state != "ok":
            kind = "disinfection_overdue" if self.state == "overdue" else "disinfection_due_soon"
            out.append(ev("cleared", kind, self.start))
            self.last, self.state = today, "ok"
            return out
        if self.state == "ok" and today >= due - dt.timedelta(days=14):
            self.state, self.start = "soon", midnight(due - dt.timedelta(days=14))
            out.append(ev("raised", "disinfection_due_soon", self.start))
        if self.state == "soon" and today >= due:
            out.append(ev("cleared", "disinfection_due_soon", self.start))
            self.state, self.start = "overdue", midnight(due)
            out.append(ev("raised", "disinfection_overdue", self.start))
        return out


def test_a_year_of_tank_deadlines_reminds_and_escalates_on_schedule(tmp_path):
    reg = Registry.load(write_registry(tmp_path / "registry", tanks=TANKS))
    d = make(reg, tmp_path / "state", alerts=tmp_path / "alerts.jsonl")
    units = {t: TankUnit(t, dt.date.fromisoformat(reg.tanks.last_disinfected[i].astype(str)))
             for i, t in enumerate(reg.tanks.ids.tolist())}
    start = dt.date(2026, 11, 1)
    sent: list[dict] = []
    for n in range(366):
        today = start + dt.timedelta(days=n)
        now = midnight(today) + 9 * 3600 * NS  # the detectors' clock passes 09:00 local every day
        for t, u in units.items():
            sent += d.emit(u.step(today, now))
            if t == "T-acked" and u.state == "overdue" and today == u.due() + dt.timedelta(days=3):
                alert = next(e for e in reversed(sent) if e["kind"] == "disinfection_overdue"
                             and e["subject"]["id"] == t)
                assert d.ack(alert["alert_id"], by="desk 4", note="case 2026-118")
        sent += d.tick(now)
    d.close()

    def of(tank):
        return [(e["kind"].removeprefix("disinfection_"), e["event"], e.get("reminder"),
                 dt.datetime.fromisoformat(e["detected_at"]).astimezone(TZ).date()) for e in sent
                if e["subject"]["id"] == tank]

    # due 2026-12-15: reminders at +7 and +14, escalation at +21; two more reminders at level 2, accountability at
    # +42, then a reminder every 7 days to the end
    never = of("T-never")
    due = dt.date(2026, 12, 15)
    assert never[:10] == [
        ("due_soon", "raised", None, due - dt.timedelta(days=14)),
        ("due_soon", "updated", 1, due - dt.timedelta(days=3)),
        ("due_soon", "cleared", None, due),
        ("overdue", "raised", None, due),
        ("overdue", "updated", 1, due + dt.timedelta(days=7)),
        ("overdue", "updated", 2, due + dt.timedelta(days=14)),
        ("overdue", "escalated", None, due + dt.timedelta(days=21)),
        ("overdue", "updated", 3, due + dt.timedelta(days=28)),
        ("overdue", "updated", 4, due + dt.timedelta(days=35)),
        ("overdue", "escalated", None, due + dt.timedelta(days=42)),
    ]
    assert never[10:] == [("overdue", "updated", 4 + k, due + dt.timedelta(days=42 + 7 * k))
                          for k in range(1, len(never) - 9)]
    assert (start + dt.timedelta(days=365) - never[-1][3]).days < 7
    esc = [e for e in sent if e["event"] == "escalated" and e["subject"]["id"] == "T-never"]
    assert len(esc) == 2
    assert esc[0]["route"]["unit"] == "Daoli Water Authority" and esc[0]["severity"] == "critical"
    assert esc[0]["evidence"]["days_overdue"] == 21
    assert [e["evidence"]["level"] for e in esc] == [2, 3]
    assert esc[1]["route"]["unit"] == "d01 district accountability office"

    late = of("T-late")  # one reminder, then disinfected 10 days late: no escalation, next cycle 6 months on
    assert [x[:3] for x in late[:6]] == [("due_soon", "raised", None), ("due_soon", "updated", 1),
                                         ("due_soon", "cleared", None), ("overdue", "raised", None),
                                         ("overdue", "updated", 1), ("overdue", "cleared", None)]
    assert sum(1 for x in late if x[1] == "raised" and x[0] == "overdue") == 2  # the second half-year too

    prompt = of("T-prompt")  # done 5 days early: never overdue, no 3-day reminder
    assert {x[0] for x in prompt} == {"due_soon"}
    assert not any(x[2] for x in prompt)

    # acknowledged on day 3 but disinfected only on day 30: its due date stays the deadline, so it is reminded
    # weekly, goes up to the supervising unit after two reminders, and clears when finally done
    acked = of("T-acked")
    overdue = [x for x in acked if x[0] == "overdue"]
    due = dt.date(2026, 12, 20)
    assert overdue[:6] == [("overdue", "raised", None, due), ("overdue", "updated", 1, due + dt.timedelta(days=7)),
                           ("overdue", "updated", 2, due + dt.timedelta(days=14)),
                           ("overdue", "escalated", None, due + dt.timedelta(days=21)),
                           ("overdue", "updated", 3, due + dt.timedelta(days=28)),
                           ("overdue", "cleared", None, due + dt.timedelta(days=30))]
    cleared = next(e for e in sent if e["subject"]["id"] == "T-acked" and e["event"] == "cleared"
                   and e["kind"] == "disinfection_overdue")
    assert cleared["acknowledged"]["by"] == "desk 4"


# ---- acknowledgements --------------------------------------------------------------------------------------------
def overdue(tank: str = "P0001-T2", at: int = T0) -> AlertEvent:
    return AlertEvent(f"disinfection_overdue/{tank}/x", "raised", "disinfection_overdue", "warning", "tank", tank,
                      "d01", at, at, f"Tank {tank} overdue", {}, {})


def test_ack_over_mqtt_payload_is_recorded_and_the_case_runs_on_to_its_deadline(registry, tmp_path):
    d = make(registry, tmp_path / "state")
    aid = d.emit([overdue()])[0]["alert_id"]
    assert not d.handle_ack_message(b"not json")
    assert not d.handle_ack_message(b'{"alert_id": "nope/x/1", "by": "desk"}')  # unknown: recorded, not matched
    msg = orjson.dumps({"alert_id": aid, "by": "12345 desk", "note": "case 88", "ts": "2026-11-25T02:00:00Z"})
    assert d.handle_ack_message(msg)
    # acknowledged, not done: the tank's due date (T0) is still the deadline, reminded weekly, up after two
    out = [e for day in range(1, 30) for e in d.tick(T0 + day * DAY)]
    assert [(e["event"], e.get("reminder"), e["route"]["level"], e["acknowledged"]["by"]) for e in out] == [
        ("updated", 1, 1, "12345 desk"), ("updated", 2, 1, "12345 desk"), ("escalated", None, 2, "12345 desk"),
        ("updated", 3, 2, "12345 desk")]
    acks = d.store.acks(aid)
    assert [(a["by"], a["note"], a["via"]) for a in acks] == [("12345 desk", "case 88", "mqtt")]
    d.close()


def test_cistern_ack_command_records_in_the_state_folder_while_the_service_runs(registry, tmp_path, capsys):
    state = tmp_path / "state"
    d = make(registry, state)
    aid = d.emit([overdue()])[0]["alert_id"]
    assert [e["reminder"] for e in d.tick(T0 + 8 * DAY)] == [1]

    parser = argparse.ArgumentParser()
    ack_cli.add_arguments(parser)
    env_state = ["--state-dir", str(state), "--registry", str(tmp_path / "registry")]
    assert ack_cli.main(parser.parse_args(["--list", *env_state])) == 0
    assert aid in capsys.readouterr().out
    assert ack_cli.main(parser.parse_args([aid, "--by", "Li Wei", "--note", "crew booked", *env_state])) == 0
    assert "acknowledged by Li Wei" in capsys.readouterr().out
    assert ack_cli.main(parser.parse_args(["no/such/alert", *env_state])) == 1

    # the running dispatcher sees the acknowledgement (taken now, on the wall clock): the reminder before it was
    # answered, so the next two weekly reminders go out at level 1 and name it, and the case has not gone up yet
    ack_ns = d.store.incident(aid).ack_ns
    out = d.tick(ack_ns + 14 * DAY)
    assert [(e["reminder"], e["route"]["level"], e["acknowledged"]["by"]) for e in out] == [(2, 1, "Li Wei"),
                                                                                         (3, 1, "Li Wei")]
    d.close()


# ---- CAP 1.2 -------------------------------------------------------------------------------------------------
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
REQUIRED_ALERT = ("identifier", "sender", "sent", "status", "msgType", "scope")
REQUIRED_INFO = ("category", "event", "urgency", "severity", "certainty")


def test_cap_messages_carry_the_required_elements_and_reference_the_first(registry, tmp_path):
    d = make(registry, tmp_path / "state")
    raised = d.emit([meter_event(kind="reverse_flow", volume_reversed_m3=2.0)])[0]
    cleared = d.emit([meter_event("cleared", kind="reverse_flow", at=T0 + 2 * DAY)])[0]
    d.close()
    sent = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
    first_xml, first_id = cap.render(raised, sequence=1, sender="cistern@example", sent=sent, references=None,
                                     zone=TZ)
    ref = f"cistern@example,{first_id},{cap.cap_time(sent.astimezone(TZ))}"
    last_xml, _ = cap.render(cleared, sequence=2, sender="cistern@example", sent=sent, references=ref, zone=TZ)
    msgs = [ET.fromstring(first_xml), ET.fromstring(last_xml)]
    for root in msgs:
        assert root.tag == f"{CAP}alert"
        for tag in REQUIRED_ALERT:
            el = root.find(f"{CAP}{tag}")
            assert el is not None and el.text, tag
        info = root.find(f"{CAP}info")
        assert info is not None
        for tag in REQUIRED_INFO:
            el = info.find(f"{CAP}{tag}")
            assert el is not None and el.text, tag
        assert info.find(f"{CAP}area/{CAP}areaDesc").text
        sent_text = root.find(f"{CAP}sent").text
        assert dt.datetime.fromisoformat(sent_text).utcoffset() is not None and not sent_text.endswith("Z")
        ident = root.find(f"{CAP}identifier").text
        assert not set(ident) & set(" ,<&")
    assert [m.find(f"{CAP}msgType").text for m in msgs] == ["Alert", "Cancel"]
    assert msgs[1].find(f"{CAP}references").text.split(",")[1] == first_id
    assert msgs[1].find(f"{CAP}info/{CAP}responseType").text == "AllClear"
    assert msgs[0].find(f"{CAP}info/{CAP}category").text == "Infra"
    assert msgs[0].find(f"{CAP}info/{CAP}severity").text in ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
    params = {p.find(f"{CAP}valueName").text: p.find(f"{CAP}value").text
              for p in msgs[0].findall(f"{CAP}info/{CAP}parameter")}
    assert params["alert_id"] == raised["alert_id"] and float(params["loss_telemetry_m3"]) == 2.0


def test_cap_names_water_quality_a_health_alert_and_an_intrusion_a_security_one():
    sent = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
    got = {}
    for kind, subject in (("water_quality", "tank"), ("pump_room_intrusion", "pump_room"), ("sensor_fault", "tank")):
        alert = {"alert_id": f"{kind}/X/1", "event": "raised", "kind": kind, "severity": "warning",
                 "subject": {"type": subject, "id": "X"}, "district": "d01", "start": "2026-11-23T07:00:00Z",
                 "detected_at": "2026-11-23T07:30:00Z", "summary": "s", "route": {"unit": "Unit 1"}, "evidence": {}}
        info = ET.fromstring(cap.render(alert, sequence=1, sender="c", sent=sent, references=None, zone=TZ)[0]).find(
            f"{CAP}info")
        got[kind] = (info.find(f"{CAP}category").text, info.find(f"{CAP}event").text,
                     info.find(f"{CAP}instruction").text)
    assert got["water_quality"][0] == "Health" and "GB 5749" in got["water_quality"][1]
    assert got["pump_room_intrusion"][0] == "Security" and "work order" in got["pump_room_intrusion"][1]
    assert got["sensor_fault"][0] == "Infra" and "sensor" in got["sensor_fault"][2]


def test_signature_is_hmac_sha256_of_the_raw_body():
    body = b'{"alert_id":"a"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == f"sha256={expected}"


def test_settings_take_comma_lists_from_the_environment():
    s = DispatchSettings(due_soon_lead_days="3, 14", remind_kinds="disinfection_overdue,signal_blocking")
    assert s.due_soon_lead_days == [14, 3]
    assert s.remind_kinds == ["disinfection_overdue", "signal_blocking"]
    with pytest.raises(ValueError):
        DispatchSettings(due_soon_lead_days="0")

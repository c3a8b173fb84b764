"""`cistern evaluate`: the matching rule of docs/FORMATS.md on hand-made alert and label files."""

from __future__ import annotations

import argparse

import orjson
import pytest

from ingest.tools import evaluate as ev


def label(kind, sid, start, end, stype="meter", **extra):
    return {"kind": kind, "subject": {"type": stype, "id": sid}, "start": start, "end": end, **extra}


def alert(kind, sid, start, detected, aid=None, event="raised", stype="meter"):
    return {"alert_id": aid or f"{kind}:{sid}:{start}", "event": event, "kind": kind, "severity": "warning",
            "subject": {"type": stype, "id": sid}, "district": "d01", "start": start, "detected_at": detected,
            "summary": "x", "route": {}, "evidence": {}}


LABELS = [
    label("signal_blocking", "M1", "2026-09-05T10:00:00Z", "2026-09-08T00:00:00Z"),
    label("signal_blocking", "M2", "2026-09-10T00:00:00Z", "2026-09-30T00:00:00Z"),
    label("reverse_flow", "M3", "2026-09-12T03:00:00Z", "2026-09-12T04:00:00Z"),
    label("network_outage", "C1", "2026-09-14T00:00:00Z", "2026-09-14T12:00:00Z", stype="cell"),
    label("none", "M4", "2026-09-15T00:00:00Z", "2026-09-25T00:00:00Z", decoy="vacancy"),
    label("none", "M5", "2026-09-20T00:00:00Z", "2026-09-20T01:00:00Z", decoy="rollover"),
]


def test_perfect_alerts_score_one_and_report_median_delay():
    alerts = [alert("signal_blocking", "M1", "2026-09-05T10:00:00Z", "2026-09-06T10:00:00Z"),
              alert("signal_blocking", "M2", "2026-09-10T00:00:00Z", "2026-09-10T12:00:00Z"),
              alert("reverse_flow", "M3", "2026-09-12T03:00:00Z", "2026-09-12T05:00:00Z"),
              alert("network_outage", "C1", "2026-09-14T00:00:00Z", "2026-09-14T03:00:00Z", stype="cell")]
    r = ev.evaluate(alerts, LABELS)["kinds"]
    sb = r["signal_blocking"]
    assert (sb["tp"], sb["fp"], sb["fn"], sb["precision"], sb["recall"], sb["f1"]) == (2, 0, 0, 1.0, 1.0, 1.0)
    assert sb["delay_h_median"] == pytest.approx(18.0)  # median of 24 h and 12 h
    assert r["reverse_flow"]["delay_h_median"] == pytest.approx(2.0)
    assert r["network_outage"]["tp"] == 1
    # kinds with neither labels nor alerts: nothing is defined
    assert r["bypass"] == {"labels": 0, "alerts": 0, "tp": 0, "fp": 0, "fn": 0, "precision": None,
                           "recall": None, "f1": None, "decoy_hits": {}, "delay_h_median": None}


def test_pump_room_kinds_are_scored_with_their_decoys_and_sensor_faults_are_only_listed():
    labels = [label("water_quality", "P1-T1", "2026-09-05T10:00:00Z", "2026-09-05T12:00:00Z", stype="tank",
                    parameter="free_chlorine"),
              label("pump_room_intrusion", "P1", "2026-09-06T02:00:00Z", "2026-09-06T03:00:00Z", stype="pump_room"),
              label("none", "P2", "2026-09-10T09:00:00Z", "2026-09-10T11:00:00Z", stype="pump_room",
                    decoy="maintenance_visit"),
              label("none", "P2-T1", "2026-09-12T09:00:00Z", "2026-09-12T15:00:00Z", stype="tank",
                    decoy="disinfection_chlorine")]
    alerts = [alert("water_quality", "P1-T1", "2026-09-05T10:00:00Z", "2026-09-05T10:30:00Z", stype="tank"),
              alert("pump_room_intrusion", "P1", "2026-09-06T02:00:00Z", "2026-09-06T02:15:00Z", stype="pump_room"),
              alert("pump_room_intrusion", "P2", "2026-09-10T09:00:00Z", "2026-09-10T09:15:00Z", stype="pump_room"),
              alert("water_quality", "P2-T1", "2026-09-12T10:00:00Z", "2026-09-12T10:30:00Z", stype="tank"),
              alert("sensor_fault", "P2-T2", "2026-09-12T10:00:00Z", "2026-09-12T22:00:00Z", stype="tank")]
    r = ev.evaluate(alerts, labels)
    wq, intr = r["kinds"]["water_quality"], r["kinds"]["pump_room_intrusion"]
    assert (wq["tp"], wq["fp"], wq["fn"], wq["decoy_hits"]) == (1, 1, 0, {"disinfection_chlorine": 1})
    assert (intr["tp"], intr["fp"], intr["fn"], intr["decoy_hits"]) == (1, 1, 0, {"maintenance_visit": 1})
    assert wq["delay_h_median"] == pytest.approx(0.5) and intr["delay_h_median"] == pytest.approx(0.25)
    assert r["unscored"] == {"sensor_fault": 1}


def test_window_is_one_day_either_side_of_the_label():
    inside_before = alert("reverse_flow", "M3", "2026-09-11T03:00:00Z", "2026-09-12T06:00:00Z", aid="a")
    inside_after = alert("reverse_flow", "M3", "2026-09-13T04:00:00Z", "2026-09-13T06:00:00Z", aid="b")
    outside = alert("reverse_flow", "M3", "2026-09-13T04:00:01Z", "2026-09-13T06:00:00Z", aid="c")
    too_early = alert("reverse_flow", "M3", "2026-09-11T02:59:59Z", "2026-09-13T06:00:00Z", aid="d")
    for a, tp in ((inside_before, 1), (inside_after, 1), (outside, 0), (too_early, 0)):
        k = ev.evaluate([a], LABELS)["kinds"]["reverse_flow"]
        assert (k["tp"], k["fp"], k["fn"]) == (tp, 1 - tp, 1 - tp)


def test_one_label_matches_at_most_one_alert_and_alert_ids_count_once():
    alerts = [alert("signal_blocking", "M1", "2026-09-05T10:00:00Z", "2026-09-06T00:00:00Z", aid="x"),
              alert("signal_blocking", "M1", "2026-09-05T10:00:00Z", "2026-09-06T01:00:00Z", aid="x"),  # same id
              alert("signal_blocking", "M1", "2026-09-06T10:00:00Z", "2026-09-07T00:00:00Z", aid="y")]
    k = ev.evaluate(alerts, LABELS)["kinds"]["signal_blocking"]
    assert (k["alerts"], k["tp"], k["fp"], k["fn"]) == (2, 1, 1, 1)
    assert k["precision"] == 0.5 and k["recall"] == 0.5 and k["f1"] == 0.5


def test_two_labels_of_one_subject_are_matched_optimally():
    labels = [label("bypass", "M9", "2026-09-01T00:00:00Z", "2026-09-20T00:00:00Z"),
              label("bypass", "M9", "2026-09-21T00:00:00Z", "2026-09-22T00:00:00Z")]
    # The first alert lies in both windows; a greedy pick of the long label would strand the second alert.
    alerts = [alert("bypass", "M9", "2026-09-20T12:00:00Z", "2026-09-21T00:00:00Z", aid="1"),
              alert("bypass", "M9", "2026-09-10T00:00:00Z", "2026-09-10T05:00:00Z", aid="2")]
    k = ev.evaluate(alerts, labels)["kinds"]["bypass"]
    assert (k["tp"], k["fp"], k["fn"]) == (2, 0, 0)


def test_only_raised_events_count():
    alerts = [alert("signal_blocking", "M1", "2026-09-05T10:00:00Z", "2026-09-06T10:00:00Z", event="updated"),
              alert("signal_blocking", "M2", "2026-09-10T00:00:00Z", "2026-09-12T00:00:00Z", event="cleared"),
              alert("signal_blocking", "M2", "2026-09-10T00:00:00Z", "2026-09-12T00:00:00Z", event="escalated")]
    k = ev.evaluate(alerts, LABELS)["kinds"]["signal_blocking"]
    assert (k["alerts"], k["tp"], k["fn"], k["precision"], k["recall"]) == (0, 0, 2, None, 0.0)
    assert k["f1"] is None


def test_false_positives_on_decoys_are_counted_by_decoy():
    alerts = [
        # vacancy decoy, widened by a day: 14 Sep .. 26 Sep; this alert's [start, detected_at] overlaps it
        alert("bypass", "M4", "2026-09-10T00:00:00Z", "2026-09-14T06:00:00Z", aid="v1"),
        # ends before the widened decoy begins: a plain false positive
        alert("bypass", "M4", "2026-09-01T00:00:00Z", "2026-09-13T23:00:00Z", aid="v2"),
        alert("reverse_flow", "M5", "2026-09-20T00:00:00Z", "2026-09-20T02:00:00Z", aid="r1"),
        alert("reverse_flow", "M8", "2026-09-20T00:00:00Z", "2026-09-20T02:00:00Z", aid="r2"),  # no decoy there
    ]
    r = ev.evaluate(alerts, LABELS)["kinds"]
    assert r["bypass"]["fp"] == 2 and r["bypass"]["decoy_hits"] == {"vacancy": 1}
    assert r["bypass"]["precision"] == 0.0 and r["bypass"]["recall"] is None and r["bypass"]["f1"] is None
    assert r["reverse_flow"]["decoy_hits"] == {"rollover": 1}
    assert (r["reverse_flow"]["fp"], r["reverse_flow"]["fn"], r["reverse_flow"]["f1"]) == (2, 1, 0.0)


def test_kind_and_subject_must_both_agree_and_other_kinds_are_listed_not_scored():
    alerts = [alert("signal_blocking", "M3", "2026-09-12T03:00:00Z", "2026-09-12T05:00:00Z"),  # wrong kind
              alert("network_outage", "C1", "2026-09-14T00:00:00Z", "2026-09-14T03:00:00Z", stype="meter"),
              alert("disinfection_due_soon", "T1", "2026-09-14T00:00:00Z", "2026-09-14T00:00:00Z", stype="tank")]
    r = ev.evaluate(alerts, LABELS)
    assert r["kinds"]["reverse_flow"]["fn"] == 1 and r["kinds"]["signal_blocking"]["fp"] == 1
    assert r["kinds"]["network_outage"]["tp"] == 0
    assert "disinfection_due_soon" not in r["kinds"] and r["unscored"] == {"disinfection_due_soon": 1}


def test_cli_prints_table_and_json(tmp_path, capsys):
    (tmp_path / "labels.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in LABELS) + b"\n")
    (tmp_path / "alerts.jsonl").write_bytes(
        orjson.dumps(alert("reverse_flow", "M3", "2026-09-12T03:00:00Z", "2026-09-12T05:00:00Z")) + b"\n")
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    assert ev.main(p.parse_args(["--alerts", str(tmp_path / "alerts.jsonl"),
                                 "--labels", str(tmp_path / "labels.jsonl"), "--json"])) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["kinds"]["reverse_flow"]["f1"] == 1.0 and set(out["kinds"]) == {
        "signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection_overdue", "water_quality",
        "pump_room_intrusion"}
    assert ev.main(p.parse_args(["--alerts", str(tmp_path / "alerts.jsonl"),
                                 "--labels", str(tmp_path / "labels.jsonl")])) == 0
    table = capsys.readouterr().out
    assert "reverse_flow" in table and "1.000" in table
    assert ev.main(p.parse_args(["--alerts", str(tmp_path / "nope.jsonl"),
                                 "--labels", str(tmp_path / "labels.jsonl")])) == 2
    assert "--alerts" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"event": "raised"}\nnot json\n')
    assert ev.main(p.parse_args(["--alerts", str(tmp_path / "bad.jsonl"),
                                 "--labels", str(tmp_path / "labels.jsonl")])) == 1
    assert "line 2" in capsys.readouterr().err

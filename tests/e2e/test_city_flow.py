"""The engineer's loop as a user runs it: simulate a city, replay it through the pipeline, score the alerts."""

import json

import orjson

from tests.e2e.test_replay_cli import run_cli

SCORED = ("signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection_overdue")


def test_simulate_replay_evaluate(tmp_path):
    city = tmp_path / "city"
    r = run_cli("simulate", "--out", str(city), "--meters", "300", "--days", "30", "--seed", "11", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("replay", str(city / "capture.jsonl"), "--registry", str(city / "registry"),
                "--state-dir", str(tmp_path / "state"), "--alerts-file", str(tmp_path / "alerts.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "0 dead-lettered" in r.stderr  # the simulator speaks the contract
    events = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    assert events, "a city with incidents raised no alert"
    for e in events:
        assert {"alert_id", "event", "kind", "severity", "subject", "district", "start", "detected_at", "summary",
                "route", "evidence"} <= e.keys()
        assert e["event"] in ("raised", "updated", "escalated", "cleared") and e["route"].get("unit")
    ids = {}
    for e in events:  # one incident, one subject, one kind through all its events
        ids.setdefault(e["alert_id"], (e["kind"], e["subject"]["id"]))
        assert ids[e["alert_id"]] == (e["kind"], e["subject"]["id"])
    raised = [e["alert_id"] for e in events if e["event"] == "raised"]
    assert len(raised) == len(set(raised)), "an incident was raised twice"

    r = run_cli("evaluate", "--alerts", str(tmp_path / "alerts.jsonl"), "--labels", str(city / "labels.jsonl"),
                "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)["kinds"]
    for kind in SCORED:
        k = scores[kind]
        assert k["labels"] >= 1, f"the default city has no {kind} incident"
        assert not any(k["decoy_hits"].values()), f"{kind} fired on a decoy: {k['decoy_hits']}"
        assert k["tp"] >= 1, f"{kind}: no incident found ({k})"

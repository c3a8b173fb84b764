"""`cistern replay` as a user runs it: a capture file in, dead letters and quarantine out, exit 0."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.helpers import write_registry

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ingest", *args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=120)


def line(topic, payload):
    return orjson.dumps({"topic": topic, "payload": payload}).decode()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_replay_keeps_every_refused_message_with_its_reason(tmp_path, workers):
    reg = write_registry(tmp_path / "registry")
    state = tmp_path / "state"
    good = [line("water/d01/meter/M000001/reading",
                 {"meter_id": "M000001", "ts": f"2026-11-22T0{h}:00:00Z", "total_m3": 10 + h}) for h in range(5)]
    lines = good + [
        line("water/d01/meter/M000001/reading", '{"meter_id": "M000001", "ts": "2026-11-22T06:00:00Z", "total'),
        line("water/d01/meter/M000003/reading", {"meter_id": "M000001", "ts": "2026-11-22T06:00:00Z",
                                                 "total_m3": 1}),
        line("water/d01/meter/M424242/reading", {"meter_id": "M424242", "ts": "2026-11-22T06:00:00Z",
                                                 "total_m3": 1}),
        "this line is not JSON",
    ]
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(lines) + "\n")
    r = run_cli("replay", str(capture), "--registry", str(reg), "--state-dir", str(state),
                "--alerts-file", str(tmp_path / "alerts.jsonl"), "--replay-workers", workers)
    assert r.returncode == 0, r.stderr
    assert "5 readings" in r.stderr
    dead = [orjson.loads(x) for x in (state / "deadletters.jsonl").read_text().splitlines()]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 3
    assert any("does not match topic id" in x for x in reasons)
    assert any("capture line 9" in x for x in reasons)
    assert any("json" in x.lower() for x in reasons)
    assert all({"time", "topic", "reason"} <= d.keys() for d in dead)
    quarantined = [orjson.loads(x) for x in (state / "quarantine.jsonl").read_text().splitlines()]
    assert [q["topic"] for q in quarantined] == ["water/d01/meter/M424242/reading"]
    assert orjson.loads(quarantined[0]["payload"])["meter_id"] == "M424242"


def test_replay_of_missing_capture_is_a_usage_error(tmp_path):
    reg = write_registry(tmp_path / "registry")
    r = run_cli("replay", str(tmp_path / "nope.jsonl"), "--registry", str(reg))
    assert r.returncode == 2 and "not found" in r.stderr


def test_a_cistern_variable_that_is_no_setting_is_named_in_a_warning(tmp_path):
    # an old release's name (or a typo) changes nothing: the operator is told which one, and the nearest setting
    reg = write_registry(tmp_path / "registry")
    capture = tmp_path / "capture.jsonl"
    capture.write_text(line("water/d01/meter/M000001/reading",
                            {"meter_id": "M000001", "ts": "2026-11-22T01:00:00Z", "total_m3": 10}) + "\n")
    env = {"CISTERN_BYPASS_MIN_Z": "4", "CISTERN_INFLUX_BUKET": "water", "CISTERN_CONFIG_UNUSED_XYZ": "1"}
    r = run_cli("replay", str(capture), "--registry", str(reg), "--state-dir", str(tmp_path / "state"),
                "--alerts-file", str(tmp_path / "alerts.jsonl"), env=env)
    assert r.returncode == 0, r.stderr
    warned = [x for x in r.stderr.splitlines() if "is not a setting" in x]
    assert len(warned) == 3
    assert any("CISTERN_INFLUX_BUKET" in x and "did you mean CISTERN_INFLUX_BUCKET?" in x for x in warned)
    assert any("CISTERN_BYPASS_MIN_Z" in x and "WARNING" in x for x in warned)
    clean = run_cli("replay", str(capture), "--registry", str(reg), "--state-dir", str(tmp_path / "state2"),
                    "--alerts-file", str(tmp_path / "alerts2.jsonl"), env={"CISTERN_BYPASS_Z_MIN": "3"})
    assert clean.returncode == 0 and "is not a setting" not in clean.stderr

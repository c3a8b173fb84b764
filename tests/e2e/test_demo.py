"""`cistern demo` as a new user runs it: one command, a summary with scores, and a report with every picture."""

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devices.alerts import SCORED_KINDS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SECTIONS = ("signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection", "water_quality",
                    "pump_room_intrusion")


def run_demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    # The demo must not pick up an operator's CISTERN_* settings (it would publish into their broker).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
    return subprocess.run([sys.executable, "-m", "ingest", "demo", "--meters", "150", "--days", "21", "--out",
                           str(out), *extra], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)


@pytest.mark.parametrize("servers", [(), ("--database", "file")], ids=["local-servers", "database-file-fallback"])
def test_demo_runs_end_to_end_and_reports_what_it_found(tmp_path, servers):
    out = tmp_path / "demo-out"
    r = run_demo(out, *servers)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    # it says which parts it used
    assert re.search(r"broker: +Mosquitto", r.stdout)
    assert re.search(r"database: +(InfluxDB 1\.x|line-protocol file)", r.stdout)
    if servers:
        assert "line-protocol file" in r.stdout
    # alerts are shown as they are raised, then the summary with the scores table
    assert re.search(r"▲ (signal_blocking|reverse_flow|bypass|network_outage|disinfection_overdue) ", r.stdout)
    assert "Summary" in r.stdout
    for kind in SCORED_KINDS:
        assert re.search(rf"^\s+{kind}\s+\d+\s+\d+", r.stdout, re.M), f"no score row for {kind}"
    report = Path(r.stdout.strip().splitlines()[-1].removeprefix("Report: "))
    assert report == (out / "report.html").resolve() and report.is_file()

    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["messages_received"] == summary["messages_published"] > 10_000
    assert summary["dead_lettered"] == 0
    # every reading the simulator sent is stored (the database's own count when InfluxDB ran); device events
    # (meter replacements, tank disinfections) are points too
    stored = sum(n for m, n in summary["stored"].items() if m != "alert")
    assert stored == summary["readings_written"] == summary["readings_decoded"] + summary["stored"]["device_event"]
    # each injected kind was raised at least once and matched its label
    for kind in SCORED_KINDS:
        assert summary["scores"]["kinds"][kind]["labels"] >= 1
        assert summary["scores"]["kinds"][kind]["tp"] >= 1, (kind, summary["scores"]["kinds"][kind],
                                                             r.stdout[-4000:])

    page = report.read_text()
    for sid in ("timeline", *EXAMPLE_SECTIONS, "scores"):
        assert f'<section id="{sid}">' in page
    charts = re.findall(r'<img src="(charts/[^"]+\.svg)"', page)
    assert len(charts) >= 8
    for src in charts:
        svg = (out / src).read_text()
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        assert re.search(r'<g class="data"[^>]*>\s*<(polyline|rect|circle|line|polygon)', svg), f"{src} draws no data"
    if not servers and "line-protocol file" in r.stdout:
        assert (out / "influx-lines.lp").stat().st_size > 0


def test_demo_refuses_a_city_too_small_for_every_incident_kind(tmp_path):
    r = run_demo(tmp_path / "x", "--days", "3")
    assert r.returncode == 2
    assert "--days" in r.stderr

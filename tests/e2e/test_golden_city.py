"""A fixed simulated city replayed end to end raises exactly the alert events recorded in tests/golden/.

The golden file pins the detectors' and dispatch's behaviour: a refactoring must leave it byte for byte the same.
When a change is meant to alter detection, regenerate it with `CISTERN_UPDATE_GOLDEN=1 pytest tests/e2e/test_golden_city.py`
and say in the commit message what changed in it and why.
"""

import json
import os
from pathlib import Path

import pytest

from ingest.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "city-300m-28d-seed11.alerts.jsonl"


@pytest.mark.parametrize("workers", ["0", "2"])  # decoded in the replay's own process, or ahead in two workers
def test_alerts_of_a_fixed_city_are_unchanged(tmp_path: Path, monkeypatch, workers: str) -> None:
    update = bool(os.environ.get("CISTERN_UPDATE_GOLDEN"))  # read before the CISTERN_ settings are cleared
    for k in [k for k in os.environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    city = tmp_path / "city"
    assert main(["simulate", "--out", str(city), "--meters", "300", "--days", "28", "--seed", "11", "--quiet"]) == 0
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", str(city / "capture.jsonl"), "--registry", str(city / "registry"),
                 "--state-dir", str(tmp_path / "state"), "--alerts-file", str(alerts), "--log-level", "WARNING",
                 "--replay-workers", workers]) == 0
    got = alerts.read_bytes()
    if update and workers == "0":
        GOLDEN.write_bytes(got)
    want = GOLDEN.read_bytes()
    got_lines, want_lines = got.splitlines(), want.splitlines()
    for i, (g, w) in enumerate(zip(got_lines, want_lines, strict=False)):
        assert g == w, f"alert event {i + 1} differs:\n got  {g[:400]!r}\n want {w[:400]!r}"
    assert len(got_lines) == len(want_lines), f"{len(got_lines)} alert events, the golden file has {len(want_lines)}"


@pytest.mark.parametrize("batch", ["500", "50"])
def test_the_same_incidents_come_however_the_messages_are_batched(tmp_path: Path, monkeypatch, batch: str) -> None:
    # A live service judges small batches as they arrive; the published detector figures come from bulk replays
    # (5,000 messages a batch). Which incidents are raised and cleared (kind, subject, start) must not depend on it;
    # their updates and escalations may, since the dispatch clock ticks with each batch
    for k in [k for k in os.environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)
    city = tmp_path / "city"
    assert main(["simulate", "--out", str(city), "--meters", "300", "--days", "28", "--seed", "11", "--quiet"]) == 0
    monkeypatch.setenv("CISTERN_BATCH_MAX_MESSAGES", batch)
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", str(city / "capture.jsonl"), "--registry", str(city / "registry"),
                 "--state-dir", str(tmp_path / "state"), "--alerts-file", str(alerts), "--log-level", "WARNING"]) == 0

    def incidents(path: Path) -> list[tuple]:
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return sorted((e["kind"], e["subject"]["id"], e["start"], e["event"]) for e in events
                      if e["event"] in ("raised", "cleared"))

    got, want = incidents(alerts), incidents(GOLDEN)
    assert len(want) == 44 and got == want
    assert alerts.read_bytes() != GOLDEN.read_bytes()  # (the small batches did reach the detectors: the clock ticked more)

"""A fixed simulated city replayed end to end raises exactly the alert events recorded in tests/golden/.

The golden file pins the detectors' and dispatch's behaviour: a refactoring must leave it byte for byte the same.
When a change is meant to alter detection, regenerate it with `CISTERN_UPDATE_GOLDEN=1 pytest tests/e2e/test_golden_city.py`
and say in the commit message what changed in it and why.
"""

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

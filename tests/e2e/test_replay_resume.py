"""`cistern replay --resume`: a backlog processed as a continuation of the service. A capture replayed in two halves,
with the registry re-sorted and grown between them, raises exactly the alert events of one uninterrupted replay.

Replay reads 5,000 messages a batch (CISTERN_BATCH_MAX_MESSAGES), and the detectors judge a batch when it ends: in a
small city a batch spans two days, so where batches end moves `detected_at` (and can tip a borderline case). The
halves are cut where a batch ends, so both runs judge at the same moments and must agree event for event."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import orjson
import pytest

from ingest.cli import main


@pytest.fixture(autouse=True)
def _no_cistern_environment(monkeypatch):
    for k in [k for k in os.environ if k.startswith("CISTERN_")]:
        monkeypatch.delenv(k)


def replay(capture: Path, registry: Path, state: Path, *more: str) -> int:
    return main(["replay", str(capture), "--resume", "--registry", str(registry), "--state-dir", str(state),
                 "--alerts-file", str(state / "alerts.jsonl"), "--log-level", "WARNING", *more])


def rewrite(path: Path, extra_rows: list[list[str]]) -> None:
    """The CSV file with its rows in reverse order (the header first) and `extra_rows` among them."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    body = rows[1:][::-1]
    for k, row in enumerate(extra_rows):
        body.insert((k * 7) % (len(body) + 1), row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([rows[0], *body])
    path.write_text(out.getvalue(), encoding="utf-8")


def grow_and_resort(registry: Path) -> None:
    """A new estate (its own pump room, tank, cell and building of a master and three households) among re-sorted
    rows of every file: what a utility's next export looks like."""
    rewrite(registry / "pump_rooms.csv", [["PNEW", "d01", "9 New Road", "New Estate Services", "District office"]])
    rewrite(registry / "tanks.csv", [["PNEW-T1", "PNEW", "40", "2026-09-01"]])
    rewrite(registry / "buildings.csv", [["BNEW", "d01", "9 New Road", "PNEW", "MNEW00"]])
    rewrite(registry / "meters.csv", [["MNEW00", "d01", "BNEW", "master", "", "50", "0", "900", "", "99999", ""]] + [
        [f"MNEW0{k}", "d01", "BNEW", "household", "residential", "15", "0", "3600", "CNEW", "9999", ""]
        for k in (1, 2, 3)])


def test_two_halves_with_a_resorted_grown_registry_between_them_raise_what_one_replay_raises(tmp_path):
    city = tmp_path / "city"
    assert main(["simulate", "--out", str(city), "--meters", "200", "--days", "21", "--seed", "5", "--quiet"]) == 0
    lines = (city / "capture.jsonl").read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    cut = len(lines) // 2 // 5000 * 5000
    first.write_bytes(b"".join(lines[:cut]))
    second.write_bytes(b"".join(lines[cut:]))

    whole = tmp_path / "whole"
    assert replay(city / "capture.jsonl", city / "registry", whole) == 0

    halves = tmp_path / "halves"
    assert replay(first, city / "registry", halves) == 0
    assert (halves / "checkpoint.npz").exists()
    n_first = len((halves / "alerts.jsonl").read_bytes().splitlines())
    grown = tmp_path / "grown"
    grown.mkdir()
    for f in (city / "registry").iterdir():
        (grown / f.name).write_bytes(f.read_bytes())
    grow_and_resort(grown)
    assert replay(second, grown, halves) == 0

    want = (whole / "alerts.jsonl").read_bytes().splitlines()
    got = (halves / "alerts.jsonl").read_bytes().splitlines()
    kinds = {orjson.loads(x)["kind"] for x in want}
    assert {"signal_blocking", "reverse_flow", "disinfection_overdue"} <= kinds  # a city with something to say
    events = [orjson.loads(x) for x in got]
    first_ids = {e["alert_id"] for e in events[:n_first] if e["event"] == "raised"}
    carried = {e["alert_id"] for e in events[n_first:] if e["event"] != "raised"} & first_ids
    assert carried, "incidents raised in the first half go on (updated, cleared) in the second, under their ids"
    # the same events, byte for byte; those of one moment come in registry order, which the re-sort changed
    def in_time(lines: list[bytes]) -> list[bytes]:
        return sorted(lines, key=lambda x: (orjson.loads(x)["detected_at"], x))

    for i, (g, w) in enumerate(zip(in_time(got), in_time(want), strict=False)):
        assert g == w, f"alert event {i + 1} differs:\n got  {g[:300]!r}\n want {w[:300]!r}"
    assert len(got) == len(want)


def test_a_resumed_replay_refuses_a_state_folder_a_service_is_using(tmp_path, capsys):
    from ingest.pipeline.checkpoint import StateLock
    from tests.helpers import write_registry

    registry = write_registry(tmp_path / "registry")
    capture = tmp_path / "capture.jsonl"
    capture.write_text("")
    held = StateLock(tmp_path / "state").acquire()
    try:
        assert replay(capture, registry, tmp_path / "state") == 2
    finally:
        held.release()
    assert "in use by another Cistern" in capsys.readouterr().err

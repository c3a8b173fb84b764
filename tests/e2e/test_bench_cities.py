"""The scoring scripts an engineer runs to measure the detectors: `bench/cities.py` (any seeds) and
`bench/heldout.py` (a held-out round in the project's fixed mix), on real simulated cities."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{script}", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_both_scripts_explain_themselves():
    for script in ("cities.py", "heldout.py"):
        r = bench(script, "--help")
        assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr
    assert "--jobs" in bench("cities.py", "--help").stdout
    assert "FIRST+100" in bench("heldout.py", "--help").stdout


def test_a_round_too_big_for_its_seeds_is_refused():
    r = bench("heldout.py", "--first", "5", "--cities", "101")
    assert r.returncode == 2 and "--cities" in r.stderr


def test_cities_scored_two_at_once_are_reported_in_seed_order(tmp_path):
    out = tmp_path / "sums.json"
    r = bench("cities.py", "--seeds", "21-22", "--meters", "200", "--days", "14", "--jobs", "2",
              "--out", str(tmp_path / "c"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("seed ")]
    assert [line.split(":")[0] for line in lines] == ["seed 21", "seed 22"]
    result = json.loads(out.read_text())
    assert sorted(result["cities"]) == ["21", "22"]
    for kind, s in result["sums"].items():  # the sums are the cities' sums
        assert s["tp"] == sum(c[kind]["tp"] for c in result["cities"].values())
    assert not any((tmp_path / "c").glob("city*"))  # (each city's folder is deleted once scored)


def test_a_held_out_round_scores_its_small_busy_cities_from_first_plus_100(tmp_path):
    out = tmp_path / "round.json"
    r = bench("heldout.py", "--first", "7", "--cities", "0", "--small", "1", "--out", str(tmp_path / "c"),
              "--json", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    small = result["parts"]["small"]
    assert list(small["cities"]) == ["107"] and (small["meters"], small["days"]) == (800, 30)
    assert "cities" not in result["parts"]
    for kind, s in small["sums"].items():  # one part: the whole round is that part, delays included
        assert {f: result["all"]["sums"][kind][f] for f in ("tp", "fp", "fn", "delay_h_median_of_cities")} == \
            {f: s[f] for f in ("tp", "fp", "fn", "delay_h_median_of_cities")}
    bypass = next(line for line in r.stdout.split("== all 1 cities")[1].splitlines() if line.startswith("bypass"))
    assert bypass.split()[1:4] == [str(small["sums"]["bypass"][f]) for f in ("tp", "fp", "fn")]

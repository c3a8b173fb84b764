"""Score the detectors on a list of simulated cities: simulate each seed, replay it, evaluate, and sum tp/fp/fn
per kind (decoy hits and median delays too). One city at a time; each city's folder is deleted once scored.

    .venv/bin/python bench/cities.py --seeds 1-40 --meters 1500 --days 45 --out /tmp/cities [--json sums.json]

Keep development seeds and held-out seeds apart (see docs/DETECTORS.md, "Measured on simulated cities").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ingest"]


def seeds_of(text: str) -> list[int]:
    """'1-5,9,12-13' -> [1, 2, 3, 4, 5, 9, 12, 13]"""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def score_city(seed: int, args: argparse.Namespace) -> dict:
    city = args.out / f"city{seed}"
    shutil.rmtree(city, ignore_errors=True)
    sim = [*CLI, "simulate", "--out", str(city), "--meters", str(args.meters), "--days", str(args.days),
           "--seed", str(seed), "--quiet", *args.sim_args]
    subprocess.run(sim, check=True, cwd=ROOT)
    subprocess.run([*CLI, "replay", str(city / "capture.jsonl"), "--registry", str(city / "registry"),
                    "--state-dir", str(city / "state"), "--alerts-file", str(city / "alerts.jsonl"),
                    "--log-level", "WARNING"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    r = subprocess.run([*CLI, "evaluate", "--alerts", str(city / "alerts.jsonl"), "--labels",
                        str(city / "labels.jsonl"), "--json"], check=True, cwd=ROOT, capture_output=True, text=True)
    result = json.loads(r.stdout)
    result["bypass"] = bypass_checks(city)
    if args.keep:
        keep = args.out / "kept" / f"city{seed}"
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("alerts.jsonl", "labels.jsonl"):
            shutil.copy(city / name, keep / name)
        shutil.copytree(city / "registry", keep / "registry", dirs_exist_ok=True)
    shutil.rmtree(city, ignore_errors=True)
    return result


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bypass_checks(city: Path) -> dict:
    """Meters raised as both reverse_flow and bypass, and each found bypass's delay (hours from the labelled start to
    the alert) by the meter's report interval and whether it was full (registering under 10 %)."""
    alerts = [a for a in _read(city / "alerts.jsonl") if a["event"] == "raised"]
    kinds: dict[str, set[str]] = {}
    for a in alerts:
        kinds.setdefault(a["subject"]["id"], set()).add(a["kind"])
    both = sorted(m for m, k in kinds.items() if {"reverse_flow", "bypass"} <= k)
    interval = {}
    for line in (city / "registry" / "meters.csv").read_text().splitlines()[1:]:
        f = line.split(",")
        interval[f[0]] = int(f[7])
    delays: dict[str, list[float]] = {}
    raised = {}
    for a in alerts:
        if a["kind"] == "bypass":
            raised.setdefault(a["subject"]["id"], a)
    for lab in _read(city / "labels.jsonl"):
        a = raised.get(lab["subject"]["id"]) if lab["kind"] == "bypass" else None
        if a is None:
            continue
        start, det = (dt.datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp() for x in (lab["start"], a["detected_at"]))
        cls = ("hourly" if interval[lab["subject"]["id"]] <= 3600 else "daily") + \
            (" full" if lab.get("registered_fraction", 1) < 0.1 else " partial")
        delays.setdefault(cls, []).append((det - start) / 3600)
    return {"both_kinds": both, "delays_h": delays}


def sum_cities(cities: list[dict]) -> dict[str, dict]:
    """Per kind, over the cities (each: kind -> its evaluation): tp/fp/fn, decoy hits, and the median of the cities'
    median delays."""
    sums: dict[str, dict] = {}
    delays: dict[str, list[float]] = {}
    for kinds in cities:
        for kind, k in kinds.items():
            s = sums.setdefault(kind, {"tp": 0, "fp": 0, "fn": 0, "decoy_hits": {}})
            for f in ("tp", "fp", "fn"):
                s[f] += k[f]
            for name, n in k["decoy_hits"].items():
                s["decoy_hits"][name] = s["decoy_hits"].get(name, 0) + n
            if k["delay_h_median"] is not None:
                delays.setdefault(kind, []).append(k["delay_h_median"])
    for kind, s in sums.items():
        s["delay_h_median_of_cities"] = statistics.median(delays[kind]) if delays.get(kind) else None
    return sums


def run(seeds: list[int], args: argparse.Namespace) -> dict:
    """Score the cities of `seeds` (args.jobs at a time) and sum them: per kind tp/fp/fn and decoy hits, the meters
    raised as both reverse_flow and bypass, each found bypass's delay."""
    per_city: dict[int, dict] = {}
    both: list[str] = []
    city_delays: list[dict[str, list[float]]] = []
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # (each city is its own processes)
        for seed, res in zip(seeds, pool.map(lambda s: score_city(s, args), seeds), strict=True):
            per_city[seed] = res["kinds"]
            both += [f"{seed}:{m}" for m in res["bypass"]["both_kinds"]]
            city_delays.append(res["bypass"]["delays_h"])
            line = ", ".join(f"{kind} {k['tp']}/{k['fp']}/{k['fn']}" for kind, k in res["kinds"].items())
            print(f"seed {seed}: {line}  ({time.time() - t0:.0f} s)", flush=True)
    return {"seeds": args.seeds, "meters": args.meters, "days": args.days, "sums": sum_cities(list(per_city.values())),
            "cities": per_city, "both_kinds": both, "bypass_delays_h": _joined(city_delays)}


def merge(parts: list[dict]) -> dict:
    """Several runs as one: their cities summed, the meters raised as both kinds and the bypass delays joined."""
    return {"sums": sum_cities([kinds for part in parts for kinds in part["cities"].values()]),
            "both_kinds": [m for part in parts for m in part["both_kinds"]],
            "bypass_delays_h": _joined([part["bypass_delays_h"] for part in parts])}


def _joined(delays: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Bypass delays by class (daily/hourly, partial/full), from several cities or runs, in one list per class."""
    out: dict[str, list[float]] = {}
    for d in delays:
        for cls, ds in d.items():
            out.setdefault(cls, []).extend(ds)
    return out


def report(result: dict) -> None:
    """The table: per kind found/false alarms/missed, precision, recall, F1 (written into result's sums too)."""
    print(f"\n{'kind':<22}{'tp':>6}{'fp':>6}{'fn':>6}{'prec':>8}{'recall':>8}{'f1':>8}{'delay_h':>9}  decoy hits")
    for kind, s in result["sums"].items():
        tp, fp, fn = s["tp"], s["fp"], s["fn"]
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * p * r / (p + r) if tp else float("nan")
        s.update(precision=p, recall=r, f1=f1)
        d = s.get("delay_h_median_of_cities")
        hits = ", ".join(f"{k}={v}" for k, v in s["decoy_hits"].items()) or "-"
        print(f"{kind:<22}{tp:>6}{fp:>6}{fn:>6}{p:>8.3f}{r:>8.3f}{f1:>8.3f}{'-' if d is None else f'{d:.1f}':>9}  {hits}")
    both = result["both_kinds"]
    print(f"meters raised as both reverse_flow and bypass: {len(both)} {both}")
    for cls, ds in sorted(result["bypass_delays_h"].items()):
        print(f"bypass delay, {cls}: median {statistics.median(ds):.0f} h over {len(ds)}")


def arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--out", type=Path, default=Path("/tmp/cistern-cities"))
    ap.add_argument("--json", type=Path, help="write per-city results and the sums here")
    ap.add_argument("--keep", action="store_true", help="keep each city's alerts, labels and registry under OUT/kept")
    ap.add_argument("--jobs", type=int, default=1, help="cities scored at once (each takes a core)")
    return ap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", required=True, help="e.g. 1-40 or 1000-1019,1031")
    ap.add_argument("--meters", type=int, default=1500)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("sim_args", nargs="*", help="extra `cistern simulate` options (after --)")
    args = arguments(ap).parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(seeds_of(args.seeds), args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

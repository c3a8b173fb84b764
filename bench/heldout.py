"""A held-out round: the detectors scored on cities never used before, in the project's fixed mix, one command.

    .venv/bin/python bench/heldout.py --first 13401 --jobs 2 --json round.json

Seeds FIRST to FIRST+87: 88 cities of 1,500 meters over 45 days. Seeds FIRST+100 to FIRST+123: 24 small, busy
cities of 800 meters over 30 days, 60 % of them hourly meters and twice the incident rate. Prints each part's table
and the two together. Use it on seeds never scored before, on a commit after the last change to any detector or to
the simulator, and score them once: a seed that chose a parameter is a development seed from then on (see
docs/DETECTORS.md, "Measured on simulated cities"). `--cities` and `--small` make a smaller round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.cities import arguments, merge, report, run  # noqa: E402

SMALL = ["--hourly-share", "0.6", "--incident-scale", "2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, required=True, help="the round's first seed (its seeds: FIRST to FIRST+123)")
    ap.add_argument("--cities", type=int, default=88, help="cities of 1,500 meters over 45 days (at most 100)")
    ap.add_argument("--small", type=int, default=24, help="small, busy cities of 800 meters over 30 days")
    args = arguments(ap).parse_args()
    if not 0 <= args.cities <= 100 or args.small < 0:
        ap.error("--cities must be 0 to 100 (the small cities' seeds start at FIRST+100), --small at least 0")
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {}
    plans = [("cities", args.cities, 0, 1500, 45, []), ("small", args.small, 100, 800, 30, SMALL)]
    for name, n, offset, meters, days, sim_args in plans:
        if n == 0:
            continue
        seeds = list(range(args.first + offset, args.first + offset + n))
        part = argparse.Namespace(**vars(args), seeds=f"{seeds[0]}-{seeds[-1]}", meters=meters, days=days,
                                  sim_args=sim_args)
        print(f"== {n} cities, seeds {part.seeds}: {meters} meters, {days} days {' '.join(sim_args)}", flush=True)
        parts[name] = run(seeds, part)
        report(parts[name])
    whole = merge(list(parts.values()))
    print(f"\n== all {args.cities + args.small} cities")
    report(whole)
    if args.json:
        args.json.write_text(json.dumps({"first": args.first, "parts": parts, "all": whole}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

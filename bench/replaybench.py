"""`cistern replay` of a simulated city's capture beside the floor: a process that only json.loads every line of
the same file. Both are timed as whole commands, in turn (floor, replay, floor, replay…), and the ratio is taken
pair by pair so that drift in the machine's speed cancels."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "import json, sys\nfor line in open(sys.argv[1], 'rb'):\n    json.loads(line)\n"


def _timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def part_replay(meters: int, days: int, runs: int, tmp: Path) -> None:
    city = tmp / "city"
    subprocess.run([sys.executable, "-m", "ingest", "simulate", "--out", str(city), "--meters", str(meters),
                    "--days", str(days), "--seed", "5", "--quiet"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    capture = city / "capture.jsonl"
    lines = sum(1 for _ in capture.open("rb"))
    print(f"\nreplay: a {meters:,}-meter {days}-day capture ({lines:,} messages, "
          f"{capture.stat().st_size / 1e6:,.0f} MB), no database (replay writes only when given one)", flush=True)
    floor_cmd = [sys.executable, "-c", FLOOR, str(capture)]
    floors, replays, ratios, cpu_ratios = [], [], [], []
    for r in range(runs):
        state = tmp / f"replay-state-{r}"
        f_wall, f_cpu = _timed(floor_cmd)
        r_wall, r_cpu = _timed([sys.executable, "-m", "ingest", "replay", str(capture), "--registry",
                                str(city / "registry"), "--state-dir", str(state)])
        floors.append(f_wall)
        replays.append(r_wall)
        ratios.append(r_wall / f_wall)
        cpu_ratios.append(r_cpu / f_cpu)
        print(f"    run {r + 1}: json.loads floor {f_wall:.2f} s, cistern replay {r_wall:.2f} s "
              f"({r_wall / f_wall:.2f}x; CPU {r_cpu:.1f} s / {f_cpu:.1f} s); "
              "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    ratio = statistics.median(ratios)
    print(f"  replay, medians of {runs} runs: json.loads floor {statistics.median(floors):.2f} s, cistern replay "
          f"{statistics.median(replays):.2f} s = {lines / statistics.median(replays):,.0f} msg/s")
    print(f"    replay / floor  {ratio:.2f}x [" + " ".join(f"{x:.2f}" for x in ratios) + f"] (CPU "
          f"{statistics.median(cpu_ratios):.2f}x)")
    print(f"    target: <= 1.5x the json.loads floor ({'met' if ratio <= 1.5 else 'NOT met'})", flush=True)

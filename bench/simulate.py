"""Generation time of a 10,000-meter, 30-day city (budget: 60 s), against a serialization baseline of this machine.

Usage: .venv/bin/python bench/simulate.py [--meters N] [--days D] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.city import SimConfig  # noqa: E402
from simulator.run import simulate  # noqa: E402


def cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def baseline_us_per_message(n: int = 200_000) -> float:
    """The floor: orjson-dumping n ready-made hourly reading messages in a plain loop."""
    pl = {"meter_id": "M000123", "ts": "2026-11-22T08:00:00Z", "total_m3": 1234.567, "reverse_m3": 0.0,
          "flow_m3h": 0.12, "signal": {"rsrp_dbm": -95.0, "snr_db": 6.5, "ecl": 0}, "battery_v": 3.61}
    topic = "water/d01/meter/M000123/reading"
    t = time.perf_counter()
    out = [orjson.dumps({"topic": topic, "payload": pl}) for _ in range(n)]
    dt = time.perf_counter() - t
    assert len(out) == n
    return dt / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--meters", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    base = baseline_us_per_message()
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        c0, t0 = cpu_s(), time.perf_counter()
        r = simulate(SimConfig(meters=a.meters, days=a.days), out)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        size = (out / "capture.jsonl").stat().st_size
    print(f"city: {a.meters} meters, {a.days} days -> {r.messages:,} messages, {size / 1e6:,.0f} MB capture")
    print(f"generation: {wall:.1f} s wall (budget 60 s), {cpu:.1f} s CPU incl. workers; stages {r.seconds}")
    per = wall / r.messages * 1e6
    print(f"per message: {per:.2f} us wall vs baseline {base:.2f} us (plain orjson.dumps loop) = {per / base:.1f}x")
    print("labels:", r.label_counts())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

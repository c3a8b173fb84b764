"""One simulation end to end: fleet → plan → measurements → traffic → registry, capture and labels on disk."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from simulator.behaviour import Measurements, simulate_measurements
from simulator.city import City, SimConfig, build_city, write_registry
from simulator.incidents import Plan, plan_incidents
from simulator.labels import build_labels, write_labels
from simulator.traffic import Traffic, build_traffic, write_capture


@dataclass
class Result:
    cfg: SimConfig
    city: City
    plan: Plan
    meas: Measurements
    traffic: Traffic
    labels: list[dict]
    messages: int
    seconds: dict[str, float] = field(default_factory=dict)

    def label_counts(self) -> dict[str, int]:
        c = Counter(r["decoy"] if r["kind"] == "none" else r["kind"] for r in self.labels)
        return dict(sorted(c.items()))


def simulate(cfg: SimConfig, out: Path, prefix: str = "water") -> Result:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name] = round(now - t, 3)
        t = now

    city = build_city(cfg)
    plan = plan_incidents(city, cfg)
    write_registry(city, out / "registry")
    lap("city")
    meas = simulate_measurements(city, cfg, plan)
    lap("behaviour")
    traffic = build_traffic(city, cfg, plan, meas)
    labels = build_labels(city, cfg, plan, meas, traffic)
    write_labels(out / "labels.jsonl", labels)
    lap("traffic")
    n = write_capture(out / "capture.jsonl", city, cfg, meas, traffic, prefix=prefix)
    lap("capture")
    return Result(cfg, city, plan, meas, traffic, labels, n, seconds)

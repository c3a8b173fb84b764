"""Detectors on a simulated city: replay a capture through every detector (scored with `cistern evaluate`), then
readings per second through all detectors and state bytes per device, against a plain sort baseline.

    .venv/bin/python bench/detect.py --city DIR            # a folder written by `cistern simulate`
    .venv/bin/python bench/detect.py --meters 2000 --days 30 --seed 1   # simulate one first (into a temp dir)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors import DetectorSet  # noqa: E402
from devices.batch import Batch  # noqa: E402
from devices.messages import RawMessage  # noqa: E402
from devices.registry import Registry  # noqa: E402
from devices.topics import TopicLayout  # noqa: E402
from ingest.pipeline.decode import Decoder  # noqa: E402


def decode_capture(city: Path, registry: Registry, chunk: int) -> list[Batch]:
    dec = Decoder(registry, TopicLayout("water"))
    batches: list[Batch] = []
    msgs: list[RawMessage] = []
    with (city / "capture.jsonl").open("rb") as f:
        for line in f:
            rec = orjson.loads(line)
            p = rec["payload"]
            msgs.append(RawMessage(rec["topic"], p.encode() if isinstance(p, str) else orjson.dumps(p)))
            if len(msgs) == chunk:
                batches.append(dec.decode(msgs)[0])
                msgs = []
    if msgs:
        batches.append(dec.decode(msgs)[0])
    return batches


def replay(registry: Registry, batches: list[Batch], tz: str) -> tuple[list, float, DetectorSet]:
    ds = DetectorSet(registry, timezone=tz)
    events = []
    wm = 0
    t0 = time.perf_counter()
    for b in batches:
        top = b.max_ts_ns()
        wm = max(wm, top or 0)
        events += ds.update(b)
        events += ds.tick(wm)
    events += ds.tick(wm)
    return events, time.perf_counter() - t0, ds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--city", type=Path, help="folder with registry/, capture.jsonl, labels.jsonl")
    ap.add_argument("--meters", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=5000, help="messages per decoded batch (the pipeline's chunk)")
    ap.add_argument("--timezone", default="Asia/Shanghai")
    ap.add_argument("--alerts-out", type=Path, help="write alert events here (JSON lines)")
    ap.add_argument("--repeat", type=int, default=3, help="timed replays (best counts)")
    args = ap.parse_args()

    tmp = None
    city = args.city
    if city is None:
        tmp = tempfile.TemporaryDirectory(prefix="cistern-bench-")
        city = Path(tmp.name)
        subprocess.run([sys.executable, "-m", "ingest", "simulate", "--out", str(city), "--meters", str(args.meters),
                        "--days", str(args.days), "--seed", str(args.seed), "--quiet"], check=True, cwd=ROOT)
    registry = Registry.load(city / "registry")
    t0 = time.perf_counter()
    batches = decode_capture(city, registry, args.chunk)
    t_decode = time.perf_counter() - t0
    n_read = sum(len(b.meters) + len(b.tanks) for b in batches)

    events, _, ds = replay(registry, batches, args.timezone)
    alerts_path = args.alerts_out or city / "alerts.jsonl"
    with alerts_path.open("wb") as f:
        for e in events:
            f.write(orjson.dumps(e.to_dict()) + b"\n")
    from ingest.tools.evaluate import evaluate, format_table, read_jsonl
    result = evaluate(read_jsonl(alerts_path), read_jsonl(city / "labels.jsonl"))
    print(format_table(result))
    kinds: dict[str, int] = {}
    for e in events:
        if e.event == "raised":
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
    print("raised per kind:", kinds)

    # speed: the same batches again, best of N; baseline = one stable sort of each batch's meter column
    best = min(replay(registry, batches, args.timezone)[1] for _ in range(max(1, args.repeat)))
    t1 = time.perf_counter()
    for b in batches:
        np.argsort(b.meters.meter, kind="stable")
        b.meters.take(np.argsort(b.meters.ts_ns, kind="stable"))
    base = time.perf_counter() - t1
    n_dev = len(registry.meters) + len(registry.tanks)
    sizes = ds.state_bytes()
    total = sum(sizes.values())
    print(f"readings {n_read:,} in {len(batches)} batches of {args.chunk} messages (decode took {t_decode:.1f} s)")
    print(f"all detectors: {n_read / best:,.0f} readings/s (best of {args.repeat}: {best:.3f} s); "
          f"baseline sort+take: {n_read / base:,.0f} readings/s; detectors cost {best / base:.1f}x the baseline")
    print(f"state: {total:,} bytes = {total / n_dev:.1f} bytes per device ({len(registry.meters)} meters, "
          f"{len(registry.tanks)} tanks); per detector: " + ", ".join(f"{k} {v / n_dev:.1f}" for k, v in sizes.items()))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

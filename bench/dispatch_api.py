"""Does the dispatch API slow the pipeline? Readings/s of the whole pipeline (decode, detectors, dispatch) replaying a
simulated city, in the same process as the API: without the API (the baseline, measured in the same run), with the
API idle, with dispatch clients each listing every open case once a second, and with them listing back to back (the
worst case: the API's work shares the interpreter with the pipeline). Modes alternate over the rounds; the
best round of each counts (machines here are shared and noisy).

    .venv/bin/python bench/dispatch_api.py              # 300 meters, 30 days, 3000 cases, 2 clients, 3 rounds
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from devices.alerts import AlertEvent  # noqa: E402
from devices.registry import Registry  # noqa: E402
from devices.topics import TopicLayout  # noqa: E402
from ingest.dispatch import Dispatcher, DispatchSettings  # noqa: E402
from ingest.dispatch.api import ApiServer, create_app  # noqa: E402
from ingest.dispatch.store import Store  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from ingest.sources.capture import CaptureSource  # noqa: E402

NS = 1_000_000_000
MODES = ("no API", "API idle", "API, listing every 1 s", "API, listing back to back")


def seed_cases(d: Dispatcher, n: int, t0: int) -> None:
    """n open cases of meters the city does not have (so the replay never touches them)."""
    d.emit([AlertEvent(f"signal_blocking/X{i:06d}/1", "raised", "signal_blocking", "warning", "meter", f"X{i:06d}",
                       f"d{i % 9 + 1:02d}", t0, t0, f"Meter X{i:06d} silent", {}, {"silent_hours": 30})
            for i in range(n)])


def one_round(city: Path, registry: Registry, mode: str, cases: int, clients: int) -> tuple[float, int, int]:
    """(readings/s, readings, API requests answered) of one replay."""
    from detectors import DetectorSet

    with tempfile.TemporaryDirectory(prefix="cistern-bench-api-") as tmp:
        state = Path(tmp)
        d = Dispatcher(registry, state, DispatchSettings(), alerts_file=None, webhook_url="", webhook_secret="",
                       mqtt_publish=None)
        seed_cases(d, cases, 1_788_000_000 * NS)
        server, stop, answered, threads = None, threading.Event(), [0], []
        if mode != "no API":
            token = secrets.token_hex(16)
            server = ApiServer(create_app(d, {token: "bench"}, Store.reader(state)), "127.0.0.1:0")
            server.start()
            url = f"http://127.0.0.1:{server.port}/v1/cases"

            pause = 1.0 if mode == MODES[2] else 0.0

            def client() -> None:
                with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                    while not stop.is_set():
                        if c.get(url).status_code == 200:
                            answered[0] += 1
                        stop.wait(pause)

            for _ in range(clients if mode in MODES[2:] else 0):
                threads.append(threading.Thread(target=client, daemon=True))
                threads[-1].start()
            time.sleep(0.5)
        pipeline = Pipeline(registry, TopicLayout("water"), CaptureSource(city / "capture.jsonl"), state_dir=state,
                            detectors=DetectorSet(registry), dispatcher=d, live=False, restore=False,
                            checkpoint_interval_s=float("inf"))
        t = time.perf_counter()
        pipeline.run()
        elapsed = time.perf_counter() - t
        stop.set()
        for th in threads:
            th.join(30)
        if server is not None:
            server.stop()
        d.close()
        return pipeline.stats.readings / elapsed, pipeline.stats.readings, answered[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=300)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--cases", type=int, default=3000, help="open cases in the dispatch state (each listing)")
    ap.add_argument("--clients", type=int, default=2, help="dispatch clients listing back to back")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cistern-bench-city-") as tmp:
        city = Path(tmp)
        subprocess.run([sys.executable, "-m", "ingest", "simulate", "--out", str(city), "--meters", str(args.meters),
                        "--days", str(args.days), "--seed", "3", "--quiet"], check=True, cwd=ROOT)
        registry = Registry.load(city / "registry")
        modes = MODES
        best: dict[str, tuple[float, int, int]] = {}
        for r in range(args.rounds):
            for mode in modes:
                rate, n, answered = one_round(city, registry, mode, args.cases, args.clients)
                print(f"round {r + 1} {mode:26} {rate:10,.0f} readings/s ({n:,} readings, {answered} listings)",
                      file=sys.stderr)
                if mode not in best or rate > best[mode][0]:
                    best[mode] = (rate, n, answered)
    base = best["no API"][0]
    print(f"\n{args.meters} meters, {args.days} days, {args.cases} open cases, best of {args.rounds} rounds")
    print("| mode | readings/s | vs no API | listings answered |\n|---|---|---|---|")
    for mode in modes:
        rate, _, answered = best[mode]
        print(f"| {mode} | {rate:,.0f} | {rate / base:.2f} | {answered} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ingest benchmark: readings/s of (a) replay decode + line protocol and (b) end to end through Mosquitto into
InfluxDB 1.x, each printed beside a baseline measured in the same run (machines here are shared and noisy).

    .venv/bin/python bench/ingest.py            # both parts, a few minutes
    .venv/bin/python bench/ingest.py --part a   # replay path only (no servers)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from devices.messages import RawMessage  # noqa: E402
from devices.registry import Registry  # noqa: E402
from devices.topics import TopicLayout  # noqa: E402
from ingest.pipeline.decode import Decoder  # noqa: E402

T0 = 1795334400  # 2026-11-22T00:00:00Z
DISTRICTS = [f"d{i:02d}" for i in range(1, 11)]


# --- a synthetic fleet and its traffic ---------------------------------------------------------------------

def write_fleet(folder: Path, n_meters: int) -> Path:
    """A registry of `n_meters` meters in buildings of 20 (the first of each is its master meter)."""
    folder.mkdir(parents=True, exist_ok=True)
    meters = ["meter_id,district,building_id,role,customer_class,pipe_dn_mm,prepaid,report_interval_s,cell_id,"
              "register_max_m3,business_hours_per_day"]
    buildings = ["building_id,district,address,pump_room_id,master_meter_id"]
    rooms = ["room_id,district,address,maintenance_unit,supervisor_unit"]
    tanks = ["tank_id,room_id,capacity_m3,last_disinfected"]
    for b in range(0, (n_meters + 19) // 20):
        d = DISTRICTS[b % len(DISTRICTS)]
        bid, rid = f"B{b:05d}", f"P{b:05d}"
        rooms.append(f"{rid},{d},{b} Songhua Road,Unit {b % 7},Water Authority")
        tanks.append(f"{rid}-T1,{rid},50,2026-06-01")
        master = f"M{b * 20:06d}"
        buildings.append(f"{bid},{d},{b} Songhua Road,{rid},{master}")
        for k in range(20):
            i = b * 20 + k
            if i >= n_meters:
                break
            role, interval = ("master", 900) if k == 0 else ("household", 3600 if k % 2 else 86400)
            meters.append(f"M{i:06d},{d},{bid},{role},{'' if k == 0 else 'residential'},15,{k % 3 == 0:d},"
                          f"{interval},C{b // 10:04d},99999,")
    for name, rows in (("meters", meters), ("buildings", buildings), ("pump_rooms", rooms), ("tanks", tanks)):
        (folder / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def single_messages(reg: Registry, layout: TopicLayout, n: int, seed: int = 1) -> list[RawMessage]:
    """`n` single-reading messages, hourly, each with the full status of CONTRACT §5."""
    rng = random.Random(seed)
    ids, districts = reg.meters.ids.tolist(), reg.meters.district.tolist()
    out = []
    for j in range(n):
        i = j % len(ids)
        p = {"meter_id": ids[i], "ts": _iso(T0 + 3600 * (j // len(ids))), "total_m3": round(rng.uniform(0, 9000), 3),
             "reverse_m3": 0.0, "flow_m3h": round(rng.uniform(0, 2), 3),
             "signal": {"rsrp_dbm": float(rng.randint(-120, -70)), "snr_db": rng.randint(-5, 20) / 2,
                        "ecl": rng.randint(0, 2)},
             "battery_v": round(rng.uniform(3.4, 3.7), 2), "valve": "open",
             "balance_cny": round(rng.uniform(0, 200), 2), "status": []}
        out.append(RawMessage(layout.meter_reading(districts[i], ids[i]), orjson.dumps(p)))
    return out


def batch_messages(reg: Registry, layout: TopicLayout, n: int, seed: int = 2) -> list[RawMessage]:
    """`n` NB-IoT daily uploads of 24 hourly readings each."""
    rng = random.Random(seed)
    ids, districts = reg.meters.ids.tolist(), reg.meters.district.tolist()
    out = []
    for j in range(n):
        i = j % len(ids)
        day = T0 + 86400 * (j // len(ids))
        total = rng.uniform(0, 9000)
        rows = []
        for h in range(24):
            total += rng.uniform(0, 0.05)
            rows.append({"ts": _iso(day + 3600 * h), "total_m3": round(total, 3), "reverse_m3": 0.0})
        p = {"meter_id": ids[i], "readings": rows,
             "signal": {"rsrp_dbm": float(rng.randint(-120, -70)), "snr_db": rng.randint(-5, 20) / 2,
                        "ecl": rng.randint(0, 2)}, "battery_v": round(rng.uniform(3.4, 3.7), 2)}
        out.append(RawMessage(layout.meter_reading(districts[i], ids[i]), orjson.dumps(p)))
    return out


# --- baseline: the straightforward implementation ----------------------------------------------------------

class PointBaseline:
    """json.loads each payload, look up the tags, build an influxdb-client Point per reading."""

    def __init__(self, reg: Registry):
        from influxdb_client import Point, WritePrecision

        self.Point, self.precision = Point, WritePrecision.NS
        m = reg.meters
        self.tags = {mid: (d, b, r) for mid, d, b, r in zip(m.ids.tolist(), m.district.tolist(),
                                                          m.building_id.tolist(), m.role.tolist(), strict=True)}

    def _point(self, meter_id: str, tags: tuple, r: dict, status: dict | None) -> str:
        p = self.Point("meter_reading").tag("meter_id", meter_id).tag("district", tags[0]) \
            .tag("building_id", tags[1]).tag("role", tags[2])
        for k in ("total_m3", "reverse_m3", "flow_m3h"):
            if r.get(k) is not None:
                p.field(k, float(r[k]))
        if status:
            sig = status.get("signal") or {}
            for k in ("rsrp_dbm", "snr_db"):
                if sig.get(k) is not None:
                    p.field(k, float(sig[k]))
            if sig.get("ecl") is not None:
                p.field("ecl", int(sig["ecl"]))
            for k in ("battery_v", "balance_cny"):
                if status.get(k) is not None:
                    p.field(k, float(status[k]))
            if status.get("valve") is not None:
                p.field("valve", status["valve"])
        ts = r["ts"]
        if isinstance(ts, str):
            ts = int(np.datetime64(ts.rstrip("Z"), "s").astype(np.int64)) * 1_000_000_000
        p.time(ts, self.precision)
        return p.to_line_protocol()

    def lines(self, messages: list[RawMessage]) -> list[str]:
        out = []
        for msg in messages:
            p = json.loads(msg.payload)
            meter_id = p["meter_id"]
            tags = self.tags[meter_id]
            if "readings" in p:
                last = len(p["readings"]) - 1
                out += [self._point(meter_id, tags, r, p if k == last else None) for k, r in enumerate(p["readings"])]
            else:
                out.append(self._point(meter_id, tags, p, p))
        return out

    def encode(self, messages: list[RawMessage]) -> bytes:
        return "\n".join(self.lines(messages)).encode()


# --- (a) replay path ---------------------------------------------------------------------------------------

def best_rate(fn: Callable[[], int], repeat: int) -> float:
    """Readings/s of the fastest of `repeat` runs of fn (which returns the readings it handled)."""
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t))
    return max(rates)


def _replay(decoder: Decoder, encoder, groups: list[list[RawMessage]]) -> int:
    n = 0
    for g in groups:
        batch, rejects = decoder.decode(g)
        assert not rejects, rejects[:1]
        if encoder is not None:
            encoder.encode(batch)
        n += len(batch.meters)
    return n


def part_a(reg: Registry, layout: TopicLayout, n_single: int, n_batch: int, group: int, repeat: int) -> None:
    try:
        from ingest.sinks.lineproto import LineEncoder
        encoder = LineEncoder(reg)
    except ImportError:
        encoder = None
    fast, schema = Decoder(reg, layout), Decoder(reg, layout, fast=False)
    baseline = PointBaseline(reg)
    what = "decode + line protocol" if encoder else "decode only (ingest.sinks.lineproto missing)"
    print(f"(a) replay path: {what}, groups of {group} messages, best of {repeat}")
    print(f"    {'traffic':<26}{'cistern':>14}{'schemas only':>16}{'baseline':>14}{'× baseline':>12}")
    for label, msgs in (("single-reading messages", single_messages(reg, layout, n_single)),
                        ("24-reading batch messages", batch_messages(reg, layout, n_batch))):
        groups = [msgs[i:i + group] for i in range(0, len(msgs), group)]
        r_fast = best_rate(lambda g=groups: _replay(fast, encoder, g), repeat)
        r_schema = best_rate(lambda g=groups: _replay(schema, encoder, g), max(1, repeat // 2))
        r_base = best_rate(lambda g=groups: sum(len(baseline.lines(x)) for x in g), max(1, repeat // 2))
        print(f"    {label:<26}{r_fast:>12,.0f}/s{r_schema:>14,.0f}/s{r_base:>12,.0f}/s{r_fast / r_base:>11.1f}×")


# --- (b) end to end: Mosquitto → consumer → InfluxDB 1.x -------------------------------------------------

PUBLISHER = "bench-publisher"


class Publisher:
    """Publishes at QoS 1 from `workers` paho processes (one paho client tops out near 6,000 messages/s here)
    and says when the broker has acked every message."""

    def __init__(self, host: str, port: int, password: str, folder: Path, workers: int = 3):
        self.host, self.port, self.password, self.folder, self.workers = host, port, password, folder, workers
        self._procs: list[subprocess.Popen] = []

    def publish(self, messages: list[RawMessage]) -> float:
        """Starts publishing; returns the perf_counter time it started. `wait()` for the acks."""
        self._procs = []
        for w in range(self.workers):
            path = self.folder / f"publish-{w}.jsonl"
            path.write_bytes(b"".join(orjson.dumps([m.topic, m.payload.decode()]) + b"\n"
                                      for m in messages[w::self.workers]))
            p = subprocess.Popen([sys.executable, __file__, "--publish-worker", self.host, str(self.port),
                                  self.password, str(path)], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
            self._procs.append(p)
        for p in self._procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        for p in self._procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return t0

    def wait(self, timeout_s: float = 300) -> None:
        for p in self._procs:
            p.wait(timeout_s)


def publish_worker(host: str, port: str, password: str, path: str) -> int:
    """One publisher process: connect, say ready, publish its file at QoS 1 on "go", exit when all are acked."""
    import paho.mqtt.client as mqtt

    items = [orjson.loads(line) for line in Path(path).read_bytes().splitlines()]
    window = threading.Semaphore(100)  # paho slows down badly with thousands waiting in its own queue
    acked = threading.Semaphore(0)

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        window.release()
        acked.release()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{random.randrange(10**9)}")
    c.username_pw_set(PUBLISHER, password)
    c.max_inflight_messages_set(100)
    c.on_publish = on_publish
    c.connect(host, int(port))
    c.loop_start()
    print("ready", flush=True)
    sys.stdin.readline()
    for topic, payload in items:
        window.acquire()
        c.publish(topic, payload.encode(), qos=1)
    for _ in items:
        acked.acquire()
    c.loop_stop()
    c.disconnect()
    return 0


def _influx_count(influx, db: str) -> int:
    rows = influx.query('SELECT count("total_m3") FROM "meter_reading"', db=db)
    return int(rows[0].get("count", 0)) if rows else 0


def _wait_stored(influx, db: str, expected: int, t0: float, timeout_s: float) -> tuple[int, float]:
    """(readings stored, seconds from the first publish until the last of them was counted)."""
    n, last_change = 0, time.perf_counter()
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        got = _influx_count(influx, db)
        if got != n:
            n, last_change = got, time.perf_counter()
        if n >= expected:
            break
        time.sleep(0.1)
    return n, last_change - t0


def _wait_line(proc: subprocess.Popen, needle: str, timeout_s: float, lines: list[str]) -> None:
    """Reads the process's output (in a thread, kept in `lines`) until a line contains `needle`."""
    seen = threading.Event()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if needle in line:
                seen.set()

    threading.Thread(target=pump, daemon=True).start()
    if not seen.wait(timeout_s):
        proc.kill()
        raise RuntimeError(f"{proc.args[0]} did not say {needle!r}:\n" + "".join(lines[-20:]))


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_mosquitto_sub(mq, pub: Publisher, messages: list[RawMessage]) -> float:
    """Messages/s at which mosquitto_sub (QoS 1) receives the publish."""
    from ingest.tools.servers import INGEST_USER

    proc = subprocess.Popen(["mosquitto_sub", "-h", mq.host, "-p", str(mq.port), "-u", INGEST_USER,
                             "-P", mq.passwords[INGEST_USER], "-q", "1", "-i", f"bench-sub-{random.randrange(10**9)}",
                             "-t", "water/+/meter/+/reading", "-C", str(len(messages)), "-F", "%m"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it subscribe
    t0 = pub.publish(messages)
    try:
        proc.wait(300)
    except subprocess.TimeoutExpired:
        proc.kill()
    rate = len(messages) / (time.perf_counter() - t0)
    pub.wait()
    return rate


def run_cistern(mq, influx, registry_dir: Path, state_dir: Path, pub: Publisher, messages: list[RawMessage],
                expected: int, timeout_s: float) -> tuple[int, float]:
    """`cistern run` as a subprocess, configured by CONTRACT §2 variables: (readings stored, seconds)."""
    db = influx.new_database("bench")
    env = {**os.environ, "CISTERN_MQTT_URL": mq.url(), "CISTERN_MQTT_CLIENT_ID": f"bench-{random.randrange(10**9)}",
           "CISTERN_INFLUX_URL": influx.url, "CISTERN_INFLUX_API": "v1", "CISTERN_INFLUX_BUCKET": db,
           "CISTERN_INFLUX_USERNAME": influx.username, "CISTERN_INFLUX_PASSWORD": influx.password,
           "CISTERN_REGISTRY": str(registry_dir), "CISTERN_STATE_DIR": str(state_dir / db)}
    proc = subprocess.Popen([sys.executable, "-m", "ingest", "run"], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        _wait_line(proc, "MQTT subscribed", 30, lines)
        t0 = pub.publish(messages)
        got = _wait_stored(influx, db, expected, t0, timeout_s)
        pub.wait()
        return got
    finally:
        _stop(proc)


def run_baseline(mq, influx, registry_dir: Path, pub: Publisher, messages: list[RawMessage], expected: int,
                 timeout_s: float) -> tuple[int, float]:
    """The straightforward consumer (this file, --baseline-consumer) as a subprocess: (readings stored, seconds)."""
    from ingest.tools.servers import INGEST_USER

    db = influx.new_database("base")
    proc = subprocess.Popen([sys.executable, __file__, "--baseline-consumer", mq.host, str(mq.port), INGEST_USER,
                             mq.passwords[INGEST_USER], influx.url, db, str(registry_dir)],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        _wait_line(proc, "subscribed", 30, lines)
        t0 = pub.publish(messages)
        got = _wait_stored(influx, db, expected, t0, timeout_s)
        pub.wait()
        return got
    finally:
        _stop(proc)


def baseline_consumer(host: str, port: str, user: str, password: str, influx_url: str, db: str,
                      registry_dir: str) -> int:
    """paho on_message → json.loads → influxdb-client Point per reading → POST /write in batches of 500."""
    import urllib.request

    import paho.mqtt.client as mqtt

    baseline = PointBaseline(Registry.load(registry_dir))
    pending: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def flush() -> None:
        with lock:
            body = "\n".join(pending).encode()
            pending.clear()
        if body:
            req = urllib.request.Request(f"{influx_url}/write?db={db}&precision=ns", data=body, method="POST")
            urllib.request.urlopen(req, timeout=30).close()

    def on_message(client, userdata, msg) -> None:
        lines = baseline.lines([RawMessage(msg.topic, msg.payload)])
        with lock:
            pending.extend(lines)
            full = len(pending) >= 500
        if full:
            flush()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("water/+/meter/+/reading", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        print("subscribed", flush=True)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-base-{random.randrange(10**9)}")
    c.username_pw_set(user, password)
    c.on_message, c.on_connect, c.on_subscribe = on_message, on_connect, on_subscribe
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    c.connect(host, int(port))
    c.loop_start()
    while not stop.wait(0.2):
        flush()
    c.loop_stop()
    flush()
    return 0


def part_b(registry_dir: Path, reg: Registry, layout: TopicLayout, n_single: int, n_batch: int,
           timeout_s: float, workers: int) -> None:
    from ingest.tools.servers import ServerUnavailable, start_influx_v1, start_mosquitto

    try:
        mq = start_mosquitto(use_docker=False)
        influx = start_influx_v1(use_docker=False)
    except (ServerUnavailable, RuntimeError) as e:
        print(f"(b) skipped: {e}")
        return
    try:
        assert mq.folder is not None
        with (mq.folder / "acl").open("a") as f:  # a bench account that may publish for every meter
            f.write(f"\nuser {PUBLISHER}\ntopic write water/#\n")
        pub = Publisher(mq.host, mq.port, mq.add_device(PUBLISHER), mq.folder, workers)
        print("(b) end to end: paho QoS 1 publish → Mosquitto → consumer → InfluxDB 1.x, readings/s stored")
        print(f"    {'traffic':<34}{'cistern run':>14}{'mosquitto_sub':>16}{'baseline':>14}{'vs sub':>9}"
              f"{'× baseline':>12}")
        with tempfile.TemporaryDirectory(prefix="cistern-bench-state-") as state:
            for label, msgs, per in ((f"{n_single:,} single-reading msgs", single_messages(reg, layout, n_single), 1),
                                     (f"{n_batch:,} 24-reading batch msgs", batch_messages(reg, layout, n_batch), 24)):
                expected = len(msgs) * per
                sub_rate = run_mosquitto_sub(mq, pub, msgs) * per
                stored, secs = run_cistern(mq, influx, registry_dir, Path(state), pub, msgs, expected, timeout_s)
                c_rate = stored / secs
                b_stored, b_secs = run_baseline(mq, influx, registry_dir, pub, msgs, expected, timeout_s)
                b_rate = b_stored / b_secs
                note = "" if stored == expected and b_stored == expected else \
                    f"  (stored {stored:,} and {b_stored:,} of {expected:,} within {timeout_s:.0f} s)"
                print(f"    {label:<34}{c_rate:>12,.0f}/s{sub_rate:>14,.0f}/s{b_rate:>12,.0f}/s"
                      f"{c_rate / sub_rate:>8.0%}{c_rate / b_rate:>11.1f}×{note}")
    finally:
        mq.stop()
        influx.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("a", "b", "all"), default="all")
    ap.add_argument("--meters", type=int, default=20_000, help="fleet size (registry)")
    ap.add_argument("--single", type=int, default=50_000, help="(a) single-reading messages")
    ap.add_argument("--batch", type=int, default=5_000, help="(a) 24-reading batch messages")
    ap.add_argument("--group", type=int, default=2_000, help="(a) messages per decode call")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--e2e-single", type=int, default=100_000, help="(b) single-reading messages")
    ap.add_argument("--e2e-batch", type=int, default=10_000, help="(b) 24-reading batch messages")
    ap.add_argument("--e2e-timeout-s", type=float, default=120.0, help="(b) give up waiting for InfluxDB after this")
    ap.add_argument("--publishers", type=int, default=3, help="(b) paho publisher processes")
    ap.add_argument("--profile", action="store_true", help="(a) print a cProfile of the fast path")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cistern-bench-") as tmp:
        reg = Registry.load(write_fleet(Path(tmp) / "registry", args.meters))
        layout = TopicLayout("water")
        if args.part in ("a", "all"):
            part_a(reg, layout, args.single, args.batch, args.group, args.repeat)
        if args.part in ("b", "all"):
            part_b(Path(tmp) / "registry", reg, layout, args.e2e_single, args.e2e_batch, args.e2e_timeout_s,
                   args.publishers)
        if args.profile:
            profile_a(reg, layout, args.single, args.batch, args.group)
    return 0


def profile_a(reg: Registry, layout: TopicLayout, n_single: int, n_batch: int, group: int) -> None:
    import cProfile
    import pstats

    from ingest.sinks.lineproto import LineEncoder

    enc, dec = LineEncoder(reg), Decoder(reg, layout)
    for label, msgs in (("single", single_messages(reg, layout, n_single)),
                        ("batch", batch_messages(reg, layout, n_batch))):
        groups = [msgs[i:i + group] for i in range(0, len(msgs), group)]
        for g in groups:  # warm: topic routes cached, formatters compiled, as in a running service
            enc.encode(dec.decode(g)[0])
        prof = cProfile.Profile()
        prof.enable()
        for g in groups:
            enc.encode(dec.decode(g)[0])
        prof.disable()
        print(f"--- profile: {label}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--publish-worker":
        sys.exit(publish_worker(*sys.argv[2:]))
    if len(sys.argv) == 9 and sys.argv[1] == "--baseline-consumer":
        sys.exit(baseline_consumer(*sys.argv[2:]))
    sys.exit(main())

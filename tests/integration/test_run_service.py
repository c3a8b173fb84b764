"""`cistern run` against a real Mosquitto and real databases, configured only through CISTERN_* variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.helpers import write_registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_334_400  # 2026-11-22T00:00:00Z


class Service:
    """The CLI as an operator starts it, with its log collected."""

    def __init__(self, env: dict[str, str]):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
        clean.update(env)
        self.proc = subprocess.Popen([sys.executable, "-m", "ingest", "run"], cwd=ROOT, env=clean,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("MQTT subscribed", 20)

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.log.append(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.log):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"service did not log {text!r}; log:\n{''.join(self.log[-30:])}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self._reader.join(5)
        return rc


def publish(broker, device: str, district: str, payloads: list[bytes | str]) -> None:
    """Publish as the device's own account with mosquitto_pub, QoS 1, one message a line."""
    lines = b"\n".join(p if isinstance(p, bytes) else p.encode() for p in payloads) + b"\n"
    topic = f"water/{district}/meter/{device}/reading"
    r = subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u", device,
                        "-P", broker.passwords[device], "-q", "1", "-t", topic, "-l"],
                       input=lines, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


def readings(device: str, start_s: int, n: int, step_s: int = 60) -> list[bytes]:
    return [orjson.dumps({"meter_id": device, "ts": start_s + i * step_s, "total_m3": round(100 + i * 0.01, 3),
                          "signal": {"rsrp_dbm": -95.0, "snr_db": 6.5, "ecl": 1}, "battery_v": 3.6})
            for i in range(n)]


def wait_until(fn, expected, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    got = fn()
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        got = fn()
    return got


def v1_env(broker, influx, db: str, tmp_path: Path, client_id: str) -> dict[str, str]:
    return {
        "CISTERN_MQTT_URL": broker.url(),
        "CISTERN_MQTT_CLIENT_ID": client_id,
        "CISTERN_INFLUX_URL": influx.url,
        "CISTERN_INFLUX_API": "v1",
        "CISTERN_INFLUX_BUCKET": db,
        "CISTERN_INFLUX_USERNAME": influx.username,
        "CISTERN_INFLUX_PASSWORD": influx.password,
        "CISTERN_REGISTRY": str(write_registry(tmp_path / "registry")),
        "CISTERN_STATE_DIR": str(tmp_path / "state"),
        "CISTERN_ALERTS_FILE": str(tmp_path / "alerts.jsonl"),
        "CISTERN_HEALTH_INTERVAL_S": "1",
    }


def stored_v1(influx, db: str, device: str) -> list[tuple[int, float]]:
    rows = influx.query(f"SELECT total_m3 FROM meter_reading WHERE meter_id = '{device}'", db=db)
    return sorted((int(r["time"]), float(r["total_m3"])) for r in rows)


def test_every_published_reading_lands_in_influxdb_v1_and_bad_ones_are_dead_lettered(
        mosquitto_server, influx_v1, tmp_path):
    db = influx_v1.new_database("run")
    svc = Service(v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-it-v1"))
    good = readings("M000001", T0, 600)
    bad = [b'{"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z"}',  # no register
           b'{"meter_id": "M000002", "ts": "2026-11-22T08:00:00Z", "total_m3": 5}',  # spoofed id
           b'{"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "total_m3": -5}',
           b"\xff\xfe not even text"]
    publish(mosquitto_server, "M000001", "d01", good[:300] + bad[:2] + good[300:] + bad[2:])
    expected = [(T0 * 10**9 + i * 60 * 10**9, round(100 + i * 0.01, 3)) for i in range(600)]
    assert wait_until(lambda: stored_v1(influx_v1, db, "M000001"), expected) == expected
    svc.wait_for("dead_lettered=4", 10)
    assert svc.stop() == 0, "".join(svc.log[-20:])
    dead = [orjson.loads(x) for x in (tmp_path / "state" / "deadletters.jsonl").read_bytes().splitlines()]
    assert len(dead) == 4 and all(d["reason"] for d in dead)
    tags = influx_v1.query("SHOW TAG VALUES FROM meter_reading WITH KEY = building_id", db=db)
    assert [t["value"] for t in tags] == ["B001"]


def test_readings_published_while_the_service_is_down_arrive_after_restart(mosquitto_server, influx_v1, tmp_path):
    db = influx_v1.new_database("restart")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-it-restart")
    svc = Service(env)
    first = readings("M000001", T0, 200)
    publish(mosquitto_server, "M000001", "d01", first)
    assert wait_until(lambda: len(stored_v1(influx_v1, db, "M000001")), 200) == 200
    assert svc.stop() == 0
    publish(mosquitto_server, "M000001", "d01", readings("M000001", T0 + 200 * 60, 300))  # nobody listening
    svc = Service(env)
    assert wait_until(lambda: len(stored_v1(influx_v1, db, "M000001")), 500) == 500
    times = [t for t, _ in stored_v1(influx_v1, db, "M000001")]
    assert times == [T0 * 10**9 + i * 60 * 10**9 for i in range(500)]
    assert svc.stop() == 0


def test_every_published_reading_lands_in_victoriametrics_over_v2(mosquitto_server, victoria, tmp_path):
    svc = Service({
        "CISTERN_MQTT_URL": mosquitto_server.url(),
        "CISTERN_MQTT_CLIENT_ID": "cistern-it-v2",
        "CISTERN_INFLUX_URL": victoria.url,
        "CISTERN_INFLUX_API": "v2",
        "CISTERN_INFLUX_BUCKET": victoria.bucket,
        "CISTERN_INFLUX_ORG": victoria.org,
        "CISTERN_INFLUX_TOKEN": victoria.token,
        "CISTERN_REGISTRY": str(write_registry(tmp_path / "registry")),
        "CISTERN_STATE_DIR": str(tmp_path / "state"),
    })
    start = T0 - 86400 * 3  # a day no other test writes (VictoriaMetrics refuses future samples)
    publish(mosquitto_server, "M000002", "d01", readings("M000002", start, 250))
    assert wait_until(lambda: victoria.count("meter_reading", "total_m3", meter_id="M000002"), 250) == 250
    pts = victoria.points("meter_reading", "total_m3", meter_id="M000002")
    assert [p[0] for p in pts] == [(start + i * 60) * 1000 for i in range(250)]
    assert pts[0][2]["district"] == "d01" and pts[0][2]["role"] == "household"
    assert svc.stop() == 0

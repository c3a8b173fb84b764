"""What the integration tests share: the service started as an operator starts it, publishing as a device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from tests.helpers import write_registry

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


def wait_until(fn, expected, timeout_s: float = 120.0):
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
        # These tests push thousands of readings through one meter account, which the flood guard would
        # rightly set aside; durability, not flood policy, is under test here.
        "CISTERN_FLOOD_MAX_PER_DEVICE": "0",
    }


def count_v1(influx, db: str, device: str) -> int:
    """Points stored for one meter (cheap enough to poll)."""
    rows = influx.query(f"SELECT count(total_m3) FROM meter_reading WHERE meter_id = '{device}'", db=db)
    return int(rows[0]["count"]) if rows else 0


def wait_for_count(influx, db: str, device: str, n: int, svc=None, timeout_s: float = 180.0) -> list[tuple[int, float]]:
    """Wait until n points are stored, then return them all; on time-out, say how far it got and what the service
    logged."""
    got = wait_until(lambda: count_v1(influx, db, device), n, timeout_s)
    if got != n and svc is not None:
        raise AssertionError(f"{got} of {n} readings stored after {timeout_s:.0f} s; service log tail:\n"
                             + "".join(svc.log[-25:]))
    return stored_v1(influx, db, device)


def stored_v1(influx, db: str, device: str) -> list[tuple[int, float]]:
    rows = influx.query(f"SELECT total_m3 FROM meter_reading WHERE meter_id = '{device}'", db=db)
    return sorted((int(r["time"]), float(r["total_m3"])) for r in rows)


def kill9(svc: Service) -> None:
    """A crash: no flush, no ack, no checkpoint."""
    svc.proc.kill()
    svc.proc.wait(10)
    svc._reader.join(5)


def received(svc: Service) -> int:
    """Messages this service instance took from the broker, from its last health line."""
    for line in reversed(svc.log):
        if "health: received=" in line:
            return int(line.split("received=")[1].split()[0])
    return 0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop_local_server(server) -> list[str]:
    from ingest.tools.servers import common as servers

    assert server._proc is not None
    argv = list(server._proc.args)
    servers._terminate(server._proc)
    server._proc = None
    return argv


def start_local_server(server, argv: list[str]) -> None:
    from ingest.tools.servers import common as servers

    log = Path(server.folder) / "restart.log"
    server._proc = servers._spawn(argv, log, cwd=Path(server.folder))
    servers._wait(lambda: servers._http_ok(f"{server.url}/ping"), "restarted server", server._proc, log)

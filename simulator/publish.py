"""Send a written capture to an MQTT broker as QoS 1, one client per device class, in real time or sped up."""

from __future__ import annotations

import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

DEVICE_CLASSES = ("household-meters", "master-meters", "pump-rooms")
MAX_INFLIGHT = 1000
MAX_PENDING = 20_000  # unacknowledged messages before the sender waits for the broker


class PublishError(RuntimeError):
    pass


@dataclass
class BrokerUrl:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool


def parse_url(url: str) -> BrokerUrl:
    """`mqtt://[user:pass@]host:port` or `mqtts://…`; ValueError names what is wrong."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT URL {url!r} must start with mqtt:// or mqtts://")
    if not u.hostname:
        raise ValueError(f"MQTT URL {url!r} has no host")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError(f"MQTT URL {url!r} has a bad port") from None
    user = urllib.parse.unquote(u.username) if u.username else None
    pw = urllib.parse.unquote(u.password) if u.password else None
    return BrokerUrl(u.hostname, port, user, pw, tls)


class _Client:
    def __init__(self, name: str, broker: BrokerUrl):
        self.sent = 0
        self.acked = 0
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.error: str | None = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        if broker.username is not None:
            c.username_pw_set(broker.username, broker.password)
        if broker.tls:
            c.tls_set()
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        self.client = c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = str(reason_code)
        self.connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            self.acked += 1

    def pending(self) -> int:
        with self.lock:
            return self.sent - self.acked


def _lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """Topic and raw payload of each capture line, cut out of the bytes without a JSON round trip."""
    with path.open("rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            cut = line.index(b'","payload":')
            yield line[10:cut].decode(), line[cut + 12:-1]


def publish_capture(capture: Path, pub_ns: np.ndarray, device_class: np.ndarray, url: str, speed: float,
                    client_prefix: str = "cistern-sim", progress: bool = True, timeout_s: float = 60.0) -> int:
    """Publish every line at its publish time scaled by `speed` (0 = as fast as possible); returns the count."""
    broker = parse_url(url)
    clients = [_Client(f"{client_prefix}-{name}", broker) for name in DEVICE_CLASSES]
    for c in clients:
        try:
            c.client.connect(broker.host, broker.port, keepalive=60)
        except OSError as e:
            raise PublishError(f"cannot connect to MQTT broker {broker.host}:{broker.port}: {e}") from None
        c.client.loop_start()
    try:
        for c in clients:
            if not c.connected.wait(10):
                raise PublishError(f"MQTT broker {broker.host}:{broker.port} did not answer CONNECT")
            if c.error:
                raise PublishError(f"MQTT broker refused the connection: {c.error}")
        total = len(pub_ns)
        t_first = int(pub_ns[0]) if total else 0
        wall0 = time.monotonic()
        shown = 0.0
        cls_list = device_class.tolist()
        for i, (topic, payload) in enumerate(_lines(capture)):
            if speed > 0:
                due = wall0 + (int(pub_ns[i]) - t_first) / 1e9 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            c = clients[cls_list[i]]
            while c.pending() > MAX_PENDING:
                time.sleep(0.002)
            with c.lock:
                c.sent += 1
            info = c.client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                raise PublishError(f"publish failed: {mqtt.error_string(info.rc)}")
            now = time.monotonic()
            if progress and now - shown > 0.5:
                shown = now
                _show(i + 1, total, int(pub_ns[i]), clients, now - wall0)
        deadline = time.monotonic() + timeout_s
        while any(c.pending() for c in clients):
            if time.monotonic() > deadline:
                raise PublishError(f"{sum(c.pending() for c in clients)} messages not acknowledged by the broker")
            time.sleep(0.01)
        if progress:
            _show(total, total, int(pub_ns[-1]) if total else 0, clients, time.monotonic() - wall0)
            sys.stderr.write("\n")
        return total
    finally:
        for c in clients:
            c.client.disconnect()
            c.client.loop_stop()


def _show(done: int, total: int, t_ns: int, clients: list[_Client], elapsed: float) -> None:
    acked = sum(c.acked for c in clients)
    sim = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t_ns / 1e9))
    rate = done / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(f"\rpublished {done}/{total} ({100.0 * done / max(total, 1):.1f} %)  acked {acked}  "
                     f"sim {sim}Z  {rate:,.0f} msg/s   ")
    sys.stderr.flush()

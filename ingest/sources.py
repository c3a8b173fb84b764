"""Sources of raw messages: the MQTT broker (live, acked after durability) and a capture file (replay)."""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.config import MqttEndpoint
from ingest.decode import RawMessage, Reject

log = logging.getLogger("cistern.source")


def persistent_client(endpoint: MqttEndpoint, client_id: str, *, ca_file: str = "",
                      session_expiry_s: int = 7 * 24 * 3600, receive_maximum: int | None = None
                      ) -> tuple[mqtt.Client, Properties]:
    """A paho MQTT v5 client for a persistent session (connect with clean_start=False and the returned
    properties): credentials and TLS from the endpoint, reconnect back-off set."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if endpoint.username is not None:
        c.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        c.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
    c.reconnect_delay_set(min_delay=1, max_delay=30)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return c, props


class Source(Protocol):
    def poll(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        """Up to max_messages, waiting at most timeout_s for the first one and for the batch to fill."""

    def ack(self, messages: list[RawMessage]) -> None:
        """The messages' readings are durable: the source may forget them."""

    def take_rejects(self) -> list[Reject]:
        """Input the source itself could not turn into messages (e.g. a broken capture line)."""

    @property
    def exhausted(self) -> bool:
        """True when no more messages will ever come (end of a capture file)."""

    def close(self) -> None: ...


class CaptureSource:
    """CONTRACT §7: one MQTT message a line, `{"topic": …, "payload": {…} | "raw text"}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = self.path.open("rb")
        self._lines = self._read()
        self._rejects: list[Reject] = []
        self._done = False
        self.line_no = 0
        self.bytes_read = 0

    def _read(self) -> Iterator[RawMessage]:
        for raw in self._fh:
            self.line_no += 1
            self.bytes_read += len(raw)
            line = raw.strip()
            if not line:
                continue
            try:
                obj = orjson.loads(line)
                topic = obj["topic"]
                payload = obj["payload"]
                if not isinstance(topic, str):
                    raise TypeError("topic is not a string")
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                self._rejects.append(Reject(f"capture:{self.path.name}:{self.line_no}", line,
                                            f"capture line {self.line_no} is not a capture record: {e}"))
                continue
            if isinstance(payload, str):
                data = payload.encode("utf-8", "surrogatepass")
            else:
                data = orjson.dumps(payload)
            yield RawMessage(topic, data)

    def poll(self, max_messages: int, timeout_s: float = 0.0) -> list[RawMessage]:
        out: list[RawMessage] = []
        for msg in self._lines:
            out.append(msg)
            if len(out) >= max_messages:
                return out
        self._done = True
        return out

    def ack(self, messages: list[RawMessage]) -> None:
        pass

    def take_rejects(self) -> list[Reject]:
        r, self._rejects = self._rejects, []
        return r

    @property
    def exhausted(self) -> bool:
        return self._done

    def close(self) -> None:
        self._fh.close()


class MqttSource:
    """Subscribes with QoS 1 on a persistent session and acks a message only when told its readings are durable.

    MQTT v5 with clean_start off and a long session expiry: the broker keeps our subscriptions and queues messages
    while the ingester is down. Receive Maximum lets many unacked messages be in flight while a batch is written.
    """

    def __init__(self, endpoint: MqttEndpoint, client_id: str, topics: list[str], *, shared_group: str = "",
                 ca_file: str = "", keepalive_s: int = 30, session_expiry_s: int = 7 * 24 * 3600,
                 receive_maximum: int = 65535, max_buffered: int = 200_000):
        self.endpoint = endpoint
        self.topics = [f"$share/{shared_group}/{t}" for t in topics] if shared_group else list(topics)
        self._queue: queue.Queue[RawMessage] = queue.Queue(maxsize=max_buffered)
        self._generation = 0  # message ids are only valid within the connection that delivered them
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.fatal_error: str | None = None
        self.received = 0

        c, self._connect_props = persistent_client(endpoint, client_id, ca_file=ca_file,
                                                   session_expiry_s=session_expiry_s, receive_maximum=receive_maximum)
        c.manual_ack_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c
        self._keepalive = keepalive_s

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and subscribe; raises ConnectionRefusedError when the broker refuses our credentials or ACL."""
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=self._keepalive,
                                   clean_start=False, properties=self._connect_props)
        self._client.loop_start()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.fatal_error:
                break
            if self.connected.wait(0.1):
                return
        if self.fatal_error:
            self._client.loop_stop()
            raise ConnectionRefusedError(f"MQTT broker {self.endpoint.host}:{self.endpoint.port}: {self.fatal_error}")
        # Not reachable yet: paho keeps reconnecting with back-off; the service waits rather than dying.
        log.warning("MQTT broker %s:%d not reachable yet (%s); will keep trying", self.endpoint.host,
                    self.endpoint.port, self.last_error or "no answer")

    # paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = str(reason_code)
            if reason_code.value in (0x86, 0x87, 0x85, 0x8C):  # bad credentials, not authorized, bad client id
                self.fatal_error = f"connection refused: {reason_code}"
            log.warning("MQTT connect refused: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
        client.subscribe([(t, 1) for t in self.topics])
        log.info("MQTT connected to %s:%d (session present: %s)", self.endpoint.host, self.endpoint.port,
                 flags.session_present)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            self.fatal_error = f"subscription refused: {', '.join(bad)} (check the broker ACL)"
            log.error("MQTT %s", self.fatal_error)
            return
        log.info("MQTT subscribed: %s (QoS 1)", ", ".join(self.topics))
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.last_error = str(reason_code)
        # Jitter the back-off so a fleet of ingesters does not reconnect in lock step.
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 2.0), max_delay=30)
        log.warning("MQTT disconnected (%s); reconnecting with back-off", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        # Blocks the network thread when the buffer is full: back-pressure to the broker instead of memory growth.
        self._queue.put(RawMessage(msg.topic, msg.payload, (self._generation, msg.mid, msg.qos), time.time_ns()))
        self.received += 1

    # consumer side (pipeline thread)
    def poll(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        out: list[RawMessage] = []
        deadline = time.monotonic() + timeout_s
        q = self._queue
        try:
            out.append(q.get(timeout=max(timeout_s, 0.001)))
        except queue.Empty:
            return out
        while len(out) < max_messages:
            try:
                out.append(q.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    out.append(q.get(timeout=min(remaining, 0.01)))
                except queue.Empty:
                    continue
        return out

    def ack(self, messages: list[RawMessage]) -> None:
        gen = self._generation
        client = self._client
        for m in messages:
            g, mid, qos = m.token
            # A message from an earlier connection will be redelivered by the broker; its old id means nothing now.
            if g == gen and qos > 0:
                client.ack(mid, qos)

    def take_rejects(self) -> list[Reject]:
        return []

    @property
    def exhausted(self) -> bool:
        return False

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

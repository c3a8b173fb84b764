"""The MQTT source through the paho-mqtt library: the fallback behind CISTERN_MQTT_RECEIVER=paho, and the persistent
paho client the dispatch MQTT output publishes with. Same settings and behaviour as the built-in receiver; paho's
per-message Python work caps it near 28,000 messages/s on a small machine."""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.messages import RawMessage, Reject
from ingest.sources.mqtt import MqttEndpoint, Protocol

log = logging.getLogger("cistern.source")


class PersistentClient:
    """A paho client for a persistent session on either protocol: credentials and TLS from the endpoint,
    reconnect back-off set. MQTT 5: clean start off, a session expiry, Receive Maximum. MQTT 3.1.1: clean session
    off (the broker keeps the session until the client id connects with a clean session)."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, *, protocol: Protocol = "5", ca_file: str = "",
                 session_expiry_s: int = 7 * 24 * 3600, receive_maximum: int | None = None):
        self.endpoint = endpoint
        self.protocol = protocol
        if protocol == "5":
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry_s
            if receive_maximum is not None:
                props.ReceiveMaximum = receive_maximum
            self._props: Properties | None = props
        else:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                            clean_session=False)
            self._props = None
        if endpoint.username is not None:
            c.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            c.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client = c

    def connect_async(self, keepalive_s: int) -> None:
        e = self.endpoint
        if self._props is not None:
            self.client.connect_async(e.host, e.port, keepalive=keepalive_s, clean_start=False,
                                      properties=self._props)
        else:
            self.client.connect_async(e.host, e.port, keepalive=keepalive_s)
        self.client.loop_start()


class PahoMqttSource:
    """Subscribes with QoS 1 on a persistent session and acks a message only when told its readings are durable.

    The session outlives the connection: the broker keeps our subscriptions and queues messages while the ingester
    is down. On MQTT 5, Receive Maximum lets many unacked messages be in flight while a batch is written; on 3.1.1
    the broker's own in-flight limit (max_inflight_messages) applies.
    """

    def __init__(self, endpoint: MqttEndpoint, client_id: str, topics: list[str], *, shared_group: str = "",
                 ca_file: str = "", keepalive_s: int = 30, session_expiry_s: int = 7 * 24 * 3600,
                 receive_maximum: int = 65535, max_buffered: int = 200_000, protocol: Protocol = "5"):
        self.endpoint = endpoint
        self.topics = [f"$share/{shared_group}/{t}" for t in topics] if shared_group else list(topics)
        self._queue: queue.Queue[RawMessage] = queue.Queue(maxsize=max_buffered)
        self._generation = 0  # message ids are only valid within the connection that delivered them
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.fatal_error: str | None = None
        self.received = 0

        self._session = PersistentClient(endpoint, client_id, protocol=protocol, ca_file=ca_file,
                                         session_expiry_s=session_expiry_s, receive_maximum=receive_maximum)
        c = self._session.client
        c.manual_ack_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c
        self._keepalive = keepalive_s

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and subscribe; raises ConnectionRefusedError when the broker refuses our credentials or ACL."""
        self._session.connect_async(self._keepalive)
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
        if flags.session_present:  # see MqttSource._open: the backlog comes ahead of the SUBACK
            self.connected.set()

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

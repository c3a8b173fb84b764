"""MQTT side of dispatch: publish alert events on {prefix}/alerts/{kind} with QoS 1 (a delivery counts only once the
broker has acknowledged it) and take acknowledgements from dispatch on {prefix}/alerts/ack."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from ingest.dispatch.outputs import Sent
from ingest.dispatch.store import OutboxRow
from ingest.sources.mqtt import MqttEndpoint, Protocol
from ingest.sources.mqtt_paho import PersistentClient

log = logging.getLogger("cistern.dispatch.mqtt")


class DispatchMqtt:
    """Its own client (id `<client_id>-dispatch`) on a persistent session, so acknowledgements sent while Cistern is
    down wait in the broker. Pass `publish` as the Dispatcher's `mqtt_publish` and set `on_ack` to
    `dispatcher.handle_ack_message`."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, prefix: str = "water", *,
                 on_ack: Callable[[bytes], Any] | None = None, ca_file: str = "", keepalive_s: int = 30,
                 publish_timeout_s: float = 10.0, session_expiry_s: int = 7 * 24 * 3600, protocol: Protocol = "5"):
        self.endpoint = endpoint
        self.prefix = prefix.strip("/")
        self.ack_topic = f"{self.prefix}/alerts/ack"
        self.on_ack = on_ack
        self.publish_timeout_s = publish_timeout_s
        self.connected = threading.Event()
        self.last_error: str | None = None
        self._session = PersistentClient(endpoint, f"{client_id}-dispatch", protocol=protocol, ca_file=ca_file,
                                         session_expiry_s=session_expiry_s)
        c = self._session.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        self._keepalive = keepalive_s

    def start(self, wait_s: float = 10.0) -> bool:
        """Connect in the background; True once connected (paho keeps retrying otherwise)."""
        self._session.connect_async(self._keepalive)
        return self.connected.wait(wait_s)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = str(reason_code)
            log.warning("dispatch MQTT connection refused: %s", reason_code)
            return
        client.subscribe(self.ack_topic, qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.last_error = str(reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic != self.ack_topic or self.on_ack is None:
            return
        try:
            self.on_ack(msg.payload)
        except Exception:  # an ack handler bug must not kill paho's network thread
            log.exception("alert acknowledgement handler failed")

    def publish(self, topic: str, body: bytes) -> None:
        """QoS 1 publish that returns only after the broker's PUBACK; raises otherwise (the outbox retries)."""
        if not self._client.is_connected():
            # Not handing it to paho's offline queue: the outbox is the queue, and this avoids a double send.
            raise ConnectionError(f"not connected to the broker ({self.last_error or 'connecting'})")
        info = self._client.publish(topic, body, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(mqtt.error_string(info.rc))
        info.wait_for_publish(self.publish_timeout_s)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK within {self.publish_timeout_s:.0f} s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class MqttOutput:
    """The outbox's `mqtt` rows through a publish function (DispatchMqtt.publish): QoS 1, delivered once the broker
    acknowledged them."""

    name = "mqtt"
    batched = False
    ordered = False

    def __init__(self, publish: Callable[[str, bytes], None]):
        self._publish = publish

    def send(self, row: OutboxRow) -> Sent:
        try:
            self._publish(row.topic, row.body)
            return Sent(True)
        except Exception as e:  # the publisher reports any failure by raising
            return Sent(False, f"MQTT publish failed: {type(e).__name__}: {e}", True)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

"""The project's mosquitto.conf and ACL on a real Mosquitto: who may connect, publish where, and what survives."""

from __future__ import annotations

import queue
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest

from ingest.tools import servers

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0


class Conn:
    """A paho client connected (or refused) synchronously; received messages land in a queue."""

    def __init__(self, broker: servers.MosquittoServer, user: str | None, password: str | None = None, *,
                 tls: bool = False, client_id: str = "", clean: bool = True):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if user is not None:
            self.client.username_pw_set(user, broker.passwords.get(user) if password is None else password)
        if tls:
            self.client.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.connect(broker.host, broker.tls_port if tls else broker.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT_S), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.reason = reason_code
        self._connected.set()

    @property
    def accepted(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(TIMEOUT_S), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT_S)

    def received(self, n: int) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in (self.messages.get(timeout=TIMEOUT_S) for _ in range(n))]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(mosquitto_server: servers.MosquittoServer) -> servers.MosquittoServer:
    if not mosquitto_server.managed:
        pytest.skip("these tests check the project's own mosquitto.conf and ACL, not an external broker")
    return mosquitto_server


def test_anonymous_clients_are_refused(broker):
    c = Conn(broker, None)
    assert not c.accepted
    assert c.reason in ("Not authorized", "Bad user name or password") or c.reason.value in (4, 5, 134, 135)
    c.close()


def test_a_wrong_password_is_refused(broker):
    c = Conn(broker, "M000001", "not-the-password")
    assert not c.accepted
    c.close()


def test_the_ingester_receives_a_device_reading_on_its_own_topic(broker):
    ingest = Conn(broker, servers.INGEST_USER)
    ingest.subscribe("water/#")
    device = Conn(broker, "M000001")
    device.publish("water/d01/meter/M000001/reading", b'{"meter_id": "M000001"}')
    assert ingest.received(1) == [("water/d01/meter/M000001/reading", b'{"meter_id": "M000001"}')]
    device.close()
    ingest.close()


def test_a_device_cannot_publish_under_another_devices_id(broker):
    ingest = Conn(broker, servers.INGEST_USER)
    ingest.subscribe("water/#")
    device = Conn(broker, "M000001")
    # Forged first, genuine last: messages from one connection arrive in order, so once the genuine one is
    # in, a forged one that had been let through would already be there too.
    device.publish("water/d01/meter/M000002/reading", b"forged reading")
    device.publish("water/d01/pumproom/P0001/telemetry", b"forged telemetry")
    device.publish("water/alerts/bypass", b"forged alert")
    device.publish("water/d01/meter/M000001/reading", b"genuine")
    assert ingest.received(1) == [("water/d01/meter/M000001/reading", b"genuine")]
    assert ingest.messages.empty()
    device.close()
    ingest.close()


def test_a_device_reads_nothing_of_the_others(broker):
    spy = Conn(broker, "M000002")
    spy.subscribe("water/#")
    ingest = Conn(broker, servers.INGEST_USER)
    ingest.subscribe("water/#")
    Conn(broker, "M000001").publish("water/d01/meter/M000001/reading", b"private")
    assert ingest.received(1) == [("water/d01/meter/M000001/reading", b"private")]
    assert spy.messages.empty()
    spy.close()
    ingest.close()


def test_pump_room_account_publishes_telemetry_and_dispatch_acknowledges_alerts(broker):
    ingest = Conn(broker, servers.INGEST_USER)
    ingest.subscribe("water/#")
    dispatch = Conn(broker, servers.DISPATCH_USER)
    dispatch.subscribe("water/alerts/#")
    Conn(broker, "P0001").publish("water/d01/pumproom/P0001/telemetry", b"room")
    assert ingest.received(1) == [("water/d01/pumproom/P0001/telemetry", b"room")]
    ingest.publish("water/alerts/bypass", b"alert")
    assert dispatch.received(1) == [("water/alerts/bypass", b"alert")]
    dispatch.publish("water/alerts/other", b"not allowed")
    dispatch.publish("water/alerts/ack", b"ack")
    assert ingest.received(2) == [("water/alerts/bypass", b"alert"), ("water/alerts/ack", b"ack")]
    dispatch.close()
    ingest.close()


def test_tls_listener_with_the_test_ca(broker):
    ingest = Conn(broker, servers.INGEST_USER, tls=True)
    assert ingest.accepted
    ingest.subscribe("water/#")
    device = Conn(broker, "M000002", tls=True)
    device.publish("water/d01/meter/M000002/reading", b"over tls")
    assert ingest.received(1) == [("water/d01/meter/M000002/reading", b"over tls")]
    device.close()
    ingest.close()


def test_a_new_device_account_works_after_add_device(broker):
    password = broker.add_device("M000777")
    c = Conn(broker, "M000777", password)
    assert c.accepted
    c.close()


def test_queued_readings_survive_a_broker_restart(mosquitto_private):
    broker = mosquitto_private
    first = Conn(broker, servers.INGEST_USER, client_id="cistern-ingest-restart", clean=False)
    first.subscribe("water/+/meter/+/reading")
    first.close()
    device = Conn(broker, "M000001")
    for i in range(50):
        device.publish("water/d01/meter/M000001/reading", f"r{i}".encode())
    device.close()
    broker.stop()
    broker.start()
    again = Conn(broker, servers.INGEST_USER, client_id="cistern-ingest-restart", clean=False)
    got = again.received(50)
    assert [p for _, p in got] == [f"r{i}".encode() for i in range(50)]
    again.close()

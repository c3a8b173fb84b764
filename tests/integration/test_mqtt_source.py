"""The MQTT source against the real broker, over MQTT 5 and over MQTT 3.1.1 (which several brokers in the field
still speak), with Cistern's own receiver and with the paho fallback: what is not acknowledged comes again after a
crash, the session keeps queueing while the ingester is away, the broker's in-flight limit holds, a restarted
broker is reconnected to, TLS works, and a refusal says why."""

from __future__ import annotations

import secrets
import time

import orjson
import paho.mqtt.client as mqtt
import pytest

from devices.topics import TopicLayout
from ingest.sources.mqtt import MqttEndpoint, MqttSource, open_mqtt_source
from ingest.tools.servers import INGEST_USER

pytestmark = pytest.mark.integration


def _publish(broker, n: int, start: int) -> None:
    """n QoS 1 readings from meter M000001 (its own account), each one acknowledged by the broker."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{secrets.token_hex(4)}",
                    protocol=mqtt.MQTTv311)
    c.username_pw_set("M000001", broker.passwords["M000001"])
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        infos = [c.publish("water/d01/meter/M000001/reading",
                           orjson.dumps({"meter_id": "M000001", "ts": 1_795_334_400 + 60 * (start + i),
                                         "total_m3": float(start + i)}), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def _source(broker, client_id: str, protocol: str, receiver: str = "cistern", url: str | None = None,
            **kw) -> MqttSource:
    s = open_mqtt_source(receiver, MqttEndpoint.parse(url or broker.url(INGEST_USER)), client_id,
                         TopicLayout("water").subscriptions(), protocol=protocol, **kw)
    s.start(wait_s=10)
    assert s.connected.is_set()
    return s


def _drain(source: MqttSource, want: int, timeout_s: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += source.poll(1000, 0.2)
    return got


def _totals(messages) -> list[float]:
    return sorted(orjson.loads(m.payload)["total_m3"] for m in messages)


@pytest.mark.parametrize("receiver", ["cistern", "paho"])
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unacknowledged_messages_come_again_and_the_session_queues_while_away(mosquitto_server, protocol, receiver):
    if not mosquitto_server.managed:
        pytest.skip("needs the test broker's device accounts")
    client_id = f"cistern-src-{protocol}-{secrets.token_hex(3)}"
    first = _source(mosquitto_server, client_id, protocol, receiver)
    _publish(mosquitto_server, 40, 0)
    got = _drain(first, 40)
    assert _totals(got) == [float(i) for i in range(40)]
    first.close()  # gone before acknowledging anything: as if it crashed before the write was durable

    second = _source(mosquitto_server, client_id, protocol, receiver)
    again = _drain(second, 40)
    assert _totals(again) == [float(i) for i in range(40)], "unacknowledged messages were not delivered again"
    second.ack(again)
    time.sleep(0.3)  # the acknowledgements reach the broker before the ingester goes away
    second.close()

    _publish(mosquitto_server, 15, 100)  # published while the ingester is away
    third = _source(mosquitto_server, client_id, protocol, receiver)
    later = _drain(third, 15)
    time.sleep(0.5)
    later += third.poll(1000, 0.2)
    third.ack(later)
    third.close()
    assert _totals(later) == [float(100 + i) for i in range(15)], "acknowledged ones came back, or queued ones lost"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_small_in_flight_limit_delays_messages_and_loses_none(mosquitto_server, protocol):
    """MQTT 5 Receive Maximum (ours, 10) or, on 3.1.1, the broker's own limit: the broker holds back what does not
    fit (Mosquitto 2.0 honours our limit for the backlog's first window), and acknowledging lets it through."""
    if not mosquitto_server.managed:
        pytest.skip("needs the test broker's device accounts")
    client_id = f"cistern-inflight-{protocol}-{secrets.token_hex(3)}"
    # The limit of the session that was away decides how many queued messages the broker puts in flight.
    _source(mosquitto_server, client_id, protocol, receive_maximum=10).close()
    _publish(mosquitto_server, 100, 0)
    s = _source(mosquitto_server, client_id, protocol, receive_maximum=10)
    got: list = []
    sizes = []
    deadline = time.monotonic() + 15
    while len(got) < 100 and time.monotonic() < deadline:
        batch = s.poll(1000, 0.3)
        sizes.append(len(batch))
        s.ack(batch)
        got += batch
    s.close()
    if protocol == "5":
        assert sizes[0] <= 10, "the broker sent more than Receive Maximum before any acknowledgement"
    assert _totals(got) == [float(i) for i in range(100)]


def test_a_restarted_broker_is_reconnected_to_and_unacknowledged_messages_come_again(mosquitto_private):
    client_id = f"cistern-restart-{secrets.token_hex(3)}"
    s = _source(mosquitto_private, client_id, "5")
    _publish(mosquitto_private, 30, 0)
    got = _drain(s, 30)
    assert len(got) == 30
    mosquitto_private.stop()  # before any acknowledgement: the persisted session keeps them
    mosquitto_private.start()
    again = _drain(s, 30, timeout_s=20)  # back-off is 0.5-1.5 s, then the broker sends them again
    assert _totals(again) == [float(i) for i in range(30)]
    s.ack(got)  # acknowledgements from the old connection are dropped: their packet ids mean nothing now
    s.ack(again)
    _publish(mosquitto_private, 5, 100)
    later = _drain(s, 5)
    s.ack(later)
    s.close()
    assert _totals(later) == [float(100 + i) for i in range(5)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_over_tls_with_the_brokers_ca(mosquitto_server, protocol):
    if not mosquitto_server.managed or not mosquitto_server.tls_port:
        pytest.skip("needs the test broker's TLS listener")
    client_id = f"cistern-tls-{protocol}-{secrets.token_hex(3)}"
    s = _source(mosquitto_server, client_id, protocol, url=mosquitto_server.url(INGEST_USER, tls=True),
                ca_file=mosquitto_server.ca_file)
    _publish(mosquitto_server, 20, 0)
    got = _drain(s, 20)
    s.ack(got)
    s.close()
    assert _totals(got) == [float(i) for i in range(20)]


def test_tls_without_the_brokers_ca_says_the_certificate_is_not_trusted(mosquitto_server):
    if not mosquitto_server.managed or not mosquitto_server.tls_port:
        pytest.skip("needs the test broker's TLS listener")
    with pytest.raises(ConnectionRefusedError, match="certificate is not trusted.*CISTERN_MQTT_CA_FILE"):
        _source(mosquitto_server, "cistern-tls-untrusted", "5", url=mosquitto_server.url(INGEST_USER, tls=True))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_wrong_password_is_a_clear_error_not_a_retry_loop(mosquitto_server, protocol):
    if not mosquitto_server.managed:
        pytest.skip("needs the test broker's accounts")
    url = f"mqtt://{INGEST_USER}:wrong@{mosquitto_server.host}:{mosquitto_server.port}"
    t = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match="connection refused: (not authorized|bad user name or password)"):
        _source(mosquitto_server, "cistern-badpw", protocol, url=url)
    assert time.monotonic() - t < 5



@pytest.mark.parametrize("receiver", ["cistern", "paho"])
def test_a_backlog_larger_than_the_buffer_neither_delays_start_nor_loses_anything(mosquitto_server, receiver):
    """The broker sends a resumed session's backlog ahead of the SUBACK; the receiver stops reading at its buffer's
    limit until polled, so waiting for that SUBACK would hold start-up until it timed out."""
    if not mosquitto_server.managed:
        pytest.skip("needs the test broker's device accounts")
    client_id = f"cistern-backlog-{receiver}-{secrets.token_hex(3)}"
    _source(mosquitto_server, client_id, "5", receiver).close()
    _publish(mosquitto_server, 400, 0)
    t = time.monotonic()
    s = _source(mosquitto_server, client_id, "5", receiver, max_buffered=50)
    assert time.monotonic() - t < 3, "start-up waited for the SUBACK behind the backlog"
    got: list = []
    deadline = time.monotonic() + 20
    while len(got) < 400 and time.monotonic() < deadline:
        batch = s.poll(100, 0.3)
        s.ack(batch)
        got += batch
    s.close()
    assert _totals(got) == [float(i) for i in range(400)]

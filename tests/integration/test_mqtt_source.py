"""The MQTT source against the real broker, over MQTT 5 and over MQTT 3.1.1 (which several brokers in the field
still speak): what is not acknowledged comes again after a crash, and the session keeps queueing while the
ingester is away."""

from __future__ import annotations

import secrets
import time

import orjson
import paho.mqtt.client as mqtt
import pytest

from devices.topics import TopicLayout
from ingest.sources.mqtt import MqttEndpoint, MqttSource
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


def _source(broker, client_id: str, protocol: str) -> MqttSource:
    s = MqttSource(MqttEndpoint.parse(broker.url(INGEST_USER)), client_id, TopicLayout("water").subscriptions(),
                   protocol=protocol)
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


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unacknowledged_messages_come_again_and_the_session_queues_while_away(mosquitto_server, protocol):
    if not mosquitto_server.managed:
        pytest.skip("needs the test broker's device accounts")
    client_id = f"cistern-src-{protocol}-{secrets.token_hex(3)}"
    first = _source(mosquitto_server, client_id, protocol)
    _publish(mosquitto_server, 40, 0)
    got = _drain(first, 40)
    assert _totals(got) == [float(i) for i in range(40)]
    first.close()  # gone before acknowledging anything: as if it crashed before the write was durable

    second = _source(mosquitto_server, client_id, protocol)
    again = _drain(second, 40)
    assert _totals(again) == [float(i) for i in range(40)], "unacknowledged messages were not delivered again"
    second.ack(again)
    time.sleep(0.3)  # the acknowledgements reach the broker before the ingester goes away
    second.close()

    _publish(mosquitto_server, 15, 100)  # published while the ingester is away
    third = _source(mosquitto_server, client_id, protocol)
    later = _drain(third, 15)
    time.sleep(0.5)
    later += third.poll(1000, 0.2)
    third.ack(later)
    third.close()
    assert _totals(later) == [float(100 + i) for i in range(15)], "acknowledged ones came back, or queued ones lost"

"""Alert delivery against real receivers: an HTTP server on 127.0.0.1 that checks signatures, refuses, goes away and
comes back; a restart between raise and delivery; and the MQTT output with acknowledgements from dispatch."""

from __future__ import annotations

import logging
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.alerts import AlertEvent
from devices.registry import Registry
from ingest.dispatch import Dispatcher, DispatchSettings
from ingest.dispatch.outputs.mqtt import DispatchMqtt
from ingest.sources.mqtt import MqttEndpoint
from ingest.tools.servers import DISPATCH_USER, INGEST_USER, WebhookReceiver, free_port
from tests.helpers import WireDispatcher, write_registry

pytestmark = pytest.mark.integration
NS = 1_000_000_000
DAY = 86400 * NS
T0 = 1_795_334_400 * NS
SECRET = "hook-" + secrets.token_hex(8)
FAST = {"retry_first_s": 0.05, "retry_max_s": 0.2}


def Receiver(secret: str = SECRET, port: int | None = None, refuse_first: int = 0) -> WebhookReceiver:  # noqa: N802
    return WebhookReceiver(secret, port, refuse_first)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry.load(write_registry(tmp_path / "registry"))


def dispatcher(registry, state: Path, url: str, *, mqtt_publish=None, secret: str = SECRET, **settings) -> WireDispatcher:
    return WireDispatcher(Dispatcher(registry, state, DispatchSettings(**{**FAST, **settings}), alerts_file=None, webhook_url=url,
                      webhook_secret=secret, mqtt_publish=mqtt_publish))


def event(event: str = "raised", kind: str = "reverse_flow", meter: str = "M000001", at: int = T0) -> AlertEvent:
    return AlertEvent(f"{kind}/{meter}/{T0}", event, kind, "warning", "meter", meter, "d01", T0 - DAY, at,
                      f"Meter {meter}: {kind}", {}, {"volume_reversed_m3": 1.5})


def wait_for(cond, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_refused_attempts_are_retried_until_delivered_signed_once_and_in_order(registry, tmp_path):
    rx = Receiver(refuse_first=3).start()
    d = dispatcher(registry, tmp_path / "state", rx.url)
    out = d.emit([event(), event(kind="bypass", meter="M000002")])
    out += d.emit([event("cleared", at=T0 + DAY // 2)])  # within the case's first 18 h: no reminder before it
    assert d.drain(10) == 0
    assert d.counts == {"delivered": len(out), "pending": 0, "failed_attempts": 3}
    d.close()
    rx.stop()
    assert rx.bad_signatures == 0
    assert rx.attempts == 3 + len(out)
    assert sorted(rx.keys()) == sorted(f"{e['alert_id']}:{e['event']}:{e['sequence']}" for e in out)
    assert len(set(rx.keys())) == len(out)  # each event delivered once
    got = rx.events()
    rev = [e["event"] for e in got if e["kind"] == "reverse_flow"]
    assert rev == ["raised", "cleared"]  # one incident's events arrive in order
    assert [e for e in got if e["kind"] == "bypass"] == [e for e in out if e["kind"] == "bypass"]


def test_a_receiver_that_goes_away_and_comes_back_loses_nothing(registry, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rx = Receiver().start()
    d = dispatcher(registry, tmp_path / "state", rx.url)
    d.emit([event()])
    assert wait_for(lambda: len(rx.keys()) == 1)
    rx.stop()
    d.emit([event(kind="bypass", meter="M000002"), event("cleared", at=T0 + DAY)])
    assert wait_for(lambda: d.counts["failed_attempts"] >= 1)
    assert d.counts["pending"] == 2
    back = Receiver(port=rx.port).start()
    assert d.drain(10) == 0
    d.close()
    back.stop()
    assert sorted(rx.keys() + back.keys()) == sorted({*rx.keys(), *back.keys()})
    assert len(back.keys()) == 2
    assert SECRET not in caplog.text and "do-not-log" not in caplog.text  # secrets stay out of the log


def test_a_restart_between_raise_and_delivery_delivers_what_was_pending(registry, tmp_path):
    port = free_port()  # nothing listens yet: the receiver is down when the alert is raised
    state = tmp_path / "state"
    first = dispatcher(registry, state, f"http://127.0.0.1:{port}/hook")
    raised = first.emit([event()])
    assert first.drain(0.3) == 1  # bounded: replay reports what is left instead of waiting forever
    first.close()  # Cistern stops with the alert undelivered

    rx = Receiver(port=port).start()
    second = dispatcher(registry, state, f"http://127.0.0.1:{port}/hook")
    assert second.emit([event(at=T0 + 60 * NS)]) == []  # the restarted detector's raise is not a second incident
    assert second.drain(10) == 0
    second.close()
    rx.stop()
    assert rx.events() == raised
    assert rx.keys() == [f"{raised[0]['alert_id']}:raised:1"]


def test_cap_body_over_the_webhook(registry, tmp_path):
    rx = Receiver().start()
    d = dispatcher(registry, tmp_path / "state", rx.url, webhook_format="cap", cap_sender="cistern@utility.example")
    d.emit([event()])
    d.emit([event("cleared", at=T0 + DAY // 2)])  # before the case's first reminder
    assert d.drain(10) == 0
    d.close()
    rx.stop()
    ns = "{urn:oasis:names:tc:emergency:cap:1.2}"
    docs = [(h["Content-Type"], ET.fromstring(b)) for _, b, h in rx.got]
    assert [ct for ct, _ in docs] == ["application/cap+xml"] * 2
    assert [x.find(f"{ns}msgType").text for _, x in docs] == ["Alert", "Cancel"]
    first_id = docs[0][1].find(f"{ns}identifier").text
    assert docs[1][1].find(f"{ns}references").text.split(",")[:2] == ["cistern@utility.example", first_id]
    assert all(x.find(f"{ns}info/{ns}certainty") is not None for _, x in docs)


def test_mqtt_output_qos1_and_acknowledgement_from_dispatch(registry, tmp_path, mosquitto_server):
    out = DispatchMqtt(MqttEndpoint.parse(mosquitto_server.url(INGEST_USER)), f"cistern-test-{secrets.token_hex(3)}")
    assert out.start(10)
    d = dispatcher(registry, tmp_path / "state", "", mqtt_publish=out.publish)
    out.on_ack = d.handle_ack_message

    got: list[tuple[str, dict]] = []
    desk = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"desk-{secrets.token_hex(3)}")
    ep = MqttEndpoint.parse(mosquitto_server.url(DISPATCH_USER))
    desk.username_pw_set(ep.username, ep.password)
    subscribed = threading.Event()
    desk.on_subscribe = lambda *a: subscribed.set()
    desk.on_message = lambda c, u, m: got.append((m.topic, orjson.loads(m.payload)))
    desk.connect(ep.host, ep.port)
    desk.loop_start()
    try:
        desk.subscribe("water/alerts/+", qos=1)
        assert subscribed.wait(10)
        raised = d.emit([event()])[0]
        assert d.drain(10) == 0
        assert wait_for(lambda: len(got) == 1)
        assert got[0] == ("water/alerts/reverse_flow", raised)
        ack = orjson.dumps({"alert_id": raised["alert_id"], "by": "12345 desk", "note": "crew 7 sent"})
        desk.publish("water/alerts/ack", ack, qos=1).wait_for_publish(10)
        assert wait_for(lambda: (d.store.incident(raised["alert_id"]).ack_by or "") == "12345 desk")
        assert d.store.acks(raised["alert_id"])[0]["via"] == "mqtt"
    finally:
        desk.loop_stop()
        desk.disconnect()
        d.close()
        out.close()

"""Device accounts stay in their lane, tried on a real Mosquitto with the shipped ACL: every write line of
deploy/mosquitto.acl, filled in with ids and districts that collide with reserved topic levels (alerts, ack, $SYS,
+, #). A device may write only its own readings and events; nothing it writes reaches the alerts tree a dispatch
system reads, and whatever the ingester reads of it decodes as that device's own message or is refused."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.decode import Decoder
from ingest.tools import servers
from tests.helpers import write_registry

pytestmark = pytest.mark.integration

ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto.acl"
TIMEOUT_S = 10.0
ODD_USERS = ("alerts", "ack", "$SYS", "+", "#")  # accounts named like reserved topic levels and wildcards
DISTRICTS = ("d01", "alerts", "ack", "$SYS")
VICTIM = "M000002"  # another device whose topics a wildcard username would reach


class Client:
    """An MQTT v5 client: a refused publish comes back as a PUBACK reason code (3.1.1 would drop it silently)."""

    def __init__(self, broker: servers.MosquittoServer, user: str, subscribe: str | None = None):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, broker.passwords[user])
        self.acks: dict[int, int] = {}
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        ready, subscribed = threading.Event(), threading.Event()
        self.accepted = False

        def on_connect(c, u, f, rc, p) -> None:
            self.accepted = not rc.is_failure
            ready.set()

        self.c.on_connect = on_connect
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.c.on_message = lambda c, u, m: self.got.put((m.topic, m.payload))
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert ready.wait(TIMEOUT_S)
        if subscribe:
            assert self.accepted
            self.c.subscribe(subscribe, qos=1)
            assert subscribed.wait(TIMEOUT_S)

    def publish(self, topic: str, payload: bytes) -> bool:
        """True when the broker accepted it, False when it refused it (Not authorized, or the account itself: a
        line of the password file starting with # is a comment, so an account named '#' never logs in)."""
        if not self.accepted:
            return False
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + TIMEOUT_S
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.acks[info.mid] < 0x80

    def drain(self, sentinel: str) -> list[tuple[str, bytes]]:
        out = []
        while True:
            topic, payload = self.got.get(timeout=TIMEOUT_S)
            if topic == sentinel:
                return out
            out.append((topic, payload))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def broker():
    b = servers.start_mosquitto(accounts=ODD_USERS, from_env=False)
    yield b
    b.stop()
    servers.remove_folder(b.folder)


def write_lines() -> list[tuple[str | None, str]]:
    """(user, topic) of every write grant and deny of the shipped ACL; user None for a pattern (every account)."""
    out, user = [], None
    for line in ACL.read_text().splitlines():
        words = line.split()
        if not words or line.startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
        elif words[0] in ("pattern", "topic") and words[1] in ("write", "readwrite", "deny"):
            out.append((None if words[0] == "pattern" else user, words[2]))
    return out


def allowed(user: str, topic: str) -> bool:
    """What the ACL is meant to allow: every account its own four device channels under any district but 'alerts'
    (a service account's are named after it: no registered device is, `cistern accounts` sees to that); the ingester
    alert events; dispatch acknowledgements."""
    if user == servers.INGEST_USER and topic.startswith("water/alerts/"):
        return True
    if user == servers.DISPATCH_USER and topic == "water/alerts/ack":
        return True
    parts = topic.split("/")
    return (len(parts) == 5 and parts[0] == "water" and parts[2:] in (["meter", user, "reading"],
            ["meter", user, "event"], ["pumproom", user, "telemetry"], ["pumproom", user, "event"])
            and parts[1] != "alerts" and user not in ("+", "#"))


def attempts() -> list[tuple[str, str]]:
    """Every ACL write line for every account, the district level filled with each name; a wildcard username is
    tried on the topics its literal wildcard would reach (another device's)."""
    users = ("M000001", "P0001", servers.INGEST_USER, servers.DISPATCH_USER, *ODD_USERS)
    out = set()
    for (_, line), user, district in itertools.product(write_lines(), users, DISTRICTS):
        me = VICTIM if user in ("+", "#") else user
        topic = line.replace("%u", me).replace("+", district, 1).replace("#", "x")
        out.add((user, topic))
        out.add((user, topic.replace(f"/{me}/", f"/{VICTIM}/")))  # the same channel under another device's id
    for user in users:
        out |= {(user, "water/alerts/bypass"), (user, "water/alerts/ack"), (user, "$SYS/broker/forged"),
                (user, f"water/d01/meter/{VICTIM}/reading/extra")}
    return sorted(out)


def test_every_write_line_of_the_acl_keeps_devices_in_their_lane(broker, tmp_path):
    ingest = Client(broker, servers.INGEST_USER, subscribe="water/#")
    dispatch = Client(broker, servers.DISPATCH_USER, subscribe="water/alerts/#")
    tried = attempts()
    assert len(tried) > 150
    wrong: list[str] = []
    for user, group in itertools.groupby(tried, key=lambda x: x[0]):
        device = Client(broker, user)
        for _, topic in group:
            payload = orjson.dumps({"meter_id": user, "room_id": user, "ts": 1_795_334_400, "total_m3": 1.0,
                                    "type": "replacement", "probe": f"{user} -> {topic}"})
            if device.publish(topic, payload) != allowed(user, topic):
                wrong.append(f"{user!r} writing {topic!r}: {'refused' if allowed(user, topic) else 'allowed'}")
        device.close()
    assert not wrong, "\n".join(wrong)

    sentinel = "water/alerts/sentinel"
    ingest.publish(sentinel, b"end")  # the ingester may write here: both observers see it after everything else
    to_ingest, to_dispatch = ingest.drain(sentinel), dispatch.drain(sentinel)
    # dispatch systems hear only what the ingester and dispatch said: no device reached the alerts tree
    assert {orjson.loads(p)["probe"].split(" ")[0] for _, p in to_dispatch} <= {servers.INGEST_USER,
                                                                                 servers.DISPATCH_USER}
    # whatever reached the ingester from a device decodes as that device's own message, or is refused
    registry = Registry.load(write_registry(tmp_path / "registry"))
    decoder = Decoder(registry, TopicLayout("water"))
    from_devices = [(t, p) for t, p in to_ingest if not t.startswith("water/alerts/")]
    senders = {orjson.loads(p)["probe"].split(" ")[0] for _, p in from_devices}
    assert {"M000001", "P0001", "alerts", "ack", "$SYS"} <= senders
    for t, p in from_devices:
        sender = orjson.loads(p)["probe"].split(" ")[0]
        batch, _ = decoder.decode([RawMessage(t, p)])
        heard_as = {*registry.meters.ids[batch.meters.meter].tolist(), *registry.rooms.ids[batch.rooms.room].tolist(),
                    *(e.device_id for e in batch.events)}
        assert heard_as <= {sender}, f"{sender} wrote {t} and the ingester read it as {heard_as}"
    ingest.close()
    dispatch.close()


def test_a_device_account_reads_nothing(broker):
    spy = Client(broker, "M000001", subscribe="#")
    spy2 = Client(broker, "alerts", subscribe="water/alerts/#")
    ingest = Client(broker, servers.INGEST_USER, subscribe="water/#")
    Client(broker, "P0001").publish("water/d01/pumproom/P0001/telemetry", b"room")
    ingest.publish("water/alerts/bypass", b"alert")
    assert ingest.drain("water/alerts/bypass") == [("water/d01/pumproom/P0001/telemetry", b"room")]
    time.sleep(0.3)
    assert spy.got.empty() and spy2.got.empty()
    for c in (spy, spy2, ingest):
        c.close()

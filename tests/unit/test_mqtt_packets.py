"""The MQTT packet reader of Cistern's own receiver: PUBLISH packets split out of a byte stream however the socket
cut it, on both protocol versions, with packet ids kept for the acknowledgements."""

from __future__ import annotations

import struct

import pytest

from ingest.sources import mqtt_packets as mp


def publish(topic: str, payload: bytes, packet_id: int | None, level: int, props: bytes = b"") -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t
    if packet_id is not None:
        body += struct.pack("!H", packet_id)
    if level == mp.V5:
        body += mp.varint(len(props)) + props
    first = 0x32 if packet_id is not None else 0x30
    return bytes([first]) + mp.varint(len(body) + len(payload)) + body + payload


def split_all(stream: bytes, level: int, cut: int) -> tuple[list, list]:
    """Feed the stream `cut` bytes at a time, keeping the unread rest as the receiver does."""
    msgs: list = []
    controls: list = []
    rest = b""
    for i in range(0, len(stream), cut):
        data = rest + stream[i:i + cut]
        used, need = mp.split(data, level, 7 << 16, 123, {}, msgs, controls)
        assert need >= 1
        rest = data[used:]
    assert rest == b""
    return msgs, controls


@pytest.mark.parametrize("level", [mp.V311, mp.V5])
@pytest.mark.parametrize("cut", [1, 3, 7, 64, 100_000])
def test_publishes_come_out_whole_and_in_order_however_the_stream_is_cut(level, cut):
    big = b"x" * 300  # a remaining length of two bytes
    props = b"\x0b\x05" + b"\x26" + b"\x00\x01k\x00\x01v"  # a subscription id and a user property
    stream = (publish("water/d01/meter/M1/reading", b'{"a":1}', 1, level)
              + b"\xd0\x00"  # PINGRESP between messages
              + publish("water/d01/meter/M2/reading", big, 65535, level, props if level == mp.V5 else b"")
              + publish("water/d02/meter/M3/reading", b"", None, level))
    msgs, controls = split_all(stream, level, cut)
    assert [(m.topic, m.payload, m.token) for m in msgs] == [
        ("water/d01/meter/M1/reading", b'{"a":1}', (7 << 16) | 1),
        ("water/d01/meter/M2/reading", big, (7 << 16) | 65535),
        ("water/d02/meter/M3/reading", b"", None)]  # QoS 0: nothing to acknowledge
    assert controls == [(mp.PINGRESP, b"")]


def test_a_large_packet_says_how_many_bytes_it_still_needs():
    packet = publish("t", b"y" * 100_000, 5, mp.V311)
    used, need = mp.split(packet[:1000], mp.V311, 0, 0, {}, [], [])
    assert used == 0 and need == len(packet)


def test_qos_2_on_a_qos_1_subscription_is_a_protocol_error():
    packet = bytearray(publish("t", b"p", 1, mp.V311))
    packet[0] = 0x34
    with pytest.raises(mp.ProtocolError):
        mp.split(bytes(packet), mp.V311, 0, 0, {}, [], [])


def test_pubacks_for_a_batch_are_one_buffer_in_order():
    assert mp.pubacks([1, 258, 65535]) == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"


def test_connect_asks_for_a_persistent_session_on_both_protocols():
    v311 = mp.connect("ingest", mp.V311, 30, "user", "pw")
    assert v311[0] == 0x10 and v311[2:9] == b"\x00\x04MQTT\x04" and v311[9] == 0xC0  # clean session off
    v5 = mp.connect("ingest", mp.V5, 30, None, None, session_expiry_s=3600, receive_maximum=100)
    assert v5[8] == 5 and v5[9] == 0x00  # clean start off, no credentials
    props, _ = mp.properties(v5, 12)
    assert props == {0x11: 3600, 0x21: 100}


def test_connack_and_suback_codes_and_properties():
    ack = mp.parse_connack(b"\x01\x00" + b"\x03\x13\x00\x3c", mp.V5)
    assert ack.session_present and ack.codes == [0] and ack.props[mp.SERVER_KEEP_ALIVE] == 60
    refused = mp.parse_connack(b"\x00\x86\x00", mp.V5)
    assert refused.reason(mp.V5, 0x86).startswith("bad user name or password")
    assert mp.parse_connack(b"\x00\x05", mp.V311).reason(mp.V311, 5) == "not authorized (5)"
    sub = mp.parse_suback(b"\x00\x01\x00\x01\x87", mp.V5)
    assert sub.packet_id == 1 and sub.codes == [0x01, 0x87]
    assert mp.parse_suback(b"\x00\x01\x01\x80", mp.V311).codes == [0x01, 0x80]

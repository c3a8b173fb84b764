"""The MQTT packets a QoS 1 subscriber needs, for MQTT 3.1.1 and 5: CONNECT, SUBSCRIBE, PUBACK, PINGREQ and
DISCONNECT out; CONNACK, SUBACK, PUBLISH, PINGRESP and DISCONNECT in. No publishing, no QoS 2, no AUTH exchange."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from devices.messages import RawMessage

V311, V5 = 4, 5  # protocol levels
CONNACK, PUBLISH, SUBACK, PINGRESP, DISCONNECT = 2, 3, 9, 13, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # MQTT 5: reason 0 (normal) may be left out

# Refusals that retrying cannot fix: the service stops with the reason instead of reconnecting forever.
FATAL_CONNACK_311 = {2: "client identifier rejected", 4: "bad user name or password", 5: "not authorized"}
OTHER_CONNACK_311 = {1: "unacceptable protocol version", 3: "server unavailable"}
FATAL_V5 = {0x84: "unsupported protocol version", 0x85: "client identifier not valid",
            0x86: "bad user name or password", 0x87: "not authorized", 0x8A: "banned",
            0x8C: "bad authentication method"}
REASONS_V5 = {**FATAL_V5, 0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
              0x83: "implementation specific error", 0x88: "server unavailable", 0x89: "server busy",
              0x8B: "server shutting down", 0x8D: "keep alive timeout", 0x8E: "session taken over",
              0x8F: "topic filter invalid", 0x93: "receive maximum exceeded", 0x95: "packet too large",
              0x97: "quota exceeded", 0x98: "administrative action", 0x9C: "use another server",
              0x9D: "server moved", 0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded",
              0xA2: "wildcard subscriptions not supported"}

# MQTT 5 property identifiers by how their value is encoded (section 2.2.2.2), to read or skip them.
_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_TWO = {0x13, 0x21, 0x22, 0x23}
_FOUR = {0x02, 0x11, 0x18, 0x27}
_VARINT = {0x0B}
_STRING = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BINARY = {0x09, 0x16}
_PAIR = {0x26}
SERVER_KEEP_ALIVE, REASON_STRING, ASSIGNED_CLIENT_ID = 0x13, 0x1F, 0x12


class ProtocolError(Exception):
    """The broker sent something this subscriber cannot read: the connection is dropped and made again."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); IndexError when the buffer ends inside it."""
    value = shift = 0
    for i in range(4):
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolError("malformed variable byte integer")


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 0xFFFF:
        raise ValueError("string too long for MQTT")
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect(client_id: str, level: int, keepalive_s: int, username: str | None, password: str | None, *,
            session_expiry_s: int = 0, receive_maximum: int = 0) -> bytes:
    """A CONNECT for a persistent session: clean session (3.1.1) or clean start (5) off."""
    flags = 0x80 if username is not None else 0
    flags |= 0x40 if password is not None else 0
    body = _str("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive_s)
    if level == V5:
        props = b"\x11" + struct.pack("!I", session_expiry_s)
        if receive_maximum:
            props += b"\x21" + struct.pack("!H", receive_maximum)
        body += varint(len(props)) + props
    body += _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return _packet(0x10, body)


def subscribe(packet_id: int, topics: list[str], level: int, qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if level == V5 else b"")
    for t in topics:
        body += _str(t) + bytes([qos])
    return _packet(0x82, body)


def pubacks(packet_ids: list[int]) -> bytes:
    """PUBACKs for many messages in one buffer: 0x40 0x02 and the id, four bytes each."""
    return struct.pack(f"!{len(packet_ids)}I", *[0x40020000 | i for i in packet_ids])


def properties(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    """An MQTT 5 property block at `pos`: ({identifier: value}, position after it). User properties are skipped."""
    length, pos = read_varint(buf, pos)
    end = pos + length
    out: dict[int, object] = {}
    while pos < end:
        pid = buf[pos]
        pos += 1
        if pid in _BYTE:
            out[pid], pos = buf[pos], pos + 1
        elif pid in _TWO:
            out[pid], pos = struct.unpack_from("!H", buf, pos)[0], pos + 2
        elif pid in _FOUR:
            out[pid], pos = struct.unpack_from("!I", buf, pos)[0], pos + 4
        elif pid in _VARINT:
            out[pid], pos = read_varint(buf, pos)
        elif pid in _STRING or pid in _BINARY:
            n = struct.unpack_from("!H", buf, pos)[0]
            raw = bytes(buf[pos + 2:pos + 2 + n])
            out[pid] = raw.decode("utf-8", "replace") if pid in _STRING else raw
            pos += 2 + n
        elif pid in _PAIR:
            for _ in range(2):
                pos += 2 + struct.unpack_from("!H", buf, pos)[0]
        else:
            raise ProtocolError(f"unknown MQTT 5 property 0x{pid:02x}")
    if pos != end:
        raise ProtocolError("malformed property block")
    return out, end


@dataclass
class Ack:
    """A CONNACK, SUBACK or server DISCONNECT: its codes and (MQTT 5) properties."""

    codes: list[int]
    session_present: bool = False
    packet_id: int = 0
    props: dict[int, object] = field(default_factory=dict)

    def reason(self, level: int, code: int) -> str:
        if level == V5:
            text = REASONS_V5.get(code, "refused")
            extra = self.props.get(REASON_STRING)
            return f"{text} (0x{code:02x}{f': {extra}' if extra else ''})"
        return f"{FATAL_CONNACK_311.get(code) or OTHER_CONNACK_311.get(code, 'refused')} ({code})"


def parse_connack(body: bytes, level: int) -> Ack:
    if len(body) < 2:
        raise ProtocolError("short CONNACK")
    ack = Ack([body[1]], session_present=bool(body[0] & 1))
    if level == V5 and len(body) > 2:
        ack.props, _ = properties(body, 2)
    return ack


def parse_suback(body: bytes, level: int) -> Ack:
    packet_id = struct.unpack_from("!H", body, 0)[0]
    pos, props = 2, {}
    if level == V5:
        props, pos = properties(body, 2)
    return Ack(list(body[pos:]), packet_id=packet_id, props=props)


def parse_disconnect(body: bytes) -> Ack:
    """A server's DISCONNECT (MQTT 5 only): its reason code (0 when left out) and properties."""
    ack = Ack([body[0] if body else 0])
    if len(body) > 1:
        ack.props, _ = properties(body, 1)
    return ack


def split(data: bytes, level: int, token_base: int, received_ns: int, topics: dict[bytes, str],
          messages: list[RawMessage], controls: list[tuple[int, bytes]]) -> tuple[int, int]:
    """Reads every whole packet in `data`: PUBLISHes become RawMessages (token = token_base | packet id, None for
    QoS 0), other packets go to `controls` as (type, body). Returns (bytes consumed, bytes the next packet needs
    at least). This is the hot loop of the MQTT source: one pass, no per-packet function calls."""
    pos, n = 0, len(data)
    append = messages.append
    v5 = level == V5
    while pos + 1 < n:
        first = data[pos]
        b = data[pos + 1]
        if b < 0x80:
            size, start = b, pos + 2
        else:
            try:
                size, start = read_varint(data, pos + 1)
            except IndexError:
                return pos, n - pos + 1
        end = start + size
        if end > n:
            return pos, end - pos
        if first >> 4 == PUBLISH:
            tlen = (data[start] << 8) | data[start + 1]
            q = start + 2 + tlen
            tb = data[start + 2:q]
            topic = topics.get(tb)
            if topic is None:
                topic = _topic(tb, topics)
            qos = (first >> 1) & 3
            if qos:
                if qos != 1:
                    raise ProtocolError(f"a QoS {qos} PUBLISH on a QoS 1 subscription")
                token = token_base | (data[q] << 8) | data[q + 1]
                q += 2
            else:
                token = None
            if v5:  # properties (a subscription id, user properties…): skipped
                plen = data[q]
                if plen < 0x80:
                    q += 1 + plen
                else:
                    plen, q = read_varint(data, q)
                    q += plen
            if q > end:
                raise ProtocolError("PUBLISH shorter than its headers")
            append(RawMessage(topic, data[q:end], token, received_ns))
        else:
            controls.append((first >> 4, data[start:end]))
        pos = end
    return pos, 2


def _topic(raw: bytes, topics: dict[bytes, str]) -> str:
    if len(topics) > 500_000:  # topic names come from devices: a misbehaving fleet must not grow this forever
        topics.clear()
    # MQTT topic names are UTF-8 (the broker checks); surrogateescape keeps any stray byte visible, not fatal.
    topics[raw] = t = raw.decode("utf-8", "surrogateescape")
    return t

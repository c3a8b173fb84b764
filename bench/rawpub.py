"""A load generator that stays out of the measurement: MQTT 3.1.1 over a raw socket, PUBLISH packets encoded
ahead of time and streamed at QoS 1, PUBACKs counted by a reader thread (a paho publisher tops out near 6,000
messages/s here, which would make any drain measured behind it publisher-bound)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence

from ingest.sources.mqtt_packets import varint as _varint  # (the subscriber's own encoder)

CHUNK = 2000  # packets encoded and sent together
WINDOW = 30_000  # unacknowledged packets at most; packet ids cycle through 1..65535, so they never collide


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, username: str, password: str, keepalive_s: int = 60) -> bytes:
    body = _str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive_s)  # user, password, clean session
    body += _str(client_id) + _str(username) + _str(password)
    return b"\x10" + _varint(len(body)) + body


def publish_packets(messages: Sequence[tuple[str, bytes]], first_id: int) -> bytes:
    """QoS 1 PUBLISH packets for `messages`, packet ids from `first_id` (wrapping after 65535, skipping 0)."""
    out = []
    pid = first_id
    for topic, payload in messages:
        t = topic.encode()
        head = struct.pack("!H", len(t)) + t + struct.pack("!H", pid)
        out.append(b"\x32" + _varint(len(head) + len(payload)) + head + payload)
        pid = pid % 65535 + 1
    return b"".join(out)


class RawPublisher:
    """Publishes a backlog at QoS 1 on one connection and returns once the broker has acknowledged all of it."""

    def __init__(self, host: str, port: int, username: str, password: str):
        self.host, self.port, self.username, self.password = host, port, username, password

    def publish(self, messages: Sequence[tuple[str, bytes]] | Iterator[Sequence[tuple[str, bytes]]],
                total: int | None = None) -> float:
        """Publishes `messages` (a list, or an iterator of lists for backlogs too large to hold encoded);
        returns the seconds from the first packet to the last PUBACK."""
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"bench-pub-{time.monotonic_ns()}", self.username, self.password))
        connack = _recv_exact(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionRefusedError(f"broker refused the bench publisher (CONNACK {connack.hex()})")
        acked = [0]
        cond = threading.Condition()
        reader = threading.Thread(target=_count_pubacks, args=(sock, acked, cond), daemon=True)
        reader.start()
        groups = [messages] if isinstance(messages, Sequence) else messages
        sent = 0
        t0 = time.perf_counter()
        for group in groups:
            for i in range(0, len(group), CHUNK):
                part = group[i:i + CHUNK]
                data = publish_packets(part, sent % 65535 + 1)
                floor = sent + len(part) - WINDOW  # acks needed before these may go
                with cond:
                    cond.wait_for(lambda f=floor: acked[0] >= f, timeout=60)
                sock.sendall(data)
                sent += len(part)
        with cond:
            if not cond.wait_for(lambda n=sent: acked[0] >= n, timeout=120):
                raise TimeoutError(f"broker acknowledged {acked[0]} of {sent} messages")
        seconds = time.perf_counter() - t0
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        sock.close()
        reader.join(5)
        if total is not None and sent != total:
            raise RuntimeError(f"published {sent} messages, expected {total}")
        return seconds


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def _count_pubacks(sock: socket.socket, acked: list[int], cond: threading.Condition) -> None:
    """PUBACKs are 4 bytes each (0x40 0x02 id id); anything else means the broker is unhappy with us."""
    pending = b""
    sock.settimeout(None)
    while True:
        try:
            data = sock.recv(1 << 20)
        except OSError:
            return
        if not data:
            return
        pending += data
        n = len(pending) // 4
        if pending[0] != 0x40:
            raise ConnectionError(f"unexpected packet from the broker: {pending[:8].hex()}")
        pending = pending[4 * n:]
        with cond:
            acked[0] += n
            cond.notify_all()

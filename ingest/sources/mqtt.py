"""The MQTT broker as a source: QoS 1 on a persistent session, each message acknowledged only once the pipeline
says its readings are durable. MQTT 5 by default; MQTT 3.1.1 for brokers that speak only that.

The receiver is Cistern's own (docs/MQTT.md): one network thread reads the socket a megabyte at a time and splits
PUBLISH packets in one loop; acknowledgements go out as one buffer per batch. paho-mqtt remains as a fallback
(CISTERN_MQTT_RECEIVER=paho)."""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator

from devices.messages import RawMessage, Reject
from ingest.sources import mqtt_packets as mp

log = logging.getLogger("cistern.source")

Protocol = Literal["5", "3.1.1"]
Receiver = Literal["cistern", "paho"]


class MqttSettings(BaseModel):
    """The broker settings (CISTERN_MQTT_*)."""

    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host:port or mqtts://… (TLS)")
    mqtt_topic_prefix: str = Field("water", description="first topic level")
    mqtt_client_id: str = Field("cistern-ingest", min_length=1, max_length=128,
                                description="persistent-session client id")
    mqtt_protocol: Protocol = Field("5", description="MQTT protocol version: 5, or 3.1.1 for brokers that speak "
                                                     "only that (the session is kept with clean session off)")
    mqtt_shared_group: str = Field("", description="subscribe as $share/<group>/… to spread load over several "
                                                   "ingesters")
    mqtt_ca_file: str = Field("", description="CA certificate for mqtts:// (system CAs when empty)")
    mqtt_keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive, seconds")
    mqtt_receiver: Receiver = Field("cistern", description="how messages are received: cistern (its own QoS 1 "
                                                           "subscriber, fast) or paho (the paho-mqtt library, "
                                                           "a fallback)")

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError("must look like mqtt://[user:pass@]host:port or mqtts://…")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return v

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not v or any(c in v for c in "+#") or v.startswith("$"):
            raise ValueError("must be a plain topic level with no wildcards")
        return v

    @property
    def mqtt(self) -> MqttEndpoint:
        return MqttEndpoint.parse(self.mqtt_url)


class MqttEndpoint(BaseModel):
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        u = urlsplit(url)
        tls = u.scheme == "mqtts"
        return cls(host=u.hostname or "127.0.0.1", port=u.port or (8883 if tls else 1883), tls=tls,
                   username=unquote(u.username) if u.username else None,
                   password=unquote(u.password) if u.password else None)


class _Refused(Exception):
    """The broker refused us for a reason retrying cannot fix (credentials, ACL, client id, TLS trust)."""


def _backoff(first_s: float = 1.0, max_s: float = 30.0) -> Iterator[float]:
    # Jittered so that a fleet of ingesters does not reconnect in lock step.
    d = first_s
    while True:
        yield random.uniform(d / 2, d * 1.5)
        d = min(d * 2, max_s)


class MqttSource:
    """Subscribes with QoS 1 on a persistent session and acks a message only when told its readings are durable.

    The session outlives the connection: the broker keeps our subscriptions and queues messages while the ingester
    is down. Unacknowledged messages stay in flight, so the broker's in-flight limit (Receive Maximum on MQTT 5,
    max_inflight_messages on 3.1.1) bounds what this side holds; `max_buffered` bounds it too, by not reading
    the socket while that many messages wait for poll().
    """

    def __init__(self, endpoint: MqttEndpoint, client_id: str, topics: list[str], *, shared_group: str = "",
                 ca_file: str = "", keepalive_s: int = 30, session_expiry_s: int = 7 * 24 * 3600,
                 receive_maximum: int = 65535, max_buffered: int = 200_000, protocol: Protocol = "5",
                 read_bytes: int = 1 << 20, connect_timeout_s: float = 10.0, quiet_s: float = 0.01):
        self.endpoint = endpoint
        self.client_id = client_id
        self.topics = [f"$share/{shared_group}/{t}" for t in topics] if shared_group else list(topics)
        self.level = mp.V5 if protocol == "5" else mp.V311
        self.ca_file = ca_file
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.max_buffered = max_buffered
        self.read_bytes = read_bytes
        self.connect_timeout_s = connect_timeout_s
        self.quiet_s = quiet_s
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.fatal_error: str | None = None
        self.received = 0
        self._cond = threading.Condition()
        self._msgs: list[RawMessage] = []
        self._reads = 0  # socket reads that brought messages; poll() watches it to see the stream pause
        self._out: list[bytes] = []  # packets for the network thread to send (it alone touches the socket)
        self._token_base = 0  # connection number << 16: a packet id means something only on its connection
        self._closing = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None

    # --- consumer side (pipeline thread) ------------------------------------------------------------------
    def start(self, wait_s: float = 10.0) -> None:
        """Connect and subscribe; raises ConnectionRefusedError when the broker refuses our credentials or ACL."""
        self._thread = threading.Thread(target=self._run, name="cistern-mqtt", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not self.fatal_error:
            if self.connected.wait(0.05):
                return
        e = self.endpoint
        if self.fatal_error:
            self.close()
            raise ConnectionRefusedError(f"MQTT broker {e.host}:{e.port}: {self.fatal_error}")
        # Not reachable yet: the network thread keeps trying with back-off; the service waits rather than dying.
        log.warning("MQTT broker %s:%d not reachable yet (%s); will keep trying", e.host, e.port,
                    self.last_error or "no answer")

    def poll(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        """Up to max_messages. Waits at most timeout_s for the first one; then the batch closes when full, when
        timeout_s has passed, or as soon as the stream pauses (nothing read for quiet_s): a drained backlog's last
        batch need not wait out the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            msgs = self._msgs
            while not msgs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
                msgs = self._msgs
            while len(msgs) < max_messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reads = self._reads
                self._cond.wait(min(remaining, self.quiet_s))
                msgs = self._msgs
                if self._reads == reads:
                    break
            if len(msgs) <= max_messages:
                out, self._msgs = msgs, []
            else:
                out, self._msgs = msgs[:max_messages], msgs[max_messages:]
            was_full = len(msgs) >= self.max_buffered
        if was_full:
            self._wake()  # the network thread stopped reading at max_buffered: it may go on
        return out

    def ack(self, messages: list[RawMessage]) -> None:
        """One PUBACK buffer for the whole batch, in the order the messages came. A message from an earlier
        connection is left out: the broker delivers it again, and its old packet id may now name another one."""
        base = self._token_base
        ids = [t & 0xFFFF for t in (m.token for m in messages) if t is not None and t >> 16 << 16 == base]
        if not ids:
            return
        with self._cond:
            self._out.append(mp.pubacks(ids))
        self._wake()

    def take_rejects(self) -> list[Reject]:
        return []

    @property
    def exhausted(self) -> bool:
        return False

    @property
    def backlog(self) -> int:
        return len(self._msgs)

    def close(self) -> None:
        """Send the acknowledgements still queued, DISCONNECT, and stop the network thread."""
        self._closing.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        for s in (self._wake_r, self._wake_w):
            s.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass  # already awake (the pipe is full) or closed

    # --- network thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        e = self.endpoint
        delays = _backoff()
        while not self._closing.is_set():
            sock = None
            try:
                sock = self._open()
                delays = _backoff()
                self._serve(sock)
            except _Refused as err:
                self.fatal_error = str(err)
                log.error("MQTT %s", err)
                return
            except (OSError, mp.ProtocolError, IndexError, ValueError) as err:
                self.last_error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            finally:
                self.connected.clear()
                if sock is not None:
                    sock.close()
            if self._closing.is_set():
                return
            delay = next(delays)
            log.warning("MQTT disconnected from %s:%d (%s); reconnecting in %.1f s", e.host, e.port,
                        self.last_error, delay)
            self._closing.wait(delay)

    def _open(self) -> socket.socket:
        """TCP (and TLS), CONNECT, CONNACK. Raises _Refused for refusals that retrying cannot fix."""
        e = self.endpoint
        sock = socket.create_connection((e.host, e.port), timeout=self.connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if e.tls:
                ctx = ssl.create_default_context(cafile=self.ca_file or None)
                try:
                    sock = ctx.wrap_socket(sock, server_hostname=e.host)
                except ssl.SSLCertVerificationError as err:
                    raise _Refused(f"TLS: the broker's certificate is not trusted ({err.verify_message}); "
                                   "check CISTERN_MQTT_CA_FILE") from None
            sock.sendall(mp.connect(self.client_id, self.level, self.keepalive_s, e.username, e.password,
                                    session_expiry_s=self.session_expiry_s,
                                    receive_maximum=self.receive_maximum))
            kind, body = _read_packet(sock)
            if kind != mp.CONNACK:
                raise mp.ProtocolError(f"expected CONNACK, got packet type {kind}")
            ack = mp.parse_connack(body, self.level)
            code = ack.codes[0]
            if code:
                why = ack.reason(self.level, code)
                self.last_error = f"connection refused: {why}"
                if code in (mp.FATAL_V5 if self.level == mp.V5 else mp.FATAL_CONNACK_311):
                    raise _Refused(f"connection refused: {why}")
                raise ConnectionRefusedError(why)
        except BaseException:
            sock.close()
            raise
        keepalive = ack.props.get(mp.SERVER_KEEP_ALIVE)  # MQTT 5: the broker's value overrides ours
        self._keepalive = keepalive if isinstance(keepalive, int) else self.keepalive_s
        self._token_base += 1 << 16
        log.info("MQTT connected to %s:%d (session present: %s)", e.host, e.port, ack.session_present)
        if ack.session_present:
            # The broker kept our subscriptions and is already sending the backlog, ahead of the SUBACK to our
            # subscribing again; with a backlog larger than max_buffered that SUBACK is read only once the
            # pipeline polls. So a resumed session counts as subscribed now (a refusal still stops us later).
            self.connected.set()
        return sock

    def _serve(self, sock: socket.socket) -> None:
        """Subscribe, then read and write until the connection ends or close() is called."""
        sock.settimeout(self.connect_timeout_s)  # for sends; reads only follow select()
        sock.sendall(mp.subscribe(1, self.topics, self.level))
        last_sent = last_read = time.monotonic()
        ping_at = self._keepalive * 0.75 if self._keepalive else float("inf")  # 0: no keepalive at all
        dead_after = self._keepalive * 1.5 + 5 if self._keepalive else float("inf")
        chunks: list[bytes] = []  # a partial packet, and what has come of it so far
        have = need = 0
        wake = self._wake_r
        while True:
            paused = len(self._msgs) >= self.max_buffered
            if self._closing.is_set():
                self._flush(sock)
                sock.sendall(mp.DISCONNECT_PACKET)
                return
            now = time.monotonic()
            if now - last_sent >= ping_at:
                sock.sendall(mp.PINGREQ_PACKET)
                last_sent = now
            if paused:
                last_read = now  # not reading on purpose: silence means nothing now
            elif now - last_read > dead_after:
                raise TimeoutError(f"nothing from the broker for {now - last_read:.0f} s")
            pending = not paused and isinstance(sock, ssl.SSLSocket) and sock.pending()
            timeout = 0 if pending else max(0.0, min(1.0, last_sent + ping_at - now))
            ready, _, _ = select.select([wake] if paused else [sock, wake], [], [], timeout)
            if wake in ready:
                try:
                    while wake.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            if self._out:
                self._flush(sock)
                last_sent = time.monotonic()
            if not (pending or sock in ready):
                continue
            data = sock.recv(self.read_bytes)
            if not data:
                raise ConnectionError("the broker closed the connection")
            last_read = time.monotonic()
            if chunks:
                chunks.append(data)
                have += len(data)
                if have < need:
                    continue
                data = b"".join(chunks)
                chunks = []
            used, need = self._take(data)
            if used < len(data):
                chunks, have = [data[used:]], len(data) - used

    def _take(self, data: bytes) -> tuple[int, int]:
        """Split what was read into messages (handed to poll) and control packets (handled here)."""
        msgs: list[RawMessage] = []
        controls: list[tuple[int, bytes]] = []
        used, need = mp.split(data, self.level, self._token_base, time.time_ns(), _TOPICS, msgs, controls)
        if msgs:
            with self._cond:
                self._msgs += msgs
                self._reads += 1
                self._cond.notify()
            self.received += len(msgs)
        for kind, body in controls:
            self._control(kind, body)
        return used, need

    def _control(self, kind: int, body: bytes) -> None:
        if kind == mp.SUBACK:
            ack = mp.parse_suback(body, self.level)
            bad = [ack.reason(self.level, c) if self.level == mp.V5 else f"0x{c:02x}" for c in ack.codes
                   if c >= 0x80]
            if bad:
                raise _Refused(f"subscription refused: {', '.join(bad)} (check the broker ACL)")
            log.info("MQTT subscribed: %s (QoS 1)", ", ".join(self.topics))
            self.connected.set()
        elif kind == mp.DISCONNECT:
            ack = mp.parse_disconnect(body)
            raise ConnectionError(f"the broker disconnected us: {ack.reason(self.level, ack.codes[0])}")
        elif kind != mp.PINGRESP:
            raise mp.ProtocolError(f"unexpected packet type {kind} from the broker")

    def _flush(self, sock: socket.socket) -> None:
        with self._cond:
            out, self._out = self._out, []
        if out:
            sock.sendall(b"".join(out))


_TOPICS: dict[bytes, str] = {}  # topic bytes → str, shared by every connection (topics repeat: one per device)


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One whole packet, blocking (the CONNACK, before the network loop starts)."""
    head = _recv_exact(sock, 2)
    size, shift, b = head[1] & 0x7F, 7, head[1]
    while b & 0x80:
        b = _recv_exact(sock, 1)[0]
        size |= (b & 0x7F) << shift
        shift += 7
        if shift > 21:
            raise mp.ProtocolError("malformed remaining length")
    return head[0] >> 4, _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        buf += chunk
    return buf


SOURCE_KINDS = ("cistern", "paho")


def open_mqtt_source(receiver: Receiver, endpoint: MqttEndpoint, client_id: str, topics: list[str], **kw):
    """The MQTT source for CISTERN_MQTT_RECEIVER: Cistern's own (default) or paho-mqtt's (loaded only then)."""
    if receiver == "paho":
        from ingest.sources.mqtt_paho import PahoMqttSource

        own = ("read_bytes", "quiet_s", "connect_timeout_s")  # settings of Cistern's receiver only
        return PahoMqttSource(endpoint, client_id, topics, **{k: v for k, v in kw.items() if k not in own})
    return MqttSource(endpoint, client_id, topics, **kw)

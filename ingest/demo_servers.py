"""Servers for `cistern demo`: Mosquitto and InfluxDB 1.x from local binaries, else embedded fallbacks
(a small in-process MQTT 3.1.1/5 broker and a line-protocol file sink). Demo only: none of this is production."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INGEST_USER = "cistern-ingest"
SIM_USER = "cistern-sim"  # the simulator publishes for every device, so the demo gives it one account for all


class ServerError(RuntimeError):
    """A server could not be started; the demo falls back or says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()),
                                      None)


def _wait(ready, what: str, proc: subprocess.Popen, log: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ServerError(f"{what} exited with status {proc.returncode}: {tail.strip()}")
        if ready():
            return
        time.sleep(0.05)
    raise ServerError(f"{what} not ready after {timeout_s:.0f} s")


class _Process:
    """A local server process in a temporary folder, stopped (and the folder removed) by stop()."""

    name = "server"

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"cistern-demo-{self.name}-"))
        self.proc: subprocess.Popen | None = None

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.folder, start_new_session=True)
        return self.proc

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Mosquitto with the project's configuration


def render_mosquitto_conf(source: str, *, port: int, data_dir: str, password_file: str, acl_file: str,
                          log_file: str | None = None, tls_port: int | None = None, cafile: str = "",
                          certfile: str = "", keyfile: str = "", run_as_root: bool | None = None) -> str:
    """The project's mosquitto.conf with ports and paths moved to a folder of ours; every other setting kept.

    The file's first listener is plain MQTT, its second TLS. Without `tls_port` the TLS listener and its
    certificate settings are left out (the demo never leaves 127.0.0.1)."""
    paths = {"persistence_location": f"{data_dir.rstrip('/')}/", "password_file": password_file,
             "acl_file": acl_file, "cafile": cafile, "certfile": certfile, "keyfile": keyfile}
    out: list[str] = []
    listeners = 0
    for line in source.splitlines():
        words = line.split()
        key = words[0] if words and not line.startswith("#") else ""
        if key == "listener":
            listeners += 1
            if listeners > 1 and tls_port is None:
                continue
            line = f"listener {port if listeners == 1 else tls_port} 127.0.0.1"
        elif key in ("cafile", "certfile", "keyfile", "tls_version", "require_certificate") and tls_port is None:
            continue
        elif key in paths:
            line = f"{key} {paths[key]}"
        elif key in ("log_dest", "pid_file", "user", "include_dir"):
            continue
        out.append(line)
    if tls_port is not None and listeners != 2:
        raise ValueError(f"expected two listeners (plain, TLS) in mosquitto.conf, found {listeners}")
    head = ["# generated from the project's mosquitto.conf"]
    if os.geteuid() == 0 if run_as_root is None else run_as_root:
        head.append("user root")  # otherwise Mosquitto drops to 'mosquitto', who cannot write our temp folder
    head.append(f"log_dest file {log_file}" if log_file else "log_dest stderr")
    return "\n".join(head + out) + "\n"


class Mosquitto(_Process):
    name = "mosquitto"

    def __init__(self) -> None:
        binary, passwd_tool = _which("mosquitto"), _which("mosquitto_passwd")
        conf, acl = ROOT / "mosquitto.conf", ROOT / "deploy" / "mosquitto.acl"
        if not (binary and passwd_tool):
            raise ServerError("mosquitto is not installed (apt-get install mosquitto)")
        if not (conf.is_file() and acl.is_file()):
            raise ServerError(f"the project's mosquitto.conf and deploy/mosquitto.acl are not beside {ROOT}")
        super().__init__()
        self.port = free_port()
        self.passwords = {u: secrets.token_hex(8) for u in (INGEST_USER, SIM_USER)}
        try:
            (self.folder / "data").mkdir()
            passwd = self.folder / "passwd"
            passwd.touch(mode=0o600)
            for user, pw in self.passwords.items():
                subprocess.run([passwd_tool, "-b", str(passwd), user, pw], check=True, capture_output=True)
            (self.folder / "acl").write_text(acl.read_text() + f"\n# cistern demo: the simulator speaks for every "
                                             f"device\nuser {SIM_USER}\ntopic write water/+/meter/#\n"
                                             f"topic write water/+/pumproom/#\n")
            f = self.folder
            (f / "mosquitto.conf").write_text(render_mosquitto_conf(
                conf.read_text(), port=self.port, data_dir=str(f / "data"), password_file=str(f / "passwd"),
                acl_file=str(f / "acl"), log_file=str(f / "mosquitto.log")))
            proc = self._spawn([binary, "-c", str(self.folder / "mosquitto.conf")], self.folder / "stderr.log")
            _wait(lambda: _port_open(self.port), "mosquitto", proc, self.folder / "mosquitto.log")
        except (OSError, subprocess.CalledProcessError, ServerError) as e:
            self.stop()
            raise ServerError(f"mosquitto did not start: {e}") from None

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    def describe(self) -> str:
        return f"Mosquitto (local binary, project mosquitto.conf + ACL, password file) on 127.0.0.1:{self.port}"


# ---------------------------------------------------------------------------------------------------------
# InfluxDB 1.x

INFLUXD_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{folder}/meta"
  logging-enabled = false
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"""


class InfluxD(_Process):
    name = "influxd"

    def __init__(self) -> None:
        binary = _which("influxd")
        if binary is None:
            raise ServerError("influxd is not installed (apt-get install influxdb)")
        super().__init__()
        self.port = free_port()
        conf = self.folder / "influxdb.conf"
        conf.write_text(INFLUXD_CONF.format(folder=self.folder, rpc_port=free_port(), http_port=self.port))
        try:
            proc = self._spawn([binary, "run", "-config", str(conf)], self.folder / "influxd.log")
            _wait(self._ping, "influxd", proc, self.folder / "influxd.log")
        except (OSError, ServerError) as e:
            self.stop()
            raise ServerError(f"influxd did not start: {e}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
                return r.status < 300
        except OSError:
            return False

    def describe(self) -> str:
        return f"InfluxDB 1.x (local influxd, v1 API) on {self.url}"


# ---------------------------------------------------------------------------------------------------------
# fallback database: line protocol appended to a file


class LineProtocolFile:
    """The writer interface of ingest/influx.py, storing the line protocol in a file (nothing is refused)."""

    api = "file"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")
        self.counts: dict[str, int] = {}

    def write(self, body: bytes) -> list[tuple[bytes, str]]:
        if not body.strip():
            return []
        if not body.endswith(b"\n"):
            body += b"\n"
        self._fh.write(body)
        for m in ("meter_reading", "tank", "pump_room", "pump", "device_event", "alert"):
            # a line starts with its measurement; every other line begins after a newline
            n = body.count(b"\n" + m.encode() + b",") + body.startswith(m.encode() + b",")
            if n:
                self.counts[m] = self.counts.get(m, 0) + n
        return []

    def close(self) -> None:
        self._fh.close()

    def describe(self) -> str:
        return f"line-protocol file {self.path} (embedded fallback: no InfluxDB binary)"


# ---------------------------------------------------------------------------------------------------------
# fallback broker: just enough MQTT 3.1.1 and 5 for the demo (QoS 0/1, wildcards, $share, sessions in memory)

_BYTE_PROPS = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_TWO_BYTE_PROPS = {0x13, 0x21, 0x22, 0x23}
_FOUR_BYTE_PROPS = {0x02, 0x11, 0x18, 0x27}
_STRING_PROPS = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F, 0x09, 0x16}  # UTF-8 and binary: both length-prefixed


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _read_str(buf: bytes, i: int) -> tuple[bytes, int]:
    n = int.from_bytes(buf[i:i + 2], "big")
    return buf[i + 2:i + 2 + n], i + 2 + n


def _read_props(buf: bytes, i: int) -> tuple[dict[int, object], int]:
    n, i = _read_varint(buf, i)
    end, props = i + n, {}
    while i < end:
        pid = buf[i]
        i += 1
        if pid in _BYTE_PROPS:
            props[pid], i = buf[i], i + 1
        elif pid in _TWO_BYTE_PROPS:
            props[pid], i = int.from_bytes(buf[i:i + 2], "big"), i + 2
        elif pid in _FOUR_BYTE_PROPS:
            props[pid], i = int.from_bytes(buf[i:i + 4], "big"), i + 4
        elif pid == 0x0B:
            props[pid], i = _read_varint(buf, i)
        elif pid in _STRING_PROPS:
            props[pid], i = _read_str(buf, i)
        elif pid == 0x26:  # user property: a string pair
            _, i = _read_str(buf, i)
            _, i = _read_str(buf, i)
        else:
            raise ValueError(f"unknown MQTT property 0x{pid:02x}")
    return props, end


def topic_matches(filt: str, topic: str) -> bool:
    f, t = filt.split("/"), topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


@dataclass
class _Session:
    client_id: str
    subs: dict[str, int] = field(default_factory=dict)  # filter → granted QoS
    inflight: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    queue: deque = field(default_factory=deque)
    next_id: int = 1
    conn: _Connection | None = None
    receive_max: int = 65535


class _Connection:
    def __init__(self, broker: EmbeddedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.broker, self.reader, self.writer = broker, reader, writer
        self.v5 = False
        self.session: _Session | None = None

    async def _packet(self) -> tuple[int, bytes]:
        head = (await self.reader.readexactly(1))[0]
        n, shift = 0, 0
        while True:
            b = (await self.reader.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return head, await self.reader.readexactly(n) if n else b""

    def send(self, ptype: int, body: bytes) -> None:
        self.writer.write(bytes([ptype]) + _varint(len(body)) + body)

    async def serve(self) -> None:
        try:
            head, body = await self._packet()
            if head >> 4 != 1 or not self._connect(body):
                return
            while True:
                head, body = await self._packet()
                kind = head >> 4
                if kind == 3:
                    self._publish(head, body)
                elif kind == 4:  # PUBACK of a message we delivered
                    self.broker.acked(self.session, int.from_bytes(body[:2], "big"))
                elif kind == 8:
                    self._subscribe(body)
                elif kind == 10:
                    self._unsubscribe(body)
                elif kind == 12:
                    self.send(0xD0, b"")
                elif kind == 14:
                    return
                if self.writer.transport.get_write_buffer_size() > 1 << 20:
                    await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            return
        finally:
            if self.session is not None and self.session.conn is self:
                self.session.conn = None
            self.writer.close()

    def _connect(self, body: bytes) -> bool:
        _, i = _read_str(body, 0)
        level, flags = body[i], body[i + 1]
        i += 4  # level, flags, keepalive
        self.v5 = level == 5
        props: dict[int, object] = {}
        if self.v5:
            props, i = _read_props(body, i)
        cid, i = _read_str(body, i)
        if flags & 0x04:  # will: properties (v5), topic, payload
            if self.v5:
                _, i = _read_props(body, i)
            _, i = _read_str(body, i)
            _, i = _read_str(body, i)
        user = pw = b""
        if flags & 0x80:
            user, i = _read_str(body, i)
        if flags & 0x40:
            pw, i = _read_str(body, i)
        ok = self.broker.users is None or self.broker.users.get(user.decode()) == pw.decode()
        if not ok:
            self.send(0x20, bytes([0, 0x86, 0]) if self.v5 else bytes([0, 5]))
            return False
        client_id = cid.decode() or f"anon-{secrets.token_hex(4)}"
        session, present = self.broker.attach(client_id, self, clean=bool(flags & 0x02))
        session.receive_max = int(props.get(0x21, 65535))  # type: ignore[arg-type]
        self.session = session
        self.send(0x20, bytes([int(present), 0, 0]) if self.v5 else bytes([int(present), 0]))
        self.broker.resend(session)
        return True

    def _publish(self, head: int, body: bytes) -> None:
        qos = (head >> 1) & 3
        topic, i = _read_str(body, 0)
        pid = 0
        if qos:
            pid, i = int.from_bytes(body[i:i + 2], "big"), i + 2
        if self.v5:
            _, i = _read_props(body, i)
        self.broker.route(topic.decode(), body[i:], qos)
        if qos == 1:
            self.send(0x40, pid.to_bytes(2, "big"))
        elif qos == 2:
            raise ValueError("QoS 2 is not supported by the demo broker")

    def _subscribe(self, body: bytes) -> None:
        pid, i = body[:2], 2
        if self.v5:
            _, i = _read_props(body, i)
        granted = []
        while i < len(body):
            filt, i = _read_str(body, i)
            qos = min(body[i] & 3, 1)
            i += 1
            f = filt.decode()
            if f.startswith("$share/"):  # one subscriber per group here: the demo runs one ingester
                f = f.split("/", 2)[2]
            assert self.session is not None
            self.session.subs[f] = qos
            granted.append(qos)
        self.send(0x90, pid + (b"\x00" if self.v5 else b"") + bytes(granted))

    def _unsubscribe(self, body: bytes) -> None:
        pid, i = body[:2], 2
        if self.v5:
            _, i = _read_props(body, i)
        n = 0
        while i < len(body):
            filt, i = _read_str(body, i)
            f = filt.decode()
            f = f.split("/", 2)[2] if f.startswith("$share/") else f
            assert self.session is not None
            self.session.subs.pop(f, None)
            n += 1
        self.send(0xB0, pid + (b"\x00" + bytes(n) if self.v5 else b""))

    def deliver(self, topic: str, payload: bytes, qos: int, pid: int, dup: bool = False) -> None:
        t = topic.encode()
        var = len(t).to_bytes(2, "big") + t + (pid.to_bytes(2, "big") if qos else b"") + (b"\x00" if self.v5 else b"")
        self.send(0x30 | (qos << 1) | (0x08 if dup else 0), var + payload)


class EmbeddedBroker:
    """An in-process MQTT broker on 127.0.0.1 for the demo when Mosquitto is not installed. It keeps sessions in
    memory (no persistence), grants at most QoS 1, and serves each $share group as a plain subscription."""

    def __init__(self, users: dict[str, str] | None = None):
        self.users = users
        self.passwords = users or {}
        self.sessions: dict[str, _Session] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or not self.port:
            raise ServerError("the embedded MQTT broker did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(lambda r, w: _Connection(self, r, w).serve(), "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    # broker state: touched only from the event loop thread
    def attach(self, client_id: str, conn: _Connection, clean: bool) -> tuple[_Session, bool]:
        old = self.sessions.get(client_id)
        if old is not None and old.conn is not None and old.conn is not conn:
            old.conn.writer.close()  # MQTT: a second connection with the same id takes over
        if old is None or clean:
            old, present = _Session(client_id), False
            self.sessions[client_id] = old
        else:
            present = True
        old.conn = conn
        return old, present

    def route(self, topic: str, payload: bytes, qos: int) -> None:
        for s in self.sessions.values():
            granted = max((q for f, q in s.subs.items() if topic_matches(f, topic)), default=None)
            if granted is None:
                continue
            q = min(granted, qos)
            if q == 0:
                if s.conn is not None:
                    s.conn.deliver(topic, payload, 0, 0)
            elif s.conn is not None and len(s.inflight) < s.receive_max and not s.queue:
                self._send_qos1(s, topic, payload)
            else:
                s.queue.append((topic, payload))

    def _send_qos1(self, s: _Session, topic: str, payload: bytes) -> None:
        pid = s.next_id
        while pid in s.inflight:
            pid = pid % 65535 + 1
        s.next_id = pid % 65535 + 1
        s.inflight[pid] = (topic, payload)
        assert s.conn is not None
        s.conn.deliver(topic, payload, 1, pid)

    def acked(self, s: _Session | None, pid: int) -> None:
        if s is None:
            return
        s.inflight.pop(pid, None)
        while s.queue and s.conn is not None and len(s.inflight) < s.receive_max:
            self._send_qos1(s, *s.queue.popleft())

    def resend(self, s: _Session) -> None:
        """A resumed session: unacknowledged messages go out again (DUP), then the queue."""
        assert s.conn is not None
        for pid, (topic, payload) in list(s.inflight.items()):
            s.conn.deliver(topic, payload, 1, pid, dup=True)
        self.acked(s, 0)

    def url(self, user: str) -> str:
        pw = self.passwords.get(user)
        cred = f"{user}:{pw}@" if pw is not None else ""
        return f"mqtt://{cred}127.0.0.1:{self.port}"

    def describe(self) -> str:
        return f"embedded MQTT broker (in-process fallback: no mosquitto binary) on 127.0.0.1:{self.port}"

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            for s in self.sessions.values():
                if s.conn is not None:
                    s.conn.writer.close()
            self._loop.stop()

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(close)
            self._thread.join(5)

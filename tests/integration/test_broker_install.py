"""The broker set-up of docs/OPERATIONS.md ("Broker"), step by step as written, on Debian's own Mosquitto: Debian's
/etc/mosquitto/mosquitto.conf untouched, the shipped conf.d snippet and ACL installed beside it, the accounts made by
`cistern accounts`, and the broker started as Debian's service starts it (`mosquitto -c /etc/mosquitto/mosquitto.conf`).

The only liberty: it all happens in a temporary tree mirroring / (etc/mosquitto, var/lib/mosquitto, var/log/mosquitto,
run/mosquitto), so every absolute path in the files gets the tree's folder in front, and the ports are free ones."""

from __future__ import annotations

import csv
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ingest.tools.servers import common
from ingest.tools.servers.mosquitto import _make_certs
from tests.helpers import METERS, write_registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_CONF = Path("/etc/mosquitto/mosquitto.conf")
PREFIXES = ("/etc/mosquitto", "/var/lib/mosquitto", "/var/log/mosquitto", "/run/mosquitto")


class Tree:
    """A folder standing for /, and the files of a Debian host with the mosquitto package installed."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cistern-debian-"))
        self.plain_port, self.tls_port = common.free_port(), common.free_port()
        self.as_root = os.geteuid() == 0
        try:
            self.broker_user = pwd.getpwnam("mosquitto") if self.as_root else None
        except KeyError:
            self.broker_user = None
        for p in PREFIXES:
            self.path(p).mkdir(parents=True, exist_ok=True)
        self.path("/etc/mosquitto/conf.d").mkdir()
        # as the package leaves them: the broker, once it has dropped to its own user, writes data, log and pid
        for p in (self.root, *self.root.rglob("*")):
            os.chmod(p, 0o755)
        if self.broker_user:
            for p in PREFIXES[1:]:
                os.chown(self.path(p), self.broker_user.pw_uid, self.broker_user.pw_gid)
        self.path("/etc/mosquitto/mosquitto.conf").write_text(self.mirror(DEBIAN_CONF.read_text()))

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def mirror(self, text: str) -> str:
        for p in PREFIXES:
            text = text.replace(p, str(self.path(p)))
        return (text.replace("listener 1883 127.0.0.1", f"listener {self.plain_port} 127.0.0.1")
                .replace("listener 8883\n", f"listener {self.tls_port}\n"))

    def install(self, source: Path, target: str, mode: int, group: str | None = None) -> None:
        """`install -m MODE [-g GROUP] SOURCE TARGET`, the file's own paths mirrored."""
        dest = self.path(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        dest.write_bytes(self.mirror(data.decode()).encode() if source.suffix in (".conf", ".acl") else data)
        os.chmod(dest, mode)
        if group and self.broker_user:
            os.chown(dest, 0, self.broker_user.pw_gid)


def cistern(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
    return subprocess.run([sys.executable, "-m", "ingest", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def listening_on(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


CLIENTS: list[mqtt.Client] = []


def login(tree: Tree, user: str, password: str, tls: bool) -> mqtt.Client | None:
    """A client logged in (left connected until the test ends), or None when the broker refused the account."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    if tls:
        c.tls_set(ca_certs=str(tree.path("/etc/mosquitto/cistern/certs/ca.crt")), cert_reqs=ssl.CERT_REQUIRED)
    result: dict = {}
    c.on_connect = lambda cl, u, f, rc, p: result.setdefault("rc", rc)
    c.connect("127.0.0.1", tree.tls_port if tls else tree.plain_port)
    c.loop_start()
    deadline = time.monotonic() + 10
    while "rc" not in result and time.monotonic() < deadline:
        time.sleep(0.02)
    CLIENTS.append(c)
    if result.get("rc") is None or result["rc"].is_failure:
        return None
    return c


def credentials(path: Path) -> dict[str, str]:
    with path.open() as fh:
        return {row["account"]: row["password"] for row in csv.DictReader(fh)}


@pytest.fixture
def tree():
    if not DEBIAN_CONF.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's mosquitto package is not installed (make test installs it)")
        pytest.skip("needs Debian's mosquitto package (/etc/mosquitto/mosquitto.conf)")
    common._need_binary("mosquitto")
    t = Tree()
    yield t
    shutil.rmtree(t.root, ignore_errors=True)


def test_the_documented_broker_set_up_starts_debians_mosquitto(tree, tmp_path):
    registry = write_registry(tmp_path / "registry")
    # 1. the snippet into conf.d, the ACL beside it
    tree.install(ROOT / "deploy" / "debian" / "cistern.conf", "/etc/mosquitto/conf.d/cistern.conf", 0o644)
    tree.install(ROOT / "deploy" / "mosquitto.acl", "/etc/mosquitto/cistern/acl", 0o644)
    # 2. the TLS files: the CA's and the broker's certificates, the broker's key readable by its group
    made = _make_certs(tmp_path / "ca")
    tree.install(made[0], "/etc/mosquitto/cistern/certs/ca.crt", 0o644)
    tree.install(made[1], "/etc/mosquitto/cistern/certs/server.crt", 0o644)
    tree.install(made[2], "/etc/mosquitto/cistern/certs/server.key", 0o640, group="mosquitto")
    # 3. the accounts: the ingester, dispatch and every meter and pump room of the registry
    passwd = tree.path("/etc/mosquitto/cistern/passwd")
    r = cistern("accounts", "--registry", str(registry), "--password-file", str(passwd),
                "--credentials", str(tmp_path / "accounts.csv"), "--no-reload")
    assert r.returncode == 0, r.stderr
    assert "5 devices in the registry: 5 account(s) added" in r.stderr
    first = credentials(tmp_path / "accounts.csv")
    assert set(first) == {"cistern-ingest", "dispatch", "M000000", "M000001", "M000002", "M000003", "P0001"}
    # 4. (re)start the broker the way Debian's service does
    log = tree.path("/var/log/mosquitto/mosquitto.log")
    proc = subprocess.Popen([common._need_binary("mosquitto"), "-c", str(tree.path("/etc/mosquitto/mosquitto.conf"))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        common._wait(lambda: common._port_open("127.0.0.1", tree.plain_port)
                     and common._port_open("127.0.0.1", tree.tls_port), "Debian's mosquitto", proc, log)
        assert proc.poll() is None, log.read_text() if log.exists() else proc.stdout.read()
        assert listening_on(tree.plain_port) == {"127.0.0.1"}  # plain MQTT never faces a network
        assert listening_on(tree.tls_port) == {"0.0.0.0"}
        # a meter over TLS with the password from the credentials file; the ingester on the loopback listener
        ingest = login(tree, "cistern-ingest", first["cistern-ingest"], tls=False)
        got: list[str] = []
        ingest.on_message = lambda c, u, m: got.append(m.topic)
        ingest.subscribe("water/#", qos=1)
        meter = login(tree, "M000001", first["M000001"], tls=True)
        assert meter is not None and login(tree, "M000001", "wrong", tls=True) is None
        meter.publish("water/d01/meter/M000001/reading", b"{}", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == ["water/d01/meter/M000001/reading"]

        # a week later: two meters installed, one removed; the same command, and the broker re-reads once
        grown = METERS.replace("M000003,d01,B001,household,non_residential,20,0,3600,C01,9999,10\n", "") + \
            "M000004,d01,B001,household,residential,15,0,3600,C01,9999,\n" \
            "M000005,d01,B001,household,residential,15,0,3600,C01,9999,\n"
        write_registry(registry, meters=grown)
        r = cistern("accounts", "--registry", str(registry), "--password-file", str(passwd),
                    "--credentials", str(tmp_path / "accounts-week2.csv"), "--revoke-unregistered",
                    "--broker-pid-file", str(tree.path("/run/mosquitto/mosquitto.pid")))
        assert r.returncode == 0, r.stderr
        assert "2 account(s) added, 4 kept, 1 of devices no longer registered revoked" in r.stderr
        assert "SIGHUP" in r.stderr
        second = credentials(tmp_path / "accounts-week2.csv")
        assert set(second) == {"M000004", "M000005"}
        deadline = time.monotonic() + 10
        while login(tree, "M000004", second["M000004"], tls=True) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert login(tree, "M000004", second["M000004"], tls=True) is not None
        assert login(tree, "M000001", first["M000001"], tls=True) is not None  # kept: the meter still knows it
        assert login(tree, "M000003", first["M000003"], tls=True) is None  # revoked with its meter
        assert log.read_text().count("Reloading config.") == 1  # one SIGHUP for the whole registry
        if tree.broker_user:
            st = passwd.stat()
            assert (st.st_gid, st.st_mode & 0o777) == (tree.broker_user.pw_gid, 0o640)
    finally:
        for c in CLIENTS:
            c.disconnect()
            c.loop_stop()
        CLIENTS.clear()
        proc.terminate()
        proc.wait(10)

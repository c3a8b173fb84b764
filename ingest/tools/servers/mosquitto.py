"""Mosquitto with the project's mosquitto.conf and ACL, a password file and (for tests) a TLS listener with a
throwaway CA: a local binary on free ports, a container, or a broker named by CISTERN_TEST_MQTT_URL."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.tools.servers.common import (
    IMAGES,
    ServerUnavailable,
    _need_binary,
    _port_open,
    _spawn,
    _terminate,
    _wait,
    docker_available,
    free_port,
    shipped_file,
)

# Accounts every test broker has; device accounts are named after the device (see deploy/mosquitto.acl).
INGEST_USER = "cistern-ingest"
DISPATCH_USER = "dispatch"
DEVICE_USERS = ("M000001", "M000002", "P0001")


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



def _make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (EC keys: fast to make)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    run("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "2", "-subj", "/CN=cistern-test-ca",
        "-out", str(ca_crt))
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    run("req", "-new", "-key", str(key), "-subj", "/CN=localhost", "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(crt))
    os.chmod(key, 0o600)
    return ca_crt, crt, key


@dataclass
class MosquittoServer:
    """A broker running the project's mosquitto.conf, ACL and a test password file."""

    host: str
    port: int
    tls_port: int | None
    ca_file: str | None
    passwords: dict[str, str]
    managed: bool = True  # False: a broker named by CISTERN_TEST_MQTT_URL; accounts as given there
    external_url: str | None = None
    folder: Path | None = None
    _proc: subprocess.Popen | None = None
    _container: Any = None
    _start_fn: Any = None

    def url(self, user: str | None = INGEST_USER, tls: bool = False) -> str:
        if not self.managed:
            assert self.external_url is not None
            return self.external_url
        scheme, port = ("mqtts", self.tls_port) if tls else ("mqtt", self.port)
        if user is None:
            return f"{scheme}://{self.host}:{port}"
        return f"{scheme}://{user}:{self.passwords[user]}@{self.host}:{port}"

    def add_device(self, device_id: str, password: str | None = None) -> str:
        """Add an account named after a device and make the running broker re-read the password file."""
        self._require_managed("add_device")
        password = password or secrets.token_hex(8)
        assert self.folder is not None
        subprocess.run([_need_binary("mosquitto_passwd"), "-b", str(self.folder / "passwd"), device_id, password],
                       check=True, capture_output=True)
        self.passwords[device_id] = password
        self.reload()
        return password

    def reload(self) -> None:
        """SIGHUP: the broker re-reads password and ACL files; wait until a known account can log in."""
        if self._container is not None:
            self._container.get_wrapped_container().kill(signal="SIGHUP")
        elif self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # reload happens in the broker's main loop; give it one turn before anyone connects

    def stop(self) -> None:
        self._require_managed("stop")
        if self._container is not None:
            self._container.stop()
            self._container = None
        _terminate(self._proc)
        self._proc = None

    def start(self) -> None:
        """(Re)start with the same configuration and persistence folder."""
        self._require_managed("start")
        if self._proc is None and self._container is None:
            self._start_fn(self)

    def _require_managed(self, what: str) -> None:
        if not self.managed:
            raise ServerUnavailable(f"{what} needs a broker the tests started (CISTERN_TEST_MQTT_URL is set)")


def _mosquitto_folder(folder: Path, in_container: bool, accounts: tuple[str, ...] = (),
                      acl_extra: str = "") -> dict[str, str]:
    """Write passwd, ACL, certs and the rendered conf into `folder`; returns the passwords."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    ca, crt, key = _make_certs(folder / "certs")
    passwords = {u: secrets.token_hex(8) for u in (INGEST_USER, DISPATCH_USER, *DEVICE_USERS, *accounts)}
    passwd = folder / "passwd"
    passwd.touch()
    os.chmod(passwd, 0o600)
    for user, pw in passwords.items():
        subprocess.run([_need_binary("mosquitto_passwd"), "-b", str(passwd), user, pw], check=True,
                       capture_output=True)
    shutil.copy(shipped_file("mosquitto.acl"), folder / "acl")
    if acl_extra:
        with (folder / "acl").open("a") as fh:
            fh.write("\n" + acl_extra)
    base = "/mosquitto/cistern" if in_container else str(folder)
    conf = render_mosquitto_conf(
        shipped_file("mosquitto.conf").read_text(), port=1883 if in_container else free_port(),
        tls_port=8883 if in_container else free_port(), data_dir=f"{base}/data", password_file=f"{base}/passwd",
        acl_file=f"{base}/acl", log_file=None if in_container else f"{base}/mosquitto.log",
        cafile=f"{base}/certs/{ca.name}", certfile=f"{base}/certs/{crt.name}", keyfile=f"{base}/certs/{key.name}",
        run_as_root=in_container or os.geteuid() == 0)
    if in_container:
        conf = conf.replace("listener 1883 127.0.0.1", "listener 1883").replace("listener 8883 127.0.0.1",
                                                                                "listener 8883")
    (folder / "mosquitto.conf").write_text(conf)
    return passwords


def _listener_ports(conf: str) -> tuple[int, int]:
    ports = [int(m) for m in re.findall(r"^listener (\d+)", conf, flags=re.M)]
    return ports[0], ports[1]


def _start_local_mosquitto(server: MosquittoServer) -> None:
    assert server.folder is not None
    binary = _need_binary("mosquitto")
    log = server.folder / "stderr.log"
    proc = _spawn([binary, "-c", str(server.folder / "mosquitto.conf")], log)
    server._proc = proc
    try:
        _wait(lambda: _port_open(server.host, server.port) and _port_open(server.host, server.tls_port or 0),
              "mosquitto", proc, server.folder / "mosquitto.log")
    except RuntimeError:
        _terminate(proc)
        server._proc = None
        raise


def _start_container_mosquitto(server: MosquittoServer) -> None:
    from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]

    assert server.folder is not None
    c = (DockerContainer(IMAGES["mosquitto"])
         .with_volume_mapping(str(server.folder), "/mosquitto/cistern", "rw")
         .with_command("mosquitto -c /mosquitto/cistern/mosquitto.conf")
         .with_exposed_ports(1883, 8883))
    c.start()
    server._container = c
    server.host = c.get_container_host_ip()
    server.port = int(c.get_exposed_port(1883))
    server.tls_port = int(c.get_exposed_port(8883))
    _wait(lambda: _port_open(server.host, server.port), "mosquitto container", None, None)


def start_mosquitto(use_docker: bool | None = None, *, accounts: tuple[str, ...] = (), acl_extra: str = "",
                    from_env: bool = True) -> MosquittoServer:
    """`accounts`: more password accounts beside the usual ones; `acl_extra`: ACL lines appended to the project's
    ACL; `from_env`: a broker named by CISTERN_TEST_MQTT_URL is used instead (tests)."""
    url = os.environ.get("CISTERN_TEST_MQTT_URL") if from_env else None
    if url:
        u = urllib.parse.urlsplit(url)
        return MosquittoServer(host=u.hostname or "127.0.0.1", port=u.port or 1883, tls_port=None, ca_file=None,
                               passwords={}, managed=False, external_url=url)
    use_docker = docker_available() if use_docker is None else use_docker
    if not use_docker:
        _need_binary("mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="cistern-mosquitto-"))
    passwords = _mosquitto_folder(folder, in_container=use_docker, accounts=accounts, acl_extra=acl_extra)
    port, tls_port = _listener_ports((folder / "mosquitto.conf").read_text())
    server = MosquittoServer(host="127.0.0.1", port=port, tls_port=tls_port, ca_file=str(folder / "certs/ca.crt"),
                             passwords=passwords, folder=folder,
                             _start_fn=_start_container_mosquitto if use_docker else _start_local_mosquitto)
    server.start()
    return server

"""Real servers for integration tests: named by environment variables, else containers, else local binaries.

Each `start_*` function returns a small handle; the pytest fixtures in tests/conftest.py call them once a session.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.demo_servers import (  # the shipped launchers' config
    INFLUXD_CONF,
    free_port,
    render_mosquitto_conf,
)

ROOT = Path(__file__).resolve().parent.parent
PROJECT_MOSQUITTO_CONF = ROOT / "mosquitto.conf"
PROJECT_ACL = ROOT / "deploy" / "mosquitto.acl"

IMAGES = {
    "mosquitto": "eclipse-mosquitto:2.0.20",
    "influxdb1": "influxdb:1.8.10",
    "victoria": "victoriametrics/victoria-metrics:v1.102.0",
}
START_TIMEOUT_S = 20.0

# Accounts every test broker has; device accounts are named after the device (see deploy/mosquitto.acl).
INGEST_USER = "cistern-ingest"
DISPATCH_USER = "dispatch"
DEVICE_USERS = ("M000001", "M000002", "P0001")


class ServerUnavailable(RuntimeError):
    """No way to run this server here (no variable, no Docker, no binary): tests that need it are skipped."""


# ---------------------------------------------------------------------------------------------------------
# small helpers


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _log_tail(path: Path | None, n: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return "\n".join(lines)


def _wait(ready, what: str, proc: subprocess.Popen | None, log: Path | None, timeout_s: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}:\n{_log_tail(log)}")
        if ready():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f}s:\n{_log_tail(log)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return 200 <= r.status < 300
    except (OSError, urllib.error.URLError):
        return False


_RUNNING: set[subprocess.Popen] = set()


def _spawn(argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    handle = log.open("ab")
    # Own process group: the whole server is stopped by its id, never by name.
    proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, start_new_session=True)
    handle.close()
    _RUNNING.add(proc)
    return proc


def _terminate(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _RUNNING.discard(proc)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_RUNNING):
        _terminate(proc, 5.0)


@functools.cache
def docker_available() -> bool:
    """True when a Docker engine answers quickly; a missing client library or socket is simply 'no'."""
    if os.environ.get("CISTERN_TEST_NO_DOCKER"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _need_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        raise ServerUnavailable(f"{name} not installed (apt-get install it, or set the CISTERN_TEST_* variable)")
    return path


# ---------------------------------------------------------------------------------------------------------
# Mosquitto


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


def _mosquitto_folder(folder: Path, in_container: bool) -> dict[str, str]:
    """Write passwd, ACL, certs and the rendered conf into `folder`; returns the passwords."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    ca, crt, key = _make_certs(folder / "certs")
    passwords = {u: secrets.token_hex(8) for u in (INGEST_USER, DISPATCH_USER, *DEVICE_USERS)}
    passwd = folder / "passwd"
    passwd.touch()
    os.chmod(passwd, 0o600)
    for user, pw in passwords.items():
        subprocess.run([_need_binary("mosquitto_passwd"), "-b", str(passwd), user, pw], check=True,
                       capture_output=True)
    shutil.copy(PROJECT_ACL, folder / "acl")
    base = "/mosquitto/cistern" if in_container else str(folder)
    conf = render_mosquitto_conf(
        PROJECT_MOSQUITTO_CONF.read_text(), port=1883 if in_container else free_port(),
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


def start_mosquitto(use_docker: bool | None = None) -> MosquittoServer:
    url = os.environ.get("CISTERN_TEST_MQTT_URL")
    if url:
        u = urllib.parse.urlsplit(url)
        return MosquittoServer(host=u.hostname or "127.0.0.1", port=u.port or 1883, tls_port=None, ca_file=None,
                               passwords={}, managed=False, external_url=url)
    use_docker = docker_available() if use_docker is None else use_docker
    if not use_docker:
        _need_binary("mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="cistern-mosquitto-"))
    passwords = _mosquitto_folder(folder, in_container=use_docker)
    port, tls_port = _listener_ports((folder / "mosquitto.conf").read_text())
    server = MosquittoServer(host="127.0.0.1", port=port, tls_port=tls_port, ca_file=str(folder / "certs/ca.crt"),
                             passwords=passwords, folder=folder,
                             _start_fn=_start_container_mosquitto if use_docker else _start_local_mosquitto)
    server.start()
    return server


# ---------------------------------------------------------------------------------------------------------
# InfluxDB 1.x


def _rows(result: dict) -> list[dict[str, Any]]:
    """Flatten an InfluxDB 1.x /query answer into one dict per row (tags of GROUP BY included)."""
    rows: list[dict[str, Any]] = []
    for stmt in result.get("results", []):
        if "error" in stmt:
            raise RuntimeError(f"InfluxQL error: {stmt['error']}")
        for series in stmt.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):
                row = dict(zip(series["columns"], values, strict=True))
                row.update(tags)
                row.setdefault("_measurement", series.get("name"))
                rows.append(row)
    return rows


class _Stoppable:
    """A server the tests run as a local process or a container: stop() ends whichever it is."""

    _proc: subprocess.Popen | None
    _container: Any

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None
        _terminate(self._proc)
        self._proc = None


@dataclass
class InfluxV1Server(_Stoppable):
    url: str
    username: str = ""
    password: str = ""
    managed: bool = True
    folder: Path | None = None
    _proc: subprocess.Popen | None = None
    _container: Any = None
    _n: int = 0

    def _call(self, path: str, params: dict[str, str], method: str = "GET") -> dict:
        if self.username:
            params = {**params, "u": self.username, "p": self.password}
        q = urllib.parse.urlencode(params)
        req = urllib.request.Request(f"{self.url}{path}?{q}" if method == "GET" else f"{self.url}{path}",
                                     data=None if method == "GET" else q.encode(), method=method)
        if method == "POST":
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def query(self, influxql: str, db: str | None = None) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query, timestamps as integer nanoseconds."""
        params = {"q": influxql, "epoch": "ns"}
        if db:
            params["db"] = db
        return _rows(self._call("/query", params))

    def execute(self, influxql: str) -> None:
        _rows(self._call("/query", {"q": influxql}, method="POST"))

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database (created) with a name unique in this session."""
        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}_{secrets.token_hex(3)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name





def start_influx_v1(use_docker: bool | None = None) -> InfluxV1Server:
    url = os.environ.get("CISTERN_TEST_INFLUX_V1_URL")
    if url:
        return InfluxV1Server(url=url.rstrip("/"), username=os.environ.get("CISTERN_TEST_INFLUX_V1_USERNAME", ""),
                              password=os.environ.get("CISTERN_TEST_INFLUX_V1_PASSWORD", ""), managed=False)
    use_docker = docker_available() if use_docker is None else use_docker
    if use_docker:
        from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]

        c = (DockerContainer(IMAGES["influxdb1"]).with_env("INFLUXDB_REPORTING_DISABLED", "true")
             .with_env("INFLUXDB_MONITOR_STORE_ENABLED", "false").with_exposed_ports(8086))
        c.start()
        server = InfluxV1Server(url=f"http://{c.get_container_host_ip()}:{c.get_exposed_port(8086)}", _container=c)
        _wait(lambda: _http_ok(f"{server.url}/ping"), "influxdb container", None, None)
        return server
    binary = _need_binary("influxd")
    folder = Path(tempfile.mkdtemp(prefix="cistern-influxd-"))
    http_port = free_port()
    conf = folder / "influxdb.conf"
    conf.write_text(INFLUXD_CONF.format(folder=folder, rpc_port=free_port(), http_port=http_port))
    log = folder / "influxd.log"
    proc = _spawn([binary, "run", "-config", str(conf)], log, cwd=folder)
    server = InfluxV1Server(url=f"http://127.0.0.1:{http_port}", folder=folder, _proc=proc)
    try:
        _wait(lambda: _http_ok(f"{server.url}/ping"), "influxd", proc, log)
    except RuntimeError:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------------------------------------
# InfluxDB v2 write API: VictoriaMetrics locally, or a real InfluxDB 2.x/3.x named by variables


@dataclass
class InfluxV2Server(_Stoppable):
    """A server taking /api/v2/write. VictoriaMetrics names series `<measurement>_<field>`, keeps no string
    fields, and silently drops points more than 2 days ahead of its clock (and older than its retention)."""

    url: str
    token: str = "cistern-test-token"
    org: str = "cistern"
    bucket: str = "water"
    kind: str = "victoria"  # or "influxdb" (a real InfluxDB 2.x named by CISTERN_TEST_INFLUX_V2_URL)
    folder: Path | None = None
    _proc: subprocess.Popen | None = None
    _container: Any = None

    def flush(self) -> None:
        if self.kind == "victoria":
            with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
                pass

    def export(self, measurement: str, field: str, **tags: str) -> list[dict[str, Any]]:
        """Series of one field as VictoriaMetrics exports them: {'metric': {...}, 'values': [...], 'timestamps'}."""
        if self.kind != "victoria":
            raise NotImplementedError("export is VictoriaMetrics only; use points()")
        self.flush()
        labels = ",".join([f'__name__="{measurement}_{field}"'] + [f'{k}="{v}"' for k, v in tags.items()])
        # An explicit end: without one, export stops short of recent points.
        q = urllib.parse.urlencode({"match[]": "{" + labels + "}", "start": "0", "end": "4102444800"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=10) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]

    def points(self, measurement: str, field: str, **tags: str) -> list[tuple[int, float, dict[str, str]]]:
        """(timestamp ms, value, tags) of every stored point of one field."""
        if self.kind == "victoria":
            out = []
            for s in self.export(measurement, field, **tags):
                labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
                out += [(t, v, labels) for t, v in zip(s["timestamps"], s["values"], strict=True)]
            return sorted(out, key=lambda p: p[0])
        from influxdb_client import InfluxDBClient

        filters = "".join(f' and r["{k}"] == "{v}"' for k, v in tags.items())
        flux = (f'from(bucket: "{self.bucket}") |> range(start: 0) |> filter(fn: (r) => '
                f'r._measurement == "{measurement}" and r._field == "{field}"{filters})')
        with InfluxDBClient(url=self.url, token=self.token, org=self.org) as client:
            tables = client.query_api().query(flux)
        out = []
        for table in tables:
            for rec in table.records:
                labels = {k: v for k, v in rec.values.items() if not k.startswith("_") and k not in ("result", "table")}
                out.append((int(rec.get_time().timestamp() * 1000), rec.get_value(), labels))
        return sorted(out, key=lambda p: p[0])

    def count(self, measurement: str, field: str, **tags: str) -> int:
        return len(self.points(measurement, field, **tags))



def start_influx_v2(use_docker: bool | None = None) -> InfluxV2Server:
    """The server named by CISTERN_TEST_INFLUX_V2_URL (+ _TOKEN, _ORG, _BUCKET), else VictoriaMetrics."""
    url = os.environ.get("CISTERN_TEST_INFLUX_V2_URL")
    if url:
        return InfluxV2Server(url=url.rstrip("/"), token=os.environ.get("CISTERN_TEST_INFLUX_V2_TOKEN", ""),
                              org=os.environ.get("CISTERN_TEST_INFLUX_V2_ORG", ""),
                              bucket=os.environ.get("CISTERN_TEST_INFLUX_V2_BUCKET", "water"),
                              kind=os.environ.get("CISTERN_TEST_INFLUX_V2_KIND", "influxdb"))
    return start_victoria(use_docker=use_docker)


def _http_answers(url: str) -> bool:
    """Any HTTP answer below 500 (a server behind basic auth answers /health with 401)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


def start_victoria(extra_args: tuple[str, ...] = (), use_docker: bool | None = None) -> InfluxV2Server:
    """VictoriaMetrics on a free port with a temporary data folder (or in a container when Docker answers)."""
    # VictoriaMetrics silently drops points older than its retention (default one month): keep everything.
    args = ["-retentionPeriod=100y", "-loggerLevel=ERROR", "-search.latencyOffset=0s", *extra_args]
    use_docker = docker_available() if use_docker is None else use_docker
    if use_docker:
        from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]

        c = DockerContainer(IMAGES["victoria"]).with_command(" ".join(args)).with_exposed_ports(8428)
        c.start()
        server = InfluxV2Server(url=f"http://{c.get_container_host_ip()}:{c.get_exposed_port(8428)}", _container=c)
        _wait(lambda: _http_answers(f"{server.url}/health"), "victoria-metrics container", None, None)
        return server
    binary = _need_binary("victoria-metrics")
    folder = Path(tempfile.mkdtemp(prefix="cistern-victoria-"))
    port = free_port()
    log = folder / "victoria.log"
    proc = _spawn([binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={folder / 'data'}", *args],
                  log, cwd=folder)
    server = InfluxV2Server(url=f"http://127.0.0.1:{port}", folder=folder, _proc=proc)
    try:
        _wait(lambda: _http_answers(f"{server.url}/health"), "victoria-metrics", proc, log)
    except RuntimeError:
        server.stop()
        raise
    return server


def remove_folder(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = [
    "DEVICE_USERS", "DISPATCH_USER", "INGEST_USER", "InfluxV1Server", "InfluxV2Server", "MosquittoServer",
    "ServerUnavailable", "docker_available", "free_port", "start_influx_v1", "start_influx_v2", "start_mosquitto",
    "start_victoria",
]

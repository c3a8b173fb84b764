"""InfluxDB 1.x (v1 API) and a server taking InfluxDB's v2 write API (VictoriaMetrics locally, or an InfluxDB 2.x
named by variables): local binaries on free ports, containers, or servers named by CISTERN_TEST_INFLUX_* ."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.tools.servers.common import (
    IMAGES,
    _http_ok,
    _need_binary,
    _spawn,
    _terminate,
    _wait,
    docker_available,
    free_port,
)

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

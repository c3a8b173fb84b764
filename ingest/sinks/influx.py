"""InfluxDB sinks behind one small interface: v1 (`/write`), v2 (`/api/v2/write` via influxdb-client), auto.

A write either lands (returning the lines the server refused for good, with its reason), or raises
WriteUnavailable (retry later, keep the messages unacked) or InfluxAuthError/InfluxConfigError (fix the settings).
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Literal, Protocol

import orjson
import urllib3
from pydantic import BaseModel, Field, SecretStr, field_validator

log = logging.getLogger(__name__)

Refused = list[tuple[bytes, str]]


def http_url(v: str) -> str:
    """An http:// or https:// URL with a valid port, or empty."""
    if v == "":
        return v
    u = urllib.parse.urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("must be an http:// or https:// URL")
    try:
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return v


class InfluxSettings(BaseModel):
    """The database settings (CISTERN_INFLUX_*)."""

    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB (or a server that speaks its write API)")
    influx_api: Literal["auto", "v1", "v2"] = Field("auto", description="auto, v1 (/write + /query) or v2 "
                                                                          "(/api/v2/write)")
    influx_bucket: str = Field("water", min_length=1, description="v2 bucket, or v1 database (db or db/rp)")
    influx_org: str = Field("", description="v2 organisation")
    influx_token: SecretStr = Field(SecretStr(""), description="v2 token (secret)")
    influx_username: str = Field("", description="v1 username")
    influx_password: SecretStr = Field(SecretStr(""), description="v1 password (secret)")
    influx_timeout_s: float = Field(10.0, gt=0, le=300, description="one write request's timeout, seconds")

    @field_validator("influx_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)


class InfluxError(Exception):
    """Base of the sink's errors. Messages name the server by scheme, host and port only: never credentials."""


class WriteUnavailable(InfluxError):
    """Transient: connection refused, timeout, 5xx, 429. `retry_after_s` is the server's hint, if it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InfluxAuthError(InfluxError):
    """401/403: the credentials are wrong or lack write permission (a configuration problem, not transient)."""


class InfluxConfigError(InfluxError):
    """The server answers but the target is wrong: no such bucket or retention policy, a URL that is not
    InfluxDB's. Retrying cannot help."""


class InfluxWriter(Protocol):
    api: str
    accepts_seconds: bool  # write(body, precision="s") takes a body whose timestamps are in seconds

    def write(self, body: bytes, precision: str = "ns") -> Refused: ...

    def close(self) -> None: ...


class _Rejected(Exception):
    """Internal: the server refused (part of) a body with a 4xx that retrying cannot fix."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _public(url: str) -> str:
    """scheme://host:port/path without user info or query: safe for messages and logs."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path.rstrip('/')}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_reason(body: bytes | str | None, limit: int = 500) -> str:
    """The `error`/`message` of an InfluxDB JSON error body, or its text."""
    if not body:
        return ""
    raw = body if isinstance(body, bytes) else body.encode()
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict):
            text = str(doc.get("error") or doc.get("message") or raw.decode(errors="replace"))
        else:
            text = raw.decode(errors="replace")
    except orjson.JSONDecodeError:
        text = raw.decode(errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _lines(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\n") if line.strip()]


def write_finding_refused(post: Callable[..., None], body: bytes, precision: str = "ns") -> Refused:
    """Write `body`; when the server refuses it, find exactly the refused lines by bisection.

    InfluxDB writes the good points of a partly bad request, and re-writing a point is idempotent (same series
    and timestamp overwrite), so halves that succeed are simply written again. Transient errors propagate.
    """
    try:
        post(body, precision)
        return []
    except _Rejected as e:
        first = e
    lines = _lines(body)
    if len(lines) == 1:
        return [(lines[0], f"HTTP {first.status}: {first.reason}")]
    refused: Refused = []
    stack = [lines[len(lines) // 2:], lines[: len(lines) // 2]]
    while stack:
        part = stack.pop()
        try:
            post(b"\n".join(part) + b"\n", precision)
        except _Rejected as e:
            if len(part) == 1:
                refused.append((part[0], f"HTTP {e.status}: {e.reason}"))
            else:
                half = len(part) // 2
                stack += [part[half:], part[:half]]
    return refused


# Words of the refusals that concern points (InfluxDB 1.x/2.x/3.x, VictoriaMetrics). Any other 4xx (an unknown
# organisation, a missing bucket parameter…) would refuse every line alike: that is a configuration error, not
# a reason to dead-letter the whole stream.
_POINT_WORDS = ("parse", "partial write", "conflict", "field", "point", "line", "invalid", "retention",
                "out of range", "timestamp", "max-values", "tag")


def _classify(status: int, reason: str, where: str, retry_after: str | None, what: str) -> None:
    """Raise the right error for a non-2xx answer (404 is the caller's business before this)."""
    if status in (401, 403):
        raise InfluxAuthError(f"{where} refused the {what} (HTTP {status}: {reason or 'unauthorized'}); check "
                              f"CISTERN_INFLUX_TOKEN or CISTERN_INFLUX_USERNAME/PASSWORD and their permissions")
    if status == 429 or status >= 500 or status == 408:
        raise WriteUnavailable(f"{where} answered HTTP {status}: {reason}", _retry_after(retry_after))
    if status == 404:
        raise InfluxConfigError(f"{where}: HTTP 404 {reason or 'not found'}")
    if status == 413 or (status in (400, 422) and any(w in reason.lower() for w in _POINT_WORDS)):
        raise _Rejected(status, reason or f"HTTP {status}")  # 413: too big; halves will do
    raise InfluxConfigError(f"{where} refused the {what} (HTTP {status}: {reason or 'no reason given'})")


# ---------------------------------------------------------------------------------------------------------
# v1: InfluxDB 1.x /write


class V1Writer:
    """InfluxDB 1.x `/write?db=..&rp=..&precision=ns`, keep-alive through urllib3, creating the database once."""

    api = "v1"
    accepts_seconds = True

    def __init__(self, url: str, bucket: str = "water", username: str = "", password: str = "",
                 timeout_s: float = 10.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InfluxConfigError(f"InfluxDB URL {_public(url)!r} must be http:// or https:// with a host")
        # Credentials embedded in the URL count as username/password; they never reach a message.
        username = username or urllib.parse.unquote(u.username or "")
        password = password or urllib.parse.unquote(u.password or "")
        self.base = f"{_public(url)}"
        db, _, rp = bucket.partition("/")
        if not db:
            raise InfluxConfigError("CISTERN_INFLUX_BUCKET must name a database (db or db/rp)")
        self.db, self.rp = db, rp
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username:
            self._headers.update(urllib3.make_headers(basic_auth=f"{username}:{password}"))
        self._http = urllib3.PoolManager(num_pools=1, maxsize=2, retries=False,
                                         timeout=urllib3.Timeout(total=timeout_s))
        params = {"db": db}
        if rp:
            params["rp"] = rp
        self._write_urls = {p: f"{self.base}/write?{urllib.parse.urlencode({**params, 'precision': p})}"
                            for p in ("ns", "s")}
        self._created = False

    def _request(self, method: str, url: str, body: bytes | None, headers: dict[str, str]):
        try:
            return self._http.request(method, url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as e:
            # The exception text may hold the URL; ours names only the public part.
            raise WriteUnavailable(f"{self.base} unreachable ({type(e).__name__})") from None

    def _post(self, body: bytes, precision: str = "ns") -> None:
        r = self._request("POST", self._write_urls[precision], body, self._headers)
        if 200 <= r.status < 300:
            return
        reason = _server_reason(r.data)
        if r.status == 404 and "database not found" in reason and not self._created:
            self.create_database()
            return self._post(body, precision)
        if r.status == 404:
            raise InfluxConfigError(f"{self.base}: {reason or 'HTTP 404 on /write'} (database {self.db!r}"
                                    f"{f', retention policy {self.rp!r}' if self.rp else ''})")
        _classify(r.status, reason, self.base, r.headers.get("Retry-After"), "write")

    def create_database(self) -> None:
        """`CREATE DATABASE` is idempotent in InfluxDB 1.x; done once, when a write says it is missing."""
        q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{self.db}"'})
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
        r = self._request("POST", f"{self.base}/query", q.encode(), headers)
        reason = _server_reason(r.data)
        if r.status >= 300 or (r.status == 200 and b'"error"' in r.data):
            _classify(r.status if r.status >= 300 else 400, reason, self.base, r.headers.get("Retry-After"),
                      f"creation of database {self.db!r}")
        self._created = True
        log.info("created InfluxDB database %r", self.db)

    def write(self, body: bytes, precision: str = "ns") -> Refused:
        if not body.strip():
            return []
        return write_finding_refused(self._post, body, precision)

    def close(self) -> None:
        self._http.clear()


# ---------------------------------------------------------------------------------------------------------
# v2: /api/v2/write through influxdb-client


class V2Writer:
    """`/api/v2/write` through influxdb-client's synchronous write API (InfluxDB 2.x/3.x, VictoriaMetrics)."""

    api = "v2"
    accepts_seconds = True

    def __init__(self, url: str, bucket: str = "water", org: str = "", token: str = "", timeout_s: float = 10.0):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InfluxConfigError(f"InfluxDB URL {_public(url)!r} must be http:// or https:// with a host")
        self.base = _public(url)
        self.bucket, self.org = bucket, org
        # retries=False: back-off belongs to the pipeline, which keeps the messages unacked meanwhile.
        self._client = InfluxDBClient(url=self.base, token=token or None, org=org or None,
                                      timeout=int(timeout_s * 1000), retries=False, enable_gzip=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def _post(self, body: bytes, precision: str = "ns") -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=body,
                                  write_precision=WritePrecision.S if precision == "s" else WritePrecision.NS)
        except ApiException as e:
            status = int(e.status or 0)
            reason = _server_reason(e.body) or (e.reason or "")
            retry_after = e.headers.get("Retry-After") if e.headers else None
            if status == 404:
                raise InfluxConfigError(
                    f"{self.base}: {reason or 'HTTP 404 on /api/v2/write'} (bucket {self.bucket!r}, org "
                    f"{self.org!r}); an InfluxDB 1.x server needs CISTERN_INFLUX_API=v1") from None
            _classify(status, reason, self.base, retry_after, "write")
        except urllib3.exceptions.HTTPError as e:
            raise WriteUnavailable(f"{self.base} unreachable ({type(e).__name__})") from None
        except OSError as e:
            raise WriteUnavailable(f"{self.base} unreachable ({type(e).__name__})") from None

    def write(self, body: bytes, precision: str = "ns") -> Refused:
        if not body.strip():
            return []
        return write_finding_refused(self._post, body, precision)

    def close(self) -> None:
        self._write_api.close()
        self._client.close()


# ---------------------------------------------------------------------------------------------------------
# auto detection


def detect_api(url: str, timeout_s: float = 5.0) -> str:
    """'v1' for InfluxDB 1.x, 'v2' for anything else that answers (2.x, 3.x, VictoriaMetrics).

    `/ping` carries `X-Influxdb-Version` on InfluxDB; VictoriaMetrics answers /ping without a 1.x version.
    Raises WriteUnavailable when the server cannot be reached."""
    base = _public(url)
    http = urllib3.PoolManager(num_pools=1, retries=False, timeout=urllib3.Timeout(total=timeout_s))
    try:
        try:
            r = http.request("GET", f"{base}/ping", redirect=False)
        except urllib3.exceptions.HTTPError as e:
            raise WriteUnavailable(f"{base} unreachable ({type(e).__name__})") from None
        version = r.headers.get("X-Influxdb-Version", "")
        if version.lstrip("v").startswith("1."):
            return "v1"
        if version or r.status < 300:
            return "v2"
        try:
            r = http.request("GET", f"{base}/health", redirect=False)
        except urllib3.exceptions.HTTPError as e:
            raise WriteUnavailable(f"{base} unreachable ({type(e).__name__})") from None
        if r.status < 300:
            return "v2"
        if r.status >= 500:
            raise WriteUnavailable(f"{base} answered HTTP {r.status} to /ping and /health")
        raise InfluxConfigError(f"{base} does not look like InfluxDB (/ping and /health answered HTTP {r.status});"
                                " set CISTERN_INFLUX_API=v1 or v2")
    finally:
        http.clear()


class AutoWriter:
    """Asks the server which API it speaks at the first write (so a database that is down at start-up only
    delays writes), then hands every call to the chosen writer."""

    def __init__(self, make: Callable[[str], InfluxWriter], url: str, timeout_s: float):
        self._make, self._url, self._timeout_s = make, url, timeout_s
        self._inner: InfluxWriter | None = None
        self._lock = threading.Lock()  # batches and alert records are written from two threads

    @property
    def api(self) -> str:
        return self._inner.api if self._inner is not None else "auto"

    def resolve(self) -> InfluxWriter:
        with self._lock:
            if self._inner is None:
                api = detect_api(self._url, self._timeout_s)
                log.info("InfluxDB at %s speaks the %s API", _public(self._url), api)
                self._inner = self._make(api)
            return self._inner

    accepts_seconds = True

    def write(self, body: bytes, precision: str = "ns") -> Refused:
        if not body.strip():
            return []
        return self.resolve().write(body, precision)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class NullWriter:
    """Accepts everything and keeps count (benchmarks, dry runs)."""

    api = "null"
    accepts_seconds = True

    def __init__(self) -> None:
        self.bodies = 0
        self.lines = 0
        self.bytes = 0

    def write(self, body: bytes, precision: str = "ns") -> Refused:
        self.bodies += 1
        self.lines += body.count(b"\n")
        self.bytes += len(body)
        return []

    def close(self) -> None:
        pass


def open_writer(url: str, api: str = "auto", bucket: str = "water", org: str = "", token: str = "",
                username: str = "", password: str = "", timeout_s: float = 10.0) -> InfluxWriter:
    """The writer for `api` ('auto', 'v1', 'v2'); no request is made until the first write."""

    def make(kind: str) -> InfluxWriter:
        if kind == "v1":
            return V1Writer(url, bucket, username=username, password=password, timeout_s=timeout_s)
        if kind == "v2":
            # InfluxDB 1.8+/VictoriaMetrics accept "username:password" as a v2 token too.
            tok = token or (f"{username}:{password}" if username else "")
            return V2Writer(url, bucket, org=org, token=tok, timeout_s=timeout_s)
        raise InfluxConfigError(f"CISTERN_INFLUX_API must be auto, v1 or v2, not {kind!r}")

    if api == "auto":
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InfluxConfigError(f"InfluxDB URL {_public(url)!r} must be http:// or https:// with a host")
        return AutoWriter(make, url, timeout_s)
    return make(api)

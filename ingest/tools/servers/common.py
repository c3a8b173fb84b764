"""What every launcher shares: free ports, waiting for readiness, processes in their own group stopped at exit,
Docker detection for testcontainers, and the shipped configuration files."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path


def shipped_file(name: str) -> Path:
    """mosquitto.conf or mosquitto.acl as shipped with the package (the repository's own files)."""
    return Path(str(resources.files("ingest.tools") / "data" / name))


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
    """No way to run this server here (no variable, no Docker, no binary)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def remove_folder(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)

"""The three drains of one MQTT backlog, timed the same way: `mosquitto_sub` (the broker's own rate), the naive
paho script and `cistern run`, each on its own persistent QoS 1 session created before the backlog is published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import urllib3

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TOPICS = "water/+/meter/+/reading"
PUBLISHER = "bench-publisher"
POLL_S = 0.025  # InfluxDB shard statistics cost ~1 ms of its time a query


@dataclass
class Drain:
    """One timed drain: messages (or readings) per second from the first message out (mosquitto_sub) or the
    first point stored (the consumers) to the last."""

    rate_msgs: float
    stored: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds of each process during the drain
    rss_mb: list[float] = field(default_factory=list)  # resident memory sampled every 0.1 s, in order

    def cpu_note(self, n_msgs: int) -> str:
        """CPU µs per message of each process, and their sum against the wall time (cores kept busy)."""
        if not self.cpu_s or not self.seconds:
            return ""
        parts = ", ".join(f"{k} {1e6 * v / n_msgs:.1f}" for k, v in self.cpu_s.items())
        return f"CPU µs/msg: {parts} (busy {sum(self.cpu_s.values()) / self.seconds:.2f} of {os.cpu_count()} cores)"


class Servers:
    """Mosquitto (the project's configuration, plus a publisher account for every meter topic) and InfluxDB 1.x,
    from the same launchers the tests and the demo use."""

    def __init__(self) -> None:
        from ingest.tools.servers import INGEST_USER, start_influx_v1, start_mosquitto

        self.mq = start_mosquitto(use_docker=False, accounts=(PUBLISHER,),
                                  acl_extra=f"user {PUBLISHER}\ntopic write water/#\n", from_env=False)
        try:
            self.influx = start_influx_v1(use_docker=False)
        except Exception:
            self.mq.stop()
            raise
        self.user, self.password = INGEST_USER, self.mq.passwords[INGEST_USER]
        self.http = urllib3.PoolManager(retries=False)

    def stop(self) -> None:
        self.mq.stop()
        self.influx.stop()

    def publisher(self):
        from rawpub import RawPublisher

        return RawPublisher(self.mq.host, self.mq.port, PUBLISHER, self.mq.passwords[PUBLISHER])

    def settle(self, timeout_s: float = 60.0) -> float:
        """Wait until InfluxDB and the broker have gone quiet (InfluxDB compacts what the last drain wrote for a
        while after it): each drain starts from the same calm. Returns the seconds waited."""
        pids = [self.influx._proc.pid, self.mq._proc.pid]  # type: ignore[union-attr]
        t0 = time.perf_counter()
        before = sum(map(cpu_s, pids))
        while time.perf_counter() - t0 < timeout_s:
            time.sleep(0.5)
            now = sum(map(cpu_s, pids))
            if now - before < 0.025:  # under 5 % of a core over the last half second
                break
            before = now
        return time.perf_counter() - t0

    def points_ok(self, db: str) -> int:
        """Points InfluxDB has accepted into `db` (its shard statistics: cheap, unlike a count over the data)."""
        r = self.http.request("GET", f"{self.influx.url}/query", fields={"q": "SHOW STATS FOR 'shard'"})
        n = 0
        for series in orjson.loads(r.data)["results"][0].get("series", []):
            if series.get("tags", {}).get("database") == db:
                n += series["values"][0][series["columns"].index("writePointsOk")]
        return n

    def readings(self, db: str) -> int:
        rows = self.influx.query('SELECT count("total_m3") FROM "meter_reading"', db=db)
        return int(rows[0].get("count", 0)) if rows else 0

    # --- mosquitto_sub ------------------------------------------------------------------------------------
    def _sub_args(self, client_id: str) -> list[str]:
        return ["mosquitto_sub", "-h", self.mq.host, "-p", str(self.mq.port), "-u", self.user, "-P", self.password,
                "-c", "-i", client_id, "-q", "1", "-t", TOPICS]

    def sub_session(self, client_id: str) -> None:
        subprocess.run(self._sub_args(client_id) + ["-E"], check=True, timeout=30)

    def sub_drain(self, client_id: str, n: int) -> Drain:
        """mosquitto_sub -C n: counts only (its output goes down a pipe read in 1 MiB chunks)."""
        proc = subprocess.Popen(self._sub_args(client_id) + ["-C", str(n)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        first = proc.stdout.read1(1 << 20)
        t0 = time.perf_counter()
        while first and proc.stdout.read1(1 << 20):
            pass
        proc.wait(300)
        t1 = time.perf_counter()
        return Drain(n / (t1 - t0), n, t1 - t0)

    # --- the consumers ------------------------------------------------------------------------------------
    def naive_cmd(self, client_id: str, db: str) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, str(BENCH / "naive_consumer.py"), self.mq.host, str(self.mq.port), self.user,
                 self.password, client_id, self.influx.url, db], dict(os.environ))

    def cistern_cmd(self, client_id: str, db: str, registry: Path, state: Path) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "CISTERN_MQTT_URL": self.mq.url(), "CISTERN_MQTT_CLIENT_ID": client_id,
               "CISTERN_INFLUX_URL": self.influx.url, "CISTERN_INFLUX_API": "v1", "CISTERN_INFLUX_BUCKET": db,
               "CISTERN_REGISTRY": str(registry), "CISTERN_STATE_DIR": str(state)}
        return [sys.executable, "-m", "ingest", "run"], env

    def session(self, cmd: tuple[list[str], dict[str, str]], ready: str, log: Path) -> None:
        """Start a consumer until it has subscribed, then stop it: its persistent session now queues for it."""
        proc = _spawn(cmd, log)
        try:
            _wait_for(log, ready, proc, 60)
        finally:
            _stop(proc)

    def consumer_drain(self, cmd: tuple[list[str], dict[str, str]], db: str, expected: int, log: Path,
                       timeout_s: float) -> Drain:
        """Start a consumer on its backlog; time from the first point stored to the last (polling InfluxDB)."""
        proc = _spawn(cmd, log)
        rss = _RssSampler(proc.pid)
        pids = {"consumer": proc.pid, "influxd": self.influx._proc.pid, "mosquitto": self.mq._proc.pid}  # type: ignore[union-attr]
        cpu0: dict[str, float] = {}
        try:
            t_first = t_end = None
            n_first = n = 0
            deadline = time.perf_counter() + timeout_s
            while time.perf_counter() < deadline and proc.poll() is None:
                n = self.points_ok(db)
                now = time.perf_counter()
                if t_first is None and n:
                    t_first, n_first = now, n
                    cpu0 = {k: cpu_s(pid) for k, pid in pids.items()}
                if n >= expected:
                    t_end = now
                    break
                time.sleep(POLL_S)
            cpu1 = {k: cpu_s(pid) for k, pid in pids.items()}
            stored = self.readings(db)
            while stored < expected and time.perf_counter() < deadline and proc.poll() is None:
                time.sleep(0.5)  # duplicates (redelivery) count in the statistics; the data decides
                stored, t_end = self.readings(db), time.perf_counter()
        finally:
            rss.stop()
            _stop(proc)
        if t_first is None or t_end is None or t_end <= t_first:
            why = f"; it exited with {proc.returncode}: {_tail(log)}" if proc.returncode not in (None, 0, -15) else ""
            return Drain(0.0, stored, 0.0, rss.peak_mb, [f"stored {stored:,} of {expected:,}{why}"])
        secs = t_end - t_first
        d = Drain((expected - n_first) / secs, stored, secs, rss.peak_mb,
                  cpu_s={k: cpu1[k] - cpu0[k] for k in cpu0} if cpu0 else {},
                  rss_mb=[mb for t, mb in rss.samples if t_first <= t <= t_end])
        if stored < expected:
            d.notes.append(f"stored {stored:,} of {expected:,} within {timeout_s:.0f} s")
        return d


class _RssSampler:
    """The resident memory of a process, sampled every 0.1 s by a thread; `peak_mb` is the largest seen."""

    def __init__(self, pid: int):
        self.pid, self.peak_mb, self.samples = pid, 0.0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            mb = rss_mb(self.pid)
            if mb:
                self.samples.append((time.perf_counter(), mb))
                self.peak_mb = max(self.peak_mb, mb)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process and its finished threads (0 once it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spawn(cmd: tuple[list[str], dict[str, str]], log: Path) -> subprocess.Popen:
    argv, env = cmd
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _wait_for(log: Path, needle: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"{proc.args[1]} did not say {needle!r}:\n{tail}")


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

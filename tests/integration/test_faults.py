"""Faults on purpose, against the real servers: every published reading is stored exactly once.

Each test records its figures; `python bench/reliability.py` runs this file and writes docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.integration.harness import (
    T0,
    Service,
    count_v1,
    kill9,
    publish,
    readings,
    received,
    rss_mb,
    start_local_server,
    stop_local_server,
    v1_env,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.integration


def record(fault: str, published: int, stored: list[tuple[int, float]], expected: list[tuple[int, float]],
           delivered: int, note: str = "") -> None:
    """Append one row for the reliability table (when asked to) and assert nothing was lost or doubled."""
    times = [t for t, _ in stored]
    lost = len(set(expected) - set(stored))
    duplicated = len(times) - len(set(times))
    out = os.environ.get("CISTERN_RELIABILITY_OUT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"fault": fault, "published": published, "stored": len(stored), "lost": lost,
                                 "duplicated": duplicated, "delivered_to_ingester": delivered,
                                 "note": note}) + "\n")
    assert lost == 0 and duplicated == 0 and stored == expected


def expected_rows(n: int, start: int = T0) -> list[tuple[int, float]]:
    return [((start + i * 60) * 10**9, round(100 + i * 0.01, 3)) for i in range(n)]


def publish_in_chunks(broker, payloads, chunk=500, pause_s=0.05, between=None):
    for k in range(0, len(payloads), chunk):
        publish(broker, "M000001", "d01", payloads[k:k + chunk])
        if between is not None:
            between(k // chunk)
        time.sleep(pause_s)


def test_kill_9_mid_stream_then_restart(mosquitto_server, influx_v1, tmp_path):
    n = 6000
    db = influx_v1.new_database("kill9")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-fault-kill9")
    env["CISTERN_BATCH_MAX_MESSAGES"] = "200"
    svc = Service(env)
    payloads = readings("M000001", T0, n)
    pub = threading.Thread(target=publish_in_chunks, args=(mosquitto_server, payloads))
    pub.start()
    wait_until(lambda: count_v1(influx_v1, db, "M000001") >= n // 4, True)
    delivered = received(svc)
    kill9(svc)
    pub.join(120)
    svc = Service(env)
    stored = wait_for_count(influx_v1, db, "M000001", n, svc)
    assert svc.stop() == 0
    delivered += received(svc)  # the final health line, written on the way out
    record("ingester killed with SIGKILL mid-stream, restarted", n, stored, expected_rows(n), delivered)


def test_broker_restart_mid_stream(mosquitto_private, influx_v1, tmp_path):
    n = 4000
    db = influx_v1.new_database("broker")
    env = v1_env(mosquitto_private, influx_v1, db, tmp_path, "cistern-fault-broker")
    svc = Service(env)
    payloads = readings("M000001", T0, n)

    def restart_broker(chunk_no):
        if chunk_no == 3:
            mosquitto_private.stop()  # persists the queued messages of the ingester's session
            time.sleep(1.0)
            mosquitto_private.start()

    publish_in_chunks(mosquitto_private, payloads, between=restart_broker)
    stored = wait_for_count(influx_v1, db, "M000001", n, svc)
    assert svc.stop() == 0
    delivered = received(svc)  # the final health line, written on the way out
    record("broker restarted mid-stream (persistence on)", n, stored, expected_rows(n), delivered)


def test_influxdb_down_under_load_spools_and_drains(mosquitto_server, influx_v1, tmp_path):
    if not influx_v1.managed or influx_v1._proc is None:
        pytest.skip("needs an InfluxDB the tests started from the local binary")
    n = 5000
    db = influx_v1.new_database("dbdown")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-fault-dbdown")
    env["CISTERN_INFLUX_TIMEOUT_S"] = "2"
    svc = Service(env)
    payloads = readings("M000001", T0, n)
    publish(mosquitto_server, "M000001", "d01", payloads[:1000])
    assert len(wait_for_count(influx_v1, db, "M000001", 1000, svc)) == 1000
    argv = stop_local_server(influx_v1)
    try:
        publish_in_chunks(mosquitto_server, payloads[1000:])
        svc.wait_for("spooling to disk", 30)
        # Everything published while the database was down is acked only because it is on disk.
        assert wait_until(lambda: received(svc) >= n, True), "".join(svc.log[-25:])
        spool = tmp_path / "state" / "spool"
        assert any(spool.glob("*lp"))  # .lp (ns) or .slp (whole seconds) segments
    finally:
        start_local_server(influx_v1, argv)
    stored = wait_for_count(influx_v1, db, "M000001", n, svc)
    assert wait_until(lambda: any(spool.glob("*lp")), False) is False
    assert svc.stop() == 0
    delivered = received(svc)  # the final health line, written on the way out
    record("InfluxDB stopped under load, then started", n, stored, expected_rows(n), delivered,
           "spooled to disk and acked; drained in order")


def test_slow_database_holds_memory_bounded(mosquitto_server, influx_v1, tmp_path):
    """InfluxDB frozen (SIGSTOP): with the spool off, back-pressure keeps memory bounded, nothing is lost."""
    if not influx_v1.managed or influx_v1._proc is None:
        pytest.skip("needs an InfluxDB the tests started from the local binary")
    n = 40_000
    db = influx_v1.new_database("slow")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-fault-slow")
    env.update({"CISTERN_SPOOL_MAX_BYTES": "0", "CISTERN_INFLUX_TIMEOUT_S": "1", "CISTERN_BATCH_MAX_MESSAGES": "2000"})
    svc = Service(env)
    publish(mosquitto_server, "M000001", "d01", readings("M000001", T0, 100))
    assert len(wait_for_count(influx_v1, db, "M000001", 100, svc)) == 100
    base = rss_mb(svc.proc.pid)
    influx_v1._proc.send_signal(signal.SIGSTOP)
    peak = base
    try:
        publish_in_chunks(mosquitto_server, readings("M000001", T0, n), chunk=5000, pause_s=0)
        for _ in range(20):
            peak = max(peak, rss_mb(svc.proc.pid))
            time.sleep(0.25)
    finally:
        influx_v1._proc.send_signal(signal.SIGCONT)
    stored = wait_for_count(influx_v1, db, "M000001", n, svc, timeout_s=300)
    assert svc.stop() == 0
    delivered = received(svc)  # the final health line, written on the way out
    # The bound: the source buffers at most max(4 × batch, 20,000) messages; the rest waits in the broker.
    assert peak - base < 150, f"memory grew by {peak - base:.0f} MB while the database was frozen"
    record("InfluxDB frozen (SIGSTOP) under load, spool off", n, stored, expected_rows(n), delivered,
           f"RSS {base:.0f} MB → peak {peak:.0f} MB; unacked messages wait in the broker")

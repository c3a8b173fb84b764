"""`cistern run` takes a registry change without a restart: a meter added to meters.csv is stored from the moment
`systemctl reload cistern` (SIGHUP) is sent, its earlier messages wait in quarantine for `cistern reingest`, and the
service keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import METERS, write_registry
from tests.integration.harness import (
    T0,
    Service,
    count_v1,
    publish,
    readings,
    v1_env,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.integration

NEW = "M000002,d01,B001,household,residential,15,1,86400,C01,9999,\n"


def test_a_meter_added_to_the_registry_is_stored_after_sighup(mosquitto_server, influx_v1, tmp_path):
    db = influx_v1.new_database("reload")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-it-reload")
    registry = write_registry(tmp_path / "registry", meters=METERS.replace(NEW, ""))  # M000002 not there yet
    env["CISTERN_REGISTRY_CHECK_INTERVAL_S"] = "0"  # only SIGHUP: the test decides when
    svc = Service(env)
    publish(mosquitto_server, "M000002", "d01", readings("M000002", T0, 5))
    publish(mosquitto_server, "M000001", "d01", readings("M000001", T0, 5))
    assert len(wait_for_count(influx_v1, db, "M000001", 5, svc)) == 5
    quarantine = tmp_path / "state" / "quarantine.jsonl"
    assert wait_until(lambda: quarantine.exists() and len(quarantine.read_bytes().splitlines()), 5) == 5

    write_registry(registry, meters=METERS)  # the meter installed last week, now in the export
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for("registry reloaded (SIGHUP): meters 4 (+1 -0)", 20)
    publish(mosquitto_server, "M000002", "d01", readings("M000002", T0 + 3600, 3))
    assert len(wait_for_count(influx_v1, db, "M000002", 3, svc)) == 3
    assert count_v1(influx_v1, db, "M000002") == 3 and len(quarantine.read_bytes().splitlines()) == 5
    assert svc.proc.poll() is None  # reloaded, not restarted
    assert svc.stop() == 0
    # what it sent before the registry knew it: stored by reingest
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
    r = subprocess.run([sys.executable, "-m", "ingest", "reingest"], env={**clean, **env}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "re-ingested 5 quarantined messages" in r.stderr, r.stderr
    assert count_v1(influx_v1, db, "M000002") == 8

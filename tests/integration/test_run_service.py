"""`cistern run` against a real Mosquitto and real databases, configured only through CISTERN_* variables."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers import write_registry
from tests.integration.harness import (
    T0,
    Service,
    publish,
    readings,
    stored_v1,
    v1_env,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_every_published_reading_lands_in_influxdb_v1_and_bad_ones_are_dead_lettered(
        mosquitto_server, influx_v1, tmp_path):
    db = influx_v1.new_database("run")
    svc = Service(v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-it-v1"))
    good = readings("M000001", T0, 600)
    bad = [b'{"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z"}',  # no register
           b'{"meter_id": "M000002", "ts": "2026-11-22T08:00:00Z", "total_m3": 5}',  # spoofed id
           b'{"meter_id": "M000001", "ts": "2026-11-22T08:00:00Z", "total_m3": -5}',
           b"\xff\xfe not even text"]
    publish(mosquitto_server, "M000001", "d01", good[:300] + bad[:2] + good[300:] + bad[2:])
    expected = [(T0 * 10**9 + i * 60 * 10**9, round(100 + i * 0.01, 3)) for i in range(600)]
    assert wait_for_count(influx_v1, db, "M000001", 600, svc) == expected
    svc.wait_for("dead_lettered=4", 10)
    assert svc.stop() == 0, "".join(svc.log[-20:])
    dead = [orjson.loads(x) for x in (tmp_path / "state" / "deadletters.jsonl").read_bytes().splitlines()]
    assert len(dead) == 4 and all(d["reason"] for d in dead)
    tags = influx_v1.query("SHOW TAG VALUES FROM meter_reading WITH KEY = building_id", db=db)
    assert [t["value"] for t in tags] == ["B001"]


def test_readings_published_while_the_service_is_down_arrive_after_restart(mosquitto_server, influx_v1, tmp_path):
    db = influx_v1.new_database("restart")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-it-restart")
    svc = Service(env)
    first = readings("M000001", T0, 200)
    publish(mosquitto_server, "M000001", "d01", first)
    assert len(wait_for_count(influx_v1, db, "M000001", 200, svc)) == 200
    assert svc.stop() == 0
    publish(mosquitto_server, "M000001", "d01", readings("M000001", T0 + 200 * 60, 300))  # nobody listening
    svc = Service(env)
    assert len(wait_for_count(influx_v1, db, "M000001", 500, svc)) == 500
    times = [t for t, _ in stored_v1(influx_v1, db, "M000001")]
    assert times == [T0 * 10**9 + i * 60 * 10**9 for i in range(500)]
    assert svc.stop() == 0


def test_every_published_reading_lands_in_victoriametrics_over_v2(mosquitto_server, victoria, tmp_path):
    svc = Service({
        "CISTERN_MQTT_URL": mosquitto_server.url(),
        "CISTERN_MQTT_CLIENT_ID": "cistern-it-v2",
        "CISTERN_INFLUX_URL": victoria.url,
        "CISTERN_INFLUX_API": "v2",
        "CISTERN_INFLUX_BUCKET": victoria.bucket,
        "CISTERN_INFLUX_ORG": victoria.org,
        "CISTERN_INFLUX_TOKEN": victoria.token,
        "CISTERN_REGISTRY": str(write_registry(tmp_path / "registry")),
        "CISTERN_STATE_DIR": str(tmp_path / "state"),
    })
    start = T0 - 86400 * 3  # a day no other test writes (VictoriaMetrics refuses future samples)
    publish(mosquitto_server, "M000002", "d01", readings("M000002", start, 250))
    assert wait_until(lambda: victoria.count("meter_reading", "total_m3", meter_id="M000002"), 250) == 250
    pts = victoria.points("meter_reading", "total_m3", meter_id="M000002")
    assert [p[0] for p in pts] == [(start + i * 60) * 1000 for i in range(250)]
    assert pts[0][2]["district"] == "d01" and pts[0][2]["role"] == "household"
    assert svc.stop() == 0


def test_secrets_never_appear_in_the_log(mosquitto_server, influx_v1, tmp_path):
    db = influx_v1.new_database("secrets")
    env = v1_env(mosquitto_server, influx_v1, db, tmp_path, "cistern-it-secrets")
    env.update({"CISTERN_LOG_LEVEL": "DEBUG", "CISTERN_INFLUX_PASSWORD": "influx-pw-Zq81",
                "CISTERN_INFLUX_TOKEN": "token-Xy77", "CISTERN_ALERT_WEBHOOK_SECRET": "hook-secret-Pp42",
                "CISTERN_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    svc = Service(env)
    publish(mosquitto_server, "M000001", "d01", readings("M000001", T0 + 7 * 86400, 5))
    wait_for_count(influx_v1, db, "M000001", 5, svc)
    assert svc.stop() == 0
    log = "".join(svc.log)
    assert "MQTT subscribed" in log
    for secret in (mosquitto_server.passwords["cistern-ingest"], "influx-pw-Zq81", "token-Xy77", "hook-secret-Pp42"):
        assert secret not in log

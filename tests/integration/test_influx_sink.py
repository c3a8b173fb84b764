"""The InfluxDB sink against real servers: InfluxDB 1.x over v1, VictoriaMetrics over v2 (influxdb-client)."""

from __future__ import annotations

import numpy as np
import pytest

from devices.batch import Batch, DeviceEvent, MeterReadings, PumpReadings, RoomReadings, TankReadings
from devices.registry import Registry
from ingest.sinks.influx import InfluxAuthError, WriteUnavailable, open_writer
from ingest.sinks.lineproto import LineEncoder
from ingest.tools import servers

pytestmark = pytest.mark.integration

NAN = float("nan")
T0 = 1_795_334_400_000_000_000  # 2026-11-22T00:00:00Z
HOUR = 3_600 * 10**9


def make_registry(district: str = "d01", id_prefix: str = "") -> Registry:
    n = 4
    m = {
        "meter_id": [id_prefix + i for i in ("M000001", "M000002", "M 0003,=x", "M000004")],
        "district": [district] * n,
        "building_id": ["B001", "B001", "楼 7, 东", ""], "role": ["household", "household", "household", "master"],
        "customer_class": ["residential"] * 3 + [""], "pipe_dn_mm": [15, 15, 15, 50], "prepaid": [False, True, False, False],
        "report_interval_s": [3600] * n, "cell_id": ["C1"] * n, "register_max_m3": [9999.0] * n,
        "business_hours_per_day": [NAN] * n,
    }
    b = {"building_id": ["B001", "楼 7, 东"], "district": [district] * 2, "address": ["", ""],
         "pump_room_id": ["P0001", ""], "master_meter_id": [id_prefix + "M000004", ""]}
    r = {"room_id": ["P0001"], "district": [district], "address": [""], "maintenance_unit": ["Unit 3"],
         "supervisor_unit": [""]}
    t = {"tank_id": ["P0001-T1"], "room_id": ["P0001"], "capacity_m3": [50.0],
         "last_disinfected": [np.datetime64("2026-06-01")]}
    return Registry.from_columns(m, b, r, t)


def make_batch(hours: int = 24) -> Batch:
    """Four meters reporting hourly; status fields on each meter's last reading only (as an NB-IoT batch)."""
    meter = np.repeat(np.arange(4, dtype=np.int32), hours)
    k = np.tile(np.arange(hours), 4)
    last = k == hours - 1
    status = lambda v: np.where(last, v, NAN)  # noqa: E731
    return Batch(
        meters=MeterReadings.from_columns(
            meter=meter, ts_ns=T0 + k * HOUR, total_m3=np.round(100 + meter * 10 + k * 0.013, 3),
            reverse_m3=np.zeros(len(k)), flow_m3h=np.round(0.1 + k / 100, 3), rsrp_dbm=status(-101.5),
            snr_db=status(2.0), ecl=status(np.where(meter == 2, 2.0, 1.0)), battery_v=status(3.61),
            balance_cny=np.where(last & (meter == 1), 42.5, NAN), valve=np.where(last, 0, -1)),
        tanks=TankReadings.from_columns(tank=[0], ts_ns=[T0], level_m=[2.1], free_chlorine_mg_l=[0.31],
                                        turbidity_ntu=[0.2], ph=[7.4]),
        rooms=RoomReadings.from_columns(room=[0], ts_ns=[T0], outlet_pressure_mpa=[0.34], door_open=[1.0]),
        pumps=PumpReadings.from_columns(room=[0], pump_id=np.array(["1"], dtype=object), ts_ns=[T0],
                                        running=[1.0], current_a=[11.8]),
        events=[DeviceEvent("pumproom", 0, "P0001", "d01", T0 + 5, "disinfection",
                            {"tank_id": "P0001-T1", "work_order": 'WO "2026"-1187, 消毒',
                             "quality": {"free_chlorine_mg_l": 0.45}})],
    )


def test_a_batch_written_over_v1_reads_back_exactly(influx_v1, influx_v1_db):
    reg, batch = make_registry(), make_batch()
    writer = open_writer(influx_v1.url, api="v1", bucket=influx_v1_db, username=influx_v1.username,
                         password=influx_v1.password)
    assert writer.write(LineEncoder(reg).encode(batch)) == []
    writer.close()

    rows = influx_v1.query("SELECT * FROM meter_reading", db=influx_v1_db)
    got = sorted((r["meter_id"], r["time"], r["total_m3"]) for r in rows)
    m = batch.meters
    want = sorted(zip(reg.meters.ids[m.meter].tolist(), m.ts_ns.tolist(), m.total_m3.tolist(), strict=True))
    assert got == want  # every reading, exact values and nanosecond timestamps, awkward ids included
    awkward = [r for r in rows if r["meter_id"] == "M 0003,=x"]
    assert {r["building_id"] for r in awkward} == {"楼 7, 东"}
    assert {r["building_id"] for r in rows if r["meter_id"] == "M000004"} == {None}  # empty tag left out
    last = {r["meter_id"]: r for r in rows if r["time"] == T0 + 23 * HOUR}
    assert last["M000002"]["balance_cny"] == 42.5 and last["M000001"]["balance_cny"] is None
    assert last["M 0003,=x"]["ecl"] == 2 and last["M000001"]["valve"] == "open"
    assert sum(r["rsrp_dbm"] is not None for r in rows) == 4  # status only on the latest reading

    types = {r["fieldKey"]: r["fieldType"] for r in influx_v1.query("SHOW FIELD KEYS", db=influx_v1_db)
             if r["_measurement"] == "meter_reading"}
    assert types["ecl"] == "integer" and types["total_m3"] == "float" and types["valve"] == "string"
    room = influx_v1.query("SELECT * FROM pump_room", db=influx_v1_db)
    assert [(r["door_open"], r["outlet_pressure_mpa"], r["district"]) for r in room] == [(True, 0.34, "d01")]
    pump = influx_v1.query("SELECT * FROM pump", db=influx_v1_db)
    assert [(r["pump_id"], r["running"], r["current_a"]) for r in pump] == [("1", True, 11.8)]
    tank = influx_v1.query("SELECT * FROM tank", db=influx_v1_db)
    assert [(r["tank_id"], r["room_id"], r["ph"]) for r in tank] == [("P0001-T1", "P0001", 7.4)]
    ev = influx_v1.query("SELECT * FROM device_event", db=influx_v1_db)
    assert [(r["type"], r["work_order"], r["quality_free_chlorine_mg_l"]) for r in ev] == [
        ("disinfection", 'WO "2026"-1187, 消毒', 0.45)]


def test_writing_the_same_batch_twice_stores_each_point_once(influx_v1, influx_v1_db):
    body = LineEncoder(make_registry()).encode(make_batch(hours=6))
    writer = open_writer(influx_v1.url, api="v1", bucket=influx_v1_db)
    writer.write(body)
    writer.write(body)
    assert influx_v1.query("SELECT count(total_m3) FROM meter_reading", db=influx_v1_db)[0]["count"] == 24


def test_v1_creates_a_missing_database_and_honours_db_slash_rp(influx_v1):
    name = f"fresh_{servers.free_port()}"
    writer = open_writer(influx_v1.url, api="v1", bucket=f"{name}/autogen")
    assert writer.write(b"m v=1 1000000000\n") == []
    assert influx_v1.query("SELECT v FROM m", db=name)[0]["v"] == 1


def test_a_batch_written_over_v2_lands_in_victoriametrics(victoria):
    # One server for the whole session: this test's series get a district and ids no other test uses.
    district = f"d{servers.free_port()}"
    reg, batch = make_registry(district, id_prefix=f"{district}-"), make_batch()
    writer = open_writer(victoria.url, api="v2", bucket=victoria.bucket, org=victoria.org, token=victoria.token)
    assert writer.write(LineEncoder(reg).encode(batch)) == []
    writer.close()
    m = batch.meters
    for i, meter_id in enumerate(reg.meters.ids.tolist()):
        pts = victoria.points("meter_reading", "total_m3", meter_id=meter_id, district=district)
        sel = m.meter == i
        assert [(t, v) for t, v, _ in pts] == list(zip((m.ts_ns[sel] // 10**6).tolist(), m.total_m3[sel].tolist(),
                                                       strict=True))
    ecl = victoria.points("meter_reading", "ecl", district=district)
    assert sorted(v for _, v, _ in ecl) == [1, 1, 1, 2]


def test_a_batch_of_whole_seconds_is_sent_in_seconds_and_stored_at_the_same_instants(influx_v1, influx_v1_db,
                                                                                      victoria):
    district = f"d{servers.free_port()}"
    reg, batch = make_registry(district, id_prefix=f"{district}-"), make_batch()
    batch.events = []  # its event is 5 ns past the second: that batch goes in nanoseconds
    body, precision = LineEncoder(reg).encode_precise(batch)
    assert precision == "s" and body.count(b"\n") == len(batch) and len(body) < len(LineEncoder(reg).encode(batch))
    v1 = open_writer(influx_v1.url, api="v1", bucket=influx_v1_db)
    v2 = open_writer(victoria.url, api="v2", bucket=victoria.bucket, org=victoria.org, token=victoria.token)
    assert v1.write(body, precision="s") == [] and v2.write(body, precision="s") == []
    rows = influx_v1.query("SELECT total_m3 FROM meter_reading", db=influx_v1_db)
    assert sorted(r["time"] for r in rows) == sorted(batch.meters.ts_ns.tolist())  # nanoseconds since the epoch
    pts = victoria.points("meter_reading", "total_m3", meter_id=reg.meters.ids[0], district=district)
    assert [t for t, _, _ in pts] == (batch.meters.ts_ns[batch.meters.meter == 0] // 10**6).tolist()


def test_auto_detection_picks_v1_for_influxdb_1x_and_v2_for_victoriametrics(influx_v1, influx_v1_db, victoria):
    v1 = open_writer(influx_v1.url, api="auto", bucket=influx_v1_db)
    v2 = open_writer(victoria.url, api="auto", bucket=victoria.bucket, org=victoria.org, token=victoria.token)
    assert v1.api == "auto" and v2.api == "auto"  # nothing asked before the first write
    district = f"d{servers.free_port()}"
    assert v1.write(b"m v=1 1000000000\n") == []
    assert v2.write(f"auto_probe,district={district} v=1 1000000000\n".encode()) == []
    assert (v1.api, v2.api) == ("v1", "v2")
    assert influx_v1.query("SELECT v FROM m", db=influx_v1_db)[0]["v"] == 1
    assert victoria.count("auto_probe", "v", district=district) == 1


def test_a_field_type_conflict_refuses_exactly_the_offending_line(influx_v1, influx_v1_db):
    reg, batch = make_registry(), make_batch()
    enc = LineEncoder(reg)
    writer = open_writer(influx_v1.url, api="v1", bucket=influx_v1_db)
    writer.write(enc.encode(make_batch(hours=1)))  # total_m3 is a float from now on
    lines = enc.encode(batch).split(b"\n")
    bad = b'meter_reading,district=d01,meter_id=M000009 total_m3="12.5" ' + str(T0).encode()
    body = b"\n".join(lines[:30] + [bad] + lines[30:])

    refused = writer.write(body)

    assert [line for line, _ in refused] == [bad]
    assert "field type conflict" in refused[0][1]
    count = influx_v1.query("SELECT count(total_m3) FROM meter_reading", db=influx_v1_db)[0]["count"]
    assert count == len(batch.meters)  # every other reading landed


def test_an_unparseable_line_is_refused_and_the_rest_land(influx_v1, influx_v1_db):
    good = [f"m,k=a v={i} {T0 + i}".encode() for i in range(100)]
    body = b"\n".join(good[:50] + [b"m,k=a v=1 not-a-time"] + good[50:]) + b"\n"
    refused = open_writer(influx_v1.url, api="v1", bucket=influx_v1_db).write(body)
    assert [line for line, _ in refused] == [b"m,k=a v=1 not-a-time"]
    assert influx_v1.query("SELECT count(v) FROM m", db=influx_v1_db)[0]["count"] == 100


@pytest.mark.parametrize("api", ["v1", "v2", "auto"])
def test_connection_refused_is_transient_and_names_no_secret(api):
    url = f"http://admin:s3cret-pw@127.0.0.1:{servers.free_port()}"  # nothing listens there
    writer = open_writer(url, api=api, token="tok-SECRET", username="admin", password="s3cret-pw", timeout_s=2)
    with pytest.raises(WriteUnavailable) as e:
        writer.write(b"m v=1 1\n")
    assert "s3cret" not in str(e.value) and "SECRET" not in str(e.value)
    assert "127.0.0.1" in str(e.value)


def test_wrong_credentials_are_a_configuration_error_not_a_retry():
    guarded = servers.start_victoria(extra_args=("-httpAuth.username=cistern", "-httpAuth.password=right-pw"))
    try:
        writer = open_writer(guarded.url, api="v2", token="wrong-TOKEN", org="o")
        with pytest.raises(InfluxAuthError) as e:
            writer.write(b"m v=1 1\n")
        assert "wrong-TOKEN" not in str(e.value) and "401" in str(e.value)
    finally:
        guarded.stop()
        servers.remove_folder(guarded.folder)

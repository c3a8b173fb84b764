"""Line protocol encoding: what InfluxDB will store, checked with a small independent parser of the format."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.alerts import AlertEvent
from devices.batch import Batch, DeviceEvent, MeterReadings, PumpReadings, RoomReadings, TankReadings
from devices.registry import Registry
from ingest.sinks.lineproto import LineEncoder, encode_alerts, escape_tag, quote_string, series_prefix

NAN = float("nan")
T0 = 1_795_334_400_000_000_000  # 2026-11-22T00:00:00Z in ns


# ---- an independent reader of line protocol, following InfluxDB 1.x/2.x's rules ---------------------------
# Names and tags: `\,` `\=` `\ ` are escapes, any other backslash is literal. Strings: `\"` and `\\`.


def _split_unescaped(text: str, sep: str) -> list[str]:
    # As InfluxDB scans: a separator counts unless the character before it is a backslash.
    parts, start = [], 0
    for i, c in enumerate(text):
        if c == sep and (i == 0 or text[i - 1] != "\\"):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unescape_name(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _field_value(text: str):
    if text.startswith('"'):
        assert text.endswith('"') and len(text) >= 2, text
        out, i, body = [], 0, text[1:-1]
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '"\\':
                out.append(body[i + 1])
                i += 2
            else:
                assert body[i] != '"', f"unescaped quote in {text!r}"
                out.append(body[i])
                i += 1
        return "".join(out)
    if text in ("true", "false"):
        return text == "true"
    if text.endswith("i"):
        return int(text[:-1])
    return float(text)


def _split_fields(text: str) -> list[str]:
    """Split `k=v,k="a,b"` on commas outside quoted strings."""
    parts, cur, quoted, i = [], [], False, 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\" and i + 1 < len(text):
            cur.append(text[i: i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    # the key ends at the first unescaped space; the timestamp is after the last space outside strings
    i = 0
    while line[i] != " " or line[i - 1] == "\\":
        i += 1
    key, rest = line[:i], line[i + 1:]
    fields_text, _, ts = rest.rpartition(" ")
    series = _split_unescaped(key, ",")
    tags = {}
    for pair in series[1:]:
        k, v = _split_unescaped(pair, "=")
        tags[_unescape_name(k)] = _unescape_name(v)
    fields = {}
    for pair in _split_fields(fields_text):
        k, _, v = pair.partition("=")
        fields[_unescape_name(k)] = _field_value(v)
    return _unescape_name(series[0]), tags, fields, int(ts)


def parse(body: bytes) -> list[tuple[str, dict[str, str], dict[str, object], int]]:
    text = body.decode("utf-8")
    assert text == "" or text.endswith("\n")
    return [parse_line(line) for line in text.split("\n") if line]


# ---- a registry with awkward names --------------------------------------------------------------------


def registry(building_ids=("B 1,=x", ""), districts=("d01", "东区 north")) -> Registry:
    n = len(building_ids)
    m = {
        "meter_id": [f"M{i:06d}" for i in range(n)], "district": list(districts[:n]),
        "building_id": list(building_ids), "role": ["household"] * n, "customer_class": ["residential"] * n,
        "pipe_dn_mm": [15] * n, "prepaid": [False] * n, "report_interval_s": [3600] * n, "cell_id": ["C1"] * n,
        "register_max_m3": [9999.0] * n, "business_hours_per_day": [NAN] * n,
    }
    bids = sorted({b for b in building_ids if b})
    b = {"building_id": bids, "district": ["d01"] * len(bids), "address": [""] * len(bids),
         "pump_room_id": [""] * len(bids), "master_meter_id": [""] * len(bids)}
    r = {"room_id": ["P0001", "P 2"], "district": ["d01", "d,2"], "address": ["", ""],
         "maintenance_unit": ["", ""], "supervisor_unit": ["", ""]}
    t = {"tank_id": ["P0001-T1", "P 2=T1"], "room_id": ["P0001", "P 2"], "capacity_m3": [50.0, 50.0],
         "last_disinfected": [np.datetime64("2026-06-01"), np.datetime64("2026-06-01")]}
    return Registry.from_columns(m, b, r, t)


def meters(**cols) -> MeterReadings:
    return MeterReadings.from_columns(**cols)


# ---- tests ----------------------------------------------------------------------------------------------


def test_meter_reading_tags_come_from_the_registry_escaped_and_round_trip():
    enc = LineEncoder(registry())
    body = enc.encode(Batch(meters=meters(meter=[0, 1], ts_ns=[T0, T0 + 1], total_m3=[1.5, 2.5])))
    (m0, tags0, f0, ts0), (m1, tags1, f1, ts1) = parse(body)
    assert m0 == m1 == "meter_reading"
    assert tags0 == {"meter_id": "M000000", "district": "d01", "building_id": "B 1,=x", "role": "household"}
    # an empty building_id is left out: InfluxDB refuses `building_id=`
    assert tags1 == {"meter_id": "M000001", "district": "东区 north", "role": "household"}
    assert (f0, ts0, f1, ts1) == ({"total_m3": 1.5}, T0, {"total_m3": 2.5}, T0 + 1)
    assert b"building_id=B\\ 1\\,\\=x" in body


def test_absent_values_are_omitted_and_types_follow_the_schema():
    enc = LineEncoder(registry())
    batch = Batch(meters=meters(
        meter=[0, 0, 0], ts_ns=[T0, T0 + 3_600 * 10**9, T0 + 7_200 * 10**9], total_m3=[10.0, 10.25, 10.5],
        reverse_m3=[0.0, NAN, 0.0], flow_m3h=[NAN, NAN, 0.012], rsrp_dbm=[NAN, NAN, -101.5],
        snr_db=[NAN, NAN, 2.0], ecl=[NAN, NAN, 1.0], battery_v=[NAN, NAN, 3.61], balance_cny=[NAN, NAN, -4.2],
        valve=[-1, -1, 1]))
    body = enc.encode(batch)
    rows = parse(body)
    assert [r[2] for r in rows] == [
        {"total_m3": 10.0, "reverse_m3": 0.0},
        {"total_m3": 10.25},
        {"total_m3": 10.5, "reverse_m3": 0.0, "flow_m3h": 0.012, "rsrp_dbm": -101.5, "snr_db": 2.0, "ecl": 1,
         "battery_v": 3.61, "balance_cny": -4.2, "valve": "closed"},
    ]
    assert [r[3] for r in rows] == batch.meters.ts_ns.tolist()  # row order kept
    assert b"ecl=1i" in body and b"nan" not in body.lower()
    assert isinstance(rows[2][2]["ecl"], int)


def test_a_row_without_any_field_is_skipped():
    enc = LineEncoder(registry())
    body = enc.encode(Batch(meters=meters(meter=[0, 1], ts_ns=[T0, T0], total_m3=[NAN, 3.0])))
    assert [r[1]["meter_id"] for r in parse(body)] == ["M000001"]


def test_floats_are_written_as_shortest_round_trip_text():
    values = [0.1, 1e-7, 123456789.123, 2.0 / 3.0, 1e21, 5e-324, 9999.999, 0.0, -0.5]
    enc = LineEncoder(registry())
    body = enc.encode(Batch(meters=meters(meter=[0] * len(values), ts_ns=[T0 + i for i in range(len(values))],
                                          total_m3=values)))
    got = [r[2]["total_m3"] for r in parse(body)]
    assert got == values  # exact equality: no digits lost
    assert b"total_m3=0.1 " in body and b"total_m3=9999.999 " in body


_meter_value = st.one_of(
    st.integers(-10**9 + 1, 10**9 - 1).map(lambda k: k / 10**4),  # what meters send: up to 4 decimals
    st.floats(allow_nan=False, allow_infinity=False),  # anything else a payload may carry
    st.sampled_from([0.0, -0.0, 1e-4, 5e-5, 99999.9999, 1e5, 2.0 / 3.0, 0.1 + 0.2]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_meter_value, min_size=1, max_size=300), st.booleans())
def test_float_fields_are_exactly_repr_text(values, repeat):
    # the encoder renders common decimals from digit tables and repeated values once: the text must still be
    # Python's shortest round-trip repr, byte for byte (what InfluxDB stores is parsed back from it)
    if repeat:
        values = values * 3  # enough repeats for the once-per-distinct-value path
    body = LineEncoder(registry()).encode(Batch(meters=meters(
        meter=[0] * len(values), ts_ns=[T0 + i for i in range(len(values))], total_m3=values)))
    got = [line.split(" ")[-2].removeprefix("total_m3=") for line in body.decode().splitlines()]
    assert got == [repr(float(v)) for v in values]


def test_every_four_decimal_fraction_is_repr_text():
    # each entry of the digit tables, at both ends of their range and negated
    values = [sign * (q + f / 10**4) for q in (0, 7, 99999) for f in range(10**4) for sign in (1, -1)]
    body = LineEncoder(registry()).encode(Batch(meters=meters(
        meter=[0] * len(values), ts_ns=[T0 + i for i in range(len(values))], total_m3=values)))
    got = [line.split(" ")[-2].removeprefix("total_m3=") for line in body.decode().splitlines()]
    assert got == [repr(v) for v in values]


def test_infinite_values_are_not_written():
    # InfluxDB refuses inf/nan; a non-finite number is as good as absent
    enc = LineEncoder(registry())
    body = enc.encode(Batch(meters=meters(meter=[0], ts_ns=[T0], total_m3=[1.0], flow_m3h=[math.inf])))
    assert parse(body)[0][2] == {"total_m3": 1.0}


def test_pump_room_tank_and_pump_points():
    enc = LineEncoder(registry())
    batch = Batch(
        tanks=TankReadings.from_columns(tank=[0, 1], ts_ns=[T0, T0], level_m=[2.1, NAN], ph=[7.4, 7.0]),
        rooms=RoomReadings.from_columns(room=[0, 1], ts_ns=[T0, T0], outlet_pressure_mpa=[0.34, NAN],
                                        door_open=[0.0, 1.0]),
        pumps=PumpReadings.from_columns(room=[0, 1], pump_id=np.array(["1", "B 2"], dtype=object), ts_ns=[T0, T0],
                                        running=[1.0, NAN], current_a=[11.8, NAN]),
    )
    rows = parse(enc.encode(batch))
    assert rows == [
        ("tank", {"tank_id": "P0001-T1", "room_id": "P0001", "district": "d01"},
         {"level_m": 2.1, "ph": 7.4}, T0),
        ("tank", {"tank_id": "P 2=T1", "room_id": "P 2", "district": "d,2"}, {"ph": 7.0}, T0),
        ("pump_room", {"room_id": "P0001", "district": "d01"}, {"outlet_pressure_mpa": 0.34, "door_open": False},
         T0),
        ("pump_room", {"room_id": "P 2", "district": "d,2"}, {"door_open": True}, T0),
        ("pump", {"room_id": "P0001", "pump_id": "1", "district": "d01"}, {"running": True, "current_a": 11.8}, T0),
        # the second pump reported nothing: no point
    ]


def test_device_event_fields_keep_quotes_backslashes_newlines_and_non_ascii_on_one_line():
    enc = LineEncoder(registry())
    work_order = 'WO "7"\\a,b=c 消毒\nline two'
    events = [
        DeviceEvent("pumproom", 0, "P0001", "d01", T0, "disinfection",
                    {"tank_id": "P0001-T1", "work_order": work_order, "operator": "Unit 3",
                     "quality": {"free_chlorine_mg_l": 0.45, "turbidity_ntu": 0.3}}),
        DeviceEvent("meter", 1, "M000001", "东区 north", T0 + 5, "replace ment", {"register_m3": 0}),
        DeviceEvent("meter", 1, "M000001", "东区 north", T0 + 6, "replacement", {}),
    ]
    body = enc.encode(Batch(events=events))
    assert body.count(b"\n") == 3  # one line per event, whatever the text holds
    rows = parse(body)
    assert rows[0][0] == "device_event"
    assert rows[0][1] == {"device_id": "P0001", "type": "disinfection", "district": "d01"}
    # a line break inside a string is written as the two characters \ n, so no point spans two lines
    assert rows[0][2] == {"device": "pumproom", "tank_id": "P0001-T1", "work_order": work_order.replace("\n", "\\n"),
                          "operator": "Unit 3", "quality_free_chlorine_mg_l": 0.45, "quality_turbidity_ntu": 0.3}
    # numbers in events are always floats, so a field never changes type between events
    assert rows[1][1]["type"] == "replace ment" and rows[1][2] == {"device": "meter", "register_m3": 0.0}
    assert rows[2][2] == {"device": "meter"} and rows[2][3] == T0 + 6


def test_alert_points_and_same_tick_alerts_do_not_overwrite_each_other():
    def alert(i: int, district: str = "d01") -> AlertEvent:
        return AlertEvent(alert_id=f"a{i}", event="raised", kind="network_outage", severity="critical",
                          subject_type="cell", subject_id=f"C{i}", district=district, start_ns=T0,
                          detected_at_ns=T0 + 60 * 10**9, summary=f'cell C{i} silent: "12 meters", 2 h')

    body = encode_alerts([alert(1), alert(2), alert(3, district="")])
    rows = parse(body)
    assert rows[0] == ("alert", {"kind": "network_outage", "severity": "critical", "event": "raised",
                                 "district": "d01"},
                       {"alert_id": "a1", "subject_id": "C1", "subject_type": "cell",
                        "summary": 'cell C1 silent: "12 meters", 2 h'}, T0 + 60 * 10**9)
    series_and_time = [(tuple(sorted(r[1].items())), r[3]) for r in rows]
    assert len(set(series_and_time)) == 3
    assert "district" not in rows[2][1]
    assert LineEncoder(registry()).encode_alerts([alert(1)]) == encode_alerts([alert(1)])


def test_bulk_encoding_matches_a_plain_row_by_row_encoder():
    """Thousands of rows with every pattern of missing values: same lines, same order as the obvious code."""
    rng = np.random.default_rng(7)
    n = 5000
    reg = registry(building_ids=tuple(f"B{i % 7}" for i in range(40)), districts=tuple(f"d{i % 3}" for i in range(40)))

    def holes(x: np.ndarray, p: float) -> np.ndarray:
        return np.where(rng.random(n) < p, np.nan, x)

    cols = dict(
        meter=rng.integers(0, 40, n), ts_ns=T0 + rng.integers(0, 48, n) * 3_600 * 10**9,
        total_m3=holes(np.round(rng.random(n) * 1e4, 3), 0.01), reverse_m3=holes(np.zeros(n), 0.5),
        flow_m3h=holes(rng.random(n), 0.3), rsrp_dbm=holes(np.round(-90 - rng.random(n) * 20, 1), 0.5),
        snr_db=holes(np.round(rng.random(n) * 10, 1), 0.5), ecl=holes(rng.integers(0, 3, n).astype(float), 0.5),
        battery_v=holes(np.round(3.5 + rng.random(n) * 0.2, 2), 0.5), balance_cny=holes(rng.random(n) * 100, 0.9),
        valve=np.where(rng.random(n) < 0.5, -1, rng.integers(0, 3, n)))
    body = LineEncoder(reg).encode(Batch(meters=meters(**cols)))

    expected = []
    names = ["total_m3", "reverse_m3", "flow_m3h", "rsrp_dbm", "snr_db", "ecl", "battery_v", "balance_cny"]
    for i in range(n):
        mi = int(cols["meter"][i])
        prefix = series_prefix("meter_reading", {"meter_id": reg.meters.ids[mi], "district": reg.meters.district[mi],
                                                 "building_id": reg.meters.building_id[mi], "role": "household"})
        fields = []
        for name in names:
            v = float(cols[name][i])
            if not math.isnan(v):
                fields.append(f"{name}={int(v)}i" if name == "ecl" else f"{name}={v!r}")
        if cols["valve"][i] >= 0:
            fields.append(f"valve={quote_string(['open', 'closed', 'unknown'][cols['valve'][i]])}")
        if fields:
            expected.append(f"{prefix} {','.join(fields)} {int(cols['ts_ns'][i])}\n")
    assert body.decode() == "".join(expected)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(_text, _text)
def test_any_tag_value_and_string_field_survive_a_round_trip(tag: str, text: str):
    line = f"m,{escape_tag('k')}={escape_tag(tag)} s={quote_string(text)} 1\n"
    assert line.count("\n") == 1
    [(_, tags, fields, ts)] = parse(line.encode())
    # line breaks and tabs become visible escapes; a trailing backslash in a tag is written as U+FF3C
    want_tag = tag.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    stripped = want_tag.rstrip("\\")
    want_tag = stripped + "\uff3c" * (len(want_tag) - len(stripped))
    assert tags == {"k": want_tag}
    assert fields == {"s": text.replace("\n", "\\n").replace("\r", "\\r")}
    assert ts == 1


@pytest.mark.parametrize("value", ["a b", "a,b", "a=b", "a\\b", "水表", "x\\,y"])
def test_escape_tag_examples(value: str):
    _, tags, _, _ = parse_line(f"m,t={escape_tag(value)} v=1 1")
    assert tags["t"] == value


def test_a_batch_of_whole_seconds_is_encoded_in_seconds_and_any_finer_one_in_nanoseconds():
    reg = Registry.from_columns(
        {"meter_id": ["M1"], "district": ["d01"], "building_id": ["B1"], "role": ["household"],
         "customer_class": ["residential"], "pipe_dn_mm": [15], "prepaid": [False], "report_interval_s": [3600],
         "cell_id": ["C1"], "register_max_m3": [9999.0], "business_hours_per_day": [NAN]},
        {"building_id": ["B1"], "district": ["d01"], "address": [""], "pump_room_id": [""], "master_meter_id": [""]},
        {"room_id": [], "district": [], "address": [], "maintenance_unit": [], "supervisor_unit": []},
        {"tank_id": [], "room_id": [], "capacity_m3": [], "last_disinfected": []})
    enc = LineEncoder(reg)

    def batch(*ts):
        return Batch(meters=MeterReadings.from_columns(meter=[0] * len(ts), ts_ns=list(ts), total_m3=[1.5] * len(ts),
                                                       valve=[-1] * len(ts)))

    body, precision = enc.encode_precise(batch(T0, T0 + 3600 * 10**9))
    assert precision == "s"
    assert body.decode().splitlines() == [line[:-9] for line in enc.encode(batch(T0, T0 + 3600 * 10**9)).decode().splitlines()]
    body, precision = enc.encode_precise(batch(T0, T0 + 1))
    assert precision == "ns" and body == enc.encode(batch(T0, T0 + 1))

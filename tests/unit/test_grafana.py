"""The Grafana dashboard shipped in grafana/: panels that fit the grid, and queries that name only what Cistern
writes to InfluxDB (a renamed field would leave a panel silently empty), the pump rooms' water and doors included."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ingest.sinks.lineproto import METER_FIELDS, PUMP_FIELDS, ROOM_FIELDS, TANK_FIELDS

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "dashboard.json"
WRITTEN = {"meter_reading": {f.key for f in METER_FIELDS} | {"meter_id", "district", "building_id", "role"},
           "tank": {f.key for f in TANK_FIELDS} | {"tank_id", "room_id", "district"},
           "pump_room": {f.key for f in ROOM_FIELDS} | {"room_id", "district"},
           "pump": {f.key for f in PUMP_FIELDS} | {"room_id", "pump_id", "district"},
           "alert": {"kind", "severity", "event", "district", "alert_id", "subject_id", "subject_type", "summary"}}


def _queries(panel: dict) -> list[str]:
    return [t["query"] for t in panel.get("targets", [])]


def test_panels_have_their_own_ids_and_do_not_overlap():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24 and not mine & cells, p["title"]
        cells |= mine


def test_queries_name_only_measurements_fields_and_tags_cistern_writes():
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        for q in _queries(p):
            measurements = set(re.findall(r'FROM "(\w+)"', q))
            assert measurements and measurements <= set(WRITTEN), (p["title"], measurements)
            aliases = set(re.findall(r'AS "([^"]+)"', q)) | {"last", "mean"}  # a subquery's columns
            names = set(re.findall(r'"(\w+)"', q)) - measurements - aliases
            known = set().union(*(WRITTEN[m] for m in measurements))
            assert names <= known, (p["title"], names - known)


def test_the_pump_rooms_water_against_its_limits_and_their_doors_are_shown():
    d = json.loads(DASHBOARD.read_text())
    assert "tank" in {v["name"] for v in d["templating"]["list"]}
    by_field = {}
    for p in d["panels"]:
        for q in _queries(p):
            for f in ("free_chlorine_mg_l", "turbidity_ntu", "ph", "door_open"):
                if f'"{f}"' in q:
                    by_field[f] = p
    assert set(by_field) == {"free_chlorine_mg_l", "turbidity_ntu", "ph", "door_open"}
    steps = {f: [s["value"] for s in by_field[f]["fieldConfig"]["defaults"]["thresholds"]["steps"]]
             for f in ("free_chlorine_mg_l", "turbidity_ntu", "ph")}
    assert steps == {"free_chlorine_mg_l": [None, 0.05, 2.0], "turbidity_ntu": [None, 1.0], "ph": [None, 6.5, 8.5]}
    assert by_field["door_open"]["type"] == "state-timeline"
    alerts = [q for p in d["panels"] for q in _queries(p) if "pump_room_intrusion" in q]
    assert alerts and "water_quality" in alerts[0]

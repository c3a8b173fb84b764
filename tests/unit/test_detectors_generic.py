"""Every registered detector passes the generic checks of detectors.testing (quiet on clean traffic, split
invariance, checkpoint round trip of every mutable attribute, device-order invariance, parameters with units), and
its alert events serialize as the alert format says."""

from __future__ import annotations

import orjson
import pytest

from detectors import DETECTORS, DetectorSet
from detectors.testing import CHECKS, Town, check_detector, run
from detectors.testing import busy_town as make_busy_town


@pytest.fixture(scope="module")
def busy_town() -> Town:
    return make_busy_town()


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_passes_the_generic_checks(name, check, busy_town):
    check_detector(name, busy_town, only=[check])


def test_events_follow_the_contract(busy_town):
    events = run(DetectorSet(busy_town.registry), busy_town)
    assert {e.kind for e in events} >= {"signal_blocking", "network_outage", "reverse_flow", "bypass",
                                        "disinfection_overdue", "water_quality", "sensor_fault",
                                        "pump_room_intrusion"}
    seen: dict[str, str] = {}
    for e in events:
        d = orjson.loads(orjson.dumps(e.to_dict()))
        assert d["event"] in ("raised", "updated", "cleared")
        assert d["summary"] and d["district"]  # routing is dispatch's (tests/unit/test_dispatch.py)
        assert d["start"] <= d["detected_at"] or d["kind"].startswith("disinfection")
        # one incident, one id: raised before anything else happens to it, cleared at most once
        if e.event == "raised":
            assert e.alert_id not in seen
        else:
            assert seen.get(e.alert_id) in ("raised", "updated")
        seen[e.alert_id] = e.event


def test_unknown_settings_are_refused(busy_town):
    with pytest.raises(ValueError, match="signal"):
        DetectorSet(busy_town.registry, params={"signal": {"no_such_setting": 1}})
    with pytest.raises(ValueError, match="unknown detector"):
        DetectorSet(busy_town.registry, params={"nope": {}})
    with pytest.raises(ValueError, match="time zone"):
        DetectorSet(busy_town.registry, timezone="Mars/Olympus")

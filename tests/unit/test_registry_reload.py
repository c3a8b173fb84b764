"""The registry changes under a running service: reloaded on SIGHUP or once its changed files settle, detector state
carried over by device id, new devices stored from then on, the open cases of removed devices cleared with the
reason; a broken or emptied registry leaves the running one in place."""

from __future__ import annotations

import time

import orjson
import pytest

from devices.alerts import AlertEvent
from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.dispatch import Dispatcher, DispatchSettings
from ingest.pipeline import Pipeline
from ingest.pipeline.reload import RegistryWatch
from tests.helpers import METERS, write_registry
from tests.unit.test_pipeline import FlakyWriter, ListSource

T0 = 1_795_334_400
NS = 10**9

# M000003 removed, M000004 added (a flat newly metered), the rest in another order
CHANGED = """meter_id,district,building_id,role,customer_class,pipe_dn_mm,prepaid,report_interval_s,cell_id,register_max_m3,business_hours_per_day
M000004,d01,B001,household,residential,15,0,3600,C01,9999,
M000000,d01,B001,master,,50,0,900,C01,99999,
M000002,d01,B001,household,residential,15,1,86400,C01,9999,
M000001,d01,B001,household,residential,15,0,3600,C01,9999,
"""


def reading(meter: str, hour: int) -> RawMessage:
    return RawMessage(f"water/d01/meter/{meter}/reading",
                      orjson.dumps({"meter_id": meter, "ts": T0 + 3600 * hour, "total_m3": 10 + hour / 10}))


class Source(ListSource):
    """Hands over its messages in order; between two of them the test can change the registry, as an operator
    would while the service runs."""

    def __init__(self, messages, at=None, change=None):
        super().__init__(messages, chunk=4)
        self.at, self.change = at, change

    def poll(self, max_messages, timeout_s=0.0):
        if self.change is not None and self.pos >= self.at:
            self.change()
            self.change = None
            return []
        return super().poll(min(max_messages, self.at - self.pos) if self.change else max_messages, timeout_s)


def test_sighup_reload_carries_state_stores_new_meters_and_clears_cases_of_removed_ones(tmp_path, caplog):
    folder = write_registry(tmp_path / "registry")
    registry = Registry.load(folder)
    state = tmp_path / "state"
    dispatcher = Dispatcher(registry, state, DispatchSettings(), alerts_file=tmp_path / "alerts.jsonl",
                            webhook_url="", webhook_secret="", mqtt_publish=None, start_delivery=False)
    opened = dispatcher.emit([AlertEvent("reverse_flow/M000003/x", "raised", "reverse_flow", "warning", "meter",
                                         "M000003", "d01", T0 * NS, (T0 + 3600) * NS, "Meter M000003 ran backwards")])
    watch = RegistryWatch(folder, 0, 0.1)

    def change() -> None:
        write_registry(folder, meters=CHANGED)
        watch.request()  # what `systemctl reload cistern` (SIGHUP) does

    before = [reading(m, h) for h in range(3) for m in ("M000001", "M000004")]
    after = [reading(m, h) for h in range(3, 6) for m in ("M000001", "M000004")]
    events: list = []
    writer = FlakyWriter()
    caplog.set_level("INFO")
    p = Pipeline(registry, TopicLayout("water"), Source(before + after, at=len(before), change=change),
                 state_dir=state, writer=writer, detectors=__import__("detectors").DetectorSet(registry),
                 dispatcher=dispatcher, live=False, registry_watch=watch, on_alerts=events.extend)
    p.run()
    dispatcher.close()

    assert "registry reloaded (SIGHUP): meters 4 (+1 -1)" in caplog.text
    stored = [line for line in writer.lines if line.startswith(b"meter_reading")]
    assert sum(b"meter_id=M000001" in line for line in stored) == 6  # every reading, before and after
    assert sum(b"meter_id=M000004" in line for line in stored) == 3  # from the reload on
    quarantined = (state / "quarantine.jsonl").read_bytes().splitlines()
    assert len(quarantined) == 3 and all(b"M000004" in q for q in quarantined)  # before it: kept for reingest
    # the detectors went on with M000001's own state: its last reading, under its new row
    sig = p.detectors.detectors["signal"]
    assert sig.last_ts[p.registry.meters.index["M000001"]] == (T0 + 5 * 3600) * NS
    # the removed meter's open case is cleared, saying why, still naming where the meter was
    cleared = [e for e in events if e.event == "cleared"]
    assert [(e.alert_id, e.subject_id) for e in cleared] == [(opened[0].alert_id, "M000003")]
    assert "no longer in the registry" in cleared[0].summary
    assert cleared[0].evidence["resolution"] == "removed_from_registry"
    assert cleared[0].evidence["where"]["building_id"] == "B001"
    assert (state / "checkpoint.npz").exists()


def test_changed_files_are_reloaded_once_they_have_settled(tmp_path):
    folder = write_registry(tmp_path / "registry")
    current = Registry.load(folder)
    watch = RegistryWatch(folder, 0.01, 0.5)
    time.sleep(0.02)
    assert watch.poll(current) is None  # nothing changed
    write_registry(folder, meters=METERS + "M000004,d01,B001,household,residential,15,0,3600,C01,9999,\n")
    time.sleep(0.02)
    assert watch.poll(current) is None  # changed since the last look: it may still be being written
    time.sleep(0.02)
    new = watch.poll(current)
    assert new is not None and "M000004" in new.meters.index
    time.sleep(0.02)
    assert watch.poll(new) is None  # loaded once


@pytest.mark.parametrize("broken,why", [
    ("meter_id,district\nM000001,d01\n", "required column is missing"),
    (METERS + "M000009,d01,B404,household,residential,15,0,3600,C01,9999,\n", "B404"),
])
def test_a_broken_registry_leaves_the_running_one_in_place(tmp_path, caplog, broken, why):
    folder = write_registry(tmp_path / "registry")
    current = Registry.load(folder)
    watch = RegistryWatch(folder, 0, 0.5)
    write_registry(folder, meters=broken)
    watch.request()
    assert watch.poll(current) is None
    assert "registry not reloaded (SIGHUP), the running one stays in use" in caplog.text and why in caplog.text


def test_an_emptied_meters_file_is_not_taken_for_mass_removal_unless_asked(tmp_path, caplog):
    folder = write_registry(tmp_path / "registry")
    current = Registry.load(folder)
    watch = RegistryWatch(folder, 0.01, 0.1)
    header = METERS.splitlines()[0]
    write_registry(folder, meters=header + "\n" + METERS.splitlines()[4] + "\n")  # 3 of 4 meters gone
    for _ in range(3):
        time.sleep(0.02)
        assert watch.poll(current) is None
    assert "it would remove 75 % of the meters" in caplog.text
    watch.request()  # the operator means it: SIGHUP applies it
    assert len(watch.poll(current).meters) == 1

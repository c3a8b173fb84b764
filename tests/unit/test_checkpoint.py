"""Detector checkpoints survive registry changes and upgrades: matched by device id, never thrown away because
counts changed; a file of the first release is migrated, one of a newer Cistern refused with what to do.

tests/data/checkpoint-v1.npz was written by the first release's own code (commit e4766d8, Cistern 0.1.0): the
registry of tests/helpers.py, 48 hourly readings of each meter from 2026-11-22T08:00Z (M000002 silent from hour 30),
meter i's register at 100 + 50 i + 0.02 h m3.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from detectors import DetectorSet
from devices.registry import Registry
from ingest.pipeline.checkpoint import VERSION, Checkpoint, CheckpointError, StateLock
from tests.helpers import write_registry

V1 = Path(__file__).resolve().parents[1] / "data" / "checkpoint-v1.npz"
T0_NS = 1_795_334_400 * 10**9
H_NS = 3600 * 10**9

# the helpers' registry re-sorted, M000003 removed, M000004 and M000005 added (the first release's "fingerprint" of
# device counts threw the whole checkpoint away on such a change)
GROWN = """meter_id,district,building_id,role,customer_class,pipe_dn_mm,prepaid,report_interval_s,cell_id,register_max_m3,business_hours_per_day
M000004,d01,B001,household,residential,15,0,3600,C01,9999,
M000005,d01,B001,household,residential,15,0,3600,C01,9999,
M000000,d01,B001,master,,50,0,900,C01,99999,
M000002,d01,B001,household,residential,15,1,86400,C01,9999,
M000001,d01,B001,household,residential,15,0,3600,C01,9999,
"""


def _meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return orjson.loads(bytes(z["__meta__"]))


def test_a_first_release_checkpoint_is_migrated_and_follows_ids_into_a_changed_registry(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(V1, state / "checkpoint.npz")
    assert "version" not in _meta(state / "checkpoint.npz")  # really the old format, with its fingerprint
    registry = Registry.load(write_registry(tmp_path / "registry", meters=GROWN))
    ds = DetectorSet(registry)
    cp = Checkpoint(state)
    caplog.set_level("INFO")
    watermark = cp.load(ds)
    assert watermark == T0_NS + 47 * H_NS
    assert "migrated from format version 1" in caplog.text
    assert "3 meters carried over by id, 2 new (fresh), 1 no longer registered" in caplog.text
    sig = ds.detectors["signal"]
    idx = registry.meters.index
    assert sig.last_ts[idx["M000001"]] == T0_NS + 47 * H_NS
    assert sig.last_total[idx["M000001"]] == pytest.approx(100 + 0.02 * 47)
    assert sig.last_ts[idx["M000002"]] == T0_NS + 29 * H_NS  # silent from hour 30
    assert sig.last_total[idx["M000000"]] == pytest.approx(250 + 0.02 * 47)
    assert sig.last_ts[idx["M000004"]] == 0 and np.isnan(sig.last_total[idx["M000004"]])  # new: fresh
    cp.save(ds, watermark)
    meta = _meta(state / "checkpoint.npz")
    assert meta["version"] == VERSION and meta["format"] == "cistern.checkpoint"
    assert "registry_fingerprint" not in meta and meta["saved_by"].startswith("cistern ")


def test_a_re_sorted_registry_gets_each_meter_its_own_state(tmp_path):
    reg_a = Registry.load(write_registry(tmp_path / "a"))
    ds = DetectorSet(reg_a)
    sig = ds.detectors["signal"]
    sig.last_ts[:] = np.arange(1, len(reg_a.meters) + 1) * H_NS  # something to tell the meters apart
    Checkpoint(tmp_path / "a").save(ds, 5)
    lines = (tmp_path / "a" / "meters.csv").read_text().splitlines()
    resorted = "\n".join([lines[0], *reversed(lines[1:])]) + "\n"  # same counts, other order
    reg_b = Registry.load(write_registry(tmp_path / "b", meters=resorted))
    moved = DetectorSet(reg_b)
    Checkpoint(tmp_path / "a").load(moved)
    for mid, i in reg_a.meters.index.items():
        assert moved.detectors["signal"].last_ts[reg_b.meters.index[mid]] == (i + 1) * H_NS


def test_a_checkpoint_of_a_newer_cistern_is_refused_and_left_in_place(tmp_path):
    reg = Registry.load(write_registry(tmp_path / "registry"))
    state = tmp_path / "state"
    state.mkdir()
    Checkpoint(state).save(DetectorSet(reg), 7)
    path = state / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = orjson.loads(bytes(arrays["__meta__"]))
    meta.update(version=VERSION + 1, saved_by="cistern 9.0.0")
    arrays["__meta__"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    np.savez(path, **arrays)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"newer Cistern \(cistern 9\.0\.0.*UPGRADING"):
        Checkpoint(state).load(DetectorSet(reg))
    assert path.read_bytes() == before


def test_an_unreadable_checkpoint_is_kept_aside_not_overwritten(tmp_path, caplog):
    reg = Registry.load(write_registry(tmp_path / "registry"))
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoint.npz").write_bytes(b"half a file")
    assert Checkpoint(state).load(DetectorSet(reg)) is None
    kept = list(state.glob("checkpoint.npz.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"half a file"
    assert "unreadable" in caplog.text and not (state / "checkpoint.npz").exists()


def test_one_process_at_a_time_carries_a_state_folder(tmp_path):
    first = StateLock(tmp_path).acquire()
    with pytest.raises(CheckpointError, match=r"in use by another Cistern \(pid \d+\)"):
        StateLock(tmp_path).acquire()
    first.release()
    StateLock(tmp_path).acquire().release()

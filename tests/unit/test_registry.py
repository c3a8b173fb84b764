"""The registry loads the four CSV files into dense indexes, and a malformed file names file, line and column."""

import numpy as np
import pytest

from devices.registry import Registry, RegistryError
from tests.helpers import METERS, TANKS, write_registry


def test_loads_dense_indexes_and_links(tmp_path):
    reg = Registry.load(write_registry(tmp_path))
    assert list(reg.meters.ids) == ["M000001", "M000002", "M000003", "M000000"]
    assert reg.meters.index["M000003"] == 2
    assert reg.meters.prepaid.tolist() == [False, True, False, False]
    assert reg.meters.is_master.tolist() == [False, False, False, True]
    assert np.isnan(reg.meters.business_hours_per_day[0]) and reg.meters.business_hours_per_day[2] == 10
    assert reg.buildings.master_meter.tolist() == [3]
    assert reg.buildings.room.tolist() == [0]
    assert reg.buildings.address[0] == "1 Songhua Road, Daoli"
    assert reg.tanks.room.tolist() == [0, 0]
    assert reg.tanks.last_disinfected[1] == np.datetime64("2026-03-15")
    assert reg.meters.cell.tolist() == [0, 0, 0, 0] and list(reg.cell_ids) == ["C01"]


def test_extra_columns_are_kept_and_ignored(tmp_path):
    meters = METERS.replace("business_hours_per_day\n", "business_hours_per_day,installer\n", 1)
    reg = Registry.load(write_registry(tmp_path, meters=meters))
    assert len(reg.meters) == 4


@pytest.mark.parametrize("bad,line,column", [
    (METERS.replace("M000002,d01,B001,household,residential,15,1,86400", "M000002,d01,B001,household,residential,fifteen,1,86400"), 3, "pipe_dn_mm"),
    (METERS.replace("M000003,d01,B001,household,non_residential", "M000003,d01,B001,tenant,non_residential"), 4, "role"),
    (METERS.replace(",1,86400,", ",7,86400,"), 3, "prepaid"),
    (METERS.replace("9999,\nM000002", "-5,\nM000002"), 2, "register_max_m3"),
    (METERS.replace("M000003,", "M000001,", 1), 4, "meter_id"),
])
def test_malformed_meters_name_file_line_column(tmp_path, bad, line, column):
    with pytest.raises(RegistryError) as e:
        Registry.load(write_registry(tmp_path, meters=bad))
    assert (e.value.file, e.value.line, e.value.column) == ("meters.csv", line, column)
    assert "meters.csv" in str(e.value) and f"line {line}" in str(e.value) and column in str(e.value)


def test_missing_column_is_named(tmp_path):
    bad = TANKS.replace("last_disinfected", "cleaned_on")
    with pytest.raises(RegistryError) as e:
        Registry.load(write_registry(tmp_path, tanks=bad))
    assert (e.value.file, e.value.line, e.value.column) == ("tanks.csv", 1, "last_disinfected")


def test_bad_date_is_named(tmp_path):
    bad = TANKS.replace("2026-03-15", "15/03/2026")
    with pytest.raises(RegistryError) as e:
        Registry.load(write_registry(tmp_path, tanks=bad))
    assert (e.value.line, e.value.column) == (3, "last_disinfected")


def test_unknown_room_reference_is_refused(tmp_path):
    bad = TANKS.replace("P0001-T2,P0001", "P0001-T2,P9999")
    with pytest.raises(RegistryError, match="P9999") as e:
        Registry.load(write_registry(tmp_path, tanks=bad))
    assert (e.value.file, e.value.line, e.value.column) == ("tanks.csv", 3, "room_id")


def test_missing_file_is_named(tmp_path):
    write_registry(tmp_path)
    (tmp_path / "pump_rooms.csv").unlink()
    with pytest.raises(RegistryError, match="pump_rooms.csv"):
        Registry.load(tmp_path)

"""The registry loads the four CSV files into dense indexes, and a malformed file names file, line and column."""

import numpy as np
import pytest

from devices.registry import Registry, RegistryError
from tests.helpers import BUILDINGS, METERS, ROOMS, TANKS, write_registry


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


@pytest.mark.parametrize("files,where,missing", [
    ({"meters": METERS.replace("M000002,d01,B001", "M000002,d01,B007")}, ("meters.csv", 3, "building_id"), "B007"),
    ({"buildings": BUILDINGS.replace("P0001,M000000", "P0404,M000000")}, ("buildings.csv", 2, "pump_room_id"),
     "P0404"),
    ({"buildings": BUILDINGS.replace("P0001,M000000", "P0001,M000999")}, ("buildings.csv", 2, "master_meter_id"),
     "M000999"),
    ({"tanks": TANKS.replace("P0001-T2,P0001", "P0001-T2,P0002")}, ("tanks.csv", 3, "room_id"), "P0002"),
])
def test_an_id_that_names_nothing_in_the_other_file_is_refused_where_it_stands(tmp_path, files, where, missing):
    with pytest.raises(RegistryError) as e:
        Registry.load(write_registry(tmp_path, **files))
    assert (e.value.file, e.value.line, e.value.column) == where
    assert repr(missing) in str(e.value) and "not in" in str(e.value)


@pytest.mark.parametrize("buildings,why", [
    (BUILDINGS.replace("P0001,M000000", "P0001,M000001"), "role 'household'"),
])
def test_a_master_meter_that_is_not_a_master_is_refused(tmp_path, buildings, why):
    with pytest.raises(RegistryError, match=why) as e:
        Registry.load(write_registry(tmp_path, buildings=buildings))
    assert (e.value.file, e.value.line, e.value.column) == ("buildings.csv", 2, "master_meter_id")


def test_a_master_meter_registered_in_another_building_is_refused(tmp_path):
    buildings = BUILDINGS + "B002,d01,2 Songhua Road,P0001,M000000\n"
    meters = METERS.replace("M000000,d01,B001,master", "M000000,d01,B002,master")
    with pytest.raises(RegistryError, match="puts it in building 'B002'") as e:
        Registry.load(write_registry(tmp_path, meters=meters, buildings=buildings))
    assert (e.value.file, e.value.line) == ("buildings.csv", 2)


def test_lines_are_counted_across_quoted_fields_that_hold_line_breaks(tmp_path):
    # the address of B001 runs over two lines; the bad pump room is on the record starting on line 4
    buildings = ('building_id,district,address,pump_room_id,master_meter_id\n'
                 'B001,d01,"1 Songhua Road\nDaoli",P0001,M000000\n'
                 'B002,d01,"2 Songhua Road",P0404,\n')
    with pytest.raises(RegistryError, match="P0404") as e:
        Registry.load(write_registry(tmp_path, buildings=buildings))
    assert (e.value.file, e.value.line) == ("buildings.csv", 4)
    meters = METERS.replace("M000003,d01,B001,household,non_residential,20",
                            'M000003,d01,B001,household,"non_residential\n",twenty')
    with pytest.raises(RegistryError) as e:  # a bad value in the record on lines 4-5: where it starts
        Registry.load(write_registry(tmp_path, meters=meters))
    assert (e.value.line, e.value.column) == (4, "pipe_dn_mm")
    with pytest.raises(RegistryError) as e:  # and the records after it keep their own lines
        Registry.load(write_registry(tmp_path, meters=meters.replace(",twenty", ",20").replace(
            "M000000,d01,B001,master,,50", "M000000,d01,B001,master,,fifty")))
    assert (e.value.line, e.value.column) == (6, "pipe_dn_mm")


def test_an_unclosed_quote_is_reported_on_the_line_it_opens(tmp_path):
    buildings = BUILDINGS.replace('"1 Songhua Road, Daoli"', '"1 Songhua Road, Daoli') + "B002,d01,x,,\n"
    with pytest.raises(RegistryError, match="never closed") as e:
        Registry.load(write_registry(tmp_path, buildings=buildings))
    assert (e.value.file, e.value.line) == ("buildings.csv", 2)


def test_a_semicolon_separated_file_gets_a_hint(tmp_path):
    with pytest.raises(RegistryError, match="separated by semicolons: registry files are comma-separated") as e:
        Registry.load(write_registry(tmp_path, tanks=TANKS.replace(",", ";")))
    assert (e.value.file, e.value.line) == ("tanks.csv", 1)


@pytest.mark.parametrize("files,where,why", [
    ({"meters": METERS.replace("M000002,d01", "M 0002,d01")}, ("meters.csv", 3, "meter_id"), "MQTT topic level"),
    ({"meters": METERS.replace("M000002,d01", "M+2,d01")}, ("meters.csv", 3, "meter_id"), "letters, digits"),
    ({"meters": METERS.replace("M000002,d01", "M000002,alerts")}, ("meters.csv", 3, "district"), "reserved"),
    ({"meters": METERS.replace("M000002,d01", "M000002,d/1")}, ("meters.csv", 3, "district"), "one MQTT topic"),
    ({"meters": METERS.replace("M000002,d01", "M000002,$SYS")}, ("meters.csv", 3, "district"), r"starting with \$"),
    ({"pump_rooms": ROOMS.replace("P0001,d01", "P0001,#")}, ("pump_rooms.csv", 2, "district"), r"no / \+ #"),
    ({"pump_rooms": ROOMS.replace("P0001,d01", "M000003,d01"), "buildings": BUILDINGS.replace(",P0001,", ",,"),
      "tanks": TANKS.replace(",P0001,", ",M000003,")}, ("pump_rooms.csv", 2, "room_id"), "also a meter id"),
])
def test_ids_and_districts_must_be_usable_as_topic_levels_and_accounts(tmp_path, files, where, why):
    with pytest.raises(RegistryError, match=why) as e:
        Registry.load(write_registry(tmp_path, **files))
    assert (e.value.file, e.value.line, e.value.column) == where

"""`cistern accounts`: the broker's password file provisioned from the registry, in Mosquitto's own format; new
passwords written once for the installers; accounts of devices still registered never touched."""

from __future__ import annotations

import base64
import csv
import hashlib
import stat

import pytest

from ingest.cli import main
from ingest.tools.accounts import MARKER
from tests.helpers import METERS, write_registry

DEVICES = {"M000000", "M000001", "M000002", "M000003", "P0001"}


def run(tmp_path, *more: str) -> int:
    return main(["accounts", "--registry", str(tmp_path / "registry"), "--password-file", str(tmp_path / "passwd"),
                 "--no-reload", *more])


def accounts(tmp_path) -> dict[str, str]:
    lines = (tmp_path / "passwd").read_text().splitlines()
    return dict(x.split(":", 1) for x in lines if x and not x.startswith("#"))


def verifies(hashed: str, password: str) -> bool:
    """Mosquitto 2's check of a `$7$` entry: PBKDF2-HMAC-SHA512 over the salt, as many rounds as it says."""
    _, seven, rounds, salt, digest = hashed.split("$")
    want = base64.b64decode(digest)
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(rounds), len(want))
    return seven == "7" and got == want


def read_csv(path) -> dict[str, str]:
    with path.open() as fh:
        return {r["account"]: r["password"] for r in csv.DictReader(fh)}


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    for k in ("CISTERN_REGISTRY", "CISTERN_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    return write_registry(tmp_path / "registry")


def test_every_registered_device_and_the_service_accounts_get_an_account(tmp_path, capsys):
    assert run(tmp_path, "--credentials", str(tmp_path / "new.csv")) == 0
    made = accounts(tmp_path)
    assert set(made) == DEVICES | {"cistern-ingest", "dispatch"}
    given = read_csv(tmp_path / "new.csv")
    assert set(given) == set(made) and all(verifies(made[a], given[a]) for a in made)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "passwd").stat().st_mode) == 0o640
    assert "5 devices in the registry: 5 account(s) added" in capsys.readouterr().err


def test_a_second_run_keeps_every_password_and_adds_only_the_new_devices(tmp_path, capsys):
    assert run(tmp_path, "--credentials", str(tmp_path / "first.csv")) == 0
    (tmp_path / "passwd").write_text((tmp_path / "passwd").read_text().replace(
        MARKER, "grafana:$7$101$handmade\n" + MARKER))  # an account added by hand above Cistern's part
    before = accounts(tmp_path)
    assert run(tmp_path) == 0 and accounts(tmp_path) == before  # nothing new: no credentials file needed
    assert "unchanged" in capsys.readouterr().err
    write_registry(tmp_path / "registry", meters=METERS + "M000004,d01,B001,household,residential,15,0,3600,C01,9999,\n")
    assert run(tmp_path) == 2  # a new account needs somewhere to put its password
    assert accounts(tmp_path) == before and "--credentials" in capsys.readouterr().err
    assert run(tmp_path, "--credentials", str(tmp_path / "first.csv")) == 2  # never overwrites earlier passwords
    assert run(tmp_path, "--credentials", str(tmp_path / "second.csv")) == 0
    after = accounts(tmp_path)
    assert {k: v for k, v in after.items() if k != "M000004"} == before
    assert set(read_csv(tmp_path / "second.csv")) == {"M000004"}
    assert verifies(after["M000004"], read_csv(tmp_path / "second.csv")["M000004"])


def test_passwords_already_in_the_devices_are_used_and_not_written_out(tmp_path):
    known = tmp_path / "vendor.csv"
    known.write_text("device_id,password\n" + "".join(f"{d},factory-{d}\n" for d in sorted(DEVICES)))
    assert run(tmp_path, "--passwords", str(known), "--credentials", str(tmp_path / "new.csv")) == 0
    made = accounts(tmp_path)
    assert all(verifies(made[d], f"factory-{d}") for d in DEVICES)
    assert set(read_csv(tmp_path / "new.csv")) == {"cistern-ingest", "dispatch"}


def test_accounts_of_removed_devices_are_kept_unless_revoked(tmp_path, capsys):
    assert run(tmp_path, "--credentials", str(tmp_path / "new.csv")) == 0
    write_registry(tmp_path / "registry", meters=METERS.replace(
        "M000003,d01,B001,household,non_residential,20,0,3600,C01,9999,10\n", ""))
    assert run(tmp_path) == 0 and "M000003" in accounts(tmp_path)
    assert "1 of devices no longer registered kept (--revoke-unregistered removes them)" in capsys.readouterr().err
    assert run(tmp_path, "--revoke-unregistered") == 0
    assert "M000003" not in accounts(tmp_path) and {"cistern-ingest", "dispatch", "M000001"} <= set(accounts(tmp_path))


def test_a_device_named_like_a_service_account_is_refused(tmp_path, capsys):
    write_registry(tmp_path / "registry", meters=METERS.replace("M000002,", "dispatch,"))
    assert run(tmp_path, "--credentials", str(tmp_path / "new.csv")) == 2
    assert "'dispatch' is also a service account" in capsys.readouterr().err
    assert not (tmp_path / "passwd").exists()


def test_a_broker_that_cannot_be_told_is_reported(tmp_path, capsys):
    assert main(["accounts", "--registry", str(tmp_path / "registry"), "--password-file", str(tmp_path / "passwd"),
                 "--credentials", str(tmp_path / "new.csv"), "--broker-pid-file", str(tmp_path / "none.pid")]) == 1
    assert "systemctl reload mosquitto" in capsys.readouterr().err and (tmp_path / "passwd").exists()

"""The `cistern` command as a new operator first tries it: every subcommand's --help, --version, a fresh state
folder, and times that say which zone they are in."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest

from tests.helpers import write_registry

ROOT = Path(__file__).resolve().parents[2]
# What the README promises; `cistern --help` may list more, never fewer.
DOCUMENTED = {"run", "replay", "reingest", "simulate", "evaluate", "ack", "cases", "demo", "report", "settings",
              "accounts"}
ZONED = r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d(\.\d{3})?)? [+-]\d\d:\d\d"


def cistern(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "ingest", *args], capture_output=True, text=True, env=clean,
                          cwd=ROOT, timeout=60)


@functools.cache
def subcommands() -> list[str]:
    r = cistern("--help")
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"(?m)^ {4}([a-z][a-z-]+)(?: {2,}|$)", listed)


def test_cistern_help_lists_every_documented_command():
    assert set(subcommands()) >= DOCUMENTED


@pytest.mark.parametrize("command", sorted(DOCUMENTED))
def test_every_subcommand_explains_itself(command):
    assert command in subcommands()
    r = cistern(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: cistern {command}") and r.stderr == ""


def test_version_is_the_distribution_s():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    r = cistern("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cistern {version}"


def test_ack_list_on_a_fresh_state_folder_is_an_empty_list(tmp_path):
    r = cistern("ack", "--list", "--state-dir", str(tmp_path / "fresh"))
    assert r.returncode == 0 and r.stdout == ""
    assert "no open cases" in r.stderr


def test_log_lines_and_alert_summaries_say_their_zone(tmp_path):
    """Log lines and the summaries' local times both on the utility's clock, each with its offset: an outage can
    no longer read as raised before it began."""
    reg = write_registry(tmp_path / "registry")
    t0 = 1_795_334_400  # 2026-11-22T08:00:00Z; the register runs back from 13:00Z (21:00 in Shanghai)
    lines = [orjson.dumps({"topic": "water/d01/meter/M000001/reading",
                           "payload": {"meter_id": "M000001", "ts": t0 + 3600 * h,
                                       "total_m3": 100 - h * (h >= 5)}}).decode() for h in range(12)]
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(lines) + "\n")
    alerts = tmp_path / "alerts.jsonl"
    r = cistern("replay", str(capture), "--registry", str(reg), "--state-dir", str(tmp_path / "state"),
                "--alerts-file", str(alerts))
    assert r.returncode == 0, r.stderr
    logged = [x for x in r.stderr.splitlines() if " INFO " in x]
    assert logged and all(re.match(ZONED + " INFO ", x) for x in logged), logged[:3]
    assert any(re.match(r".* \+08:00 INFO ", x) for x in logged)  # Asia/Shanghai, the default
    events = [orjson.loads(x) for x in alerts.read_bytes().splitlines()]
    for e in events:  # a time of day in a summary always carries its offset (a date alone needs none)
        times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d\S*(?: [+-]\d\d:\d\d)?", e["summary"])
        assert all(re.fullmatch(ZONED, t) for t in times), e["summary"]
    reverse = next(e for e in events if e["kind"] == "reverse_flow" and e["event"] == "raised")
    assert re.search(r"since 2026-11-22 21:00 \+08:00", reverse["summary"]), reverse["summary"]

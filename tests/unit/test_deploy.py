"""The shipped broker files agree with each other: the Debian conf.d snippet is the project's mosquitto.conf without
the lines Debian's own mosquitto.conf holds, and the plaintext listener never faces a network."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What Debian's /etc/mosquitto/mosquitto.conf sets (mosquitto 2.0.11-1.2+deb12u2); a second one of the first
# three stops the broker ("Duplicate ... value in configuration").
DEBIAN_MAIN = ("pid_file", "persistence", "persistence_location", "log_dest", "include_dir")


def settings(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_the_debian_snippet_is_mosquitto_conf_without_what_debian_sets():
    whole = settings(ROOT / "mosquitto.conf")
    snippet = settings(ROOT / "deploy" / "debian" / "cistern.conf")
    assert snippet == [line for line in whole if line.split()[0] not in DEBIAN_MAIN]
    debian = Path("/etc/mosquitto/mosquitto.conf")
    if debian.exists():  # this machine's Debian broker: the snippet adds nothing its main file has
        main_keys = {line.split()[0] for line in settings(debian)}
        assert main_keys <= set(DEBIAN_MAIN) and not main_keys & {line.split()[0] for line in snippet}


def test_plain_mqtt_listens_on_loopback_only_and_tls_everywhere():
    for conf in (ROOT / "mosquitto.conf", ROOT / "deploy" / "debian" / "cistern.conf"):
        listeners = [line for line in settings(conf) if line.startswith("listener ")]
        assert listeners == ["listener 1883 127.0.0.1", "listener 8883"], conf


def test_the_service_unit_reloads_the_registry_on_systemctl_reload():
    unit = (ROOT / "deploy" / "cistern.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit

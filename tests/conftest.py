"""Shared fixtures: real servers (broker, InfluxDB 1.x, a v2-API server) started once a session, see servers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from ingest.tools import servers

# CI runs the property tests with a fixed seed: a red build must be reproducible, never a roll of the dice.
# Locally they explore new examples every run.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    hypothesis_settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (broker, database)")


def _start(what: str, fn):
    try:
        return fn()
    except servers.ServerUnavailable as e:
        # In CI the servers are installed by `make test`: a missing one is a failure, never a quiet skip.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{what} unavailable in CI: {e}")
        pytest.skip(f"{what}: {e}")


@pytest.fixture(scope="session")
def mosquitto_server() -> Iterator[servers.MosquittoServer]:
    """The project's mosquitto.conf and ACL, with accounts cistern-ingest, dispatch, M000001, M000002, P0001."""
    broker = _start("mosquitto", servers.start_mosquitto)
    yield broker
    if broker.managed:
        broker.stop()
        servers.remove_folder(broker.folder)


@pytest.fixture
def mosquitto_private() -> Iterator[servers.MosquittoServer]:
    """A broker of this test's own, for tests that stop and restart it (persistence kept across start())."""
    broker = _start("mosquitto", servers.start_mosquitto)
    if not broker.managed:
        pytest.skip("restarting needs a broker the tests start (CISTERN_TEST_MQTT_URL is set)")
    yield broker
    broker.stop()
    servers.remove_folder(broker.folder)


@pytest.fixture(scope="session")
def influx_v1() -> Iterator[servers.InfluxV1Server]:
    """InfluxDB 1.x (v1 API). Use `influx_v1.new_database()` (or the `influx_v1_db` fixture) per test."""
    server = _start("influxd", servers.start_influx_v1)
    yield server
    if server.managed:
        server.stop()
        servers.remove_folder(server.folder)


@pytest.fixture
def influx_v1_db(influx_v1: servers.InfluxV1Server) -> str:
    """A fresh, empty database for one test."""
    return influx_v1.new_database()


@pytest.fixture(scope="session")
def victoria() -> Iterator[servers.InfluxV2Server]:
    """A server taking InfluxDB's v2 write API: VictoriaMetrics here (or an InfluxDB 2.x named by variables)."""
    server = _start("victoria-metrics", servers.start_influx_v2)
    yield server
    server.stop()
    servers.remove_folder(server.folder)


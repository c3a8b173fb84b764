"""Settings come from flags, environment and a TOML file; a bad value names the setting; secrets stay hidden."""

import argparse

import pytest

from ingest.cli import main
from ingest.config import ConfigError, add_setting_flags, load_settings


def parse(argv):
    p = argparse.ArgumentParser()
    add_setting_flags(p)
    return p.parse_args(argv)


def test_defaults_follow_the_contract():
    s = load_settings(parse([]), environ={})
    assert s.mqtt_url == "mqtt://127.0.0.1:1883" and s.mqtt_topic_prefix == "water"
    assert s.mqtt_client_id == "cistern-ingest" and s.influx_url == "http://127.0.0.1:8086"
    assert s.influx_api == "auto" and s.influx_bucket == "water" and s.timezone == "Asia/Shanghai"
    assert str(s.registry) == "registry" and str(s.state_dir) == ".cistern" and s.alerts_file is None


def test_flags_win_over_environment_over_file(tmp_path):
    cfg = tmp_path / "cistern.toml"
    cfg.write_text('influx_bucket = "from_file"\nmqtt_client_id = "file-id"\ninflux_api = "v1"\n')
    env = {"CISTERN_INFLUX_BUCKET": "from_env", "CISTERN_MQTT_CLIENT_ID": "env-id", "CISTERN_CONFIG": str(cfg)}
    s = load_settings(parse(["--mqtt-client-id", "flag-id"]), environ=env)
    assert (s.mqtt_client_id, s.influx_bucket, s.influx_api) == ("flag-id", "from_env", "v1")
    assert "influx_url" not in s.model_fields_set


def test_mqtt_url_credentials_are_parsed_and_redacted():
    s = load_settings(parse([]), environ={"CISTERN_MQTT_URL": "mqtts://ingest:p%40ss@broker.example:8883",
                                          "CISTERN_INFLUX_TOKEN": "s3cr3t-t0ken"})
    ep = s.mqtt
    assert (ep.host, ep.port, ep.tls, ep.username, ep.password) == ("broker.example", 8883, True, "ingest", "p@ss")
    shown = str(s.redacted())
    assert "p%40ss" not in shown and "p@ss" not in shown and "s3cr3t-t0ken" not in shown


@pytest.mark.parametrize("env,setting", [
    ({"CISTERN_MQTT_URL": "tcp://broker:1883"}, "CISTERN_MQTT_URL"),
    ({"CISTERN_MQTT_URL": "mqtt://broker:99999"}, "CISTERN_MQTT_URL"),
    ({"CISTERN_INFLUX_API": "v3"}, "CISTERN_INFLUX_API"),
    ({"CISTERN_INFLUX_URL": "influx:8086"}, "CISTERN_INFLUX_URL"),
    ({"CISTERN_TIMEZONE": "Asia/Harbin-ish"}, "CISTERN_TIMEZONE"),
    ({"CISTERN_MQTT_TOPIC_PREFIX": "water/#"}, "CISTERN_MQTT_TOPIC_PREFIX"),
    ({"CISTERN_BATCH_MAX_MESSAGES": "lots"}, "CISTERN_BATCH_MAX_MESSAGES"),
    ({"CISTERN_SIGNAL_MISSED_REPORTS": "three"}, "CISTERN_SIGNAL_MISSED_REPORTS"),
    ({"CISTERN_DISINFECTION_INTERVAL_MONTHS": "0"}, "CISTERN_DISINFECTION_INTERVAL_MONTHS"),
])
def test_bad_values_name_the_setting(env, setting):
    with pytest.raises(ConfigError, match=setting):
        load_settings(parse([]), environ=env)


def test_detector_parameters_are_settings_that_reach_the_detectors(tmp_path):
    # a quarterly regime, a stricter silence rule and a bypass threshold from the three sources
    from devices.registry import Registry
    from ingest.app import make_detectors
    from tests.helpers import write_registry

    cfg = tmp_path / "cistern.toml"
    cfg.write_text("bypass_z_min = 3.5\n")
    env = {"CISTERN_DISINFECTION_INTERVAL_MONTHS": "3", "CISTERN_CONFIG": str(cfg)}
    s = load_settings(parse(["--signal-missed-reports", "4"]), environ=env)
    ds = make_detectors(Registry.load(write_registry(tmp_path / "registry")), s)
    assert ds.detectors["disinfection"].params.interval_months == 3
    assert s.dispatch.disinfection_interval_months == 3  # dispatch's due-date fallback follows the same regime
    assert ds.detectors["signal"].params.missed_reports == 4.0
    assert ds.detectors["bypass"].params.z_min == 3.5
    assert ds.detectors["reverse_flow"].params == type(ds.detectors["reverse_flow"].params)()  # the rest: defaults


def test_bad_secret_value_is_not_echoed():
    with pytest.raises(ConfigError) as e:
        load_settings(parse([]), environ={"CISTERN_MQTT_URL": "mqtt://u:hunter2@broker:notaport"})
    assert "hunter2" not in str(e.value)


def test_cli_exits_2_naming_the_setting(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CISTERN_INFLUX_API", "v9")
    assert main(["replay", str(tmp_path / "none.jsonl")]) == 2
    assert "CISTERN_INFLUX_API" in capsys.readouterr().err


def test_cli_bad_registry_exits_2_naming_file(monkeypatch, capsys, tmp_path):
    capture = tmp_path / "c.jsonl"
    capture.write_text("")
    (tmp_path / "reg").mkdir()
    monkeypatch.delenv("CISTERN_INFLUX_API", raising=False)
    assert main(["replay", str(capture), "--registry", str(tmp_path / "reg")]) == 2
    assert "meters.csv" in capsys.readouterr().err

"""Configuration: one pydantic model read from flags, environment (CISTERN_*) and an optional TOML file."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from detectors import DETECTORS
from ingest.dispatch import DispatchSettings

# Dispatch settings are their own model; each is also a setting named alert_<name> (CISTERN_ALERT_<NAME>).
DISPATCH_PREFIX = "alert_"

# Every detector parameter is a setting named <detector>_<parameter> (CISTERN_SIGNAL_MISSED_REPORTS, …); the
# detector's own pydantic model validates it.

ENV_PREFIX = "CISTERN_"
SECRET_FIELDS = {"influx_token", "influx_password", "alert_webhook_secret"}


class ConfigError(ValueError):
    """A setting a user must fix; the message names the setting."""


class Settings(BaseModel):
    """Every setting has a flag (--mqtt-url) and an environment variable (CISTERN_MQTT_URL); flags win."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host:port or mqtts://… (TLS)")
    mqtt_topic_prefix: str = Field("water", description="first topic level")
    mqtt_client_id: str = Field("cistern-ingest", min_length=1, max_length=128,
                                description="persistent-session client id")
    mqtt_shared_group: str = Field("", description="subscribe as $share/<group>/… to spread load over several ingesters")
    mqtt_ca_file: str = Field("", description="CA certificate for mqtts:// (system CAs when empty)")
    mqtt_keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB (or a server that speaks its write API)")
    influx_api: Literal["auto", "v1", "v2"] = Field("auto", description="auto, v1 (/write + /query) or v2 (/api/v2/write)")
    influx_bucket: str = Field("water", min_length=1, description="v2 bucket, or v1 database (db or db/rp)")
    influx_org: str = Field("", description="v2 organisation")
    influx_token: str = Field("", description="v2 token (secret)")
    influx_username: str = Field("", description="v1 username")
    influx_password: str = Field("", description="v1 password (secret)")
    influx_timeout_s: float = Field(10.0, gt=0, le=300, description="one write request's timeout")
    registry: Path = Field(Path("./registry"), description="registry folder of CSV files")
    state_dir: Path = Field(Path("./.cistern"), description="checkpoints, write spool, dead letters")
    timezone: str = Field("Asia/Shanghai", description="the utility's clock for calendar days")
    alerts_file: Path | None = Field(None, description="append alert events as JSON lines here")
    alert_webhook_url: str = Field("", description="POST each alert event here")
    alert_webhook_secret: str = Field("", description="HMAC-SHA256 key for the webhook signature (secret)")
    batch_max_messages: int = Field(5000, ge=1, le=100_000, description="messages decoded and written together")
    batch_max_wait_s: float = Field(0.25, gt=0, le=60, description="longest a message waits for its batch")
    health_interval_s: float = Field(30.0, gt=0, description="seconds between health lines in the log")
    tick_interval_s: float = Field(5.0, gt=0, description="wall-clock seconds between detector clock ticks (live)")
    flood_max_per_device: int = Field(2000, ge=0, description="most messages one device may have in a batch; the "
                                                             "excess is dead-lettered so a flood cannot starve the "
                                                             "others (0: no limit)")
    spool_max_bytes: int = Field(1 << 30, ge=0, description="disk spool for writes while InfluxDB is down (0: off)")
    detect: bool = Field(True, description="run the detectors (turn off on extra ingesters of a shared "
                                           "subscription group: each sees only part of every meter's traffic)")
    alert_mqtt_publish: bool = Field(True, description="publish alert events on {prefix}/alerts/{kind} (QoS 1) "
                                                       "and take acknowledgements on {prefix}/alerts/ack")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings, exclude=True,
                                       description="the CISTERN_ALERT_* dispatch settings")
    detectors: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True,
                                                 description="detector parameters given explicitly, by detector")

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError("must look like mqtt://[user:pass@]host:port or mqtts://…")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return v

    @field_validator("influx_url", "alert_webhook_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if v == "":
            return v
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("must be an http:// or https:// URL")
        try:
            u.port  # noqa: B018
        except ValueError:
            raise ValueError("has an invalid port") from None
        return v

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not v or any(c in v for c in "+#") or v.startswith("$"):
            raise ValueError("must be a plain topic level with no wildcards")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai)") from None
        return v

    # derived views
    @property
    def mqtt(self) -> MqttEndpoint:
        return MqttEndpoint.parse(self.mqtt_url)

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets and URL passwords masked."""
        out = self.model_dump(mode="json")
        for k in SECRET_FIELDS:
            if out.get(k):
                out[k] = "***"
        out["mqtt_url"] = redact_url(self.mqtt_url)
        out["detectors"] = self.detectors
        return out


class MqttEndpoint(BaseModel):
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        u = urlsplit(url)
        tls = u.scheme == "mqtts"
        return cls(host=u.hostname or "127.0.0.1", port=u.port or (8883 if tls else 1883), tls=tls,
                   username=unquote(u.username) if u.username else None,
                   password=unquote(u.password) if u.password else None)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***; works on malformed URLs too."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def detector_settings() -> dict[str, tuple[str, str]]:
    """Setting name → (detector, parameter) for every parameter of every registered detector."""
    return {f"{det}_{name}": (det, name) for det, cls in DETECTORS.items() for name in cls.Params.model_fields}


def all_settings() -> dict[str, Any]:
    """Every setting name → its pydantic field: the dispatch ones under their alert_ names, the detectors' under
    <detector>_<parameter>."""
    out: dict[str, Any] = {n: f for n, f in Settings.model_fields.items() if n not in ("dispatch", "detectors")}
    out.update({DISPATCH_PREFIX + n: f for n, f in DispatchSettings.model_fields.items()})
    out.update({k: DETECTORS[d].Params.model_fields[n] for k, (d, n) in detector_settings().items()})
    return out


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults are left to the model so that 'given explicitly' can be told apart."""
    group = parser.add_argument_group("settings (each also from the environment variable shown)")
    for name, f in all_settings().items():
        group.add_argument(flag_name(name), dest=f"setting_{name}", default=None, metavar="VALUE",
                           help=f"{f.description} [{env_name(name)}]")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="TOML file of settings (keys as the setting names); [CISTERN_CONFIG]")


def _setting_label(field: str) -> str:
    return f"{env_name(field)} ({flag_name(field)})"


def load_settings(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags over environment over TOML file over defaults. Raises ConfigError naming the setting."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    config_file = (getattr(args, "config", None) if args else None) or environ.get("CISTERN_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"CISTERN_CONFIG (--config): file {config_file} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"CISTERN_CONFIG (--config): {config_file} is not valid TOML: {e}") from None
        data = data.get("cistern", data)
        names = all_settings()
        for k, v in data.items():
            if k not in names:
                raise ConfigError(f"CISTERN_CONFIG (--config): unknown setting {k!r} in {config_file}")
            values[k] = v
    for name in all_settings():
        v = environ.get(env_name(name))
        if v is not None and v != "":
            values[name] = v
    if args is not None:
        for name in all_settings():
            v = getattr(args, f"setting_{name}", None)
            if v is not None:
                values[name] = v
    by_setting = detector_settings()
    detector_values: dict[str, dict[str, Any]] = {}
    for k in [k for k in values if k in by_setting]:
        det, name = by_setting[k]
        detector_values.setdefault(det, {})[name] = values.pop(k)
    for det, given in detector_values.items():
        try:
            checked = DETECTORS[det].Params(**given)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            name = str(err["loc"][0]) if err["loc"] else "?"
            raise ConfigError(f"{_setting_label(det + '_' + name)}: {err['msg'].removeprefix('Value error, ')} "
                              f"(got {given.get(name)!r})") from None
        detector_values[det] = checked.model_dump(include=set(given))
    values["detectors"] = detector_values
    dispatch_values = {k.removeprefix(DISPATCH_PREFIX): values.pop(k) for k in list(values)
                       if k.startswith(DISPATCH_PREFIX) and k.removeprefix(DISPATCH_PREFIX) in
                       DispatchSettings.model_fields}
    if "interval_months" in detector_values.get("disinfection", {}):
        # one tank regime: dispatch's due-date fallback follows the detector's interval unless set on its own
        dispatch_values.setdefault("disinfection_interval_months", detector_values["disinfection"]["interval_months"])
    try:
        values["dispatch"] = DispatchSettings(**dispatch_values)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        field = DISPATCH_PREFIX + str(err["loc"][0])
        raise ConfigError(f"{_setting_label(field)}: {err['msg'].removeprefix('Value error, ')} "
                          f"(got {dispatch_values.get(field.removeprefix(DISPATCH_PREFIX))!r})") from None
    try:
        return Settings(**values)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        msg = err["msg"].removeprefix("Value error, ")
        shown = values.get(field)
        if field in SECRET_FIELDS:
            shown = "***"
        elif field == "mqtt_url" and isinstance(shown, str):
            shown = redact_url(shown)
        label = _setting_label(field) if field in Settings.model_fields else field
        raise ConfigError(f"{label}: {msg} (got {shown!r})") from None

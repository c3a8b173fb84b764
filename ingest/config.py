"""Configuration: one pydantic-settings model composed of each component's settings, read from flags, then
environment variables (CISTERN_*), then an optional TOML file (--config / CISTERN_CONFIG), then defaults.

Every setting has one flat name: the component settings keep theirs (mqtt_url → CISTERN_MQTT_URL); the dispatch
settings are `alert_<name>` (CISTERN_ALERT_<NAME>); each detector parameter is `<detector>_<parameter>`
(CISTERN_SIGNAL_MISSED_REPORTS). A bad value fails at start-up with the setting's name.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from contextvars import ContextVar
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detectors import DETECTORS
from ingest.dispatch.settings import AlertOutputSettings, DispatchApiSettings, DispatchSettings
from ingest.pipeline.settings import PipelineSettings
from ingest.sinks.influx import InfluxSettings
from ingest.sources.mqtt import MqttEndpoint, MqttSettings

__all__ = ["ConfigError", "MqttEndpoint", "Settings", "add_setting_flags", "all_settings", "env_name",
           "flag_name", "load_settings", "redact_url", "unknown_environment"]

DISPATCH_PREFIX = "alert_"
ENV_PREFIX = "CISTERN_"
SECRET_FIELDS = {"influx_token", "influx_password", "alert_webhook_secret", "alert_api_tokens"}

# The environment and TOML file of the load in progress (load_settings sets them; the sources read them).
_ENVIRON: ContextVar[dict[str, str]] = ContextVar("cistern_environ")
_TOML: ContextVar[dict[str, Any]] = ContextVar("cistern_toml")


class ConfigError(ValueError):
    """A setting a user must fix; the message names the setting."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _setting_label(field: str) -> str:
    return f"{env_name(field)} ({flag_name(field)})"


def detector_settings() -> dict[str, tuple[str, str]]:
    """Setting name → (detector, parameter) for every parameter of every registered detector."""
    return {f"{det}_{name}": (det, name) for det, cls in DETECTORS.items() for name in cls.Params.model_fields}


class _FlatSource(PydanticBaseSettingsSource):
    """Values by flat setting name from a mapping (the environment's CISTERN_* variables, or a TOML table)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]):
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class Settings(MqttSettings, InfluxSettings, PipelineSettings, AlertOutputSettings, DispatchApiSettings, BaseSettings):
    """Every setting has a flag (--mqtt-url) and an environment variable (CISTERN_MQTT_URL); flags win."""

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True, env_prefix=ENV_PREFIX)

    dispatch: DispatchSettings = Field(default_factory=DispatchSettings, exclude=True,
                                       description="the CISTERN_ALERT_* dispatch settings")
    detectors: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True,
                                                 description="detector parameters given explicitly, by detector")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        names = all_settings()
        environ = _ENVIRON.get({})
        env = {n: v for n in names if (v := environ.get(env_name(n))) not in (None, "")}
        return init_settings, _FlatSource(settings_cls, env), _FlatSource(settings_cls, _TOML.get({}))

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, values: Any) -> Any:
        """Fold the flat alert_<name> and <detector>_<parameter> settings into their own models."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        by_detector = detector_settings()
        detector_values: dict[str, dict[str, Any]] = {}
        for k in [k for k in values if k in by_detector]:
            det, name = by_detector[k]
            detector_values.setdefault(det, {})[name] = values.pop(k)
        values["detectors"] = {det: _checked_params(det, given) for det, given in detector_values.items()}
        dispatch = {k.removeprefix(DISPATCH_PREFIX): values.pop(k) for k in list(values)
                    if k.startswith(DISPATCH_PREFIX) and k.removeprefix(DISPATCH_PREFIX) in DispatchSettings.model_fields}
        if "interval_months" in values["detectors"].get("disinfection", {}):
            # one tank regime: dispatch's due-date fallback follows the detector's interval unless set on its own
            dispatch.setdefault("disinfection_interval_months", values["detectors"]["disinfection"]["interval_months"])
        try:
            values["dispatch"] = DispatchSettings(**dispatch)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            field = DISPATCH_PREFIX + str(err["loc"][0])
            raise ConfigError(f"{_setting_label(field)}: {err['msg'].removeprefix('Value error, ')} "
                              f"(got {dispatch.get(field.removeprefix(DISPATCH_PREFIX))!r})") from None
        return values

    # derived views
    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets and URL passwords masked."""
        out = self.model_dump(mode="json")
        for k in SECRET_FIELDS:
            out[k] = "***" if getattr(self, k).get_secret_value() else ""
        out["mqtt_url"] = redact_url(self.mqtt_url)
        out["detectors"] = self.detectors
        return out


def _checked_params(det: str, given: dict[str, Any]) -> dict[str, Any]:
    try:
        checked = DETECTORS[det].Params(**given)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"{_setting_label(det + '_' + name)}: {err['msg'].removeprefix('Value error, ')} "
                          f"(got {given.get(name)!r})") from None
    return checked.model_dump(include=set(given))


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***; works on malformed URLs too."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def all_settings() -> dict[str, FieldInfo]:
    """Every setting name → its pydantic field: the dispatch ones under their alert_ names, the detectors' under
    <detector>_<parameter>."""
    out: dict[str, FieldInfo] = {n: f for n, f in Settings.model_fields.items() if n not in ("dispatch", "detectors")}
    out.update({DISPATCH_PREFIX + n: f for n, f in DispatchSettings.model_fields.items()})
    out.update({k: DETECTORS[d].Params.model_fields[n] for k, (d, n) in detector_settings().items()})
    return out


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults are left to the model so that 'given explicitly' can be told apart."""
    group = parser.add_argument_group("settings (each also from the environment variable shown)")
    for name, f in all_settings().items():
        # argparse expands % in help texts: a literal one must be doubled
        text = (f.description or "").replace("%", "%%")
        group.add_argument(flag_name(name), dest=f"setting_{name}", default=None, metavar="VALUE",
                           help=f"{text} [{env_name(name)}]")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="TOML file of settings (keys as the setting names); [CISTERN_CONFIG]")


def _read_toml(config_file: str) -> dict[str, Any]:
    try:
        with open(config_file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"CISTERN_CONFIG (--config): file {config_file} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"CISTERN_CONFIG (--config): {config_file} is not valid TOML: {e}") from None
    data = data.get("cistern", data)
    names = all_settings()
    for k in data:
        if k not in names:
            raise ConfigError(f"CISTERN_CONFIG (--config): unknown setting {k!r} in {config_file}")
    return data


def load_settings(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags over environment over TOML file over defaults. Raises ConfigError naming the setting."""
    environ = dict(os.environ if environ is None else environ)
    config_file = (getattr(args, "config", None) if args else None) or environ.get("CISTERN_CONFIG")
    flags: dict[str, Any] = {}
    if args is not None:
        flags = {n: v for n in all_settings() if (v := getattr(args, f"setting_{n}", None)) is not None}
    tokens = (_ENVIRON.set(environ), _TOML.set(_read_toml(config_file) if config_file else {}))
    try:
        return Settings(**flags)
    except ValidationError as e:
        raise _config_error(e, {**flags}) from None
    finally:
        _ENVIRON.reset(tokens[0])
        _TOML.reset(tokens[1])


# CISTERN_* variables that are not settings: the config file's path, and the test suite's and benchmarks' own
NOT_SETTINGS = {"CISTERN_CONFIG", "CISTERN_RELIABILITY_OUT", "CISTERN_UPDATE_GOLDEN"}
TEST_PREFIX = "CISTERN_TEST_"


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """One line per CISTERN_* environment variable that is no setting (a typo, or a name an older release had),
    with the nearest setting's name. Such a variable changes nothing; start-up logs these lines as warnings."""
    import difflib

    environ = dict(os.environ if environ is None else environ)
    known = [env_name(n) for n in all_settings()]
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in NOT_SETTINGS or name.startswith(TEST_PREFIX):
            continue
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        out.append(f"{name} is not a setting and changes nothing" + (f" (did you mean {near[0]}?)" if near else ""))
    return out


def _config_error(e: ValidationError, flags: dict[str, Any]) -> ConfigError:
    err = e.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    msg = err["msg"].removeprefix("Value error, ")
    shown = err.get("input")
    if field in SECRET_FIELDS:
        shown = "***"
    elif field == "mqtt_url" and isinstance(shown, str):
        shown = redact_url(shown)
    label = _setting_label(field) if field in Settings.model_fields else field
    return ConfigError(f"{label}: {msg} (got {shown!r})")

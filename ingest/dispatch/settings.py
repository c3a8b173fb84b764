"""Dispatch settings (CISTERN_ALERT_*): routing templates, the case clock (deadlines per kind, lights, reminders and
three levels of escalation), Art. 43 loss estimates, outputs, the outbox and the dispatch API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ingest.sinks.influx import http_url


class AlertOutputSettings(BaseModel):
    """Where dispatch events go (each output fed from the one outbox)."""

    alerts_file: Path | None = Field(None, description="append alert events as JSON lines here")
    alert_webhook_url: str = Field("", description="POST each alert event here")
    alert_webhook_secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key for the webhook "
                                                                       "signature (secret)")
    alert_mqtt_publish: bool = Field(True, description="publish alert events on {prefix}/alerts/{kind} (QoS 1) "
                                                       "and take acknowledgements on {prefix}/alerts/ack")

    @field_validator("alert_webhook_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)


# Per-kind clock defaults (hours); "*" is every other kind. Theft and silence cases: acknowledge within 24 h, resolve
# within 7 days; water quality and intrusion: 1 h and 24 h. Tank cases run to their due date instead.
ACK_HOURS = {"*": 24.0, "water_quality": 1.0, "pump_room_intrusion": 1.0}
RESOLVE_HOURS = {"*": 168.0, "water_quality": 24.0, "pump_room_intrusion": 24.0}
REMIND_EVERY_HOURS = {"*": 24.0, "water_quality": 1.0, "pump_room_intrusion": 1.0}
RESULTS = ("confirmed", "no_fault_found", "repaired", "duplicate")


def _kind_map(v: Any) -> Any:
    """'kind=value, kind=value' (the environment, a flag) → {kind: value}."""
    if isinstance(v, str):
        out: dict[str, str] = {}
        for part in (x.strip() for x in v.split(",")):
            if not part:
                continue
            k, sep, val = part.partition("=")
            if not sep or not k.strip() or not val.strip():
                raise ValueError(f"{part!r} is not name=value")
            out[k.strip()] = val.strip()
        return out
    return v


class DispatchApiSettings(BaseModel):
    """The HTTP API dispatch systems call (served by `cistern run` when a listen address is set)."""

    alert_api_listen: str = Field("", description="host:port the dispatch API listens on, e.g. 127.0.0.1:8480 "
                                                  "(empty: no API); put TLS in a reverse proxy in front")
    alert_api_tokens: SecretStr = Field(SecretStr(""), description="bearer tokens of the dispatch API as "
                                                                   "name:token comma list (secret; the name is "
                                                                   "recorded with every action)")

    @field_validator("alert_api_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        v = v.strip()
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be host:port, e.g. 127.0.0.1:8480")
        return v

    @field_validator("alert_api_tokens")
    @classmethod
    def _tokens(cls, v: SecretStr) -> SecretStr:
        api_tokens(v)
        return v


def api_tokens(v: SecretStr) -> dict[str, str]:
    """name:token,… → {token: name}; each token at least 16 characters, names and tokens unique."""
    out: dict[str, str] = {}
    for part in (x.strip() for x in v.get_secret_value().split(",")):
        if not part:
            continue
        name, sep, token = part.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ValueError("each entry must be name:token")
        if len(token) < 16:
            raise ValueError(f"the token of {name!r} is shorter than 16 characters")
        if token in out or name in out.values():
            raise ValueError(f"{name!r}: names and tokens must be unique")
        out[token] = name
    return out


class DispatchSettings(BaseModel):
    """Dispatch settings with their defaults (the lead maps each to a flag and a CISTERN_* variable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    district_unit_template: str = Field("{district} district water service unit",
                                        description="unit that acts on meter and cell alerts ({district} is replaced)")
    network_unit_template: str = Field("{district} water company district unit",
                                       description="unit that acts on NB-IoT cell outages ({district} is replaced)")
    district_supervisor_template: str = Field("{district} district water supply authority",
                                              description="escalation unit for meters and cells, and for pump rooms "
                                                          "with no supervisor_unit ({district} is replaced)")
    accountability_unit_template: str = Field("{district} district accountability office",
                                              description="third level of escalation, after the supervising unit "
                                                          "({district} is replaced)")
    accountability_units: dict[str, str] = Field({}, description="third-level unit by district, district=unit "
                                                                 "comma list (others use the template)")
    ack_hours: dict[str, float] = Field(ACK_HOURS, description="hours to acknowledge a case, kind=hours comma list "
                                                               "(* for other kinds; given kinds replace the "
                                                               "defaults); tank cases are due by their due date")
    resolve_hours: dict[str, float] = Field(RESOLVE_HOURS, description="hours to resolve a case, kind=hours comma "
                                                                       "list (* for other kinds)")
    remind_every_hours: dict[str, float] = Field(REMIND_EVERY_HOURS,
                                                 description="hours between reminders once a case is overdue, "
                                                             "kind=hours comma list (* for other kinds; tank cases "
                                                             "use reminder_interval_days)")
    yellow_days: float = Field(3.0, gt=0, description="a case turns yellow (due soon) this many days before its "
                                                      "deadline, or at yellow_share of its time when that is shorter")
    yellow_share: float = Field(0.25, gt=0, lt=1, description="share of a short deadline's time that is yellow")
    due_soon_lead_days: list[int] = Field([14, 3], description="days before a tank's due date to remind (comma list)")
    reminder_interval_days: float = Field(7.0, gt=0, description="days between reminders of a tank case past its "
                                                                 "due date")
    escalate_after_reminders: int = Field(2, ge=0, description="reminders without acknowledgement or result before "
                                                               "escalating a level (to the supervising unit, then "
                                                               "to accountability)")
    remind_kinds: list[str] = Field(["*"], description="kinds that get reminders and escalation, comma list (* for "
                                                       "all); every case has a deadline and a light")
    supervisor_kinds: list[str] = Field(["disinfection_unverified"],
                                        description="kinds sent to the supervising unit from the start (comma list)")
    growth_kinds: list[str] = Field(["signal_blocking", "bypass"],
                                    description="kinds whose open incidents get an update as time grows their loss "
                                                "estimate (comma list)")
    update_min_change: float = Field(0.5, ge=0, description="relative change of a number in the evidence that makes "
                                                            "an update worth sending")
    update_min_interval_h: float = Field(6.0, ge=0, description="least hours between two updates of one incident "
                                                                "(a severity change always goes out)")
    flow_velocity_m_s: float = Field(1.0, gt=0, description="Art. 43 flow velocity for a pipe's average flow")
    residential_hours_per_day: float = Field(3.0, gt=0, le=24, description="Art. 43 hours/day, residential")
    default_business_hours_per_day: float = Field(8.0, gt=0, le=24,
                                                  description="Art. 43 hours/day for non-residential meters with no "
                                                              "business_hours_per_day in the registry")
    unknown_days_min: int = Field(180, gt=0, description="Art. 43 days when the start is unknown (low)")
    unknown_days_max: int = Field(360, gt=0, description="Art. 43 days when the start is unknown (high)")
    disinfection_interval_months: int = Field(6, ge=1, le=24,
                                              description="due date fallback for due-soon events with no due_date "
                                                          "(follows CISTERN_DISINFECTION_INTERVAL_MONTHS when unset)")
    webhook_format: Literal["json", "cap"] = Field("json", description="webhook body: json (docs/FORMATS.md) or cap "
                                                                       "(OASIS CAP 1.2 XML)")
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="one webhook request's timeout")
    retry_first_s: float = Field(1.0, gt=0, description="first retry delay of a refused delivery")
    retry_max_s: float = Field(300.0, gt=0, description="longest retry delay (exponential back-off with jitter)")
    drain_timeout_s: float = Field(30.0, ge=0, description="how long replay and shutdown wait for undelivered "
                                                           "alerts")
    cap_sender: str = Field("cistern", min_length=1, description="CAP sender element")
    cap_language: str = Field("en-US", description="CAP language element")
    cap_scope: Literal["Public", "Restricted", "Private"] = Field("Restricted", description="CAP scope element")
    evidence_max_items: int = Field(48, ge=1, description="longest list kept in an alert's evidence (newest kept)")
    outbox_keep_days: float = Field(30.0, ge=0, description="days a delivered outbox row is kept")

    @field_validator("ack_hours", "resolve_hours", "remind_every_hours", "accountability_units", mode="before")
    @classmethod
    def _maps(cls, v: Any) -> Any:
        return _kind_map(v)

    @field_validator("ack_hours", "resolve_hours", "remind_every_hours")
    @classmethod
    def _hours(cls, v: dict[str, float], info: Any) -> dict[str, float]:
        if any(not 0 < h < 1e6 for h in v.values()):
            raise ValueError("hours must be positive")
        defaults = {"ack_hours": ACK_HOURS, "resolve_hours": RESOLVE_HOURS}.get(info.field_name, REMIND_EVERY_HOURS)
        return {**defaults, **v}

    def clock_of(self, kind: str) -> tuple[float, float, float]:
        """(hours to acknowledge, hours to resolve, hours between reminders) of a kind."""
        return (self.ack_hours.get(kind, self.ack_hours["*"]), self.resolve_hours.get(kind, self.resolve_hours["*"]),
                self.remind_every_hours.get(kind, self.remind_every_hours["*"]))

    def accountability_unit(self, district: str) -> str:
        return self.accountability_units.get(district) or self.accountability_unit_template.format(district=district)

    def reminds(self, kind: str) -> bool:
        return "*" in self.remind_kinds or kind in self.remind_kinds

    @field_validator("due_soon_lead_days", "remind_kinds", "supervisor_kinds", "growth_kinds", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("due_soon_lead_days")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError("lead days must be positive")
        return sorted(set(v), reverse=True)

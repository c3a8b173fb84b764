"""Dispatch settings (CISTERN_ALERT_*): routing templates, reminders and escalation, Art. 43 loss estimates,
outputs and the outbox."""

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
    due_soon_lead_days: list[int] = Field([14, 3], description="days before a tank's due date to remind (comma list)")
    reminder_interval_days: float = Field(7.0, gt=0, description="days between reminders while an incident stays open")
    escalate_after_reminders: int = Field(2, ge=0, description="reminders without result before escalating "
                                                               "to the supervising unit")
    remind_kinds: list[str] = Field(["disinfection_overdue"], description="kinds that get reminders and escalation "
                                                                         "(comma list)")
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
    webhook_format: Literal["json", "cap"] = Field("json", description="webhook body: json (CONTRACT §8) or cap "
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

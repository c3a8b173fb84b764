"""Alert events: the one shape every output (alerts file, webhook, MQTT, the database record) carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devices.time import iso_utc, parse_iso_ns

ALERT_EVENTS = ("raised", "updated", "escalated", "cleared")
SCORED_KINDS = ("signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection_overdue", "water_quality",
                "pump_room_intrusion")


@dataclass
class AlertEvent:
    """One event of one incident. The detectors fill the first twelve fields; dispatch adds the event's sequence
    number within its incident and, for an open case, its deadline and light, plus further top-level fields
    (`extra`: a reminder's number, the acknowledgement, …) in the order they are written out."""

    alert_id: str
    event: str  # raised | updated | escalated | cleared
    kind: str
    severity: str  # info | warning | critical
    subject_type: str  # meter | cell | tank | building | pump_room
    subject_id: str
    district: str
    start_ns: int
    detected_at_ns: int
    summary: str
    route: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    sequence: int | None = None
    deadline_ns: int | None = None
    light: str | None = None  # green | yellow | red
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertEvent:
        """Back from the wire shape, e.g. a line of the alerts file."""
        known = {"alert_id", "event", "kind", "severity", "subject", "district", "start", "detected_at", "summary",
                 "route", "evidence", "sequence", "deadline", "light"}
        deadline = d.get("deadline")
        return cls(alert_id=d["alert_id"], event=d["event"], kind=d["kind"], severity=d["severity"],
                   subject_type=d["subject"]["type"], subject_id=d["subject"]["id"], district=d.get("district", ""),
                   start_ns=parse_iso_ns(d["start"]), detected_at_ns=parse_iso_ns(d["detected_at"]),
                   summary=d.get("summary", ""), route=d.get("route", {}), evidence=d.get("evidence", {}),
                   sequence=d.get("sequence"), deadline_ns=parse_iso_ns(deadline) if deadline else None,
                   light=d.get("light"), extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alert_id": self.alert_id,
            "event": self.event,
            "kind": self.kind,
            "severity": self.severity,
            "subject": {"type": self.subject_type, "id": self.subject_id},
            "district": self.district,
            "start": iso_utc(self.start_ns),
            "detected_at": iso_utc(self.detected_at_ns),
            "summary": self.summary,
            "route": self.route,
            "evidence": self.evidence,
        }
        if self.sequence is not None:
            out["sequence"] = self.sequence
        if self.deadline_ns is not None:
            out["deadline"] = iso_utc(self.deadline_ns)
        if self.light is not None:
            out["light"] = self.light
        out.update(self.extra)
        return out

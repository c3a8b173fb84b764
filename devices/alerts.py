"""Alert events of CONTRACT.md §8: the one shape every output (file, webhook, MQTT) carries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

ALERT_EVENTS = ("raised", "updated", "escalated", "cleared")
SCORED_KINDS = ("signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection_overdue")


def iso_utc(ts_ns: int) -> str:
    """RFC 3339 UTC with a Z, to the second (or finer when the time has a fraction)."""
    sec, frac = divmod(int(ts_ns), 1_000_000_000)
    t = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        t += f".{frac:09d}".rstrip("0")
    return t + "Z"


def parse_iso_ns(text: str) -> int:
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


@dataclass
class AlertEvent:
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertEvent:
        """Back from the wire shape (CONTRACT §8), e.g. an enriched dispatch event."""
        return cls(alert_id=d["alert_id"], event=d["event"], kind=d["kind"], severity=d["severity"],
                   subject_type=d["subject"]["type"], subject_id=d["subject"]["id"], district=d.get("district", ""),
                   start_ns=parse_iso_ns(d["start"]), detected_at_ns=parse_iso_ns(d["detected_at"]),
                   summary=d.get("summary", ""), route=d.get("route", {}), evidence=d.get("evidence", {}))

    def to_dict(self) -> dict[str, Any]:
        return {
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

"""One incident's state → the alert event dispatch sends: routed to the unit that must act, with where the subject
is, when it began on the utility's clock, the due date of tank cases and the Art. 43 loss estimate."""

from __future__ import annotations

import math
from typing import Any

from devices.alerts import AlertEvent
from devices.time import DAY_NS, iso_utc
from ingest.dispatch import clock
from ingest.dispatch.evidence import Enricher
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Incident


def compact(evidence: dict[str, Any], max_items: int) -> dict[str, Any]:
    """Long lists cut to their newest items (with the full count), non-finite numbers as null (strict JSON)."""
    out: dict[str, Any] = {}
    for k, v in evidence.items():
        if isinstance(v, list) and len(v) > max_items:
            out[k] = v[-max_items:]
            out[f"{k}_total"] = len(v)
        elif isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        else:
            out[k] = v
    return out


def _route(en: Enricher, settings: DispatchSettings, inc: Incident) -> dict[str, Any]:
    route = en.route(inc.kind, inc.subject_type, inc.subject_id, inc.district)
    detector_route = {k: v for k, v in inc.route.items() if k not in ("unit",)}
    names = clock.units(settings, en, inc)
    route = {**detector_route, **route, "unit": names[inc.level],
             "escalation_unit": names[min(inc.level + 1, clock.TOP_LEVEL)], "level": inc.level}
    if inc.level > clock.start_level(settings, inc.kind):
        route.update(escalated_from=names[inc.level - 1], responsible_unit=names[1])
    return route


def history(inc: Incident) -> list[dict[str, Any]]:
    """The clock's steps as a receiver reads them (times in RFC 3339)."""
    return [{"at": iso_utc(h["at_ns"]), **{k: v for k, v in h.items() if k != "at_ns"}} for h in inc.history]


def _evidence(en: Enricher, settings: DispatchSettings, inc: Incident, t: int) -> dict[str, Any]:
    evidence = compact(inc.evidence, settings.evidence_max_items)
    evidence["where"] = en.where(inc.subject_type, inc.subject_id, inc.district)
    evidence["began_local"] = en.local(inc.start_ns)
    if inc.due_ns is not None:
        evidence["due_date"] = en.local_date(inc.due_ns)
        days = (t - inc.due_ns) / DAY_NS
        if inc.kind == "disinfection_overdue":
            evidence["days_overdue"] = max(0, math.floor(days))
        else:
            evidence["days_to_due"] = max(0, math.ceil(-days))
    loss = en.loss_estimate(inc.kind, inc.subject_type, inc.subject_id, inc.start_ns, t, inc.evidence)
    if loss is not None:
        evidence["loss_estimate"] = loss
    return evidence


def build_event(en: Enricher, settings: DispatchSettings, inc: Incident, event: str, t: int,
                extra: dict[str, Any] | None = None) -> AlertEvent:
    route = _route(en, settings, inc)
    evidence = _evidence(en, settings, inc, t)
    summary = inc.summary
    extra = dict(extra or {})
    if event == "escalated":
        evidence["level"] = inc.level
        evidence["history"] = history(inc)
        why = "without result" if inc.ack_ns is None else f"still not resolved (acknowledged by {inc.ack_by})"
        summary = (f"ESCALATED to {route['unit']} (level {inc.level}, {clock.LEVEL_NAMES[inc.level]}) after "
                   f"{inc.reminders} reminder(s) {why}: {summary}")
    elif "reminder" in extra:
        summary = f"Reminder {extra['reminder']}: {summary}"
    if inc.ack_ns is not None:
        extra["acknowledged"] = {"by": inc.ack_by, "at": iso_utc(inc.ack_ns), "note": inc.ack_note or ""}
    return AlertEvent(alert_id=inc.alert_id, event=event, kind=inc.kind, severity=inc.severity,
                      subject_type=inc.subject_type, subject_id=inc.subject_id,
                      district=evidence["where"].get("district") or inc.district, start_ns=inc.start_ns,
                      detected_at_ns=t, summary=summary, route=route, evidence=evidence, sequence=inc.seq,
                      deadline_ns=inc.deadline_ns if inc.open else None, light=clock.light(settings, inc, t),
                      extra=extra)

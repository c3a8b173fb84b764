"""Cases as dispatch and supervisors read them: one case's state, deadline and light at a time, and the list with its
filters (kind, district, unit, light, state). Shared by the API and `cistern cases`."""

from __future__ import annotations

from typing import Any

from devices.time import iso_utc
from ingest.dispatch import clock
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Incident, Store

STATES = ("open", "closed", "all")
LIGHTS = ("green", "yellow", "red")


def current_unit(inc: Incident) -> str:
    """The unit the case is with now: the last level it reached (raise or escalation)."""
    for h in reversed(inc.history):
        if h.get("unit"):
            return str(h["unit"])
    return str(inc.route.get("unit", ""))


def _t(ns: int | None) -> str | None:
    return iso_utc(ns) if ns is not None else None


def view(s: DispatchSettings, inc: Incident, now_ns: int) -> dict[str, Any]:
    """A case's state at `now_ns` (its light judged then)."""
    return {
        "alert_id": inc.alert_id, "kind": inc.kind, "state": "open" if inc.open else "closed",
        "subject": {"type": inc.subject_type, "id": inc.subject_id}, "district": inc.district,
        "unit": current_unit(inc), "level": inc.level, "severity": inc.severity, "summary": inc.summary,
        "start": _t(inc.start_ns), "raised_at": _t(inc.raised_ns),
        "deadline": _t(inc.deadline_ns) if inc.open else None, "light": clock.light(s, inc, now_ns),
        "ack_deadline": _t(inc.ack_due_ns), "resolve_deadline": _t(inc.resolve_due_ns),
        "acknowledged": ({"by": inc.ack_by, "at": _t(inc.ack_ns), "note": inc.ack_note or ""}
                         if inc.ack_ns is not None else None),
        "reminders": inc.reminders, "closed_at": _t(inc.closed_ns), "result": inc.result,
        "closed_by": inc.closed_by, "reopened_at": _t(inc.reopened_ns),
    }


def select(store: Store, s: DispatchSettings, now_ns: int, *, kind: str | None = None, district: str | None = None,
           unit: str | None = None, light: str | None = None, state: str = "open") -> list[dict[str, Any]]:
    """Cases matching every filter given, oldest raise first."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if light is not None and light not in LIGHTS:
        raise ValueError(f"light must be one of {', '.join(LIGHTS)}")
    out = []
    for inc in store.incidents(open_only=state == "open", closed_only=state == "closed", kind=kind, district=district,
                               with_evidence=False):
        v = view(s, inc, now_ns)
        if (unit and v["unit"] != unit) or (light and v["light"] != light):
            continue
        out.append(v)
    return out

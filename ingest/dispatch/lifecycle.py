"""The life of a case: one alert_id per incident; a raise for a subject that already has an open case of that kind
is that case (the new id becomes an alias); updates go out only when the evidence grows materially; a clear closes
it once; a raise after a clear is a new case with a new id."""

from __future__ import annotations

from typing import Any

from devices.alerts import AlertEvent
from devices.time import NS
from ingest.dispatch.schedule import Publish, Schedule
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Incident, Store


def numbers(evidence: dict[str, Any]) -> dict[str, float]:
    """Numbers of the evidence (one level into dicts; lists are readings, not measures of size)."""
    out: dict[str, float] = {}
    for k, v in evidence.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    out[f"{k}.{k2}"] = float(v2)
    return out


class Lifecycle:
    def __init__(self, settings: DispatchSettings, store: Store, schedule: Schedule, publish: Publish):
        self.s = settings
        self.store = store
        self.schedule = schedule
        self.publish = publish

    def apply(self, db: Any, ev: AlertEvent, out: list[AlertEvent]) -> None:
        """One detector event into the case it belongs to."""
        inc = self._case_of(db, ev)
        if ev.event == "cleared":
            if inc is not None and inc.open:
                self.absorb(inc, ev)
                self.finish(db, inc, ev.detected_at_ns, ev.severity or inc.severity, out)
            return
        if inc is not None and inc.open:
            if ev.event == "escalated":
                if not inc.escalated:
                    self.absorb(inc, ev)
                    self.schedule.escalate(db, inc, ev.detected_at_ns, out)
            else:
                self._maybe_update(db, inc, ev, out)
            return
        if inc is not None and ev.detected_at_ns <= (inc.closed_ns or 0):
            return  # history replayed after a restart: this incident was raised and cleared already
        new_id = ev.alert_id
        if inc is not None or self.store.get(db, new_id) is not None:
            n = 2
            while self.store.get(db, f"{ev.alert_id}~{n}") is not None:
                n += 1
            new_id = f"{ev.alert_id}~{n}"  # the same id after a clear: a new incident needs a new id
            self.store.alias(db, ev.alert_id, new_id)
        self._raise(db, new_id, ev, out)

    def _case_of(self, db: Any, ev: AlertEvent) -> Incident | None:
        inc = self.store.get(db, self.store.resolve(db, ev.alert_id))
        if inc is None or not inc.open:
            same = self.store.open_for(db, ev.kind, ev.subject_type, ev.subject_id)
            if same is not None:
                # The same condition under another id (a detector restarted from an older checkpoint, or it moved
                # the start): one incident, one alert_id.
                self.store.alias(db, ev.alert_id, same.alert_id)
                inc = same
        return inc

    def _raise(self, db: Any, alert_id: str, ev: AlertEvent, out: list[AlertEvent]) -> None:
        inc = Incident(alert_id=alert_id, kind=ev.kind, subject_type=ev.subject_type, subject_id=ev.subject_id,
                       district=ev.district, open=True, seq=0, severity=ev.severity, start_ns=ev.start_ns,
                       raised_ns=ev.detected_at_ns, sent_ns=ev.detected_at_ns, closed_ns=None, due_ns=None,
                       leads_done=[], reminders=0, next_ns=None, grow_ns=None, escalated=False, ack_by=None,
                       ack_ns=None, ack_note=None, summary=ev.summary, evidence=dict(ev.evidence),
                       route=dict(ev.route), cap_ref=None)
        t = ev.detected_at_ns
        if ev.kind == "disinfection_overdue":
            inc.due_ns = ev.start_ns
            soon = self.store.open_for(db, "disinfection_due_soon", ev.subject_type, ev.subject_id)
            if soon is not None:
                soon.summary = f"Superseded: the disinfection of {ev.subject_id} is now overdue (see {alert_id})"
                soon.evidence = {**soon.evidence, "resolution": "overdue", "superseded_by": alert_id}
                self.finish(db, soon, t, soon.severity, out)
        self.schedule.on_raise(inc, ev, t)
        self.publish(db, inc, "raised", t, out)

    @staticmethod
    def absorb(inc: Incident, ev: AlertEvent) -> None:
        inc.evidence = {**inc.evidence, **ev.evidence}
        inc.summary = ev.summary or inc.summary
        if 0 < ev.start_ns < inc.start_ns:
            inc.start_ns = ev.start_ns  # more evidence can move the start earlier, never later

    def _maybe_update(self, db: Any, inc: Incident, ev: AlertEvent, out: list[AlertEvent]) -> None:
        before = numbers(inc.evidence)
        severity_changed = ev.severity != inc.severity
        self.absorb(inc, ev)
        inc.severity = ev.severity
        after = numbers(inc.evidence)
        grew = any(k not in before or abs(v - before[k]) >= self.s.update_min_change * max(abs(before[k]), 1e-9)
                   for k, v in after.items())
        spaced = ev.detected_at_ns - inc.sent_ns >= self.s.update_min_interval_h * 3600 * NS
        if severity_changed or (grew and spaced):
            self.schedule.schedule_growth(inc, ev.detected_at_ns)
            self.publish(db, inc, "updated", ev.detected_at_ns, out)
        else:
            self.store.save(db, inc)  # keep the newest evidence for the next event that goes out

    def finish(self, db: Any, inc: Incident, t: int, severity: str, out: list[AlertEvent]) -> None:
        inc.open = False
        inc.closed_ns = t
        inc.next_ns = inc.grow_ns = None
        inc.severity = severity
        self.publish(db, inc, "cleared", t, out)

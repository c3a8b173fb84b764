"""The life of a case: one alert_id per incident; a raise for a subject that already has an open case of that kind
is that case (the new id becomes an alias); updates go out only when the evidence grows materially; a clear closes
it once; a raise after a clear is a new case with a new id, except after dispatch closed the last one
`no_fault_found`: then only once the evidence has grown. Dispatch acknowledges, closes and reopens cases here too."""

from __future__ import annotations

from typing import Any

from devices.alerts import AlertEvent
from devices.time import NS, iso_utc
from ingest.dispatch import clock
from ingest.dispatch.schedule import Publish, Schedule
from ingest.dispatch.settings import RESULTS, DispatchSettings
from ingest.dispatch.store import Incident, Store

NO_FAULT = "no_fault_found"
CLOSURE_KEYS = ("result", "result_note", "closed_by")


class CaseError(Exception):
    """An action dispatch cannot take; nothing was changed."""


class UnknownCase(CaseError):
    pass


class InvalidTransition(CaseError):
    pass


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
                if inc.level < clock.TOP_LEVEL:
                    self.absorb(inc, ev)
                    self.schedule.escalate(db, inc, ev.detected_at_ns, out)
            else:
                self._maybe_update(db, inc, ev, out)
            return
        if inc is not None and ev.detected_at_ns <= (inc.closed_ns or 0):
            return  # history replayed after a restart: this incident was raised and cleared already
        dismissed = self.store.last_closed(db, ev.kind, ev.subject_type, ev.subject_id)
        if dismissed is not None and dismissed.result == NO_FAULT and not self.grew(dismissed, ev):
            self.store.alias(db, ev.alert_id, dismissed.alert_id)  # its later events find the dismissed case
            return
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
                       leads_done=[], reminders=0, next_ns=None, grow_ns=None, ack_by=None,
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

    def grew(self, before_case: Incident, ev: AlertEvent) -> bool:
        """A number of the evidence has risen materially since the case was closed."""
        before = numbers(before_case.evidence)
        return any(k in before and v - before[k] >= self.s.update_min_change * max(abs(before[k]), 1e-9)
                   for k, v in numbers(ev.evidence).items())

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
        inc.history.append({"step": "closed", "at_ns": t, "level": inc.level, "result": inc.result,
                            **({"by": inc.closed_by} if inc.closed_by else {})})
        self.publish(db, inc, "cleared", t, out)

    # ---- dispatch acts on a case ---------------------------------------------------------------------------------
    def case(self, db: Any, alert_id: str) -> Incident:
        inc = self.store.get(db, self.store.resolve(db, alert_id))
        if inc is None:
            raise UnknownCase(f"no case {alert_id!r}")
        return inc

    def acknowledge(self, db: Any, alert_id: str, by: str, note: str, t: int, via: str) -> Incident:
        inc = self.case(db, alert_id)
        if not inc.open:
            raise InvalidTransition(f"case {inc.alert_id} is closed (since {iso_utc(inc.closed_ns or 0)}): reopen "
                                    "it first")
        if inc.acknowledged:
            raise InvalidTransition(f"case {inc.alert_id} was already acknowledged by {inc.ack_by} at "
                                    f"{iso_utc(inc.ack_ns or 0)}")
        self.store.record_action(db, inc.alert_id, "ack", by, note, t, via)
        inc.take_ack(by, note, t, via)  # from now on the case runs on its deadline to resolve
        self.store.save(db, inc)
        return inc

    def close(self, db: Any, alert_id: str, result: str, note: str, by: str, t: int, via: str,
              out: list[AlertEvent]) -> Incident:
        """Dispatch's result ends the case: a `cleared` event with the result in its evidence."""
        if result not in RESULTS:
            raise InvalidTransition(f"result {result!r} is not one of {', '.join(RESULTS)}")
        inc = self.case(db, alert_id)
        if not inc.open:
            raise InvalidTransition(f"case {inc.alert_id} is already closed (since {iso_utc(inc.closed_ns or 0)}"
                                    f"{', ' + inc.result if inc.result else ''})")
        self.store.record_action(db, inc.alert_id, "close", by, note, t, via, result=result)
        inc.result, inc.closed_by = result, by
        inc.evidence = {**inc.evidence, "result": result, "result_note": note, "closed_by": by}
        self.finish(db, inc, max(t, inc.sent_ns), inc.severity, out)
        return inc

    def reopen(self, db: Any, alert_id: str, note: str, by: str, t: int, via: str,
               out: list[AlertEvent]) -> Incident:
        """A closed case open again under its alert_id, its clock restarted at level one (an `updated` event)."""
        inc = self.case(db, alert_id)
        if inc.open:
            raise InvalidTransition(f"case {inc.alert_id} is open: only a closed case can be reopened")
        other = self.store.open_for(db, inc.kind, inc.subject_type, inc.subject_id)
        if other is not None:
            raise InvalidTransition(f"case {other.alert_id} is open for the same {inc.subject_type} and kind: act "
                                    "on that one")
        self.store.record_action(db, inc.alert_id, "reopen", by, note, t, via)
        t = max(t, inc.sent_ns)
        inc.open, inc.closed_ns, inc.result, inc.closed_by = True, None, None, None
        inc.evidence = {k: v for k, v in inc.evidence.items() if k not in CLOSURE_KEYS}
        inc.ack_by = inc.ack_ns = inc.ack_note = None
        inc.reopened_ns = t
        inc.level = clock.start_level(self.s, inc.kind)
        self.schedule.start_clock(inc, t)
        self.schedule.schedule_growth(inc, t)
        inc.history.append({"step": "reopened", "at_ns": t, "by": by, "via": via, "level": inc.level})
        self.publish(db, inc, "updated", t, out, {"reopened": {"by": by, "at": iso_utc(t), "note": note}})
        return inc

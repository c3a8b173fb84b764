"""The clock of open cases, on event time: reminders before a tank's due date, reminders while a case stays open,
escalation to the supervising unit after the set number of reminders without result, and 'the loss has grown'
updates of theft cases. An acknowledgement stops reminders and escalation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from devices.alerts import AlertEvent
from devices.registry import Registry
from devices.time import DAY_NS, NS, add_months
from ingest.dispatch.evidence import Enricher
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Incident

SEVERITIES = ("info", "warning", "critical")

# publish(db, incident, event, t, out, extra)
Publish = Callable[..., None]


def raise_severity(s: str) -> str:
    i = SEVERITIES.index(s) if s in SEVERITIES else 1
    return SEVERITIES[min(i + 1, len(SEVERITIES) - 1)]


class Schedule:
    def __init__(self, settings: DispatchSettings, registry: Registry, enricher: Enricher, publish: Publish):
        self.s = settings
        self.registry = registry
        self.enricher = enricher
        self.publish = publish

    def on_raise(self, inc: Incident, ev: AlertEvent, t: int) -> None:
        """First deadlines of a new case."""
        s = self.s
        if ev.kind == "disinfection_due_soon":
            inc.due_ns = self.due_of(ev)
            if inc.due_ns is not None:
                inc.leads_done = [d for d in s.due_soon_lead_days if t >= inc.due_ns - d * DAY_NS]
                inc.next_ns = self.next_lead(inc)
        if ev.kind in s.remind_kinds and ev.kind != "disinfection_due_soon":
            inc.next_ns = t + int(s.reminder_interval_days * DAY_NS)
        self.schedule_growth(inc, t)

    def escalate(self, db: Any, inc: Incident, t: int, out: list[AlertEvent]) -> None:
        inc.escalated = True
        inc.next_ns = None
        inc.severity = raise_severity(inc.severity)
        self.publish(db, inc, "escalated", t, out, {"reminders": inc.reminders})

    def due(self, db: Any, inc: Incident, now_ns: int, out: list[AlertEvent]) -> None:
        """Reminders and escalation due by now; each goes out stamped with the time it was due (event time)."""
        if inc.grow_ns is not None and inc.grow_ns <= now_ns:
            self.publish(db, inc, "updated", now_ns, out, {"update_reason": "the loss grows with time"})
            self.schedule_growth(inc, now_ns)
        while inc.open and not inc.acknowledged and inc.next_ns is not None and inc.next_ns <= now_ns:
            if inc.kind == "disinfection_due_soon":
                self._lead_reminder(db, inc, now_ns, out)
            elif inc.reminders < self.s.escalate_after_reminders:
                t = inc.next_ns
                inc.reminders += 1
                inc.next_ns = t + int(self.s.reminder_interval_days * DAY_NS)
                self.publish(db, inc, "updated", t, out, {"reminder": inc.reminders})
            elif not inc.escalated:
                self.escalate(db, inc, inc.next_ns, out)
            else:
                inc.next_ns = None

    def _lead_reminder(self, db: Any, inc: Incident, now_ns: int, out: list[AlertEvent]) -> None:
        assert inc.due_ns is not None
        passed = [d for d in self.s.due_soon_lead_days if d not in inc.leads_done and now_ns >= inc.due_ns - d * DAY_NS]
        inc.leads_done += passed
        inc.next_ns = self.next_lead(inc)
        if inc.next_ns is None or inc.next_ns > now_ns:
            # Only the nearest lead time is worth telling when a clock jump passed several.
            t = inc.due_ns - min(passed) * DAY_NS
            inc.reminders += 1
            self.publish(db, inc, "updated", t, out, {"reminder": inc.reminders, "days_to_due": min(passed)})

    def schedule_growth(self, inc: Incident, t: int) -> None:
        """Next time an open incident's evidence (days, loss estimate) will have grown materially."""
        if inc.kind not in self.s.growth_kinds or inc.start_ns <= 0:
            inc.grow_ns = None
            return
        age = max(t - inc.start_ns, 0)
        step = max(int(age * self.s.update_min_change), int(self.s.update_min_interval_h * 3600 * NS), 3600 * NS)
        inc.grow_ns = t + step

    def next_lead(self, inc: Incident) -> int | None:
        left = [d for d in self.s.due_soon_lead_days if d not in inc.leads_done]
        if inc.due_ns is None or not left:
            return None
        return inc.due_ns - max(left) * DAY_NS

    def due_of(self, ev: AlertEvent) -> int | None:
        """Due date of a due-soon event: its evidence (due_date / due), else the registry's last disinfection plus
        the interval."""
        for k in ("due_date", "due"):
            v = ev.evidence.get(k)
            if isinstance(v, str) and v:
                try:
                    return self.enricher.local_midnight_ns(dt.date.fromisoformat(v[:10]))
                except ValueError:
                    pass
        i = self.registry.tanks.index.get(ev.subject_id, -1) if ev.subject_type == "tank" else -1
        if i < 0:
            return None
        last = self.registry.tanks.last_disinfected[i].astype(dt.date)
        return self.enricher.local_midnight_ns(add_months(last, self.s.disinfection_interval_months))

"""The clock of open cases, on event time: every case has a deadline (its kind's hours to acknowledge, or a tank's due
date) and a light; a reminder goes out when it turns yellow, when it turns red, then at its kind's interval; after
the set number of reminders without acknowledgement or result it goes up a level (the supervising unit, then
accountability, where the reminders go on at the interval). An acknowledgement moves the case on to its deadline to
resolve, which runs the same way from the level the case is at. Also reminders before a tank's due date and 'the loss
has grown' updates of theft cases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from devices.alerts import AlertEvent
from devices.registry import Registry
from devices.time import DAY_NS, NS, add_months
from ingest.dispatch import clock
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
        inc.level = clock.start_level(s, ev.kind)
        self.start_clock(inc, t)
        inc.history.append({"step": "raised", "at_ns": t, "level": inc.level,
                            "unit": clock.units(s, self.enricher, inc)[inc.level]})
        self.schedule_growth(inc, t)

    def start_clock(self, inc: Incident, t: int) -> None:
        """Deadlines from t and the first time the case is to be urged (tank due-soon cases keep their lead days)."""
        clock.set_deadlines(self.s, inc, t)
        inc.level_reminders = 0
        if inc.kind != "disinfection_due_soon":
            inc.next_ns = clock.next_point(self.s, inc, t) if self.s.reminds(inc.kind) else None

    def escalate(self, db: Any, inc: Incident, t: int, out: list[AlertEvent]) -> None:
        """Up one level: the next unit takes the case, with the history so far."""
        s = self.s
        names = clock.units(s, self.enricher, inc)
        inc.level = min(inc.level + 1, clock.TOP_LEVEL)
        inc.level_reminders = 0
        inc.severity = raise_severity(inc.severity)
        inc.history.append({"step": "escalated", "at_ns": t, "level": inc.level, "unit": names[inc.level],
                            "from_unit": names[inc.level - 1], "reminders": inc.reminders})
        if inc.kind != "disinfection_due_soon":  # (a due-soon case keeps its lead days)
            inc.next_ns = clock.next_point(s, inc, t) if s.reminds(inc.kind) else None
        self.publish(db, inc, "escalated", t, out, {"reminders": inc.reminders})

    def due(self, db: Any, inc: Incident, now_ns: int, out: list[AlertEvent], growth: bool = True) -> None:
        """Reminders and escalation due by now; each goes out stamped with the time it was due (event time)."""
        while inc.open and inc.next_ns is not None and inc.next_ns <= now_ns:
            t = inc.next_ns
            if inc.kind == "disinfection_due_soon":
                self._lead_reminder(db, inc, now_ns, out)
            elif not self.s.reminds(inc.kind):
                inc.next_ns = None
            elif clock.next_point(self.s, inc, t - 1) != t:
                # Not a point of the clock the case runs on now (an acknowledgement moved it on to its deadline to
                # resolve): on to that clock's next point.
                inc.next_ns = clock.next_point(self.s, inc, t)
            elif inc.level_reminders < self.s.escalate_after_reminders or inc.level >= clock.TOP_LEVEL:
                inc.reminders += 1
                inc.level_reminders += 1
                inc.next_ns = clock.next_point(self.s, inc, t)
                inc.history.append({"step": "reminder", "at_ns": t, "level": inc.level, "reminder": inc.reminders,
                                    "light": clock.light(self.s, inc, t)})
                self.publish(db, inc, "updated", t, out, {"reminder": inc.reminders})
            else:
                self.escalate(db, inc, t, out)
        # after the reminders, which are stamped earlier (when they were due): one case's events stay in time order
        if growth and inc.open and inc.grow_ns is not None and inc.grow_ns <= now_ns:
            self.publish(db, inc, "updated", now_ns, out, {"update_reason": "the loss grows with time"})
            self.schedule_growth(inc, now_ns)

    def _lead_reminder(self, db: Any, inc: Incident, now_ns: int, out: list[AlertEvent]) -> None:
        assert inc.due_ns is not None
        passed = [d for d in self.s.due_soon_lead_days if d not in inc.leads_done and now_ns >= inc.due_ns - d * DAY_NS]
        inc.leads_done += passed
        inc.next_ns = self.next_lead(inc)
        if inc.next_ns is None or inc.next_ns > now_ns:
            # Only the nearest lead time is worth telling when a clock jump passed several.
            t = inc.due_ns - min(passed) * DAY_NS
            inc.reminders += 1
            inc.history.append({"step": "reminder", "at_ns": t, "level": inc.level, "reminder": inc.reminders,
                                "days_to_due": min(passed)})
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

"""The arithmetic of a case's clock, pure: its deadlines, its light at a time, the next time it must be urged, and the
unit at each of the three levels (responsible unit, supervising unit, accountability)."""

from __future__ import annotations

from devices.time import DAY_NS, HOUR_NS
from ingest.dispatch.evidence import Enricher
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Incident

TOP_LEVEL = 3
LEVEL_NAMES = {1: "responsible unit", 2: "supervising unit", 3: "accountability"}


def start_level(s: DispatchSettings, kind: str) -> int:
    """A kind that asks the supervising unit to check the responsible unit's work starts at level 2."""
    return 2 if kind in s.supervisor_kinds else 1


def anchor_ns(inc: Incident) -> int:
    """Where the clock started: the raise, or the last reopening."""
    return inc.reopened_ns if inc.reopened_ns is not None else inc.raised_ns


def set_deadlines(s: DispatchSettings, inc: Incident, t: int) -> None:
    """Deadlines from `t`: a tank case is due by its due date; any other by its kind's hours."""
    if inc.due_ns is not None:
        inc.ack_due_ns = inc.resolve_due_ns = inc.due_ns
        return
    ack_h, resolve_h, _ = s.clock_of(inc.kind)
    inc.ack_due_ns = t + int(ack_h * HOUR_NS)
    inc.resolve_due_ns = t + int(resolve_h * HOUR_NS)


def yellow_window_ns(s: DispatchSettings, inc: Incident, deadline_ns: int) -> int:
    """Yellow for the last `yellow_days` before the deadline, or the last `yellow_share` of a short deadline's time."""
    span = max(deadline_ns - anchor_ns(inc), 0)
    return int(min(s.yellow_days * DAY_NS, s.yellow_share * span))


def light(s: DispatchSettings, inc: Incident, t: int) -> str | None:
    """green, yellow (due soon) or red (overdue) for an open case at event time t; None for a closed one."""
    d = inc.deadline_ns
    if not inc.open or d is None:
        return None
    if t >= d:
        return "red"
    if t >= d - yellow_window_ns(s, inc, d):
        return "yellow"
    return "green"


def interval_ns(s: DispatchSettings, inc: Incident) -> int:
    """Time between reminders once overdue: the kind's hours; a tank case's `reminder_interval_days` unless its kind
    is named in remind_every_hours."""
    if inc.due_ns is not None and inc.kind not in s.remind_every_hours:
        return int(s.reminder_interval_days * DAY_NS)
    return int(s.clock_of(inc.kind)[2] * HOUR_NS)


def next_point(s: DispatchSettings, inc: Incident, after_ns: int) -> int | None:
    """The next time after `after_ns` the case must be urged: when it turns yellow, when it turns red, then every
    interval from the deadline (from the raise for a case raised overdue). The deadline is the one to acknowledge,
    and once acknowledged the one to resolve."""
    d = inc.deadline_ns
    if d is None:
        return None
    start = anchor_ns(inc)
    for p in (d - yellow_window_ns(s, inc, d), d):
        if p > after_ns and p > start:
            return p
    base = max(d, start)
    every = max(interval_ns(s, inc), 1)
    return base + ((max(after_ns, base) - base) // every + 1) * every


def units(s: DispatchSettings, en: Enricher, inc: Incident) -> dict[int, str]:
    """The unit that acts at each level: Art. 14's responsible unit, the supervising unit, accountability."""
    r = en.route(inc.kind, inc.subject_type, inc.subject_id, inc.district)
    first = r["unit"] if inc.kind not in s.supervisor_kinds else en.route("", inc.subject_type, inc.subject_id,
                                                                        inc.district)["unit"]
    return {1: first, 2: r["escalation_unit"], 3: s.accountability_unit(inc.district)}

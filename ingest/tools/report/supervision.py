"""`cistern report --period 2026-H1` (or `2026-05`): what supervisors ask of the dispatch state. Per district and per
unit: tanks kept disinfected on time over the period, cases by kind, the share acknowledged and resolved on time,
escalations by level, and the monthly ranking of units by cases closed on time. Numbers here; the page beside it."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from devices.registry import Registry
from devices.time import NS
from ingest.dispatch.store import Incident

TANK_OVERDUE = "disinfection_overdue"
OUTCOMES = ("on_time", "late", "missed", "pending")


@dataclass
class Span:
    label: str
    start_ns: int
    end_ns: int


@dataclass
class Period(Span):
    months: list[Span] = field(default_factory=list)


def _midnight(d: dt.date, zone: ZoneInfo) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()) * NS


def parse_period(text: str, zone: ZoneInfo) -> Period:
    """`2026-H1` / `2026-H2` (calendar halves, as regulators audit), or `2026-05` (a month), on the utility's clock."""
    m = re.fullmatch(r"(\d{4})-(H[12]|\d{2})", text.strip())
    if not m or (m.group(2)[0] != "H" and not 1 <= int(m.group(2)) <= 12):
        raise ValueError(f"--period {text!r}: give a half-year (2026-H1, 2026-H2) or a month (2026-05)")
    year, part = int(m.group(1)), m.group(2)
    first = 1 if part == "H1" else 7 if part == "H2" else int(part)
    count = 6 if part.startswith("H") else 1
    months = []
    for i in range(count):
        a = dt.date(year + (first - 1 + i) // 12, (first - 1 + i) % 12 + 1, 1)
        b = dt.date(a.year + a.month // 12, a.month % 12 + 1, 1)
        months.append(Span(f"{a:%Y-%m}", _midnight(a, zone), _midnight(b, zone)))
    return Period(text.strip(), months[0].start_ns, months[-1].end_ns, months)


def outcome(done_ns: int | None, due_ns: int | None, as_of_ns: int) -> str:
    """on_time, late, missed (due passed, not done) or pending (not due yet, not done)."""
    if due_ns is None:
        return "pending"
    if done_ns is not None:
        return "on_time" if done_ns <= due_ns else "late"
    return "missed" if as_of_ns >= due_ns else "pending"


def responsible_unit(inc: Incident) -> str:
    """The level-1 unit the case was raised to (before any escalation)."""
    for h in inc.history:
        if h.get("step") == "raised" and h.get("unit"):
            return str(h["unit"])
    return str(inc.route.get("unit", "")) or "(unknown)"


@dataclass
class CaseFacts:
    alert_id: str
    kind: str
    district: str
    unit: str
    raised_ns: int
    ack_due_ns: int | None
    acked_ns: int | None  # acknowledged, or closed before any acknowledgement
    ack: str
    resolve_due_ns: int | None
    resolved_ns: int | None
    resolve: str
    result: str
    escalations: list[tuple[int, int]]  # (level, at_ns)
    max_level: int
    closed_ns: int | None  # when the case closed, resolved or not (a superseded due-soon case closes unresolved)


def facts(inc: Incident, as_of_ns: int) -> CaseFacts:
    # A tank's due-soon case closed on or after its due date ended because the tank went overdue: not resolved (the
    # overdue case carries on); a disinfection closes it before.
    superseded = inc.evidence.get("resolution") == "overdue" or (
        inc.kind == "disinfection_due_soon" and not inc.open and inc.due_ns is not None
        and (inc.closed_ns or 0) >= inc.due_ns)
    resolved = None if (inc.open or superseded) else inc.closed_ns
    acked = inc.ack_ns if inc.ack_ns is not None else resolved
    ups = [(int(h["level"]), int(h["at_ns"])) for h in inc.history if h.get("step") == "escalated"]
    return CaseFacts(inc.alert_id, inc.kind, inc.district, responsible_unit(inc), inc.raised_ns, inc.ack_due_ns, acked,
                     outcome(acked, inc.ack_due_ns, as_of_ns), inc.resolve_due_ns, resolved,
                     outcome(resolved, inc.resolve_due_ns, as_of_ns),
                     inc.result or ("superseded" if superseded else "condition ended" if resolved else ""),
                     ups, max([lvl for lvl, _ in ups], default=1), None if inc.open else inc.closed_ns)


def _share(c: dict[str, int]) -> float | None:
    judged = c["on_time"] + c["late"] + c["missed"]
    return round(c["on_time"] / judged, 4) if judged else None


@dataclass
class Row:
    """One line of a table: a district, a unit or a kind."""

    name: str
    tanks: int = 0
    tanks_on_time: int = 0
    tanks_overdue: int = 0
    overdue_tank_days: float = 0.0
    cases: int = 0
    ack: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    resolve: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    level2: int = 0
    level3: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tanks": self.tanks, "tanks_on_time": self.tanks_on_time,
                "tanks_overdue": self.tanks_overdue, "overdue_tank_days": round(self.overdue_tank_days, 1),
                "cases": self.cases, **{f"ack_{k}": v for k, v in self.ack.items()},
                "ack_on_time_share": _share(self.ack), **{f"resolve_{k}": v for k, v in self.resolve.items()},
                "resolve_on_time_share": _share(self.resolve), "escalated_level2": self.level2,
                "escalated_level3": self.level3}


@dataclass
class Supervision:
    period: Period
    as_of_ns: int
    districts: list[dict[str, Any]]
    units: list[dict[str, Any]]
    kinds: list[dict[str, Any]]
    ranking: list[dict[str, Any]]
    cases: list[CaseFacts]


def tank_places(registry: Registry | None) -> dict[str, tuple[str, str]]:
    """tank id → (district, maintenance unit)."""
    if registry is None:
        return {}
    t, rooms = registry.tanks, registry.rooms
    out = {}
    for i, tank in enumerate(t.ids.tolist()):
        room = int(t.room[i])
        out[str(tank)] = ((str(rooms.district[room]), str(rooms.maintenance_unit[room])) if room >= 0 else ("", ""))
    return out


def compute(incidents: list[Incident], period: Period, as_of_ns: int, registry: Registry | None) -> Supervision:
    p0, p1 = period.start_ns, period.end_ns
    by_district: dict[str, Row] = defaultdict(lambda: Row(""))
    by_unit: dict[str, Row] = defaultdict(lambda: Row(""))
    by_kind: dict[str, Row] = defaultdict(lambda: Row(""))
    places = tank_places(registry)
    for district, unit in places.values():
        by_district[district].tanks += 1
        by_unit[unit].tanks += 1
    overdue_days: dict[str, float] = defaultdict(float)
    for inc in incidents:  # a tank is overdue in the period while its overdue case overlaps it
        if inc.kind == TANK_OVERDUE and inc.subject_type == "tank":
            a, b = max(inc.start_ns, p0), min(inc.closed_ns if inc.closed_ns is not None else as_of_ns, p1)
            if b > a:
                overdue_days[inc.subject_id] += (b - a) / (86400 * NS)
    for tank, days in overdue_days.items():
        district, unit = places.get(tank, ("", ""))
        for row in (by_district[district], by_unit[unit]):
            row.tanks_overdue += 1
            row.overdue_tank_days += days
    cases = [facts(inc, as_of_ns) for inc in incidents if p0 <= inc.raised_ns < p1]
    for c in cases:
        for row in (by_district[c.district], by_unit[c.unit], by_kind[c.kind]):
            row.cases += 1
            row.ack[c.ack] += 1
            row.resolve[c.resolve] += 1
    for inc in incidents:
        f = facts(inc, as_of_ns)
        for level, at in f.escalations:
            if p0 <= at < p1:
                for row in (by_district[f.district], by_unit[f.unit], by_kind[f.kind]):
                    row.level2 += level == 2
                    row.level3 += level == 3

    def table(rows: dict[str, Row]) -> list[dict[str, Any]]:
        out = []
        for name in sorted(rows):
            r = rows[name]
            r.name = name or "(not in the registry)"
            r.tanks_on_time = max(r.tanks - r.tanks_overdue, 0)
            out.append(r.as_dict())
        return out

    return Supervision(period, as_of_ns, table(by_district), table(by_unit), table(by_kind),
                       ranking(incidents, period, as_of_ns), cases)


def ranking(incidents: list[Incident], period: Period, as_of_ns: int) -> list[dict[str, Any]]:
    """Each month: units ranked by cases closed on time that month, then by fewer still overdue at the month's end,
    then fewer closed late."""
    out: list[dict[str, Any]] = []
    all_facts = [facts(inc, as_of_ns) for inc in incidents]
    for month in period.months:
        if month.start_ns > as_of_ns:
            break
        rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"closed_on_time": 0, "closed_late": 0,
                                                               "overdue_at_month_end": 0})
        end = min(month.end_ns, as_of_ns)
        for f in all_facts:
            if f.resolved_ns is not None and month.start_ns <= f.resolved_ns < month.end_ns and f.resolve_due_ns:
                rows[f.unit]["closed_on_time" if f.resolved_ns <= f.resolve_due_ns else "closed_late"] += 1
            still_open = f.closed_ns is None or f.closed_ns >= end
            if f.raised_ns < end and still_open and f.resolve_due_ns is not None and f.resolve_due_ns < end:
                rows[f.unit]["overdue_at_month_end"] += 1
        order = sorted(rows.items(), key=lambda kv: (-kv[1]["closed_on_time"], kv[1]["overdue_at_month_end"],
                                                     kv[1]["closed_late"], kv[0]))
        for rank, (unit, r) in enumerate(order, 1):
            closed = r["closed_on_time"] + r["closed_late"]
            out.append({"month": month.label, "rank": rank, "unit": unit, **r,
                        "on_time_share": round(r["closed_on_time"] / closed, 4) if closed else None})
    return out

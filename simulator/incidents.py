"""Which meters, cells and tanks get an incident or a decoy, and when: the plan the behaviour and traffic follow."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from devices.time import add_months
from simulator.city import DAY_S, HOUR_S, LOCAL_OFFSET_S, NS, City, SimConfig

DISINFECTION_MONTHS = 6


@dataclass
class Blocking:
    meter: int
    silence_ns: int  # transmission stops here (the meter keeps measuring and storing)
    resume_ns: int | None  # transmission resumes; stored readings go out with the first upload
    variant: str  # abrupt | rsrp_sinking | prepaid_balance
    sink_ns: int = 0  # rsrp_sinking: RSRP starts to fall here


@dataclass
class BatteryDepletion:
    meter: int
    decline_ns: int
    silence_ns: int


@dataclass
class Reverse:
    meter: int
    variant: str  # installed_backwards | rollback | reverse_register
    t_ns: int
    amount: float  # rollback m3; reverse_register: m3/h of backflow while it runs


@dataclass
class Bypass:
    meter: int
    t_ns: int
    fraction: float  # share of the use the meter still registers


@dataclass
class Vacancy:
    meter: int
    start_ns: int
    end_ns: int


@dataclass
class Rollover:
    meter: int
    wrap_ns: int  # the register passes register_max shortly before this time


@dataclass
class Replacement:
    meter: int
    t_ns: int
    register_m3: float
    work_order: str


@dataclass
class Outage:
    cell: int
    start_ns: int
    end_ns: int


@dataclass
class Cleaning:
    tank: int
    t_ns: int  # drawdown starts; the record is published when the refilled tank passes its test
    work_order: str


@dataclass
class TankPlan:
    tank: int
    due: dt.date
    kind: str  # normal | overdue | disinfected
    cleaning: Cleaning | None = None


@dataclass
class Plan:
    blocking: list[Blocking] = field(default_factory=list)
    battery: list[BatteryDepletion] = field(default_factory=list)
    reverse: list[Reverse] = field(default_factory=list)
    bypass: list[Bypass] = field(default_factory=list)
    vacancy: list[Vacancy] = field(default_factory=list)
    rollover: list[Rollover] = field(default_factory=list)
    replacement: list[Replacement] = field(default_factory=list)
    outage: list[Outage] = field(default_factory=list)
    tanks: list[TankPlan] = field(default_factory=list)

    @property
    def cleanings(self) -> list[Cleaning]:
        return [t.cleaning for t in self.tanks if t.cleaning is not None]


def local_midnight_ns(d: dt.date) -> int:
    """00:00 of a calendar day on the utility's clock (UTC+8), in UTC ns."""
    return (int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()) - LOCAL_OFFSET_S) * NS


def count(rate: float, n_households: int, minimum: int) -> int:
    return max(minimum, int(round(rate * n_households / 1000.0)))


def plan_incidents(city: City, cfg: SimConfig) -> Plan:
    rng = np.random.default_rng([cfg.seed, 2])
    t0, t1 = cfg.start_ns, cfg.end_ns
    days = cfg.days
    plan = Plan()

    def when(lo_days: float, hi_days: float) -> int:
        """A random time (whole second) between start+lo and start+hi days."""
        return t0 + int(rng.uniform(lo_days, hi_days) * DAY_S) * NS

    def local_hour_time(lo_days: float, hi_days: float, h_lo: int, h_hi: int) -> int:
        """A random time on a day in [lo, hi) between local hours h_lo and h_hi (working hours for crews)."""
        day = int(rng.integers(int(lo_days), max(int(lo_days) + 1, int(hi_days))))
        local_s = int(rng.integers(h_lo * HOUR_S, h_hi * HOUR_S))
        # Days count from the local midnight on or before the start.
        base = t0 - ((t0 // NS + LOCAL_OFFSET_S) % DAY_S) * NS
        t = base + (day * DAY_S + local_s) * NS
        return min(max(t, t0 + HOUR_S * NS), t1 - HOUR_S * NS)

    # Network outages first: their cells' meters stay clear of the other silence kinds.
    n_cells = len(city.cell_ids)
    n_out = min(n_cells, max(1, int(round(n_cells * days * cfg.outage_cells_per_100_cell_days / 100))))
    out_cells = np.sort(rng.choice(n_cells, n_out, replace=False))
    for c in out_cells.tolist():
        s = when(1.5, days - 2.5)
        plan.outage.append(Outage(c, s, s + int(rng.uniform(3, 30) * HOUR_S) * NS))
    in_outage_cell = np.isin(city.meter_cell, out_cells)

    households = city.households
    n_hh = len(households)
    pool = list(rng.permutation(households).tolist())
    taken: set[int] = set()

    def pick(ok) -> int:
        for i, m in enumerate(pool):
            if ok(m):
                pool.pop(i)
                taken.add(m)
                return m
        raise ValueError("city too small for the requested incidents; raise --meters")

    quiet_ok = lambda m: not in_outage_cell[m]  # noqa: E731

    # Signal blocking: three flavours; some resume days later and upload what they stored.
    n_blk = count(cfg.blocking_rate, n_hh, 4)
    for i in range(n_blk):
        variant = ("abrupt", "rsrp_sinking", "prepaid_balance")[i % 3]
        if variant == "prepaid_balance":
            m = pick(lambda m: quiet_ok(m) and city.prepaid[m])
        else:
            m = pick(quiet_ok)
        s = when(4, days - 2)
        resume = None
        if i % 3 == 1 or i == 3 or rng.random() < 0.25:
            r = s + int(rng.uniform(2, 9) * DAY_S) * NS
            resume = r if r < t1 - DAY_S * NS else None
        sink = s - int(rng.uniform(18, 60) * HOUR_S) * NS if variant == "rsrp_sinking" else 0
        plan.blocking.append(Blocking(m, s, resume, variant, sink))

    for _ in range(count(cfg.battery_rate, n_hh, 1)):
        m = pick(quiet_ok)
        d = when(2, days - 12)
        plan.battery.append(BatteryDepletion(m, d, d + int(rng.uniform(4, 10) * DAY_S) * NS))

    n_rev = count(cfg.reverse_rate, n_hh, 3)
    for i in range(n_rev):
        variant = ("installed_backwards", "rollback", "reverse_register")[i % 3]
        m = pick(lambda m: True)
        if variant == "installed_backwards":
            plan.reverse.append(Reverse(m, variant, local_hour_time(3, days - 3, 9, 17), 0.0))
        elif variant == "rollback":
            plan.reverse.append(Reverse(m, variant, when(3, days - 2), round(float(rng.uniform(10, 60)), 3)))
        else:
            plan.reverse.append(Reverse(m, variant, when(3, days - 4), float(rng.uniform(0.02, 0.08))))

    # Bypass: larger users are the likelier culprits (restaurants, shops), households too.
    for i in range(count(cfg.bypass_rate, n_hh, 2)):
        if i % 3 == 0 and any(city.non_residential[m] for m in pool):
            m = pick(lambda m: city.non_residential[m])
        else:
            m = pick(lambda m: not city.non_residential[m])
        fraction = round(float(rng.uniform(0.1, 0.5)), 2)
        if i % 4 == 3:
            fraction = round(fraction / 10, 3)  # a full bypass: the meter's own valve nearly shut, 1-5 % registered
        plan.bypass.append(Bypass(m, local_hour_time(5, days - 7, 8, 20), fraction))

    for _ in range(count(cfg.vacancy_rate, n_hh, 2)):
        m = pick(lambda m: not city.non_residential[m])
        s = local_hour_time(2, days - 8, 7, 20)
        e = min(s + int(rng.uniform(7, 21) * DAY_S) * NS, t1)
        plan.vacancy.append(Vacancy(m, s, e))

    for _ in range(count(cfg.rollover_rate, n_hh, 2)):
        m = pick(lambda m: True)
        plan.rollover.append(Rollover(m, when(2, days - 2)))

    for i in range(count(cfg.replacement_rate, n_hh, 2)):
        m = pick(lambda m: True)
        reg = 0.0 if i % 2 == 0 else round(float(rng.uniform(0.001, 0.05)), 3)
        year = cfg.start.year
        plan.replacement.append(Replacement(m, local_hour_time(3, days - 3, 9, 16), reg,
                                            f"WO-{year}-{2000 + int(rng.integers(0, 8000)):04d}"))

    # Tanks: a six-month deadline each. Most fall due after the period; some during or before it (overdue),
    # some fall due in it but are cleaned first (decoy: the record renews the deadline).
    start_d = cfg.start.date()
    end_d = start_d + dt.timedelta(days=days)
    n_t = len(city.tank_ids)
    order = rng.permutation(n_t)
    n_over = max(1, int(round(cfg.overdue_share * n_t)))
    n_dis = max(1, int(round(cfg.disinfected_share * n_t)))
    kinds = np.full(n_t, "normal", dtype=object)
    kinds[order[:n_over]] = "overdue"
    kinds[order[n_over:n_over + n_dis]] = "disinfected"
    last: list[dt.date] = []
    for t in range(n_t):
        kind = str(kinds[t])
        if kind == "normal":
            target = end_d + dt.timedelta(days=int(rng.integers(5, 176)))
        elif kind == "overdue":
            lo = -40 if rng.random() < 0.4 else 1
            target = start_d + dt.timedelta(days=int(rng.integers(lo, max(lo + 1, days - 4))))
        else:
            target = start_d + dt.timedelta(days=int(rng.integers(min(6, days - 2), max(7, days - 1))))
        ld = add_months(target, -DISINFECTION_MONTHS)
        due = add_months(ld, DISINFECTION_MONTHS)
        last.append(ld)
        cleaning = None
        unit_wo = f"WO-{cfg.start.year}-{8000 + t:05d}"
        if kind == "disinfected":
            due_day = (due - start_d).days
            day = max(1, due_day - int(rng.integers(1, 11)))
            cleaning = Cleaning(t, local_hour_time(day, day + 1, 8, 12), unit_wo)
        elif kind == "overdue" and rng.random() < 0.3:
            day = max(1, (due - start_d).days) + int(rng.integers(3, 13))
            if day < days - 1:
                cleaning = Cleaning(t, local_hour_time(day, day + 1, 8, 12), unit_wo)
        plan.tanks.append(TankPlan(t, due, kind, cleaning))
    city.last_disinfected = last
    return plan

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
    amount: float  # rollback m3; reverse_register: m3/h of backflow while it runs (0: use runs onto it)


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
class MoveOut:
    """Part of a household moves out: its use falls to `factor` of what it was (a decoy: the master falls too)."""

    meter: int
    start_ns: int
    end_ns: int
    factor: float


@dataclass
class Leak:
    """A pipe inside the building leaks from `start_ns`: the master counts it, no household does (a decoy)."""

    building: int
    start_ns: int
    m3h: float


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
    move_out: list[MoveOut] = field(default_factory=list)
    leak: list[Leak] = field(default_factory=list)
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


class Planner:
    """Random times in the period and households not yet given a part, drawn from one generator in a fixed order."""

    def __init__(self, city: City, cfg: SimConfig):
        self.city, self.cfg = city, cfg
        self.rng = np.random.default_rng([cfg.seed, 2])
        self.t0, self.t1, self.days = cfg.start_ns, cfg.end_ns, cfg.days
        self.pool = list(self.rng.permutation(city.households).tolist())
        self.in_outage_cell = np.zeros(city.n_meters, dtype=bool)

    def when(self, lo_days: float, hi_days: float) -> int:
        """A random time (whole second) between start+lo and start+hi days."""
        return self.t0 + int(self.rng.uniform(lo_days, hi_days) * DAY_S) * NS

    def local_hour_time(self, lo_days: float, hi_days: float, h_lo: int, h_hi: int) -> int:
        """A random time on a day in [lo, hi) between local hours h_lo and h_hi (working hours for crews)."""
        day = int(self.rng.integers(int(lo_days), max(int(lo_days) + 1, int(hi_days))))
        local_s = int(self.rng.integers(h_lo * HOUR_S, h_hi * HOUR_S))
        # Days count from the local midnight on or before the start.
        base = self.t0 - ((self.t0 // NS + LOCAL_OFFSET_S) % DAY_S) * NS
        t = base + (day * DAY_S + local_s) * NS
        return self.clip(t)

    def clip(self, t: int, lo_days: float = 0.0, hi_days: float = 0.0) -> int:
        """t kept within the period, at least lo_days after its start and hi_days before its end (whole second)."""
        lo = self.t0 + int(max(lo_days * DAY_S, HOUR_S)) * NS
        hi = self.t1 - int(max(hi_days * DAY_S, HOUR_S)) * NS
        return int(min(max(t, lo), max(lo, hi))) // NS * NS

    def near(self, t: int, lo_days: float, hi_days: float) -> int:
        """A time around t: a third of the time within 3 hours of it (the same hours), else within 2 days."""
        spread = 3 * HOUR_S if self.rng.random() < 1 / 3 else 2 * DAY_S
        return self.clip(t + int(self.rng.uniform(-spread, spread)) * NS, lo_days, hi_days)

    def pick(self, ok=lambda m: True) -> int:
        for i, m in enumerate(self.pool):
            if ok(m):
                return self.pool.pop(i)
        raise ValueError("city too small for the requested incidents; raise --meters")

    def pick_beside(self, meter: int, ok=lambda m: True) -> int | None:
        """A household of the same building as `meter` not yet given a part, or None."""
        b = self.city.meter_building[meter]
        for i, m in enumerate(self.pool):
            if self.city.meter_building[m] == b and ok(m):
                return self.pool.pop(i)
        return None

    def quiet_ok(self, m: int) -> bool:
        """Silence kinds stay clear of cells with an outage, so a silent meter is one thing at a time."""
        return not self.in_outage_cell[m]


def plan_incidents(city: City, cfg: SimConfig) -> Plan:
    pl = Planner(city, cfg)
    plan = Plan()
    _plan_bypasses(pl, plan)
    _plan_outages(pl, plan)
    _plan_bypass_neighbours(pl, plan)
    _plan_blocking(pl, plan)
    _plan_batteries(pl, plan)
    _plan_reverse(pl, plan)
    _plan_vacancies(pl, plan)
    _plan_leaks(pl, plan)
    _plan_register_decoys(pl, plan)
    _plan_tanks(pl, plan)
    return plan


def _plan_bypasses(pl: Planner, plan: Plan) -> None:
    """Bypass pipes: larger users are the likelier culprits (restaurants, shops), households of every size too,
    small ones (0.05-0.3 m3/day) included; some start in the data's last week; some leave the meter nearly still."""
    city, cfg, rng = pl.city, pl.cfg, pl.rng
    nonres = city.non_residential
    small = ~nonres & (city.use_m3_day < 0.3)
    for i in range(count(cfg.bypass_rate, len(city.households), 2)):
        if i % 3 == 0 and any(nonres[m] for m in pl.pool):
            m = pl.pick(lambda m: nonres[m])
        elif i % 3 == 1 and any(small[m] for m in pl.pool):
            m = pl.pick(lambda m: small[m])
        else:
            m = pl.pick(lambda m: not nonres[m])
        # a fifth start in the data's last week, with at least two and a half days left: a building of daily
        # meters is balanced about a day late, so a bypass begun later than that cannot be seen by anyone. Pipes go
        # in at any hour of the day or night (one put in at night leaves no hour of use to match its rise to)
        late = rng.random() < 0.2
        t = pl.local_hour_time(pl.days - 7, pl.days - 2.5, 0, 24) if late else pl.local_hour_time(3, pl.days - 7, 0, 24)
        t = min(t, pl.t1 - int(2.5 * DAY_S) * NS)
        if rng.random() < 0.3:
            # a full bypass: the meter's valve nearly or wholly shut (nothing left to register, or a few percent)
            fraction = round(float(rng.uniform(0.0, 0.05)), 3)
        else:
            fraction = round(float(rng.uniform(0.1, 0.6)), 2)
        plan.bypass.append(Bypass(m, t, fraction))


def _plan_outages(pl: Planner, plan: Plan) -> None:
    """Cell outages; half of them over a building with a bypass, in the bypass's first days."""
    city, cfg, rng = pl.city, pl.cfg, pl.rng
    n_cells = len(city.cell_ids)
    n_out = min(n_cells, max(1, int(round(n_cells * pl.days * cfg.outage_cells_per_100_cell_days / 100))))
    n_near = n_out // 2 + (n_out % 2 if rng.random() < 0.5 else 0)
    cells: dict[int, int] = {}
    for bp in plan.bypass:
        c = int(city.meter_cell[bp.meter])
        if len(cells) < n_near and c not in cells:
            cells[c] = pl.clip(bp.t_ns + int(rng.uniform(-DAY_S, 2 * DAY_S)) * NS, 1.5, 2.5)
    rest = [c for c in rng.permutation(n_cells).tolist() if c not in cells]
    for c in rest[:n_out - len(cells)]:
        cells[c] = pl.when(1.5, pl.days - 2.5)
    for c in sorted(cells):
        s = cells[c]
        plan.outage.append(Outage(c, s, s + int(rng.uniform(3, 30) * HOUR_S) * NS))
    pl.in_outage_cell = np.isin(city.meter_cell, sorted(cells))


def _plan_bypass_neighbours(pl: Planner, plan: Plan) -> None:
    """Beside each bypass, in the same building and around the same time: a neighbour that goes silent (shielded
    or a dead battery), one whose register runs backwards, a family that leaves, part of a family that moves out,
    a leaking pipe. Each is what a detector could pin the bypass's water on, or the bypass's water on it."""
    rng = pl.rng
    for bp in list(plan.bypass):
        t = bp.t_ns
        if rng.random() < 0.35 and (j := pl.pick_beside(bp.meter, pl.quiet_ok)) is not None:
            s = pl.near(t, 2, 1)
            if rng.random() < 0.5:
                plan.blocking.append(Blocking(j, s, None, "abrupt"))
            else:
                plan.battery.append(BatteryDepletion(j, pl.clip(s - int(rng.uniform(4, 10) * DAY_S) * NS, 0.5), s))
        if rng.random() < 0.2 and (j := pl.pick_beside(bp.meter)) is not None:
            plan.reverse.append(_reverse(pl, j, ("installed_backwards", "rollback", "reverse_register")[
                int(rng.integers(3))], pl.near(t, 3, 2)))
        if rng.random() < 0.35 and (j := pl.pick_beside(bp.meter, lambda m: not pl.city.non_residential[m])) \
                is not None:
            s = pl.near(t, 1, 1)
            plan.vacancy.append(Vacancy(j, s, pl.clip(s + int(rng.uniform(3, 21) * DAY_S) * NS)))
        if rng.random() < 0.25 and (j := pl.pick_beside(bp.meter)) is not None:
            plan.move_out.append(MoveOut(j, pl.near(t, 1, 1), pl.t1, round(float(rng.uniform(0.2, 0.6)), 2)))
        if rng.random() < 0.1:
            plan.leak.append(Leak(int(pl.city.meter_building[bp.meter]), pl.near(t, 1, 1), _leak_m3h(rng)))


def _plan_blocking(pl: Planner, plan: Plan) -> None:
    """Signal blocking in three flavours; some resume days later and upload what they stored."""
    city, cfg, rng = pl.city, pl.cfg, pl.rng
    for i in range(count(cfg.blocking_rate, len(city.households), 4)):
        variant = ("abrupt", "rsrp_sinking", "prepaid_balance")[i % 3]
        if variant == "prepaid_balance":
            m = pl.pick(lambda m: pl.quiet_ok(m) and city.prepaid[m])
        else:
            m = pl.pick(pl.quiet_ok)
        s = pl.when(4, pl.days - 2)
        resume = None
        if i % 3 == 1 or i == 3 or rng.random() < 0.25:
            r = s + int(rng.uniform(2, 9) * DAY_S) * NS
            resume = r if r < pl.t1 - DAY_S * NS else None
        sink = s - int(rng.uniform(18, 60) * HOUR_S) * NS if variant == "rsrp_sinking" else 0
        plan.blocking.append(Blocking(m, s, resume, variant, sink))


def _plan_batteries(pl: Planner, plan: Plan) -> None:
    for _ in range(count(pl.cfg.battery_rate, len(pl.city.households), 1)):
        m = pl.pick(pl.quiet_ok)
        d = pl.when(2, pl.days - 12)
        plan.battery.append(BatteryDepletion(m, d, d + int(pl.rng.uniform(4, 10) * DAY_S) * NS))


def _reverse(pl: Planner, m: int, variant: str, t: int) -> Reverse:
    """A reverse-flow incident of one variant at about t (a meter is turned round during working hours)."""
    rng = pl.rng
    if variant == "installed_backwards":
        day = (t - pl.t0) / (DAY_S * NS)
        return Reverse(m, variant, pl.local_hour_time(day, day + 1, 9, 17), 0.0)
    if variant == "rollback":
        return Reverse(m, variant, t, round(float(rng.uniform(10, 60)), 3))
    # on a meter with a reverse register: either backflow now and then, or the meter turned round so that the
    # household's use runs onto the reverse register while the forward register stands still (amount 0)
    return Reverse(m, variant, t, float(rng.uniform(0.02, 0.08)) if rng.random() < 0.5 else 0.0)


def _plan_reverse(pl: Planner, plan: Plan) -> None:
    for i in range(count(pl.cfg.reverse_rate, len(pl.city.households), 3)):
        variant = ("installed_backwards", "rollback", "reverse_register")[i % 3]
        m = pl.pick()
        t = {"installed_backwards": pl.when(3, pl.days - 3), "rollback": pl.when(3, pl.days - 2),
             "reverse_register": pl.when(3, pl.days - 4)}[variant]
        plan.reverse.append(_reverse(pl, m, variant, t))


def _plan_vacancies(pl: Planner, plan: Plan) -> None:
    """Families that leave for a while (vacancy) and households part of which moves out for good (move-out)."""
    city, cfg, rng = pl.city, pl.cfg, pl.rng
    for _ in range(count(cfg.vacancy_rate, len(city.households), 2)):
        m = pl.pick(lambda m: not city.non_residential[m])
        s = pl.local_hour_time(2, pl.days - 8, 7, 20)
        plan.vacancy.append(Vacancy(m, s, min(s + int(rng.uniform(7, 21) * DAY_S) * NS, pl.t1)))
    for _ in range(count(cfg.vacancy_rate / 2, len(city.households), 1)):
        m = pl.pick(lambda m: not city.non_residential[m])
        plan.move_out.append(MoveOut(m, pl.local_hour_time(2, pl.days - 2, 7, 20), pl.t1,
                                     round(float(rng.uniform(0.2, 0.6)), 2)))


def _leak_m3h(rng: np.random.Generator) -> float:
    return round(float(np.exp(rng.uniform(np.log(0.004), np.log(0.04)))), 4)  # 0.1 to 1 m3 a day


def _plan_leaks(pl: Planner, plan: Plan) -> None:
    """Pipes that start leaking inside a building: the gap rises and no household's use falls."""
    n_b = len(pl.city.building_ids)
    for b in pl.rng.choice(n_b, min(n_b, count(pl.cfg.vacancy_rate / 3, len(pl.city.households), 1)),
                           replace=False).tolist():
        plan.leak.append(Leak(int(b), pl.when(2, pl.days - 2), _leak_m3h(pl.rng)))


def _plan_register_decoys(pl: Planner, plan: Plan) -> None:
    """Registers that wrap at their maximum, and meters replaced under a work order (the register restarts)."""
    cfg = pl.cfg
    for _ in range(count(cfg.rollover_rate, len(pl.city.households), 2)):
        plan.rollover.append(Rollover(pl.pick(), pl.when(2, pl.days - 2)))
    for i in range(count(cfg.replacement_rate, len(pl.city.households), 2)):
        m = pl.pick()
        reg = 0.0 if i % 2 == 0 else round(float(pl.rng.uniform(0.001, 0.05)), 3)
        plan.replacement.append(Replacement(m, pl.local_hour_time(3, pl.days - 3, 9, 16), reg,
                                            f"WO-{cfg.start.year}-{2000 + int(pl.rng.integers(0, 8000)):04d}"))


def _plan_tanks(pl: Planner, plan: Plan) -> None:
    city, cfg, rng, days = pl.city, pl.cfg, pl.rng, pl.days
    local_hour_time = pl.local_hour_time
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

"""What the city's devices measure: water use, registers, balances and pump-room telemetry as numpy arrays.

Household arrays are meter × hour (reading h is the register at start + h hours); master arrays are building ×
quarter-hour, pump-room arrays on a 5-minute grid (simulator/pumprooms.py). The plan's incidents and decoys are
applied here, where they change measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.city import DAY_S, HOUR_S, LOCAL_OFFSET_S, NS, City, SimConfig
from simulator.households import profiles, trips
from simulator.incidents import Plan
from simulator.pumprooms import RoomPlan, pump_rooms

PRICE_CNY = {False: 3.6, True: 5.8}  # per m3, residential / non-residential


@dataclass
class Measurements:
    true_use: np.ndarray  # meter × hour, m3 used in hour h (what flows, metered or not)
    total: np.ndarray  # meter × hour, forward register at reading h (wrapped, rounded to litres)
    reverse: np.ndarray  # meter × hour, reverse register
    flow: np.ndarray  # meter × hour, m3/h over the hour before reading h
    balance: np.ndarray  # meter × hour, CNY (NaN for post-paid meters)
    rsrp_base: np.ndarray  # per meter
    battery_base: np.ndarray  # per meter
    master_total: np.ndarray  # building × quarter
    master_flow: np.ndarray  # building × quarter
    building_quarter_use: np.ndarray  # building × quarter, m3 into the building
    tank_level: np.ndarray  # tank × five minutes (simulator/pumprooms.py)
    tank_chlorine: np.ndarray
    tank_turbidity: np.ndarray
    tank_ph: np.ndarray
    room_pressure: np.ndarray  # room × five minutes
    room_door: np.ndarray  # bool
    pump_running: np.ndarray  # room × five minutes × 2
    pump_current: np.ndarray
    cleaning_done_q: dict[int, int]  # tank -> quarter when the refilled tank passed its test
    rooms: RoomPlan  # the pump rooms' plan: intervals, openings, episodes, look-alikes


@dataclass
class Clock:
    """The simulated hours on the utility's clock."""

    local_h: np.ndarray  # local hour of day of each hour
    weekend: np.ndarray  # bool
    day: np.ndarray  # local day index from the first local day

    @classmethod
    def of(cls, cfg: SimConfig) -> Clock:
        hours_s = cfg.start_ns // NS + np.arange(cfg.days * 24) * HOUR_S + LOCAL_OFFSET_S
        local_day = hours_s // DAY_S
        weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        return cls(local_h=(hours_s // HOUR_S) % 24, weekend=weekday >= 5, day=local_day - local_day[0])


def hour_of(cfg: SimConfig, t_ns: int) -> int:
    """Index of the hour interval holding t (reading index of the first reading after t is this + 1)."""
    return int((t_ns - cfg.start_ns) // (HOUR_S * NS))


def simulate_measurements(city: City, cfg: SimConfig, plan: Plan) -> Measurements:
    rng = np.random.default_rng([cfg.seed, 3])
    clock = Clock.of(cfg)
    true_use = household_use(city, cfg, plan, clock, rng)
    meas = registered_use(city, cfg, plan, true_use, rng)
    total, reverse = registers(city, cfg, plan, meas, rng)
    flow = np.empty_like(meas)
    flow[:, 1:] = meas[:, :-1]
    flow[:, 0] = meas[:, 0]
    balance = prepaid_balances(city, cfg, plan, meas, rng)
    rsrp_base = np.clip(rng.normal(-97.0, 9.0, city.n_meters), -127.0, -72.0)
    battery_base = rng.uniform(3.56, 3.68, city.n_meters)
    q_use = building_inflow(city, cfg, plan, true_use, rng)
    master_total, master_flow = master_meters(city, q_use, rng)
    pump = pump_rooms(city, cfg, plan, q_use, rng)
    return Measurements(true_use=true_use, total=total, reverse=reverse, flow=np.round(flow, 3), balance=balance,
                        rsrp_base=rsrp_base, battery_base=battery_base, master_total=master_total,
                        master_flow=master_flow, building_quarter_use=q_use, **pump)


def household_use(city: City, cfg: SimConfig, plan: Plan, clock: Clock, rng: np.random.Generator) -> np.ndarray:
    """m3 each household uses each hour: its usual level x its daily profile (weekday or weekend) x a day's mood x
    hourly bursts; businesses by their opening hours; short trips away; the plan's vacancies and move-outs."""
    n, H = city.n_meters, cfg.days * 24
    style = city.style
    prof = profiles(style, n, rng)
    day_mult = rng.lognormal(0.0, style.day_sigma, (n, int(clock.day[-1]) + 1))
    bursts = rng.gamma(style.burst_shape, 1.0 / style.burst_shape, (n, H))
    shape = prof[np.arange(n)[:, None], clock.weekend.astype(np.int64)[None, :], clock.local_h[None, :]]
    use = city.use_m3_day[:, None] / 24.0 * shape * day_mult[:, clock.day] * bursts
    _business_hours(city, clock, use, day_mult, bursts, rng)
    use[city.is_master] = 0.0
    planned = np.array(sorted({x.meter for x in (*plan.bypass, *plan.vacancy, *plan.move_out)}), dtype=np.int64)
    use[trips(style, n, H, planned, rng)] = 0.0
    for v in plan.vacancy:
        use[v.meter, hour_of(cfg, v.start_ns) + 1:max(0, min(H, hour_of(cfg, v.end_ns)))] = 0.0
    for mo in plan.move_out:
        use[mo.meter, hour_of(cfg, mo.start_ns) + 1:max(0, min(H, hour_of(cfg, mo.end_ns)))] *= mo.factor
    return use


def _business_hours(city: City, clock: Clock, use: np.ndarray, day_mult: np.ndarray, bursts: np.ndarray,
                    rng: np.random.Generator) -> None:
    """Non-residential users: their daily use within business hours from the opening hour, a trickle outside;
    some are closed at weekends."""
    idx = np.flatnonzero(city.non_residential)
    if idx.size == 0:
        return
    bh = city.business_hours[idx]
    since_open = (clock.local_h[None, :] - city.open_hour[idx][:, None]) % 24
    is_open = since_open < bh[:, None]
    closes_weekend = rng.random(idx.size) < 0.5
    is_open &= ~(closes_weekend[:, None] & clock.weekend[None, :])
    scale = city.use_m3_day[idx, None]
    rate = np.where(is_open, scale / bh[:, None], 0.02 * scale / 24.0)
    use[idx] = rate * day_mult[idx][:, clock.day] * bursts[idx]


def registered_use(city: City, cfg: SimConfig, plan: Plan, true_use: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """What the household meters count: a little under-registration everywhere, a fraction behind a bypass."""
    meas = true_use * (1.0 - rng.uniform(0.0, 0.03, city.n_meters))[:, None]
    for bp in plan.bypass:
        h = hour_of(cfg, bp.t_ns)
        meas[bp.meter, h + 1:] *= bp.fraction
        meas[bp.meter, h] *= 0.5 * (1 + bp.fraction)
    return meas


def registers(city: City, cfg: SimConfig, plan: Plan, meas: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Forward and reverse registers at each hourly reading: the metered use summed from a random start, with the
    plan's rollovers, replacements and reverse-flow incidents; pressure transients on the reverse register."""
    n, H = meas.shape
    cum = np.zeros((n, H))
    np.cumsum(meas[:, :-1], axis=1, out=cum[:, 1:])

    r0 = np.exp(rng.uniform(np.log(20), np.log(3000), n))
    big = [r.meter for r in plan.reverse] + [r.meter for r in plan.replacement]
    r0[big] = rng.uniform(800, 3000, len(big))
    for ro in plan.rollover:
        h = min(H - 1, max(1, hour_of(cfg, ro.wrap_ns) + 1))
        # Pass register_max between readings h-1 and h.
        r0[ro.meter] = city.rmax[ro.meter] - 0.5 * (cum[ro.meter, h - 1] + cum[ro.meter, h])
    raw = r0[:, None] + cum
    for rep in plan.replacement:
        h = hour_of(cfg, rep.t_ns)
        frac = ((rep.t_ns - cfg.start_ns) / NS - h * HOUR_S) / HOUR_S
        at_r = cum[rep.meter, h] + frac * meas[rep.meter, h]
        raw[rep.meter, h + 1:] = rep.register_m3 + cum[rep.meter, h + 1:] - at_r
    rev = np.zeros((n, H))
    has_rev0 = rng.random(n) < 0.2
    rev += np.where(has_rev0, np.round(rng.uniform(0, 0.2, n), 3), 0.0)[:, None]
    # Pressure transients: a few litres backwards now and then (noise, not an incident).
    jitter = (rng.random((n, H)) < 0.002) & (rng.random(n) < 0.15)[:, None]
    rev += np.cumsum(np.where(jitter, rng.uniform(0.001, 0.004, (n, H)), 0.0), axis=1)
    for r in plan.reverse:
        h = hour_of(cfg, r.t_ns)
        if r.variant == "installed_backwards":
            frac = ((r.t_ns - cfg.start_ns) / NS - h * HOUR_S) / HOUR_S
            at_t = cum[r.meter, h] + frac * meas[r.meter, h]
            raw[r.meter, h + 1:] = r0[r.meter] + at_t - (cum[r.meter, h + 1:] - at_t)
        elif r.variant == "rollback":
            raw[r.meter, h + 1:] -= r.amount
        elif r.amount > 0:  # backflow now and then
            k = H - h - 1
            runs = rng.random(k) < 0.35
            back = np.where(runs, r.amount * rng.uniform(0.5, 1.5, k), 0.0)
            rev[r.meter, h + 1:] += np.cumsum(back)
        else:  # turned round: the household's use runs onto the reverse register, the forward register stands
            frac = ((r.t_ns - cfg.start_ns) / NS - h * HOUR_S) / HOUR_S
            at_t = cum[r.meter, h] + frac * meas[r.meter, h]
            raw[r.meter, h + 1:] = raw[r.meter, h + 1:] - cum[r.meter, h + 1:] + at_t
            rev[r.meter, h + 1:] += cum[r.meter, h + 1:] - at_t
    rmax = city.rmax[:, None]
    total = np.round(np.mod(np.round(raw, 3), rmax), 3)
    total[total >= rmax] = 0.0
    reverse = np.round(rev, 3)
    return total, reverse



def prepaid_balances(city: City, cfg: SimConfig, plan: Plan, meas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Prepaid balances (CNY): spend by the metered volume, top up when low (most in time); a prepaid blocking runs
    its balance out first. NaN for post-paid meters."""
    n, H = meas.shape
    nonres = city.non_residential
    balance = np.full((n, H), np.nan)
    pre = np.flatnonzero(city.prepaid)
    if pre.size:
        price = np.where(nonres[pre], PRICE_CNY[True], PRICE_CNY[False])
        cost = meas[pre] * price[:, None]
        cost_cum = np.concatenate([np.zeros((len(pre), 1)), np.cumsum(cost, axis=1)], axis=1)
        bal0 = rng.uniform(20, 200, len(pre))
        topups = np.zeros((len(pre), H))
        funded = np.zeros(len(pre))
        for d in range(cfg.days):
            h = d * 24
            now = bal0 + funded - cost_cum[:, h]
            next_day = cost_cum[:, min(H, h + 24)] - cost_cum[:, h]
            low = now - next_day < 15
            pay = low & ((rng.random(len(pre)) < 0.5) | (now - next_day < 3))
            amount = rng.choice([50.0, 100.0, 200.0], len(pre)) * pay
            hour = h + rng.integers(0, 24, len(pre))
            topups[np.flatnonzero(pay), np.minimum(hour, H - 1)[pay]] += amount[pay]
            funded += amount
        bal = bal0[:, None] + np.cumsum(topups, axis=1) - cost_cum[:, :H]
        pos = {m: i for i, m in enumerate(pre.tolist())}
        for b in plan.blocking:
            if b.variant == "prepaid_balance":
                i = pos[b.meter]
                h = max(0, hour_of(cfg, b.silence_ns) - 24)
                # No top-up at all: the balance runs out within the day before the meter goes quiet.
                bal[i] = cost_cum[i, h] - 0.3 - cost_cum[i, :H]
        balance[pre] = np.round(bal, 2)

    return balance


def building_inflow(city: City, cfg: SimConfig, plan: Plan, true_use: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """m3 into each building per quarter hour: its households' use, the building's normal loss (a share of the use
    plus a steady background), drips below the household meters' starting flow, and the plan's leaks."""
    H = true_use.shape[1]
    starts = city.building_master
    n_b = len(starts)
    building_use = np.add.reduceat(true_use, starts, axis=0)
    loss = rng.uniform(*city.style.building_loss, n_b)
    background = rng.uniform(0.005, 0.02, n_b) * building_use.mean(axis=1)
    into = building_use * (1 + loss)[:, None] + background[:, None] + _drips(city, cfg, rng)
    for lk in plan.leak:
        into[lk.building, hour_of(cfg, lk.start_ns) + 1:] += lk.m3h
    w = rng.gamma(4.0, 1.0, (n_b, H, 4))
    w /= w.sum(axis=2, keepdims=True)
    return (into[:, :, None] * w).reshape(n_b, H * 4)


def _drips(city: City, cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Building x hour m3 of taps and cisterns dripping below the household meter's starting flow (0.5-3 litres an
    hour): the master counts them, the household meter does not. A drip starts and stops at random times."""
    H = cfg.days * 24
    out = np.zeros((len(city.building_master), H))
    hh = city.households
    drip = hh[rng.random(hh.size) < city.style.drip_share]
    rate = rng.uniform(0.0005, 0.003, drip.size)
    on = rng.integers(-H, H, drip.size)
    off = on + rng.integers(24, 3 * H, drip.size)
    for m, r, a, b in zip(drip.tolist(), rate.tolist(), on.tolist(), off.tolist(), strict=True):
        out[city.meter_building[m], max(a, 0):max(0, min(b, H))] += r
    return out


def master_meters(city: City, q_use: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each master meter's register and flow at every quarter hour (it under-registers a little)."""
    n_b = q_use.shape[0]
    starts = city.building_master
    m_meas = q_use * (1.0 - rng.uniform(0.0, 0.01, n_b))[:, None]
    m_cum = np.zeros_like(m_meas)
    np.cumsum(m_meas[:, :-1], axis=1, out=m_cum[:, 1:])
    m_r0 = rng.uniform(1_000, 80_000, n_b)
    master_total = np.round(np.mod(np.round(m_r0[:, None] + m_cum, 3), city.rmax[starts][:, None]), 3)
    mflow = np.empty_like(m_meas)
    mflow[:, 1:] = m_meas[:, :-1] * 4
    mflow[:, 0] = m_meas[:, 0] * 4
    return master_total, np.round(mflow, 3)

"""What the city's devices measure: water use, registers, balances and pump-room telemetry as numpy arrays.

Household arrays are meter × hour (reading h is the register at start + h hours); master arrays are building ×
quarter-hour, pump-room arrays on a 5-minute grid (simulator/pumprooms.py). The plan's incidents and decoys are
applied here, where they change measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.city import DAY_S, HOUR_S, LOCAL_OFFSET_S, NS, City, SimConfig
from simulator.incidents import Plan
from simulator.pumprooms import RoomPlan, pump_rooms

# Relative use by local hour (mean 1): morning and evening peaks, a quiet night.
WEEKDAY = np.array([0.22, 0.12, 0.08, 0.08, 0.14, 0.5, 1.6, 2.3, 1.7, 1.0, 0.8, 0.9,
                    1.15, 0.95, 0.7, 0.7, 0.9, 1.35, 2.0, 2.2, 1.95, 1.5, 1.0, 0.5])
WEEKEND = np.array([0.3, 0.18, 0.1, 0.08, 0.08, 0.18, 0.5, 1.2, 1.85, 1.75, 1.35, 1.25,
                    1.3, 1.0, 0.8, 0.8, 1.0, 1.4, 1.95, 2.05, 1.8, 1.5, 1.1, 0.6])
WEEKDAY = WEEKDAY / WEEKDAY.mean()
WEEKEND = WEEKEND / WEEKEND.mean()
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


def hour_of(cfg: SimConfig, t_ns: int) -> int:
    """Index of the hour interval holding t (reading index of the first reading after t is this + 1)."""
    return int((t_ns - cfg.start_ns) // (HOUR_S * NS))


def simulate_measurements(city: City, cfg: SimConfig, plan: Plan) -> Measurements:
    rng = np.random.default_rng([cfg.seed, 3])
    n, H = city.n_meters, cfg.days * 24
    t0_s = cfg.start_ns // NS
    hours_s = t0_s + np.arange(H) * HOUR_S + LOCAL_OFFSET_S
    local_h = (hours_s // HOUR_S) % 24
    weekday = (hours_s // DAY_S + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    weekend = weekday >= 5
    day_of = np.arange(H) // 24

    hh = ~city.is_master
    nonres = city.non_residential
    # Per-household scale (m3/day) and day-to-day variation.
    scale = np.where(nonres, np.clip(rng.lognormal(np.log(1.8), 0.6, n), 0.3, 6.0),
                     np.clip(rng.lognormal(np.log(0.30), 0.45, n), 0.04, 1.5))
    day_mult = rng.lognormal(0.0, 0.22, (n, cfg.days))
    bursts = rng.gamma(0.7, 1 / 0.7, (n, H))
    prof = np.where(weekend[None, :], WEEKEND[local_h][None, :], WEEKDAY[local_h][None, :])
    use = scale[:, None] / 24.0 * prof * day_mult[:, day_of] * bursts
    # Non-residential: business hours from the opening hour; a trickle outside; some closed at weekends.
    if nonres.any():
        idx = np.flatnonzero(nonres)
        bh = city.business_hours[idx]
        open_h = city.open_hour[idx]
        since_open = (local_h[None, :] - open_h[:, None]) % 24
        is_open = since_open < bh[:, None]
        closes_weekend = rng.random(len(idx)) < 0.5
        is_open &= ~(closes_weekend[:, None] & weekend[None, :])
        rate = np.where(is_open, scale[idx, None] / bh[:, None], 0.02 * scale[idx, None] / 24.0)
        use[idx] = rate * day_mult[idx][:, day_of] * bursts[idx]
    use[~hh] = 0.0
    for v in plan.vacancy:
        a, b = hour_of(cfg, v.start_ns) + 1, min(H, hour_of(cfg, v.end_ns))
        use[v.meter, a:b] = 0.0
    true_use = use

    # What the meters register: a little under-registration everywhere, a fraction behind a bypass.
    meas = true_use * (1.0 - rng.uniform(0.0, 0.03, n))[:, None]
    for bp in plan.bypass:
        h = hour_of(cfg, bp.t_ns)
        meas[bp.meter, h + 1:] *= bp.fraction
        meas[bp.meter, h] *= 0.5 * (1 + bp.fraction)
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
        else:
            k = H - h - 1
            runs = rng.random(k) < 0.35
            back = np.where(runs, r.amount * rng.uniform(0.5, 1.5, k), 0.0)
            rev[r.meter, h + 1:] += np.cumsum(back)
    rmax = city.rmax[:, None]
    total = np.round(np.mod(np.round(raw, 3), rmax), 3)
    total[total >= rmax] = 0.0
    reverse = np.round(rev, 3)
    flow = np.empty((n, H))
    flow[:, 1:] = meas[:, :-1]
    flow[:, 0] = meas[:, 0]
    flow = np.round(flow, 3)

    # Prepaid balances: spend by the metered volume, top up when low (most in time).
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

    rsrp_base = np.clip(rng.normal(-97.0, 9.0, n), -127.0, -72.0)
    battery_base = rng.uniform(3.56, 3.68, n)

    # Master meters: the building's true use, a leak share and some background leakage, 15-minute resolution.
    starts = city.building_master
    n_b = len(starts)
    building_use = np.add.reduceat(true_use, starts, axis=0)
    leak = rng.uniform(0.01, 0.05, n_b)
    background = rng.uniform(0.005, 0.02, n_b) * building_use.mean(axis=1)
    into = building_use * (1 + leak)[:, None] + background[:, None]
    w = rng.gamma(4.0, 1.0, (n_b, H, 4))
    w /= w.sum(axis=2, keepdims=True)
    q_use = (into[:, :, None] * w).reshape(n_b, H * 4)
    m_meas = q_use * (1.0 - rng.uniform(0.0, 0.01, n_b))[:, None]
    m_cum = np.zeros_like(m_meas)
    np.cumsum(m_meas[:, :-1], axis=1, out=m_cum[:, 1:])
    m_r0 = rng.uniform(1_000, 80_000, n_b)
    master_total = np.round(np.mod(np.round(m_r0[:, None] + m_cum, 3), city.rmax[starts][:, None]), 3)
    mflow = np.empty_like(m_meas)
    mflow[:, 1:] = m_meas[:, :-1] * 4
    mflow[:, 0] = m_meas[:, 0] * 4
    master_flow = np.round(mflow, 3)

    pump = pump_rooms(city, cfg, plan, q_use, rng)
    return Measurements(true_use=true_use, total=total, reverse=reverse, flow=flow, balance=balance,
                        rsrp_base=rsrp_base, battery_base=battery_base, master_total=master_total,
                        master_flow=master_flow, building_quarter_use=q_use, **pump)

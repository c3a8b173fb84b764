"""What the city's devices measure: water use, registers, balances and pump-room telemetry as numpy arrays.

Household arrays are meter × hour (reading h is the register at start + h hours); master and pump-room arrays
are building × quarter-hour. The plan's incidents and decoys are applied here, where they change measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.city import DAY_S, HOUR_S, LOCAL_OFFSET_S, NS, City, SimConfig
from simulator.incidents import Plan

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
    tank_level: np.ndarray  # tank × quarter
    tank_chlorine: np.ndarray
    tank_turbidity: np.ndarray
    tank_ph: np.ndarray
    room_pressure: np.ndarray  # room × quarter
    room_door: np.ndarray  # bool
    pump_running: np.ndarray  # room × quarter × 2
    pump_current: np.ndarray
    cleaning_done_q: dict[int, int]  # tank -> quarter when the refilled tank passed its test


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

    pump = _pump_rooms(city, cfg, plan, q_use, rng)
    return Measurements(true_use=true_use, total=total, reverse=reverse, flow=flow, balance=balance,
                        rsrp_base=rsrp_base, battery_base=battery_base, master_total=master_total,
                        master_flow=master_flow, building_quarter_use=q_use, **pump)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], width: int, sd: float) -> np.ndarray:
    """Slowly varying noise: white noise averaged over a moving window."""
    white = rng.normal(0.0, sd * np.sqrt(width), (shape[0], shape[1] + width))
    c = np.cumsum(white, axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def _pump_rooms(city: City, cfg: SimConfig, plan: Plan, q_use: np.ndarray, rng: np.random.Generator) -> dict:
    n_r, Q = q_use.shape
    # Demand smoothed over two hours, normalised per room: tanks draw down with it, pressure sags with it.
    c = np.cumsum(np.concatenate([np.zeros((n_r, 8)), q_use], axis=1), axis=1)
    dem = (c[:, 8:] - c[:, :-8]) / 8
    dem_norm = dem / np.maximum(dem.max(axis=1, keepdims=True), 1e-9)
    tr = city.tank_room
    n_t = len(tr)
    hmax = city.tank_height[:, None]
    level = hmax * (0.85 - 0.3 * dem_norm[tr]) + rng.normal(0, 0.008, (n_t, Q))
    chlorine = rng.uniform(0.22, 0.45, n_t)[:, None] + _smooth_noise(rng, (n_t, Q), 16, 0.03) \
        - 0.04 * dem_norm[tr]
    turbidity = rng.uniform(0.12, 0.35, n_t)[:, None] + np.abs(rng.normal(0, 0.03, (n_t, Q)))
    ph = rng.uniform(7.1, 7.6, n_t)[:, None] + rng.normal(0, 0.03, (n_t, Q))
    pressure = 0.38 - 0.06 * dem_norm + rng.normal(0, 0.004, (n_r, Q))
    door = np.zeros((n_r, Q), dtype=bool)
    # A weekly inspection visit in working hours.
    q0_local = ((cfg.start_ns // NS + LOCAL_OFFSET_S) % DAY_S) // 900
    for week in range(0, cfg.days, 7):
        day = week + rng.integers(0, 7, n_r)
        slot = day * 96 + rng.integers(36, 68, n_r) - q0_local
        for k in range(3):
            ok = (slot + k >= 0) & (slot + k < Q)
            door[np.flatnonzero(ok), (slot + k)[ok]] = True
    done: dict[int, int] = {}
    qi = np.arange(Q)
    for cl in plan.cleanings:
        q = int((cl.t_ns - cfg.start_ns) // (900 * NS))
        t = cl.tank
        h = city.tank_height[t]
        if q + 30 >= Q:
            continue
        lv = level[t, q]
        level[t, q:q + 8] = np.linspace(lv, 0.08, 8)  # drawdown
        level[t, q + 8:q + 16] = rng.uniform(0.03, 0.1, 8)  # emptied and scrubbed
        level[t, q + 16:q + 24] = np.linspace(0.15, 0.85 * h, 8)  # refill
        peak = rng.uniform(0.8, 1.4)
        after = qi >= q + 16
        decay = np.exp(-(qi - (q + 16)) / 40.0)
        chlorine[t] = np.where(after, chlorine[t] + (peak - chlorine[t]) * decay, chlorine[t])
        turbidity[t, q + 16:q + 20] += 0.25
        door[tr[t], max(0, q - 2):q + 26] = True
        done[t] = q + 26
    duty = (qi // 96) % 2
    run_duty = dem_norm > 0.08
    run_standby = dem_norm > 0.8
    running = np.zeros((n_r, Q, 2), dtype=bool)
    running[:, :, 0] = np.where(duty == 0, run_duty, run_standby)
    running[:, :, 1] = np.where(duty == 1, run_duty, run_standby)
    current = np.where(running, 11.5 + rng.normal(0, 0.4, (n_r, Q, 2)), 0.0)
    return dict(
        tank_level=np.round(np.clip(level, 0.0, None), 2),
        tank_chlorine=np.round(np.clip(chlorine, 0.02, None), 2),
        tank_turbidity=np.round(turbidity, 2),
        tank_ph=np.round(ph, 2),
        room_pressure=np.round(pressure, 3),
        room_door=door,
        pump_running=running,
        pump_current=np.round(current, 1),
        cleaning_done_q=done,
    )

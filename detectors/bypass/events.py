"""The alert events of the bypass detector, with the numbers that convinced it: a household named for a bypass
(kind `bypass`), or a building whose unmetered use rose while the evidence cannot name one household (kind
`building_unmetered_use`, with its candidates, if any)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from devices.alerts import AlertEvent

from ..base import alert_id, round_or_none
from .day import B_INCIDENT, B_REPORTED, DAYS, E_VY, E_Y, NBIN, NORMAL, OPEN

if TYPE_CHECKING:
    from .day import DayStep
    from .detector import BypassDetector
    from .judge import Window


def _m3(x: float) -> float | None:
    return round_or_none(x / 1000.0)


def uncertain_neighbours(d: BypassDetector, i: int, since_day: int) -> list[str]:
    """Households of i's building whose use had to be guessed (silent, new, in another incident) on some day of the
    evidence: the balance leaned on their baselines, never on i's."""
    b = int(d.bld[i])
    members = d.hh_sorted[d.b_first[b]:d.b_first[b] + d.b_count[b]]
    age = (d.day_now() - d.unc_day[members].astype(np.int64)) % 256
    span = d.day_now() - since_day
    hit = members[(age <= span) & (members != i)]
    return [str(x) for x in d.registry.meters.ids[hit]]


def _gap_before_m3_day(d: BypassDetector, b: int) -> float:
    lam, steady = d.loss_model(np.array([b]))
    s = float(d.b_loss[b, 0])  # the building's mean hourly use, litres
    return float(lam[0]) * s * 24 + float(steady[0])


def bypass_raised(step: DayStep, row: int, w: Window, q: int, now: int) -> AlertEvent:
    """Name the household of step row `row` (window row q), and open its incident."""
    d = step.d
    i = int(step.hh[row])
    b = int(d.bld[i])
    reg = d.registry
    nd = max(float(w.nd[q]), 1.0)
    usual = float(w.usual[q]) / nd
    lost = float(w.X[q]) / nd
    rise = float(w.Y[q]) / nd
    # from the first day its own evidence shows: its drop standing out of its day-to-day swing, or, if it never did
    # on a day of its own, the first of the two days its pattern showed. Never from the building's episode alone: a
    # leak or a neighbour may have begun the rise a day before the pipe went in (a later start understates the
    # loss; an earlier one would overstate it)
    since = int(d.w_first[i]) if d.w_first[i] != 0xFFFF else step.day - 1
    since = d.day_now() - ((d.day_now() - since) % 65536)
    # no earlier than the first day of the evidence that named it (a bypass named on today's hours began by today),
    # or of its window (a first whole day that names it alone may follow the day the pipe went in)
    since = max(since, step.day - max(int(nd), int(d.w_n[i] & DAYS)) + 1)
    start = d.calendar.day_start_ns(since)
    before = _gap_before_m3_day(d, b)
    # from now on its unmetered use counts as this share of its usual use (the drop and the rise, by precision)
    share = float(np.clip(w.unmetered[q] * nd / max(float(w.usual[q]), 1e-9), 0.0, 1.0))
    d.phase[i] = OPEN
    d.open_share[i] = share
    d.low_days[i] = 0
    pattern = bool(w.zb[q] >= d.params.z_pattern)
    rise_n, nights = (float(x) for x in d.ep_night[b])
    ev: dict[str, Any] = {
        "building_id": str(reg.buildings.ids[b]),
        "master_meter_id": str(reg.buildings.master_meter_id[b]),
        "household_use_m3_per_day_before": _m3(usual),
        "household_use_m3_per_day_after": _m3(usual - lost),
        "building_gap_m3_per_day_before": _m3(before),
        "building_gap_m3_per_day_after": _m3(before + rise),
        "unmetered_m3_per_day": _m3(float(w.unmetered[q])),
        "estimated_registered_fraction": round_or_none(1.0 - share),
        "since_day": str(d.calendar.date_of(since)),
        "building_rise_since_day": str(d.calendar.date_of(int(d.ep_start[b]))) if d.ep_start[b] >= 0 else None,
        "days_observed": int(w.nd[q]),
        "z_drop": round_or_none(w.zx[q], 1),
        "z_rise": round_or_none(w.zy[q], 1),
        "z_hourly_pattern": round_or_none(w.zb[q], 1),
        "z_daily_shape": round_or_none(w.za[q], 1),
        "how": "hourly_pattern" if pattern else "meter_nearly_stopped",
        # (a meter left with nothing is named only when it fell in the very hour the rise began: ONSET)
        "fell_in_the_hour_the_rise_began": None if pattern else True,
        "nights_observed": int(nights),
        "household_night_use_m3_before": _m3(float(d.rate[i, 0]) * 24 / NBIN),
        "building_night_rise_m3": _m3(rise_n / nights) if nights else None,
        "uncertain_neighbours": uncertain_neighbours(d, i, since),
    }
    meter_id = str(reg.meters.ids[i])
    addr = str(reg.buildings.address[b])
    where = f"{meter_id} ({reg.buildings.ids[b]}{', ' + addr if addr else ''})"
    how = ("the building's unmetered use follows this household's hourly use" if pattern
           else "its meter nearly stopped in the hour the building's unmetered use rose by as much")
    summary = (f"Meter {where}: about {lost / 1000:.2f} m3/day no longer registers since {ev['since_day']} while the "
               f"building's unmetered use rose {rise / 1000:.2f} m3/day ({how}): inspect for a bypass pipe")
    d.w_first[i] = since % 65536  # (an open bypass's first day)
    return AlertEvent(alert_id=alert_id("bypass", meter_id, start), event="raised", kind="bypass",
                      severity="warning", subject_type="meter", subject_id=meter_id,
                      district=str(reg.meters.district[i]), start_ns=start, detected_at_ns=now, summary=summary,
                      evidence=ev)


def bypass_cleared(d: BypassDetector, i: int, now: int) -> AlertEvent:
    reg = d.registry
    meter_id = str(reg.meters.ids[i])
    since = d.day_now() - ((d.day_now() - int(d.w_first[i])) % 65536)
    d.phase[i] = NORMAL
    d.open_share[i] = 0
    d.low_days[i] = 0
    d.hc[i] = 0
    return AlertEvent(alert_id=alert_id("bypass", meter_id, d.calendar.day_start_ns(since)), event="cleared",
                      kind="bypass", severity="info", subject_type="meter", subject_id=meter_id,
                      district=str(reg.meters.district[i]), start_ns=d.calendar.day_start_ns(since),
                      detected_at_ns=now,
                      summary=f"Meter {meter_id}: registers its usual use again two days running", evidence={})


def building_raised(d: BypassDetector, b: int, candidates: list[int], now: int) -> AlertEvent:
    """The building's unmetered use rose and no single household explains it (its candidates, if any, listed)."""
    reg = d.registry
    since = int(d.ep_start[b])
    start = d.calendar.day_start_ns(since)
    days = max(int(d.ep_n[b]), 1)
    rise = float(d.ep_sum[b, E_Y]) / days
    z = float(d.ep_sum[b, E_Y]) / np.sqrt(max(float(d.ep_sum[b, E_VY]), 1.0))
    d.b_flags[b] |= B_INCIDENT | B_REPORTED
    d.b_start_day[b] = since
    bid = str(reg.buildings.ids[b])
    cands = [str(reg.meters.ids[c]) for c in candidates]
    members = d.hh_sorted[d.b_first[b]:d.b_first[b] + d.b_count[b]]
    age = (d.day_now() - d.unc_day[members].astype(np.int64)) % 256
    unsure = [str(x) for x in reg.meters.ids[members[age <= d.day_now() - since]]]
    usual = d.rate[members].astype(np.float64).sum(axis=1) * 24 / NBIN
    ev = {"building_id": bid, "master_meter_id": str(reg.buildings.master_meter_id[b]),
          "unmetered_rise_m3_per_day": _m3(rise), "z_rise": round_or_none(z, 1), "days_observed": days,
          "building_gap_m3_per_day_before": _m3(_gap_before_m3_day(d, b)),
          "candidates": cands, "candidates_usual_m3_per_day": [_m3(float(usual[np.flatnonzero(members == c)[0]]))
                                                                for c in candidates],
          "uncertain_households": unsure}
    who = (f"households {', '.join(cands)} each could explain it" if cands
           else "no household's meter fell with it (a leak, a dripping cistern, or a household not heard)")
    summary = (f"Building {bid}: its unmetered use rose {rise / 1000:.2f} m3/day since "
               f"{d.calendar.date_of(since)}; {who}: check the building")
    return AlertEvent(alert_id=alert_id("building_unmetered_use", bid, start), event="raised",
                      kind="building_unmetered_use", severity="info", subject_type="building", subject_id=bid,
                      district=str(reg.buildings.district[b]),
                      start_ns=start, detected_at_ns=now, summary=summary, evidence=ev)


def building_cleared(d: BypassDetector, b: int, now: int) -> AlertEvent:
    reg = d.registry
    bid = str(reg.buildings.ids[b])
    start = d.calendar.day_start_ns(int(d.b_start_day[b]))
    d.b_flags[b] &= ~B_INCIDENT
    return AlertEvent(alert_id=alert_id("building_unmetered_use", bid, start), event="cleared",
                      kind="building_unmetered_use", severity="info", subject_type="building", subject_id=bid,
                      district=str(reg.buildings.district[b]),
                      start_ns=start, detected_at_ns=now,
                      summary=f"Building {bid}: its unmetered use is back to its normal loss", evidence={})

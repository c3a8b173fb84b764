"""How a city's households use water: each city draws its own style (building sizes, use levels, daily profile
family, weekday/weekend shape, burstiness), and each household its own level, profile and habits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Daily profile families: bumps (local centre hour, width h, weight) on a night floor; a city mixes a few of them.
PROFILE_FAMILIES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "two_peaks": ((7.5, 1.3, 1.0), (19.5, 2.0, 1.1)),
    "evening": ((8.0, 1.0, 0.5), (20.5, 2.2, 1.4)),
    "morning": ((7.0, 1.5, 1.4), (19.0, 1.8, 0.6)),
    "at_home": ((9.0, 2.5, 0.8), (13.0, 2.5, 0.6), (19.0, 2.5, 0.8)),
    "late": ((10.0, 1.5, 0.8), (23.0, 2.0, 1.0)),
}
FAMILY_NAMES = tuple(PROFILE_FAMILIES)
NIGHT_FLOOR = 0.08
# Households per building: walk-ups, mid-rise blocks, towers, or a mix of all three.
SIZE_FAMILIES = {"walk_ups": (6, 24), "mid_rise": (15, 60), "towers": (40, 120), "mixed": (6, 120)}
SMALL_M3 = (0.05, 0.3)  # a small household's daily use


@dataclass(frozen=True)
class CityStyle:
    """What one city's households are like; drawn from the seed, so every city is a little different."""

    size_family: str
    households_per_building: tuple[int, int]
    use_median_m3: float  # residential daily use, median
    use_sigma: float  # … and its log spread across households
    small_share: float  # share of residential households using 0.05-0.3 m3/day
    family_weights: tuple[float, ...]  # over FAMILY_NAMES
    peak_jitter_h: float  # each household's peaks shifted by about this much
    weekend_factor: float  # weekend daily use / weekday
    weekend_shift_h: float  # weekend peaks come this much later
    day_sigma: float  # day-to-day log spread of a household's use
    burst_shape: float  # gamma shape of hourly use (smaller: burstier)
    non_residential_share: float
    trips_per_month: float  # short absences of a household (a weekend away), unlabelled
    drip_share: float  # households with a drip below their meter's starting flow (unmetered)
    building_loss: tuple[float, float]  # the building's normal loss, share of its use (low, high)


def draw_style(seed: int, meters: int, non_residential_share: float | None = None) -> CityStyle:
    rng = np.random.default_rng([seed, 11])
    fam = str(rng.choice(list(SIZE_FAMILIES)))
    lo, hi = SIZE_FAMILIES[fam]
    lo = max(4, min(lo, meters // 12))  # a small city still has several buildings
    hi = max(lo, min(hi, meters // 8))
    weights = rng.dirichlet(np.full(len(FAMILY_NAMES), 0.6))
    nr = float(rng.uniform(0.02, 0.1)) if non_residential_share is None else non_residential_share
    return CityStyle(
        size_family=fam, households_per_building=(lo, hi),
        use_median_m3=float(rng.uniform(0.18, 0.45)), use_sigma=float(rng.uniform(0.3, 0.75)),
        small_share=float(rng.uniform(0.05, 0.3)), family_weights=tuple(float(w) for w in weights),
        peak_jitter_h=float(rng.uniform(0.3, 1.5)), weekend_factor=float(rng.uniform(0.85, 1.3)),
        weekend_shift_h=float(rng.uniform(0.0, 2.5)), day_sigma=float(rng.uniform(0.12, 0.35)),
        burst_shape=float(rng.uniform(0.4, 1.3)), non_residential_share=nr,
        trips_per_month=float(rng.uniform(0.0, 1.0)), drip_share=float(rng.uniform(0.0, 0.2)),
        building_loss=(float(rng.uniform(0.0, 0.02)), float(rng.uniform(0.03, 0.08))),
    )


def building_sizes(style: CityStyle, meters: int, rng: np.random.Generator) -> list[int]:
    """Households per building (log-uniform within the city's range) until the meter count is reached; each
    building also has its master meter."""
    lo, hi = style.households_per_building
    sizes: list[int] = []
    left = meters
    while left > 0:
        n = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi + 0.5)))))
        n = min(max(n, lo), hi)
        if left - (n + 1) < lo + 1:  # fold a small remainder into this building
            n = left - 1
        sizes.append(n)
        left -= n + 1
    return sizes


def daily_use_m3(style: CityStyle, non_residential: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each household's usual daily use: residential from the city's distribution (some of them small),
    businesses more; masters get 0 (filled in from their buildings)."""
    n = non_residential.size
    res = np.exp(rng.normal(np.log(style.use_median_m3), style.use_sigma, n))
    small = rng.random(n) < style.small_share
    res = np.where(small, rng.uniform(*SMALL_M3, n), np.clip(res, 0.04, 2.0))
    biz = np.clip(rng.lognormal(np.log(1.8), 0.6, n), 0.3, 6.0)
    return np.where(non_residential, biz, res)


def profiles(style: CityStyle, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each household's relative use by local hour, weekday and weekend: (n, 2, 24), mean 1 over a weekday."""
    family = rng.choice(len(FAMILY_NAMES), n, p=np.asarray(style.family_weights))
    jitter = rng.normal(0.0, style.peak_jitter_h, n)
    hours = np.arange(24) + 0.5
    out = np.empty((n, 2, 24))
    for f, name in enumerate(FAMILY_NAMES):
        sel = np.flatnonzero(family == f)
        if sel.size == 0:
            continue
        for weekend in (0, 1):
            shift = jitter[sel, None] + (style.weekend_shift_h if weekend else 0.0)
            p = np.full((sel.size, 24), NIGHT_FLOOR)
            for centre, width, weight in PROFILE_FAMILIES[name]:
                d = (hours[None, :] - centre - shift + 12.0) % 24.0 - 12.0
                p += weight * np.exp(-0.5 * (d / width) ** 2)
            out[sel, weekend] = p
    out /= out[:, :1].mean(axis=2, keepdims=True)
    out[:, 1] *= style.weekend_factor
    return out


def trips(style: CityStyle, n: int, hours: int, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Short absences (a weekend away, 1-4 days): a mask meter x hour of hours nobody is home. Not labelled:
    it is everyday behaviour, and a bypass detector must stay quiet about it."""
    away = np.zeros((n, hours), dtype=bool)
    k = rng.poisson(style.trips_per_month * hours / (30 * 24), n)
    who = np.repeat(np.arange(n), k)
    start = rng.integers(0, hours, who.size)
    length = rng.integers(20, 97, who.size)
    for i, s, ln in zip(who.tolist(), start.tolist(), length.tolist(), strict=True):
        away[i, s:s + ln] = True
    away[exclude] = False  # (drawn all the same: the plan does not change anyone else's trips)
    return away

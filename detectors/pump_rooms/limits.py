"""The water-quality detector's settings (GB 5749-2022 limits, the 30-minute rule, sensor plausibility) and the
per-reading flags derived from them: out of limits, far out, physically impossible."""

from __future__ import annotations

import math

import numpy as np

from ..base import Params, param

PARAMETERS = ("free_chlorine", "turbidity", "ph")
UNITS = {"free_chlorine": "mg/L", "turbidity": "NTU", "ph": ""}
COLUMNS = {"free_chlorine": "free_chlorine_mg_l", "turbidity": "turbidity_ntu", "ph": "ph"}
LEVEL_FLOOR_M = -0.05  # a level below the tank floor (beyond a sensor's offset) is a broken level sensor
LEVEL_STEP_M = 0.01  # a level change this large between readings shows water drawn or refilled
FASTEST_INTERVAL_S = 300.0  # until a room's own interval is learned: the fastest pump-room cadence (most readings)


class WaterQualityParams(Params):
    free_chlorine_min_mg_l: float = param(0.05, "mg/L", "free chlorine below this is out of limits (GB 5749-2022 at "
                                          "the tap)", ge=0)
    free_chlorine_max_mg_l: float = param(2.0, "mg/L", "free chlorine above this is out of limits", gt=0)
    turbidity_max_ntu: float = param(1.0, "NTU", "turbidity above this is out of limits", gt=0)
    ph_min: float = param(6.5, "pH", "pH below this is out of limits", ge=0, le=14)
    ph_max: float = param(8.5, "pH", "pH above this is out of limits", ge=0, le=14)
    out_for_min: float = param(30, "min", "consecutive readings out of limits, each standing for the room's reporting "
                               "interval, must cover this long before an incident (one reading alone never is one)",
                               gt=0)
    back_for_min: float = param(30, "min", "an incident clears once the readings have been back in limits this long",
                                gt=0)
    after_disinfection_h: float = param(6, "h", "high chlorine this long after a disinfection of the tank (its record, "
                                        "or the tank drained for cleaning and refilled) is expected", ge=0)
    drawdown_fraction: float = param(0.2, "1", "a tank drawn below this share of its full level is being cleaned",
                                     gt=0, lt=1)
    critical_after_h: float = param(4, "h", "an incident out of limits this long is critical", gt=0)
    free_chlorine_critical_mg_l: float = param(3.0, "mg/L", "free chlorine above this is critical at once (above "
                                               "the 3 mg/L limit of total chlorine)", gt=0)
    turbidity_critical_ntu: float = param(3.0, "NTU", "turbidity above this is critical at once", gt=0)
    ph_critical_min: float = param(6.0, "pH", "pH below this is critical at once", ge=0, le=14)
    ph_critical_max: float = param(9.0, "pH", "pH above this is critical at once", ge=0, le=14)
    update_every_h: float = param(1, "h", "an open incident is updated at least this often with its latest readings",
                                  gt=0)
    link_after_h: float = param(6, "h", "water that goes out of limits while the room's door is open without a work "
                                "order, or this long after it closed, names that intrusion", ge=0)
    frozen_h: float = param(12, "h", "a sensor that repeats one value this long while the water changes is stuck",
                            gt=0)
    frozen_min_changes: int = param(8, "count", "a stuck sensor also needs the water to have changed (the level "
                                    "moved or a pump ran) at this many readings meanwhile", ge=1)
    free_chlorine_plausible_mg_l: float = param(20.0, "mg/L", "free chlorine above this is no reading of water but "
                                                "a sensor fault", gt=0)
    turbidity_plausible_ntu: float = param(1000.0, "NTU", "turbidity above this is a sensor fault", gt=0)
    ph_plausible_min: float = param(2.0, "pH", "pH below this is a sensor fault", ge=0, le=14)
    ph_plausible_max: float = param(12.0, "pH", "pH above this is a sensor fault", ge=0, le=14)


class Limits:
    """The settings as arrays over PARAMETERS (free chlorine, turbidity, pH), for flags over (rows, 3) values."""

    def __init__(self, p: WaterQualityParams):
        inf = math.inf
        self.lo = np.array([p.free_chlorine_min_mg_l, -inf, p.ph_min])
        self.hi = np.array([p.free_chlorine_max_mg_l, p.turbidity_max_ntu, p.ph_max])
        self.far_lo = np.array([-inf, -inf, p.ph_critical_min])
        self.far_hi = np.array([p.free_chlorine_critical_mg_l, p.turbidity_critical_ntu, p.ph_critical_max])
        self.plausible_lo = np.array([-inf, -inf, p.ph_plausible_min])
        self.plausible_hi = np.array([p.free_chlorine_plausible_mg_l, p.turbidity_plausible_ntu, p.ph_plausible_max])

    def implausible(self, values: np.ndarray) -> np.ndarray:
        return (values < self.plausible_lo) | (values > self.plausible_hi)

    def low(self, values: np.ndarray) -> np.ndarray:
        return values < self.lo

    def high(self, values: np.ndarray) -> np.ndarray:
        return values > self.hi

    def far(self, values: np.ndarray) -> np.ndarray:
        return (values < self.far_lo) | (values > self.far_hi)

    def text(self, k: int, value: float) -> str:
        """The limit a value broke, as a dispatcher reads it: 'below the 0.05 mg/L minimum'."""
        unit = UNITS[PARAMETERS[k]]
        if value < self.lo[k]:
            return f"below the {self.lo[k]:g}{' ' + unit if unit else ''} minimum"
        return f"above the {self.hi[k]:g}{' ' + unit if unit else ''} maximum"


def readings_needed(interval_s: np.ndarray, window_min: float) -> np.ndarray:
    """Consecutive readings that cover `window_min` when each stands for the interval (two at 15 minutes, six at 5);
    never fewer than two. A learned interval a little off its nominal value (14.9 for 15 minutes) still counts."""
    iv = np.where(np.isfinite(interval_s) & (interval_s > 0), interval_s, FASTEST_INTERVAL_S)
    return np.maximum(2, np.ceil(window_min * 60.0 / iv - 0.1)).astype(np.int64)

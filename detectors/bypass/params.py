"""The bypass detector's settings: each with a unit and the physical meaning it stands for."""

from __future__ import annotations

from ..base import Params, param


class BypassParams(Params):
    z_min: float = param(
        3.0, "standard errors", "each half of the evidence must stand this far out of its own noise: the household's "
        "metered use fell against its baseline, and its building's unmetered use rose (three standard errors: "
        "about one chance in a thousand for one household-window)", gt=0)
    z_pattern: float = param(
        5.0, "standard errors", "the building's unmetered use follows this household's metered hours this clearly "
        "(the hourly regression, calibrated on the building's other households): only a pipe around that meter "
        "does that; with a drop and a rise of matching size it names the household. A building is reported for a "
        "rise no household explains only when the rise is this clear", gt=0)
    z_shape: float = param(
        2.0, "standard errors", "the rise must have a household's hourly shape (its daily profile, or its metered "
        "hours), not a leak's flat one; and a household is named only if its evidence beats every other household "
        "of the building by this much (otherwise the building is reported with its candidates)", gt=0)
    min_rise_share: float = param(
        0.5, "share", "water is conserved: the building's unmetered use must rise by at least this share of what "
        "the household's meter lost, and by at most its inverse (two), allowing for a household that uses less once "
        "it no longer pays, and for the noise of a few days", gt=0, le=1)
    min_drop_share: float = param(
        0.3, "share of a household's use", "the smallest bypass looked for, as a share of the household's usual use: "
        "a drop is followed (a CUSUM with half this as its slack) from the day it goes beyond its day-to-day swing",
        gt=0, lt=1)
    collapse_share: float = param(
        0.25, "share of a household's use", "a meter registering at most this share of its usual use over a day has "
        "almost no hours left to follow: a full bypass and an empty home beside a leak look alike day by day. If the "
        "balance rose by its use from the day it fell, for two days, with a household's daily shape, it is named "
        "when it fell in the hour the rise began, or in the night before a day whose rise began with its first hours "
        "(its nights holding no more than it drew at night), and no neighbour could hold the rise; "
        "otherwise its building is reported with it as the candidate", gt=0, lt=1)
    baseline_days: float = param(
        14.0, "days", "memory of the baselines (two weeks, both weekends): a household's usual use by time of day "
        "and weekday and its day-to-day swing, and the building's normal loss; a household whose use stays down "
        "half this long with no rise beside it has moved (out, or part of it) and is re-learned", ge=2)
    min_baseline_days: float = param(
        3.0, "days", "a household (and a building's loss model) is judged only after this many days learned; "
        "until then it counts as its building's average household, its share uncertain alike", ge=1)
    max_loss_share: float = param(
        0.1, "share", "the building's normal loss (leaks, under-registration) is modelled as a share of the water "
        "used plus a steady flow; the share is at most this (a few percent and up to about 10 %)", gt=0, le=0.5)
    max_episode_days: float = param(
        7.0, "days", "a rise of the building's unmetered use that no household explains for this long is the "
        "building's own (a leak, a dripping cistern below the meters' starting flow): reported as "
        "building_unmetered_use, and the loss model learns it; up to baseline_days while a meter that collapsed "
        "with it, with a household's daily shape, holds it, or while the rise follows a household's hours (z_min) "
        "whose meter lost about as much", ge=2)
    silent_after_intervals: float = param(
        1.5, "report intervals", "a household not heard for this many of its report intervals is silent: its use "
        "is estimated from its own baseline (and counted uncertain) so that its building's day can be balanced",
        ge=1)
    max_reading_gap_s: int = param(
        4 * 3600, "s", "the register at a whole hour is interpolated between readings at most this far apart (a "
        "longer gap leaves those hours unknown)", ge=900, le=6 * 3600)
    reverse_noise_m3: float = param(
        0.01, "m3", "a register moving back by less than this in an hour is a pressure transient; by more, it ran "
        "backwards (that hour is not measured use, and the meter is in another incident: not judged for a bypass). "
        "A meter in another incident whose forward register counted more than this in a day measured that day's "
        "water; one whose forward register stood still is estimated (turned round: its water went onto its "
        "reverse register)", ge=0)
    max_pipe_velocity_m_s: float = param(
        6.0, "m/s", "an hour's use above what the meter's pipe carries at this velocity is a broken reading (the "
        "hour is unknown and its building's balance for that hour is not used)", gt=0)

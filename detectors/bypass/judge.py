"""The attribution: which household, if any, the building's rise belongs to. Both halves of the evidence must be
there (its meter lost water, the building gained as much) and the rise must follow that household's metered hours,
more clearly than any other household's. A meter left with nothing is named only if it fell in the very hour the
building's rise began (a family away beside a leak falls at another hour) and nothing else in its building could
hold the rise; otherwise it, and a rise no one household explains, report the building instead, with candidates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .day import (
    DAYS,
    E_NH,
    E_RR,
    E_VY,
    E_VY1,
    E_Y,
    E_Y1,
    LITRES_OF_CODE,
    MAX_HOUR_SHARE,
    NBIN,
    NORMAL,
    ONSET,
    PRE_DROP,
    SEEN,
    W_PP,
    W_PR,
    W_SCALE,
    W_X,
    R,
    beats,
    hourly_fit,
)
from .hours import TOP_CODE

if TYPE_CHECKING:
    from .day import DayStep
    from .detector import BypassDetector
    from .params import BypassParams


@dataclass
class Window:
    """The evidence of households' windows (rows: the households `hh`, in buildings `b`)."""

    hh: np.ndarray
    b: np.ndarray
    nd: np.ndarray  # days judged in the window
    X: np.ndarray  # litres the meter lost against the household's usual use
    Y: np.ndarray  # litres the building's unmetered use rose, same days
    unmetered: np.ndarray  # litres a day going round the meter: X and Y weighed by their precision
    zx: np.ndarray
    zy: np.ndarray
    zb: np.ndarray  # the rise follows the metered hours (calibrated)
    za: np.ndarray  # the rise has the household's daily shape
    beta: np.ndarray  # unmetered litres per metered litre, from the hourly fit
    implied: np.ndarray  # litres the fit says went round the meter: beta / (1 + beta) of its usual use
    usual: np.ndarray  # litres the household used to use over the window's days

    @classmethod
    def of(cls, det: BypassDetector, hh: np.ndarray) -> Window:
        """The household's window since its building's episode began."""
        b = det.bld[hh]
        return cls.of_sums(det, hh, det.w_sum[hh].astype(np.float64) / W_SCALE, det.ep_sum[b].astype(np.float64),
                           (det.w_n[hh] & DAYS).astype(np.float64))

    @classmethod
    def of_sums(cls, det: BypassDetector, hh: np.ndarray, w: np.ndarray, e: np.ndarray, nd: np.ndarray) -> Window:
        """A window of the households `hh` from its sums: w the household's (drop, hourly sums), e its building's."""
        b = det.bld[hh]
        dev2 = det.dev[hh].astype(np.float64) ** 2
        usual = nd * det.rate[hh].astype(np.float64).sum(axis=1) * 24 / NBIN
        X, Y = w[:, W_X], e[:, E_Y]
        vX = nd * dev2 * (1 + nd / np.maximum(det.n_learn[hh], 1))  # the baseline's own error counts too
        vY = np.maximum(e[:, E_VY], 1.0)
        nh = np.maximum(e[:, E_NH], 3)
        sig2_0 = np.maximum(det.sig_h2[b].astype(np.float64), 4.0)
        beta, se_b = hourly_fit(w, e, sig2_0, det.phi2[b].astype(np.float64))
        alpha = w[:, W_PR] / np.maximum(w[:, W_PP], 1e-9)
        sig_a = np.sqrt(np.maximum(sig2_0, np.maximum(e[:, E_RR] - alpha * w[:, W_PR], 0) / np.maximum(nh - 1, 1)))
        za = w[:, W_PR] / np.sqrt(np.maximum(w[:, W_PP], 1e-9)) / sig_a
        zb = beta / se_b
        # what goes round the meter: its drop and the building's rise, by precision; but the rise counts for no
        # more than the household's own evidence holds (where the rise follows its hours: its drop, or what the fit
        # says goes unmetered; else its usual use): the rest is a neighbour's or the building's, and must not land
        # on this household's loss estimate
        # (beta unmetered litres per metered litre leave the meter beta / (1 + beta) of the household's use: its
        # metered use itself is too noisy a base when little is left)
        b_pos = np.maximum(beta, 0.0)
        implied = b_pos / (1 + b_pos) * usual
        own = np.where(zb >= det.params.z_shape, np.maximum(X, implied), usual)
        both = (X / vX + np.minimum(Y, own) / vY) / (1 / vX + 1 / vY) / np.maximum(nd, 1)
        return cls(hh=hh, b=b, nd=nd, X=X, Y=Y, unmetered=np.maximum(both, 0.0), zx=X / np.sqrt(np.maximum(vX, 1e-9)),
                   zy=Y / np.sqrt(vY), zb=zb, za=za, beta=beta, implied=implied, usual=usual)


def decide(step: DayStep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Households named today (rows of step.hh), and buildings reported today (rows of step.b) with their candidate
    households (rows of step.hh)."""
    d, p = step.d, step.d.params
    rows = np.flatnonzero(step.judged & (d.ep_start[step.b][step.pos] >= 0) & ((d.w_n[step.hh] & DAYS) > 0))
    none = np.zeros(0, dtype=np.int64)
    if rows.size == 0:
        return none, none, none
    w, ep, one = _best_window(step, rows)
    fits = _fits(w, p.min_rise_share)
    pattern = _pattern(w, p)
    # a meter left with a trickle from the day the rise began, by as much as the rise, with a household's daily
    # shape (a full bypass: it has no hours left to follow). Its evidence is every day since its drop began
    ep_fits = _fits(ep, p.min_rise_share)
    pre = (d.w_n[step.hh[rows]] & PRE_DROP) != 0  # its drop was followed already before its building's rise began
    aligned = _aligned(step, rows, ep, pre)
    collapsed = _collapsed(step, rows, ep, ep_fits) & aligned
    level = collapsed & _clear_level(ep, p)
    cand = ((w.zx >= 2) & fits & (level | (w.zb >= p.z_shape))) | (w.zb >= p.z_pattern)
    pos = step.pos[rows]
    # the rise may follow one household's hours only: every other household of the building is a rival here,
    # whether its own meter dropped or not (a neighbour with the same daily habits follows the rise a little too)
    # ... and on two judged days running, the first of them behind it, or on a day that needs none (_first_day)
    seen = (d.w_n[step.hh[rows]] & SEEN) != 0  # (as the days before left it: read before today's is remembered)
    spread = step.top_hour[rows] <= MAX_HOUR_SHARE
    onset = (d.w_n[step.hh[rows]] & ONSET) != 0  # (its meter fell in the hour its building's rise began, and kept it)
    first = _first_day(step, rows, w, seen, onset, spread, fits)
    # ... the first of the two days shows the pipe in the household's own hours: its window's pattern passed and
    # its hours that day point the same way (a meter that registered nothing all day, a family away, adds no hours
    # to fit: the window's pattern is still yesterday's, and that day cannot be the first); or its hours alone
    # showed it that day, z_pattern clear, on more than one hour (below). How much water went round is the window's
    # to judge: one day's rise of a small pipe stays inside that day's noise, and two days add up
    # ... and a day away is neither: a meter that registered a trickle while its building's rise that day held less
    # than min_rise_share of its drop, a standard error of the difference clear, shows a family away (no water goes
    # through a pipe either). It adds no hours, so the window's pattern is still the days before's; it cannot be the
    # day that names it, nor does it forget the day before (a drop with a flat gap is a holiday, never a bypass)
    # (a standard error of the difference: the building's day and the household's own swing, for the drop is its
    # usual use less the trickle, and a pipe carries what the household used that day, not its usual)
    short = p.min_rise_share * step.Xd[rows] - np.sqrt(step.vYd[pos] + p.min_rise_share ** 2 * step.vXd[rows])
    away = step.trickle[rows] & (step.Yd[pos] < short)
    own_hours = one.zb >= 1
    hours_today = (one.zb >= p.z_pattern) & spread
    # ... nor does a day on which the window's hours and its own hours still followed the rise and only a size fell
    # short (a rise of 2.8 SE against 3 one day, 4 the next): the pipe showed in its hours that day too
    size_only = (w.zb >= p.z_pattern) & own_hours & ~pattern
    _remember(step, rows, (pattern & own_hours) | hours_today, keep=away | size_only)
    # a day its drop first stood out dates the bypass only if its own hours that day follow the rise (one standard
    # error or more) or it registered a trickle (no hours left to follow): a chance low day before the pipe went in
    # shows a drop, and no hours of the rise
    first_today = (d.w_first[step.hh[rows]] == step.day % 65536) & ~step.trickle[rows] & ~own_hours
    d.w_first[step.hh[rows[first_today]]] = 0xFFFF
    clear = pattern & first & ~away & beats(w.zb, pattern, pos, step.nb, p.z_shape)
    # a meter left with nothing is named on the balance only when it fell in the very hour the rise began, and no
    # other household of its building lost about as much or fell as well
    # (the rise following a neighbour's metered hours, by about that neighbour's loss, is one it could hold; and so
    # is a rise that follows them z_pattern clear and is about what the fit puts beside them (beta litres a metered
    # litre), whatever that meter's drop against a baseline that swings from day to day: a partial bypass of a
    # household that used more than usual)
    beside = np.maximum(w.beta, 0.0) * np.maximum(w.usual - w.X, 0.0)
    followed = (w.zb >= p.z_pattern) & _fits_loss(w.Y, beside, p.min_rise_share)
    # (a neighbour whose meter lost about as much holds it only as a pipe would: its meter left with a trickle, or
    # the rise following its metered hours; a family that merely used less than usual sent no water round a meter.
    # Nor does a meter left with a trickle before the rise began: a pipe takes the water off the meter in the hour
    # the building's unmetered use rises, and a family that left the day before sent none round it)
    could = (step.trickle[rows] & ~pre) | (np.maximum(w.zb, ep.zb) >= p.z_shape)
    held = level | ((((ep.zx >= 2) & ep_fits) | (((w.zx >= 2) | (w.zb >= p.z_pattern)) & fits)) & could) | followed
    # (never by the balance alone, however long: a family away beside a rise of another cause looks the same day by
    # day, and only the hour its meter fell tells them apart. Named so after a week of quiet nights and every
    # neighbour measured, it was wrong about two times in three on held-out cities; its building is reported instead)
    full = level & onset & _alone(held, pos, step.nb) & ~clear
    clear |= full
    step.left_rows = rows[level & ~clear]  # (meters left with nothing, not named: their building's candidates)
    _hold(step, rows, ep, ep_fits, collapsed & ~level)
    # (a pattern waiting for its second day is no report yet; a named household explains the building's rise)
    unclear_b = np.setdiff1d(pos[(pattern & seen & ~clear) | level], pos[clear])
    step.window = Window(**{k: np.where(full, getattr(ep, k), getattr(w, k)) for k in Window.__dataclass_fields__})
    step.window_rows = rows
    return rows[clear], unclear_b, rows[cand]


def _first_day(step: DayStep, rows: np.ndarray, w: Window, seen: np.ndarray, onset: np.ndarray,
               spread: np.ndarray, fits: np.ndarray) -> np.ndarray:
    """Households (rows) whose pattern today may name them: the first of two judged days is behind them, or today
    needs none. One day's 24 hours can show a pattern by chance (a neighbour's silence, a business with the same
    opening hours); a pipe is there the next day too. The first day is one its pattern passed on (`seen`: SEEN as
    the days before left it); or one on which its meter fell to a trickle in the very hour its building's unmetered
    use stepped up by what it lost (ONSET, set on an earlier day and kept since: a trickle, its nights quiet): that
    step is the first day's evidence of the pipe, its hours' pattern today the second. None is needed by a window of
    one day that shows as much as two days would: each half of the evidence sqrt(2) times what the pattern asks of a
    window (two days' z adds up to sqrt(2) times one day's): its hours follow the rise sqrt(2) z_pattern, its drop
    stands sqrt(2) (one SE a day) out of its own swing, and the rise sqrt(2) z_min out of its building's noise. (A
    household's days swing by a third of its use, so a pipe taking half of it drops it by under 2 of its own SE:
    asking z_min of the drop on that day held such a pipe for a second day however clear its hours and its
    building's rise, while the rise needed only what a window of any length needs.) That day's rise is its drop's
    (within [min_rise_share, 1/min_rise_share] of it): on the day a business's full bypass began, its hours (its
    meter falling mid-day) did not follow the rise, and a small household that used less that day carried a 10 SE
    pattern of the rest; one day cannot tell a share of another cause's rise from a pipe (`fits`). Resting
    on more than one hour (`spread`: no metered hour holds half of its fit), or its other hours alone showing
    z_pattern (a meter left with a trickle registers little but its household's biggest draws, and they hold most
    of its fit; a family home for an hour after a trip away made a 14 SE day of one hour beside a spike of its
    building's rise, and nothing in its other hours). A window of several days that only now reaches it built up
    slowly: it waits for a second day, as a slow coincidence in a busy building does."""
    p = step.d.params
    fell = onset & step.onset_before[rows]
    rests = step.zb_rest[rows] >= p.z_pattern
    two = np.sqrt(2)  # (one day standing for two)
    strong = (w.nd == 1) & (w.zb >= two * p.z_pattern) & (w.zx >= two) & (w.zy >= two * p.z_min) & (spread | rests)
    strong &= fits  # (the day's rise is its drop's: no other cause shares that day)
    return seen | fell | strong


def _hold(step: DayStep, rows: np.ndarray, ep: Window, ep_fits: np.ndarray, collapsed: np.ndarray) -> None:
    """Buildings whose episode a household's evidence under way holds open past max_episode_days (up to
    baseline_days), until the rise is as clear as naming needs: a small household's loss takes days to stand out of
    a busy building's noise, and closing the episode would throw that evidence away (the loss model would learn the
    pipe). A meter that collapsed with the rise, with the household's daily shape (a flat rise, a leak's, is the
    building's after a week); or a pattern under way: the rise follows its hours z_min clear, and its meter lost
    about what the building gained."""
    p = step.d.params
    shaped = np.maximum(ep.za, ep.zb) >= p.z_shape
    under_way = (ep.zb >= p.z_min) & (ep.zx >= 2) & ep_fits
    step.holding[step.pos[rows[(collapsed & shaped) | under_way]]] = True


def _pattern(w: Window, p: BypassParams) -> np.ndarray:
    """A partial bypass: the rise follows its metered hours; the meter lost what the fit says goes unmetered, and
    the building's rise holds at least that much."""
    return (w.zb >= p.z_pattern) & (w.zx >= 1) & (w.zy >= p.z_min) & (w.implied >= p.min_rise_share * w.X) & \
        (w.implied <= w.X / p.min_rise_share) & (w.Y >= p.min_rise_share * w.implied)


def _remember(step: DayStep, rows: np.ndarray, pattern: np.ndarray, keep: np.ndarray) -> None:
    """SEEN for the households whose pattern passed today; cleared for every other household judged today but those
    (rows) to `keep` as they were."""
    d = step.d
    judged = step.hh[step.judged]
    if keep.any():
        judged = np.setdiff1d(judged, step.hh[rows[keep]])
    d.w_n[judged] &= np.uint8(~SEEN & 0xFF)
    d.w_n[step.hh[rows[pattern]]] |= np.uint8(SEEN)


def _fits(w: Window, share: float) -> np.ndarray:
    """Water is conserved: the building's rise is within [share, 1/share] of what the meter lost."""
    return _fits_loss(w.Y, w.X, share)


def _fits_loss(rise: np.ndarray, loss: np.ndarray, share: float) -> np.ndarray:
    ratio = rise / np.maximum(loss, 1e-9)
    return (ratio >= share) & (ratio <= 1 / share)


def _best_window(step: DayStep, rows: np.ndarray) -> tuple[Window, Window, Window]:
    """Each household's stronger evidence of two windows ending today: since its building's episode began (or its
    own drop did, if later), and today alone. A bypass that began inside a long episode shows on its first whole
    day; the episode's window holds a slow one. (Two looks at the same hours: the margin over rivals covers it.)
    Returns the stronger one, the episode's and today's."""
    d, hh, pos = step.d, step.hh[rows], step.pos[rows]
    ep = Window.of(d, hh)
    one = Window.of_sums(d, hh, step.day_sums[rows], step.b_sums[pos].astype(np.float64), np.ones(rows.size))
    pick = np.argmax(np.stack([np.where(np.isfinite(x.zb), x.zb, -np.inf) for x in (ep, one)]), axis=0)
    fields = {k: np.choose(pick, [getattr(x, k) for x in (ep, one)]) for k in Window.__dataclass_fields__}
    return Window(**fields), ep, one


def _alone(who: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """Rows of `who` that are the only such row of their building (pos)."""
    return who & (np.bincount(pos[who], minlength=n)[pos] == 1)


def _clear_level(w: Window, p: BypassParams) -> np.ndarray:
    """A rise this clear with a household's daily shape (a leak is flat)."""
    return (np.maximum(w.za, w.zb) >= p.z_shape) & (w.zy >= p.z_pattern)


def _collapsed(step: DayStep, rows: np.ndarray, w: Window, fits: np.ndarray) -> np.ndarray:
    """The balance alone, for a meter left with a trickle (no hours left to follow): two days of it and more since,
    the building's rise about what it lost."""
    p = step.d.params
    # a trickle today, and every day since the first (the onset's day holds hours before it)
    per_day = w.usual / np.maximum(w.nd, 1)
    later = (w.usual - w.X) - (per_day - step.d.w_x1[step.hh[rows]].astype(np.float64))
    collapse = step.trickle[rows] & (later <= p.collapse_share * per_day * np.maximum(w.nd - 1, 1))
    # and it lasts: still a trickle in the hours the meter sent since (an hourly meter: up to now), or a third
    # day balanced (a daily meter): a day or a weekend away ends
    lasts = _trickle_since(step, rows) | (w.nd >= 3)
    full = collapse & (w.zx >= 2) & (w.nd >= 2) & lasts
    return full & fits


def _trickle_since(step: DayStep, rows: np.ndarray) -> np.ndarray:
    """The household's meter kept to a trickle through the hours stored after the day (at least half a day of them)."""
    d, p = step.d, step.d.params
    nxt = (step.h0 + step.n_h + np.arange(R - step.n_h)) % R
    code = d.code[step.hh[rows]][:, nxt]
    heard = code <= TOP_CODE
    litres = np.where(heard, LITRES_OF_CODE[code], 0.0)
    usual = d.rate[step.hh[rows]].astype(np.float64).mean(axis=1)[:, None] * heard
    return (heard.sum(axis=1) >= 12) & (litres.sum(axis=1) <= p.collapse_share * usual.sum(axis=1))


def _aligned(step: DayStep, rows: np.ndarray, w: Window, pre: np.ndarray) -> np.ndarray:
    """The drop began with the rise: the household used as usual the day before its building's episode (not `pre`),
    and its drop already explains the episode's first day (within the noise)."""
    d, p = step.d, step.d.params
    hh = step.hh[rows]
    e = d.ep_sum[w.b].astype(np.float64)
    dev = d.dev[hh].astype(np.float64)
    first_ok = d.w_x1[hh].astype(np.float64) >= p.min_rise_share * e[:, E_Y1] - 2 * np.sqrt(dev ** 2 + e[:, E_VY1])
    return ~pre & first_ok & (d.phase[hh] == NORMAL)

"""What the day teaches: each household's usual use (by quarter of the day, weekday and weekend) and its day-to-day
swing, learned on its ordinary days; the building's normal loss (a share of the water used plus a steady flow) and
its noise, learned outside episodes of rising unmetered use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import row_median
from .day import CHI2_MEDIAN, NBIN, NORMAL, OPEN, centred

if TYPE_CHECKING:
    from .day import DayStep


HOME_L_DAY = 20.0  # litres: a day someone is home uses at least this much (about one person's basic needs in a day)


def follow_drops(step: DayStep) -> None:
    """A CUSUM of each household's daily drop (in its day-to-day swing), its slack half the smallest bypass looked
    for; low_days counts the days it has been above zero."""
    d, p, hh = step.d, step.d.params, step.hh
    ok = (d.phase[hh] == NORMAL) & ~step.new & (step.k >= step.n_h // 2) & ~step.other
    sd = np.sqrt(step.vXd)
    slack = 0.5 * p.min_drop_share * (step.pe * step.heard).sum(axis=1) / sd
    old = d.hc[hh].astype(np.float64)
    hc = np.where(ok, np.maximum(0.0, old + step.Xd / sd - slack), old)
    d.hc[hh] = np.minimum(hc, 60000.0)
    run = ok & (hc > 0)
    d.low_days[hh] = np.where(run, np.minimum(d.low_days[hh].astype(np.int64) + 1, 255), np.where(ok, 0, d.low_days[hh]))


def households(step: DayStep) -> None:
    """The baseline learns on a household's ordinary days: not while its drop is followed beside a rise of its
    building's unmetered use, nor on a day far off its usual (a trip away), nor, before it has a baseline, on a day no
    one was home. A drop followed half the baseline memory with no rise beside it is a move (out, or part of it): the
    baseline is re-learned at once."""
    d, p, hh = step.d, step.d.params, step.hh
    full = step.k >= 0.8 * step.n_h
    n_learn = d.n_learn[hh].astype(np.float64)
    young = n_learn < p.min_baseline_days
    in_ep = d.ep_start[step.b][step.pos] >= 0
    running = d.low_days[hh] > 0
    moved = running & ~in_ep & (d.low_days[hh] >= p.baseline_days / 2) & full & (d.phase[hh] == NORMAL)
    ordinary = np.abs(step.Xd) < 4 * np.sqrt(step.vXd)
    mz = step.mz  # (0 where not heard)
    total = mz.sum(axis=1) * step.n_h / np.maximum(step.k, 1)  # the day's use, scaled up where hours are not heard
    # a household's first days teach its baseline only when someone was home: a baseline learned on days away would be
    # next to nothing, and every later day "far off" it, never learned (its drop could never show, and, silent, it
    # would be guessed at nothing)
    home = (total >= HOME_L_DAY) | ~young
    lrn = full & (d.phase[hh] == NORMAL) & ~step.other & home & ((~(running & in_ep) & ordinary) | young) | moved
    a = np.where(n_learn < p.baseline_days, 1.0 / (n_learn + 1), 1.0 / p.baseline_days)
    a = np.where(moved, 0.5, a)
    heard = step.heard
    rate = d.rate[hh].astype(np.float64)
    n_bin = heard.astype(np.float32) @ step.onehot
    s_bin = mz @ step.onehot
    per_bin = np.where(n_bin > 0, s_bin / np.maximum(n_bin, 1), rate)
    usual = rate.sum(axis=1) * 24 / NBIN
    if step.weekend:
        f = np.clip(total / np.maximum(usual, 1.0), 0.0, 3.9) * 64
        upd = lrn & (n_learn >= 1)
        wkf = d.wkf[hh].astype(np.float64)
        d.wkf[hh[upd]] = np.rint(wkf[upd] + (f[upd] - wkf[upd]) * np.minimum(0.3, 3 * a[upd])).astype(np.uint8)
    else:
        d.rate[hh[lrn]] = rate[lrn] + (per_bin[lrn] - rate[lrn]) * a[lrn, None]
    exp_total = step.own.sum(axis=1)
    dev2 = d.dev[hh].astype(np.float64) ** 2
    # a day far off is not a swing (a trip away is not): each day's square at most four times the swing's
    sq = np.minimum((total - exp_total) ** 2, 4 * np.maximum(dev2, (0.3 * exp_total) ** 2))
    old = lrn & (n_learn >= 1)
    dev2 = np.where(old, dev2 + (sq - dev2) * a, dev2)
    d.dev[hh] = np.sqrt(np.maximum(dev2, (0.1 * usual) ** 2 + 25.0))
    d.n_learn[hh[lrn]] = np.minimum(n_learn[lrn] + 1, 255)
    d.hc[hh[moved]] = 0
    d.low_days[hh[moved]] = 0


def buildings(step: DayStep, stale: np.ndarray) -> None:
    """The building's loss model learns on days outside an episode, or once an episode was left unexplained, each
    day in proportion to how well its hours' balance was known; its noise, from the same days."""
    d, p, b = step.d, step.d.params, step.b
    mk = step.mk
    n_known = mk.sum(axis=1)
    lb = (n_known >= 0.8 * step.n_h) & ((d.ep_start[b] < 0) | stale) & ~step.fault  # (not a day of a fault)
    n_gap = d.n_gap[b].astype(np.float64)
    a = np.where(n_gap < p.baseline_days, 1.0 / (n_gap + 1), 1.0 / p.baseline_days)
    nh = np.maximum(n_known, 1)
    w = np.where(mk, 1.0, 0.0)
    sig2 = np.maximum(d.sig_h2[b].astype(np.float64), 4.0)
    # each hour weighs by how well its balance is known (a guessed household's bursts blur it), and the day teaches
    # the loss model in proportion: a day most of whose households were guessed (a cell outage balanced before its
    # backlog came) teaches the guesses' error, not the building's loss
    wq = np.where(n_gap[:, None] < 1, w, np.where(mk, sig2[:, None] / (sig2[:, None] + step.Uh), 0.0))
    al = a * wq.sum(axis=1) / nh
    S = np.where(mk, step.S, 0.0)
    G = np.where(mk, step.G, 0.0)
    stats = np.stack([S.sum(1) / nh, G.sum(1) / nh, (S * S).sum(1) / nh, (S * G).sum(1) / nh], axis=1)
    bs = d.b_loss[b].astype(np.float64)
    d.b_loss[b[lb]] = bs[lb] + (stats[lb] - bs[lb]) * al[lb, None]
    lam, steady = d.loss_model(b)
    res = np.where(mk, step.G - lam[:, None] * step.S - steady[:, None] / 24, 0.0)
    resc = centred(res, w)
    per_bin = np.stack([(resc * w)[:, step.bins == q].sum(1) / np.maximum(w[:, step.bins == q].sum(1), 1)
                        for q in range(NBIN)], axis=1)
    prof = d.rprof[b].astype(np.float64)
    d.rprof[b[lb]] = prof[lb] + (per_bin[lb] - prof[lb]) * al[lb, None]
    res = res - d.rprof[b].astype(np.float64)[:, step.bins] * mk
    # the hour's noise from the hours the fits use: not an hour some household's meter did not read (its use spread
    # over a gap): the hourly fit leaves it out, and its spreading error (an hour's use in the next) would set the
    # noise, and with it every fit's standard error in the building, for weeks
    # (and from the day's median square, against a chi-square's median, not its mean: one bad hour is not the
    # building's noise)
    wn = np.where(step.spread, 0.0, wq)
    rc = centred(res, wn)
    nq = wn.sum(axis=1)
    rh = np.fmax(row_median(np.where(wn > 0, wn * rc * rc, np.nan)) / CHI2_MEDIAN, 1.0)  # (1 l²: a day with none)
    rd = (res.sum(1) * step.n_h / nh) ** 2
    first = lb & (n_gap < 1)
    later = lb & (n_gap >= 1) & (nq >= 0.5 * step.n_h)
    d.sig_h2[b[first]] = np.where(nq[first] >= 0.5 * step.n_h, rh[first], 1e4)
    d.sig_d2[b[first]] = 1e4
    old_h = d.sig_h2[b].astype(np.float64)
    old_d = d.sig_d2[b].astype(np.float64)
    # (averaged as logarithms: a scale learned over days, which the first days' misfit, before the loss model and the
    # households' baselines are learned, does not hold up for weeks)
    log_h = np.log(np.maximum(old_h, 1.0))
    d.sig_h2[b[later]] = np.exp(log_h[later] + (np.log(rh[later]) - log_h[later]) * a[later])
    d.sig_d2[b[later]] = old_d[later] + (np.minimum(rd[later], 9 * old_d[later] + 1e4) - old_d[later]) * a[later]
    d.n_gap[b[lb]] = np.minimum(n_gap[lb] + 1, 65535)


def open_households(step: DayStep) -> np.ndarray:
    """Named households whose meter registers its usual use again, day after day for half `baseline_days` (a
    week): the bypass is gone. (Two good days are a household's ordinary swing, not a pipe taken out.) Returns
    their rows."""
    d, hh = step.d, step.hh
    is_open = (d.phase[hh] == OPEN) & (step.k >= step.n_h // 2) & ~step.other
    usual = (step.pe * step.heard).sum(axis=1)
    back = is_open & (step.Xd <= 0.5 * d.open_share[hh].astype(np.float64) * usual)
    days = np.where(back, d.low_days[hh].astype(np.int64) + 1, 0)
    d.low_days[hh[is_open]] = days[is_open]
    return np.flatnonzero(is_open & (days >= max(2.0, d.params.baseline_days / 2)))

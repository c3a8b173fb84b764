"""One local day of a set of buildings, balanced: each household's state that day (heard, silent, in another
incident, new), the building's unmetered use against its normal loss, the episode of rising unmetered use it may be
in, and each household's evidence of the day added to its window (see README.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import HOUR_NS
from .hours import M3_OF_CODE, REVERSED, TOP_CODE

if TYPE_CHECKING:
    from .detector import BypassDetector

R = 48  # hours held per meter: a day, and the day after it while daily meters upload (a ring)
NBIN = 4  # a household's usual use is held by quarter of the day (six hours)
NORMAL, OPEN = 0, 1  # phase of a household (OPEN: named; its unmetered use counted as a share of its usual use)
MAX_HOUR_SHARE = 0.5  # of a day's hourly fit, the most one metered hour may hold (one hour is a coincidence)
CHI2_MEDIAN = 0.455  # the median of a chi-square of one degree of freedom (a squared standard normal)
CUSUM_SLACK = 0.5  # standard errors a day's rise must exceed to add to an episode (the CUSUM for a 1-sd shift)
LITRES_OF_CODE = (M3_OF_CODE * 1000.0).astype(np.float32)  # (the day's hourly arrays are float32)
F32 = np.float32
# window sums per household: the drop, and the hourly regression sums (metered m, usual p, building's usual P, rise r)
W_X, W_MR, W_MM, W_MP, W_PR, W_PP = range(6)
W_SCALE = np.array([1.0, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])  # held as float16: litres, and litres^2 / 1000
# w_n: days in the window (capped), a flag: the household's meter fell to a trickle in the hour its building's
# unmetered use rose by its use (ONSET), a flag: the household's hourly pattern passed on its last judged day (SEEN),
# and a flag: the household's drop predates its episode (PRE_DROP)
DAYS, ONSET, SEEN, PRE_DROP = 0x1F, 0x20, 0x40, 0x80
B_INCIDENT = np.uint8(1)  # b_flags: a building_unmetered_use incident is open (its rise not gone yet)
B_REPORTED = np.uint8(2)  # ... raised in the building's current episode
B_RECAND = np.uint8(4)  # ... and sent again once, naming a meter left with nothing that qualified after it
# episode sums per building: the rise and its variance, the building's own regression sums, the first day's rise
E_Y, E_VY, E_PR, E_PP, E_RR, E_NH, E_Y1, E_VY1 = range(8)


def sum_rows(pos: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Rows of x summed by group (pos: sorted group of each row), n groups."""
    out = np.zeros((n, x.shape[1]), dtype=x.dtype)
    if pos.size:
        first = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        out[pos[first]] = np.add.reduceat(x, first, axis=0)
    return out


def centred(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x less its w-weighted mean, row by row."""
    sw = np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return x - (x * w).sum(axis=1, keepdims=True) / sw


def metered_sums(mc: np.ndarray, rc: np.ndarray, Pc: np.ndarray, w: np.ndarray) -> tuple:
    """A household's hourly regression sums from its centred metered use mc, its building's rise rc and use Pc
    (W_MR, W_MM, W_MP), and each metered hour's weight in the fit."""
    wm = w * mc
    info = wm * mc
    return (wm * rc).sum(1), info.sum(1), (wm * Pc).sum(1), info


def building_sums(P: np.ndarray, r: np.ndarray, w: np.ndarray) -> tuple:
    """A building's own regression sums of its rise r on its use P over the hours weighted w (E_PR, E_PP, E_RR), and
    its weighted hours less one (E_NH)."""
    Pc, rc = centred(P, w), centred(r, w)
    return (w * Pc * rc).sum(1), (w * Pc * Pc).sum(1), (w * rc * rc).sum(1), np.maximum((w > 0).sum(axis=1) - 1, 0)


def fit_z(beta: np.ndarray, se: np.ndarray) -> np.ndarray:
    """A fit's beta in its standard errors; -inf where the hours hold no fit."""
    return np.where(np.isfinite(se), beta / np.where(np.isfinite(se), se, 1.0), -np.inf)


def seg_max(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """The largest of values in each of n groups (-inf for an empty one)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, groups, values)
    return out


def beats(score: np.ndarray, who: np.ndarray, pos: np.ndarray, n: int, margin: float) -> np.ndarray:
    """Rows of `who` whose score beats every other row of their building (pos) by `margin` (-inf: not a rival)."""
    best = seg_max(score, pos, n)
    top = who & (score == best[pos]) & np.isfinite(score)
    second = seg_max(np.where(top, -np.inf, score), pos, n)
    alone = ~np.isfinite(second[pos])
    return top & (alone | (score - np.where(alone, 0.0, second[pos]) >= margin))


def hourly_fit(w: np.ndarray, e: np.ndarray, sig2: np.ndarray, phi2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The building's rise regressed on a household's metered hours, its building's use as a control, from the
    household's sums w (W_*, litres^2) and its building's e (E_*) over the same days: beta (unmetered litres per
    metered litre) and its standard error (the building's hourly noise sig2, or the fit's own residual if more,
    times the building's calibration phi2; inf where the hours hold no fit)."""
    det_a = w[:, W_MM] * e[:, E_PP] - w[:, W_MP] ** 2
    safe = np.maximum(det_a, 1e-9)
    beta = (w[:, W_MR] * e[:, E_PP] - e[:, E_PR] * w[:, W_MP]) / safe
    gam = (e[:, E_PR] * w[:, W_MM] - w[:, W_MR] * w[:, W_MP]) / safe
    rss = np.maximum(e[:, E_RR] - beta * w[:, W_MR] - gam * e[:, E_PR], 0.0)
    sig = np.sqrt(np.maximum(sig2, rss / np.maximum(np.maximum(e[:, E_NH], 3) - 2, 1)))
    se = sig * np.sqrt(e[:, E_PP] / safe) * np.sqrt(np.maximum(phi2, 1.0))
    return beta, np.where(det_a > 1e-9, se, np.inf)


def _step(r: np.ndarray, v: np.ndarray, known: np.ndarray, hours: np.ndarray, before: np.ndarray) -> tuple:
    """The building's unmetered use r over `hours`, less what the `before` hours ran at per known hour, and its
    variance (v an hour's): the step up at the hour a meter fell."""
    scale = (known & hours).sum(axis=1) / np.maximum((known & before).sum(axis=1), 1)
    return ((r * hours).sum(axis=1) - scale * (r * before).sum(axis=1),
            (v * hours).sum(axis=1) + scale ** 2 * (v * before).sum(axis=1))


class DayStep:
    """The day `day` of `buildings` (all at that day), as arrays over their households (rows) and the day's hours."""

    def __init__(self, det: BypassDetector, buildings: np.ndarray, day: int):
        self.d, self.day, self.b, self.nb = det, day, buildings, buildings.size
        cnt = det.b_count[buildings]
        rows = np.repeat(det.b_first[buildings] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
        self.hh = det.hh_sorted[rows]  # households of the buildings, grouped by building
        self.pos = np.repeat(np.arange(buildings.size), cnt)  # each household's building, as a row of self.b
        self.onset_before = (det.w_n[self.hh] & ONSET) != 0  # (ONSET as the days before left it)
        cal = det.calendar
        self.h0 = cal.day_start_ns(day) // HOUR_NS
        self.n_h = int(cal.day_start_ns(day + 1) // HOUR_NS - self.h0)  # 23 to 25 hours
        self.slots = (self.h0 + np.arange(self.n_h)) % R
        self.bins = np.minimum(np.arange(self.n_h) * NBIN // 24, NBIN - 1)
        self.onehot = (self.bins[:, None] == np.arange(NBIN)[None, :]).astype(F32)  # hour -> its quarter
        self.weekend = cal.weekday(day) >= 5
        self.night = self.bins == 0  # the night's hours: the day's first quarter
        self.holding = np.zeros(self.nb, dtype=bool)  # buildings (rows) whose episode a collapsed meter holds open
        self.left_rows = np.zeros(0, dtype=np.int64)  # households (rows) left with nothing, not named (judge)

    def ring(self, ring: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The day's hours of a ring (rows x R), in hour order."""
        a = int(self.slots[0])
        if a + self.n_h <= R:
            return ring[rows, a:a + self.n_h]
        return np.concatenate([ring[rows, a:], ring[rows, :a + self.n_h - R]], axis=1)

    def inputs(self, other_meters: np.ndarray) -> None:
        """What is known of the day: each household's hours (heard, or not), the master's, and the gap (master less
        the heard households, exact litres)."""
        d, hh = self.d, self.hh
        code = self.ring(d.code, hh)
        # a register that ran backwards today (installed the wrong way round) still measured the water: its hours
        # stand in the gap, but the meter is in another incident, not judged. So does a meter on the board whose
        # forward register counted today (a backflow now and then, a register set back once, a shielded meter
        # heard for a while): it measured the water it counted. One whose forward register stood still all day
        # (turned round: its household's water ran onto its reverse register) measured nothing useful: its hours
        # are taken back out and its use is a guess
        backwards = (code == REVERSED).any(axis=1)
        stored = code <= TOP_CODE  # (its litres are in the gap already)
        litres = LITRES_OF_CODE[code]  # (0 for a mark: not stored)
        board = other_meters[hh] & ~backwards
        counted = board & (litres.sum(axis=1) > d.params.reverse_noise_m3 * 1000)
        on_board = board & ~counted
        self.other = board | backwards
        self.heard = stored & ~self.other[:, None]
        self.mz = np.where(self.heard, litres, F32(0.0))
        self.unmeasured = np.where(on_board[:, None], litres, F32(0.0)) if on_board.any() else None
        # hours whose use is in the gap: heard, measured running backwards, or counted by a meter on the board
        self.in_gap = self.heard | (backwards[:, None] & (stored | (code == REVERSED))) | (counted[:, None] & stored)
        self.k = self.heard.sum(axis=1)
        bits = np.left_shift(np.uint64(1), self.slots.astype(np.uint64))
        known = (d.m_known[self.b][:, None] & bits[None, :]) != 0
        self.mk = known & ((d.taint[self.b][:, None] & bits[None, :]) == 0)
        self.spread = (d.spread[self.b][:, None] & bits[None, :]) != 0
        self.gap = self.ring(d.gap_h, self.b)

    def expected(self) -> None:
        """Each household's usual use in each hour of the day (litres); a household with no baseline yet counts as
        its building's average household, uncertain alike."""
        d, hh, p = self.d, self.hh, self.d.params
        own = d.rate[hh].astype(F32)[:, self.bins]
        if self.weekend:
            own = own * (d.wkf[hh].astype(F32) / F32(64.0))[:, None]
        self.new = d.n_learn[hh] < p.min_baseline_days
        dev2 = d.dev[hh].astype(np.float64) ** 2
        self.own = own
        if not self.new.any():  # (the usual case once the households have learned)
            self.pe, self.dev2 = own, dev2
            self.hv = F32(2.0) * own ** 2 + F32(1.0)
            return
        known = (~self.new).astype(F32)
        cnt = np.maximum(np.bincount(self.pos, weights=known, minlength=self.nb), 1.0)
        avg = sum_rows(self.pos, own * known[:, None], self.nb) / cnt[:, None].astype(F32)
        avg_dev2 = np.bincount(self.pos, weights=dev2 * known, minlength=self.nb) / cnt
        self.pe = np.where(self.new[:, None], avg[self.pos], own)
        self.dev2 = np.where(self.new, np.maximum(avg_dev2[self.pos], 1e4), dev2)
        # an hour's use is bursty (a shower, a washing machine): its variance about twice its usual squared
        self.hv = F32(2.0) * self.pe ** 2 + F32(1.0)

    def balance(self) -> None:
        """The building's unmetered use each hour above its normal loss (r, litres), and how uncertain it is: a
        household not heard counts at its usual use, its swing added to the uncertainty (never to a neighbour)."""
        d, pos, nb = self.d, self.pos, self.nb
        guessed = ~self.in_gap
        self.S = sum_rows(pos, np.where(self.heard, self.mz, self.pe), nb)
        guessed_pe = np.where(guessed, self.pe, F32(0.0))  # (the guessed hours' use and bursts, by household)
        guessed_hv = np.where(guessed, self.hv, F32(0.0))
        taken_out = -guessed_pe
        if self.unmeasured is not None:
            taken_out += self.unmeasured
        # an open bypass's unmetered use is its usual use times its share: taken out of the gap as a guessed
        # household's use is, so that the loss model, which learns on the gap, never learns the pipe's water as the
        # building's loss while the balance takes it out as the pipe's (counted twice, the balance fell by a pipe's
        # flow within two weeks, and a second pipe in the building stayed under it)
        share = d.open_share[self.hh].astype(F32) * (d.phase[self.hh] == OPEN)
        # ... spread over its heard hours as its meter registered them: a pipe beside a meter takes a fixed share of
        # each draw, so its water runs in the hours the meter counts (by quarter of the day, its household's bursts
        # stayed in the balance: a second, smaller pipe in the building was lost in them). The day's total stays its
        # usual use times its share: the share, learned on a few days, is known to about its swing, and scaled up
        # by the metered litres (share / (1 - share) a litre) a share a little off left that many times more in the
        # balance. Not a meter left with a trickle (under collapse_share of its water, or of what it registers), nor
        # an hour not heard: its usual use times its share there
        o = np.flatnonzero(share > 0)  # (the open bypasses of the day's buildings: few)
        if o.size:
            s_o, heard, mz = share[o], self.heard[o], self.mz[o]
            guess = s_o[:, None] * self.pe[o]
            cs = F32(d.params.collapse_share)
            metered = mz.sum(axis=1)
            usual_metered = ((F32(1.0) - s_o)[:, None] * self.pe[o] * heard).sum(axis=1)
            spread = (F32(1.0) - s_o >= cs) & (metered > 0) & (metered >= cs * usual_metered)
            per_litre = np.where(spread, (guess * heard).sum(axis=1) / np.maximum(metered, F32(1e-6)), F32(0.0))
            taken_out[o] -= np.where(spread[:, None] & heard, per_litre[:, None] * mz, guess)
        self.G = self.gap + sum_rows(pos, taken_out, nb)
        self.Uh = sum_rows(pos, guessed_hv, nb)
        # a household guessed for part of the day adds to the day's uncertainty its day-to-day swing in the share
        # of its usual use guessed (as its drop's is its swing in the share heard), or what its guessed hours' bursts
        # add up to, if more (two estimates of one variance: the swing is learned robustly, and a big household's
        # heavy days escape it). An open bypass's unmetered use is its usual use times its share: a guess, as
        # uncertain as its days
        usual_day = self.pe.sum(axis=1)
        guessed_share = np.where(usual_day > 0, guessed_pe.sum(axis=1) / np.maximum(usual_day, F32(1e-6)),
                                 guessed.mean(axis=1))  # (no household learned yet: by the hours)
        bursts = guessed_hv.sum(axis=1)
        self.Ud = np.bincount(pos, weights=np.maximum(guessed_share * self.dev2, bursts) + share ** 2 * self.dev2,
                              minlength=nb)
        lam, steady = d.loss_model(self.b)
        prof = d.rprof[self.b][:, self.bins]
        lam, steady = lam.astype(F32)[:, None], (steady / 24).astype(F32)[:, None]
        self.r = np.where(self.mk, self.G - lam * self.S - steady - prof, F32(0.0))
        n_known = self.mk.sum(axis=1)
        scale = self.n_h / np.maximum(n_known, 1)
        self.Yd = self.r.sum(axis=1) * scale
        self.vYd = d.sig_d2[self.b].astype(np.float64) + self.Ud
        # water is conserved: the households cannot use more than the master delivered, beyond its under-registration
        # (max_loss_share) and the day's noise. A day that shows it is a fault, not a balance (a register set back in
        # an hour, read as water run backwards): it teaches the loss model nothing and judges no one
        gap_d = np.where(self.mk, self.G, F32(0.0)).sum(axis=1) * scale
        use_d = np.where(self.mk, self.S, F32(0.0)).sum(axis=1) * scale
        self.fault = gap_d < -d.params.max_loss_share * use_d - d.params.z_min * np.sqrt(self.vYd)
        self.usable = (n_known >= 0.8 * self.n_h) & (d.n_gap[self.b] >= d.params.min_baseline_days) & ~self.fault
        sig2 = np.maximum(d.sig_h2[self.b], F32(4.0))
        # each hour's variance of the balance: the building's hourly noise and its guessed households' bursts; each
        # hour weighs by how well the balance is known then (a silent neighbour's guess adds noise)
        self.vh = sig2[:, None] + self.Uh
        self.wb = np.where(self.mk, sig2[:, None] / self.vh, F32(0.0))

    def episodes(self) -> np.ndarray:
        """A building's episode of rising unmetered use: a CUSUM of the day's rise (in its standard errors) from the
        day it leaves zero; a jump well above the episode's rise so far starts it again (a new onset). Returns the
        buildings (rows) whose episode started today."""
        d, b = self.d, self.b
        zY = self.Yd / np.sqrt(np.maximum(self.vYd, 1e-9))
        old = d.cus_b[b].astype(np.float64)
        cus = np.where(self.usable, np.maximum(0.0, old + zY - CUSUM_SLACK), old)
        on = d.ep_start[b] >= 0
        mean = d.ep_sum[b, E_Y] / np.maximum(d.ep_n[b], 1)
        jump = on & self.usable & (zY >= d.params.z_min) & \
            (self.Yd >= 2 * np.maximum(mean, 0) + 2 * np.sqrt(np.maximum(self.vYd, 1e-9)))
        start = self.usable & (((old <= 0) & (cus > 0)) | jump)
        end = self.usable & (cus <= 0)
        d.cus_b[b] = cus
        d.ep_start[b[start]] = self.day
        d.ep_start[b[end]] = -1
        fresh = start | end
        self.jumped = jump & start  # (a new onset on top of a rise under way: that rise goes on beneath it)
        d.ep_sum[b[fresh]] = 0.0
        d.ep_n[b[fresh]] = 0
        d.ep_night[b[fresh]] = 0
        d.b_flags[b[fresh]] &= ~(B_REPORTED | B_RECAND)  # its building incident not raised yet (nor sent again)
        return start | end

    def evidence(self, fresh: np.ndarray) -> None:
        """Each household's day: its drop against its usual use (X, litres, over its heard hours) and the sums of
        the hourly regression of the rise on its metered use; added to its window while its building is in an
        episode (a window starts afresh with its building's episode)."""
        d, hh, pos = self.d, self.hh, self.pos
        self.Xd = ((self.pe - self.mz) * self.heard).sum(axis=1)
        self.vXd = np.maximum(self.k / self.n_h * self.dev2, 1.0)
        # a meter left with a trickle today: at most collapse_share of its usual use over its heard hours
        self.trickle = self.mz.sum(axis=1) <= d.params.collapse_share * (self.pe * self.heard).sum(axis=1)
        self.judged = (d.phase[hh] == NORMAL) & ~self.new & (self.k >= self.n_h // 2) & self.usable[pos] & ~self.other
        # the hourly sums only where a window is open (a building in an episode): the rest is idle
        self.act = d.ep_start[self.b][pos] >= 0
        rows = np.flatnonzero(self.act)
        p_rows = pos[rows]
        # an hour some household's meter did not read (its use spread over a gap) weighs in the day, not in the fit
        wP = np.where(self.spread, F32(0.0), self.wb)
        w = np.where(self.heard[rows], wP[p_rows], F32(0.0))
        P = self.S  # the building's use by hour (metered, and guessed where not heard): the daily shape, hour by hour
        r = self.r
        mc, pc = centred(self.mz[rows], w), centred(self.pe[rows], w)
        rc, Pc = centred(r[p_rows], w), centred(P[p_rows], w)
        wp = w * pc
        mr, mm, mp, info = metered_sums(mc, rc, Pc, w)
        self.day_sums = np.zeros((hh.size, 6))
        self.day_sums[:, 0] = self.Xd
        self.day_sums[rows, 1:] = np.stack([mr, mm, mp, (wp * rc).sum(1), (wp * pc).sum(1)], axis=1)
        # how much of the day's fit its biggest metered hour holds (1: one hour is all of it, a coincidence of one
        # hour; a household's water comes in many hours, and a pipe takes its share of each)
        self.top_hour = np.ones(hh.size)
        self.top_hour[rows] = info.max(axis=1) / np.maximum(self.day_sums[rows, W_MM], 1e-9)
        self.b_sums = np.stack([self.Yd, self.vYd, *building_sums(P, r, wP), self.Yd, self.vYd], axis=1)
        self._without_top_hour(rows, w, wP[p_rows], np.argmax(info, axis=1))
        self._calibrate()
        self._add_to_windows(fresh)
        self._onsets()
        # the households whose use had to be guessed today, for an hour or more (for the evidence: the uncertain
        # neighbours; a meter in another incident that measured its water all day was not guessed)
        unsure = ~self.in_gap.all(axis=1) | self.new
        d.unc_day[hh[unsure]] = self.day % 256

    def _without_top_hour(self, rows: np.ndarray, w: np.ndarray, wb: np.ndarray, top: np.ndarray) -> None:
        """The day's pattern z of each household (rows) refitted on its hours but its biggest metered one (`top`: its
        weight w in the household's fit and wb in its building's sums set to 0, every sum centred again): a pattern
        that rests on one hour is a coincidence, a household's water comes in many hours."""
        d = self.d
        self.zb_rest = np.full(self.hh.size, -np.inf)
        if rows.size == 0:
            return
        at, q = np.arange(rows.size), self.pos[rows]
        w = w.copy()
        w[at, top] = 0.0
        wb[at, top] = 0.0  # (wb: the caller's copy)
        P, r = self.S[q], self.r[q]
        mc, rc, Pc = centred(self.mz[rows], w), centred(r, w), centred(P, w)
        ws = np.zeros((rows.size, 6))
        ws[:, W_MR], ws[:, W_MM], ws[:, W_MP], _ = metered_sums(mc, rc, Pc, w)
        e = np.zeros((rows.size, 8))
        e[:, E_PR], e[:, E_PP], e[:, E_RR], e[:, E_NH] = building_sums(P, r, wb)
        b = self.b[q]
        beta, se = hourly_fit(ws, e, np.maximum(d.sig_h2[b].astype(np.float64), 4.0), d.phi2[b].astype(np.float64))
        self.zb_rest[rows] = fit_z(beta, se)

    def _add_to_windows(self, fresh: np.ndarray) -> None:
        d, hh, pos, b = self.d, self.hh, self.pos, self.b
        # a household whose drop began with its building's rise still began with it when a new onset restarts the
        # episode on top of that rise (the rise it explains goes on beneath the new one)
        aligned = ((d.w_n[hh] & DAYS) > 0) & ((d.w_n[hh] & PRE_DROP) == 0) & self.jumped[pos]
        restart = fresh[pos] & (d.phase[hh] == NORMAL)  # (an open bypass keeps its first day in w_first)
        # a household whose own drop begins today, inside its building's episode, starts its window today: the
        # days before its drop would dilute the hourly fit with hours that carry no bypass
        onset = self.judged & (d.hc[hh] == 0) & (self.Xd >= 2 * np.sqrt(self.vXd)) & ((d.w_n[hh] & DAYS) > 0)
        pipe = self._pipe_today()
        restart |= (onset | pipe) & (d.phase[hh] == NORMAL)
        d.w_sum[hh[restart]] = 0.0
        d.w_n[hh[restart]] &= SEEN | ONSET  # (what the last judged days showed outlives the window)
        d.w_first[hh[restart]] = 0xFFFF
        in_ep = d.ep_start[b][pos] >= 0
        add = self.judged & in_ep
        n = d.w_n[hh].astype(np.int64)
        first = add & ((n & DAYS) == 0)
        d.w_x1[hh[first]] = self.Xd[first]
        # its drop was followed already before the rise began: a drop that predates the rise is not its cause
        pre = first & (d.hc[hh].astype(np.float64) > 2.0) & ~aligned & ~pipe
        n = np.where(pre, n | PRE_DROP, n)
        summed = d.w_sum[hh[add]].astype(np.float64) + self.day_sums[add] * W_SCALE
        d.w_sum[hh[add]] = np.clip(summed, -65000, 65000)
        d.w_n[hh[add]] = np.minimum((n[add] & DAYS) + 1, DAYS) | (n[add] & (PRE_DROP | SEEN | ONSET))
        dropped = add & (self.Xd >= 2 * np.sqrt(self.vXd)) & (d.w_first[hh] == 0xFFFF)
        d.w_first[hh[dropped]] = self.day % 65536
        ub = self.usable & (d.ep_start[b] >= 0)
        first_b = ub & (d.ep_n[b] == 0)
        sums = self.b_sums.copy()
        sums[~first_b, E_Y1:] = 0.0
        d.ep_sum[b[ub]] += sums[ub]
        # the episode's nights (the day's first quarter): what went unmetered while households sleep, scaled to the
        # whole night where some hours are not known (a night of fewer than half known is not counted); from the
        # episode's second day (its first night came before the rise that began that day)
        night = self.night
        k = (self.mk[:, night]).sum(axis=1)
        counted = ub & (k >= 3) & ~first_b
        r_n = np.where(self.mk[:, night], self.r[:, night], 0.0).sum(axis=1) * night.sum() / np.maximum(k, 1)
        d.ep_night[b[counted]] += np.stack([r_n, np.ones_like(r_n)], axis=1)[counted].astype(np.float16)
        d.ep_n[b[ub]] = np.minimum(d.ep_n[b[ub]].astype(np.int64) + 1, 255)

    def _pipe_today(self) -> np.ndarray:
        """Households whose hours began to carry the rise today (a pipe went in; its drop may not stand out of a
        bursty household's day yet): today's fit above its window's so far by z_min standard errors of their
        difference, while the window's own fit shows no pattern (under z_shape); its meter lost water today (a
        standard error of its swing: a pipe takes it off the meter); and the day's rise follows its hours z_shape
        more than any other household's (a day the whole building's hours follow, a spike of a guessed neighbour's
        use, starts no one's: a fresh window would stand out of its neighbours' long ones for nothing), on more
        than one hour (no metered hour holds half of the day's fit, as for a strong day). Their hours
        before the pipe outweigh the window's fit (a meter registering a share f of its water keeps f^2 of its
        hours' weight), so the window starts today. (A meter left with a trickle has no hours left to fit.)"""
        d, hh, pos = self.d, self.hh, self.pos
        out = np.zeros(hh.size, dtype=bool)
        every = np.flatnonzero(self.judged & self.act)
        if every.size == 0:
            return out
        b = self.b[pos[every]]
        sig2 = np.maximum(d.sig_h2[b].astype(np.float64), 4.0)
        phi2 = d.phi2[b].astype(np.float64)
        b_1, se_1 = hourly_fit(self.day_sums[every], self.b_sums[pos[every]], sig2, phi2)
        b_w, se_w = hourly_fit(d.w_sum[hh[every]].astype(np.float64) / W_SCALE, d.ep_sum[b].astype(np.float64),
                               sig2, phi2)
        z_1 = np.full(hh.size, -np.inf)
        z_1[every] = fit_z(b_1, se_1)
        z_shape = d.params.z_shape
        own = (beats(z_1, np.isfinite(z_1), pos, self.nb, z_shape) & (z_1 >= z_shape))[every]
        lost = (self.Xd >= np.sqrt(self.vXd))[every] & ~self.trickle[every] & ((d.w_n[hh[every]] & DAYS) > 0)
        lost &= self.top_hour[every] <= MAX_HOUR_SHARE  # (as for a strong day)
        with np.errstate(invalid="ignore"):
            rose = (b_w < d.params.z_shape * se_w) & (b_1 - b_w >= d.params.z_min * np.sqrt(se_1 ** 2 + se_w ** 2))
        out[every] = (b_1 > 0) & own & lost & rose
        return out

    def _onsets(self) -> None:
        """ONSET for a household whose meter fell to a trickle at an hour c while its building's unmetered use rose
        from that hour by about the use its meter lost, and not before it: the hour a pipe went in. (A family that
        leaves, beside a neighbour's bypass or a leak, does so at another hour.) The hour is within the day, or the
        night before it: a meter that registered its usual use the day before and a trickle all this day fell in the
        night, when its household and a pipe carry next to nothing, and the rise must begin with its day's first
        hours of use. Cleared on a day its meter registers more than a trickle (with no new onset in it)."""
        d, hh, pos = self.d, self.hh, self.pos
        whole = self.judged & (self.k == self.n_h)
        d.w_n[hh[self.judged & ~self.trickle]] &= np.uint8(~ONSET & 0xFF)
        # a meter that fell with the rise, on the nights after: the rise in them is its household's (next to
        # nothing), or a leak's that began with it
        kept = np.flatnonzero(whole & self.trickle & ((d.w_n[hh] & ONSET) != 0))
        if kept.size:
            d.w_n[hh[kept[~self._quiet_night(kept)]]] &= np.uint8(~ONSET & 0xFF)
        # (a rise already under way before today is not its: an episode from before today, or the building's
        # reported rise not gone yet, whose episode the report closed and a new day may restart)
        calm = ((d.ep_start[self.b] < 0) | (d.ep_start[self.b] == self.day)) & ((d.b_flags[self.b] & B_INCIDENT) == 0)
        # (the day as a whole registered less than usual: from the hour the meter fell, a quarter of the day's use
        # and more went round it)
        rows = np.flatnonzero(whole & calm[pos] & (self.Xd > 0))
        if rows.size == 0:
            return
        hit = self._fell_within_day(rows)
        # in the night: a trickle all day, and no drop followed before today (its CUSUM at zero: the day before, it
        # registered its usual use, or fell short by less than half the smallest bypass looked for)
        night = self.trickle[rows] & (d.hc[hh[rows]] == 0) & ~np.isin(rows, hit)
        if night.any():
            hit = np.concatenate([hit, self._fell_in_the_night(rows[night])])
        d.w_n[hh[hit]] |= np.uint8(ONSET)

    def _fell_within_day(self, rows: np.ndarray) -> np.ndarray:
        """Rows whose meter fell at an hour c of the day (after hours of more than a trickle) while the building's
        unmetered use stepped up at c."""
        cs, n = self.d.params.collapse_share, self.n_h
        pe, mz = self.pe[rows], self.mz[rows]
        after_p = np.cumsum(pe[:, ::-1], axis=1)[:, ::-1]  # expected use from hour c to the day's end
        after_m = np.cumsum(mz[:, ::-1], axis=1)[:, ::-1]
        total = after_p[:, :1]
        ok = (after_m <= cs * after_p) & (after_p >= 0.25 * total) & \
            (total - after_p >= 0.15 * total) & ((mz.sum(1, keepdims=True) - after_m) > cs * (total - after_p))
        ok[:, 0] = False
        has = np.flatnonzero(ok.any(axis=1))
        rows, c = rows[has], np.argmax(ok[has], axis=1)
        after = np.arange(n)[None, :] >= c[:, None]
        # ... and from that very hour: the first quarter of a day after it holds its part as the day does. A leak or
        # a neighbour's rise that began hours later passes the day's sums with any earlier hour as c
        first = after & (np.arange(n)[None, :] < c[:, None] + 24 // NBIN)
        return rows[self._stepped_up(rows, after, first)]

    def _fell_in_the_night(self, rows: np.ndarray) -> np.ndarray:
        """Rows whose meter fell in the night before the day while the building's unmetered use rose through the day
        by what the meter lost, from its first hours: up to the hour a quarter of the household's usual day has
        passed (six hours at least), those hours hold their part too."""
        n = self.n_h
        pe = self.pe[rows]
        before = np.cumsum(pe, axis=1) - pe  # usual use before each hour
        first = (before < 0.25 * pe.sum(axis=1, keepdims=True)) | self.night[None, :]
        held = self._stepped_up(rows, np.ones((rows.size, n), dtype=bool), first) & self._quiet_night(rows)
        return rows[held]

    def _quiet_night(self, rows: np.ndarray) -> np.ndarray:
        """Whether the building's unmetered use in the night's hours (the day's first quarter) stays, in its median
        hour, within one hour's noise of the building (about two standard errors of a median of six hours) of what
        the household's meter lost in its median night hour: a pipe carries water only when its household draws it,
        a leak every hour of the night. (The median: an early riser's first hour is not the night's.)"""
        night = self.night
        q = self.pos[rows]
        mk = self.mk[q][:, night]
        # (the median of the known hours: sorted, the hours not known last)
        r = np.sort(np.where(mk, self.r[q][:, night], np.inf).astype(np.float64), axis=1)
        k = mk.sum(axis=1)
        lo, hi = np.maximum(k - 1, 0) // 2, np.minimum(k // 2, r.shape[1] - 1)
        med = 0.5 * (np.take_along_axis(r, lo[:, None], 1) + np.take_along_axis(r, hi[:, None], 1))[:, 0]
        lost = np.median((self.pe[rows] - self.mz[rows])[:, night].astype(np.float64), axis=1)
        sd = np.median(np.sqrt(self.vh[q][:, night]), axis=1)
        return (k < 3) | (med <= lost + sd)

    def _stepped_up(self, rows: np.ndarray, after: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Whether the building's unmetered use over the `after` hours, less its hours before at their rate, holds
        what the meter lost in them (within [min_rise_share, 1/min_rise_share], z_min standard errors of the
        building's hourly noise clear, and not 2 below the loss), and so do its `first` hours (at least
        min_rise_share of what the meter lost in them, within 2 of the building's noise)."""
        p = self.d.params
        q = self.pos[rows]
        pe, mz = self.pe[rows], self.mz[rows]
        mk = self.mk[q]
        r = np.where(mk, self.r[q], 0.0).astype(np.float64)
        v = np.where(mk, self.vh[q], 0.0)
        lost = ((pe - mz) * after).sum(axis=1)
        v_lost = ((2 * pe ** 2 + 1) * after).sum(axis=1)
        step, v_step = _step(r, v, mk, after, ~after)
        held = (step >= p.min_rise_share * lost) & (step <= lost / p.min_rise_share) & \
            (step >= p.z_min * np.sqrt(np.maximum(v_step, 1.0))) & \
            (step - lost >= -2 * np.sqrt(np.maximum(v_step + v_lost, 1.0)))
        known = ((mk & after).sum(axis=1) >= 0.8 * after.sum(axis=1)) & \
            ((mk & ~after).sum(axis=1) >= 0.8 * (~after).sum(axis=1))
        step_f, v_f = _step(r, v, mk, first, ~after)
        lost_f = ((pe - mz) * first).sum(axis=1)
        held &= step_f >= p.min_rise_share * lost_f - 2 * np.sqrt(np.maximum(v_f, 1.0))
        return held & known

    def _calibrate(self) -> None:
        """How far the day's hourly fits stray from a standard normal on a building's households (hours are not
        independent: bursts and the building's own noise cluster): the median over its households of the day's
        squared z, against a chi-square's median (0.455), learned slowly. The window's pattern z is divided by its
        root, so that 5 standard errors mean the same in every building."""
        d, pos = self.d, self.pos
        if pos.size == 0:  # (buildings with no household on the registry: nothing to calibrate)
            return
        s = self.day_sums
        bs = self.b_sums[pos]
        det = s[:, W_MM] * bs[:, E_PP] - s[:, W_MP] ** 2
        ok = self.judged & self.act & (det > 1e-9) & (bs[:, E_NH] >= 12)
        safe = np.where(ok, det, 1.0)
        beta = (s[:, W_MR] * bs[:, E_PP] - bs[:, E_PR] * s[:, W_MP]) / safe
        gam = (bs[:, E_PR] * s[:, W_MM] - s[:, W_MR] * s[:, W_MP]) / safe
        rss = np.maximum(bs[:, E_RR] - beta * s[:, W_MR] - gam * bs[:, E_PR], 0.0)
        var_beta = rss / np.maximum(bs[:, E_NH] - 2, 1) * bs[:, E_PP] / safe
        z2 = np.where(ok, beta ** 2 / np.maximum(var_beta, 1e-12), np.inf)
        order = np.lexsort((z2, pos))
        n_ok = np.bincount(pos[ok], minlength=self.nb)
        first = np.searchsorted(pos[order], np.arange(self.nb))
        mid = order[np.minimum(first + n_ok // 2, pos.size - 1)]
        has = n_ok >= 5
        phi2 = np.maximum(1.0, z2[mid] / CHI2_MEDIAN)
        b = self.b[has]
        d.phi2[b] += (np.minimum(phi2[has], 25.0) - d.phi2[b]) * 0.1

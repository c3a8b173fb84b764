"""Bypass from the hourly building balance: after a bypass the gap (master minus households) follows the bypassed
household's own hourly pattern, ((1 - f) / f) x its metered use; a vacancy or a leak leaves no such pattern."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent
from devices.batch import NS, Batch
from devices.registry import Registry

from .base import HOUR_NS, Detector, LocalCalendar, MeterView, Params, alert_id, param, round_or_none

MISSING = 255  # hourly use code: no increment known for that meter and hour
CODE_STEPS = 16.0  # codes per doubling of litres: 4.4 % steps up to 60 m3/h, plenty for a regressor
T = 25  # hours of a local day (a DST day has 25)
R = 64  # hours held: a day plus the lag before it is judged, plus headroom (a power of two)


def _encode(litres: np.ndarray) -> np.ndarray:
    return np.minimum(np.rint(CODE_STEPS * np.log2(1.0 + np.maximum(litres, 0.0))), MISSING - 1).astype(np.uint8)


CODE_OF_LITRE = _encode(np.arange(4096, dtype=np.float64))  # whole litres below 4 m3 (nearly every hour) by table


def encode_litres(litres: np.ndarray) -> np.ndarray:
    whole = np.rint(litres)
    small = (whole == litres) & (litres >= 0) & (litres < CODE_OF_LITRE.size)
    if small.all():
        return CODE_OF_LITRE[whole.astype(np.intp)]
    out = _encode(litres)
    out[small] = CODE_OF_LITRE[whole[small].astype(np.intp)]
    return out


def first_per_building(rows: np.ndarray, building: np.ndarray, nb: int, *keys: np.ndarray) -> np.ndarray:
    """Per building, the one of `rows` (household positions) that sorts first by `keys` (given for those rows, the
    last key primary, as np.lexsort); -1 for a building with none."""
    out = np.full(nb, -1, dtype=np.int64)
    if rows.size:
        order = rows[np.lexsort((*keys, building[rows]))]
        bo = building[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = bo[1:] != bo[:-1]
        out[bo[first]] = order[first]
    return out


def ewma(old: np.ndarray, new: np.ndarray, alpha: float) -> np.ndarray:
    """An exponentially weighted average's next value; one not yet started (NaN) takes the new value."""
    return np.where(np.isfinite(old), (1 - alpha) * old + alpha * new, new)


def loss_matches(beta: np.ndarray, use: np.ndarray, usual: np.ndarray, factor: float) -> np.ndarray:
    """The unmetered use the gap implies (beta x metered use) is at most `factor` times what the meter lost against
    the household's usual use."""
    return beta * use <= factor * (usual - use)


def gap_vouches(rise: np.ndarray, est: np.ndarray, dev: np.ndarray, days: np.ndarray, share: float,
                k: float) -> np.ndarray:
    """The building gap, averaged over `days`, rose by at least `share` of the estimated unmetered use and by `k`
    of its usual daily swing / sqrt(days): the gap itself vouches for the estimate."""
    return (rise >= share * est) & (rise >= k * dev / np.sqrt(days))


def run_sum(old: np.ndarray, add: np.ndarray, on: np.ndarray, restart: np.ndarray) -> np.ndarray:
    """A sum over a run of days: `add` joins it while `on`, it starts afresh where `restart`, and is 0 when off."""
    return np.where(on, np.where(restart, 0, old) + add, 0)


# code -> m3 (a missing hour as 0: callers mask it with code != MISSING)
M3_OF_CODE = np.where(np.arange(256) == MISSING, 0.0, (np.exp2(np.arange(256) / CODE_STEPS) - 1.0) / 1000.0)


class HourlyBypassParams(Params):
    finalize_lag_s: int = param(36 * 3600, 's', 'a day is judged this long after it ends (daily meters upload late)', gt=0, le=38 * 3600)
    max_reading_gap_s: int = param(4500, 's', 'the register at a whole hour is interpolated between readings at most this far apart (a longer gap leaves those hours unknown)', ge=900, le=6 * 3600)
    min_reported_fraction: float = param(0.8, '1', "share of a building's households known for an hour to use it", gt=0, le=1)
    min_hours: int = param(14, 'h', 'usable hours a household needs in a day to be judged', ge=6, le=24)
    beta_min: float = param(0.7, '1', 'gap per metered m3 of the household (1 - f) / f at least this: its meter registers at most 1 / (1 + beta_min) of its use', gt=0)
    beta_max: float = param(100.0, '1', '… and at most this (a meter still registering 1 % of the use; larger is a spike, not a pattern)', gt=0)
    min_z: float = param(5.0, 'standard errors', 'the fit must stand this many standard errors out of the noise', gt=0)
    persist_days: int = param(2, 'days', 'consecutive days the same household must explain the gap', ge=1)
    keep_z: float = param(1.5, 'standard errors', "after a first day at min_z, a day at this many standard errors keeps the household's streak going (even if a neighbour fits better)", gt=0)
    beta_ratio: float = param(2.0, '1', '… with a day-to-day ratio of its beta within this factor', ge=1)
    pooled_z: float = param(8.0, 'standard errors', "the streak's days together (Stouffer: sum of z / sqrt(days)) must stand this many standard errors out", gt=0)
    drop_max: float = param(0.75, '1', "the household's metered use over the streak must have fallen to at most this share of its usual use (a bypass takes water off its meter) …", gt=0, le=1)
    strong_z: float = param(8.0, 'standard errors', "… unless every day of the streak fits this many standard errors out (a household's use swings too much day to day to rely on)", gt=0)
    min_use_m3: float = param(0.002, 'm3/day', 'a household using less than this in a day is not judged (a vacancy has no pattern to follow)', ge=0)
    recent_alpha: float = param(0.3, '1', "weight of a new day in the gap's recent level, which learns every day: a full bypass rises above the higher of it and the usual gap", gt=0, le=1)
    baseline_alpha: float = param(0.2, '1', 'weight of a new day in the daily baselines', gt=0, le=1)
    collapse_fraction: float = param(0.15, '1', "a full bypass: the household's metered day falls below this share of its usual use (no hourly pattern is left to follow) …", ge=0, lt=1)
    collapse_gap_match: float = param(0.6, '1', '… while the building gap rises by at least this share of the use it lost (a vacancy lowers the master too, so its gap stays)', gt=0, le=1)
    collapse_min_m3: float = param(0.5, 'm3/day', '… and the lost use is at least this many m3 a day', ge=0)
    collapse_persist_days: int = param(3, 'days', 'consecutive days a full bypass must show (a still meter has less evidence than an hourly pattern)', ge=1)
    collapse_baseline_days: int = param(5, 'days', "… once the building's gap baseline has learned this many days (its usual swing is not known before)", ge=0)
    collapse_noise_k: float = param(5.0, 'daily swings', "… and both the lost use and the gap's rise, averaged over the streak, stand this many times the building's usual day-to-day gap swing / sqrt(days) out", gt=0)
    collapse_first_k: float = param(2.0, 'daily swings', '… and on its first day the gap rose by collapse_gap_match of the loss less this many daily swings (a home empty for days before the gap rose is a vacancy)', ge=0)
    collapse_max_days: int = param(7, 'days', '… within this many days of its start (a home whose meter stopped longer ago without that is empty, not bypassed)', ge=1)
    lost_match: float = param(2.0, '1', "the unmetered use estimated from the gap may be at most this many times what the household's meter lost against its usual use", ge=1)
    rise_k: float = param(2.5, 'daily swings', "… and the building's gap over the streak must have risen by that estimate less this many of its usual daily swings (/ sqrt(days))", ge=0)
    rise_min_share: float = param(0.25, '1', '… and by at least this share of it whatever the swing (a short streak on a gap that fell is chance; -1: off)', ge=-1)
    vouch_share: float = param(0.5, '1', 'a streak whose loss check fails still counts when the building gap over its days rose by at least this share of the estimate …', gt=0, le=1)
    vouch_k: float = param(5.0, 'daily swings', "… and by this many of its usual daily swings (/ sqrt(days)): a business's changeable week can hide what its meter lost", gt=0)
    vouch_all_heard: bool = param(True, 'yes/no', "… for a streak only on a day every household of the building was heard (a silent household's use in the gap is a guess)")
    support_share: float = param(0.0, '1', "a day's fit counts for a household (a streak's first day, slow evidence) only if its meter lost, or the building gap rose, by more than this share of the unmetered use the fit implies: a day it used as usual while the gap fell is a chance fit; -1 turns the check off", ge=-1)
    cusum_k: float = param(1.5, 'standard errors', "slow evidence: each day a household's fit adds its z less this (a day out of the beta range subtracts it) …", gt=0)
    cusum_zcap: float = param(8.0, 'standard errors', "… a day adding at most this z (one strong day is the streak's business, not slow evidence) …", gt=0)
    cusum_h: float = param(11.0, 'standard errors', "… and the sum, never below 0, names the household when it reaches this (a small household's pattern is weak on any one day)", gt=0)
    cusum_drop_h: float = param(6.0, 'standard errors', "… or this, once the household's metered use over the evidence's days has fallen to cusum_drop_share of its usual on at least cusum_drop_days of them: a bypass takes water off the meter, and so deep a drop needs less of the hourly evidence", gt=0)
    cusum_drop_share: float = param(0.4, '1', '… (see cusum_drop_h; 0 turns it off)', ge=0, lt=1)
    cusum_drop_days: int = param(3, 'days', '… (see cusum_drop_h: one strong day and a low one or two are chance)', ge=1)
    cusum_deeper_h: float = param(2.0, 'standard errors', '… and this, once it has fallen to cusum_deeper_share on at least cusum_deeper_days (a meter left with a trickle shows little hourly pattern to follow)', gt=0)
    cusum_deeper_share: float = param(0.3, '1', '… (see cusum_deeper_h; 0 turns it off)', ge=0, lt=1)
    cusum_deeper_days: int = param(4, 'days', '… (see cusum_deeper_h)', ge=1)
    cusum_hold: float = param(0.25, '1', "… the building's gap baselines do not learn while a household heard that day has this share of cusum_h", gt=0, le=1)
    cusum_strong: float = param(2.0, '1', "… or, once the sum is this many times cusum_h, when the building gap over those days vouches (vouch_share, vouch_k) though the household's own use did not fall", ge=1)
    cusum_lost_match: float = param(3.0, '1', "… and the unmetered use it implies (that day's beta x its metered use) at most this many times what its meter lost", ge=1)
    broken_hour_unusable: bool = param(True, 'yes/no', "an hour a household's reading was broken (more than its pipe can carry) is left out of its building's balance")
    collapse_other_lost: bool = param(True, 'yes/no', "a full bypass: on a day another household's hours explain the gap, the rise it takes off is the larger of its fitted share (beta x use) and what its own meter lost")
    silent_at_usual_use: bool = param(True, 'yes/no', "a household not heard on a day counts at its usual use in that day's building gap (off: its use stays in the gap)")


class HourlyBypassDetector(Detector):
    name = "bypass"
    kinds = ("bypass",)
    Params: ClassVar[type[Params]] = HourlyBypassParams
    params: HourlyBypassParams
    state_axes: ClassVar[dict[str, str]] = {
        "code": "meter", "last_l": "meter", "last_rt": "meter", "last_rl": "meter", "use_ref": "meter",
        "h_open": "meter", "c_was": "meter", "acc": "meter", "acc_start": "meter", "acc_drop": "meter",
        "acc_use": "meter",
        "acc_gap": "meter", "acc_n": "meter",
        "m_ring": "building", "s_ring": "building", "gap_ref": "building", "gap_dev": "building", "base_n": "building",
        "cand": "building", "cand_day": "building", "cand_beta": "building", "streak": "building",
        "cand_use": "building", "cand_gap": "building", "cand_zmin": "building", "cand_zsum": "building",
        "open_share": "meter", "pend": "building", "start_day": "building",
        "est": "building", "strength": "building", "days_seen": "building", "gap_after": "building",
        "use_after": "building", "gap_before": "building",
        "use_before": "building", "c_cand": "building", "c_day": "building", "c_streak": "building",
        "c_start": "building", "c_ref": "building", "gap_recent": "building", "c_first": "building",
        "c_event": "building", "c_lsum": "building", "c_rsum": "building", "taint": "building",
        "next_day": "scalar", "now": "scalar",
    }
    state_refs: ClassVar[dict[str, str]] = {"cand": "meter", "c_cand": "meter", "pend": "meter"}

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        m, b = registry.meters, registry.buildings
        has_master = b.master_meter >= 0
        bld = m.building.astype(np.int64)
        self.household = (bld >= 0) & ~m.is_master & np.where(bld >= 0, has_master[np.maximum(bld, 0)], False)
        self.in_balance = self.household.copy()
        self.in_balance[b.master_meter[has_master]] = True
        self.all_in_balance = bool(self.in_balance.all())
        self.bld = np.maximum(bld, 0)
        self.master_of = np.full(len(m), -1, dtype=np.int64)  # meter -> building it is the master of
        self.master_of[b.master_meter[has_master]] = np.flatnonzero(has_master)
        self.n_households = np.bincount(self.bld[self.household], minlength=len(b))
        self.hh_idx = np.flatnonzero(self.household)
        # households grouped by building, for per-building counts by one reduceat
        hb_ = self.bld[self.hh_idx]
        self.by_b = np.argsort(hb_, kind="stable")
        self.b_with, self.b_start = np.unique(hb_[self.by_b], return_index=True)
        self.max_l = np.rint(m.register_max_m3 * 1000).astype(np.int64)
        # an hourly increment above what the pipe can carry in an hour at 1 m/s (x 6) is a broken reading
        self.cap_l = np.where(m.pipe_dn_mm > 0, 6.0 * 1000 * np.pi * (m.pipe_dn_mm / 1000) ** 2 / 4 * 3600, 1e9)

    def _init_state(self) -> None:
        n, nb = len(self.registry.meters), len(self.registry.buildings)
        self.code = np.full((n, R), MISSING, dtype=np.uint8)  # hourly use, log-coded, ring by UTC hour
        self.last_l = np.full(n, -1, dtype=np.int32)  # register at the whole hour before last_rt, litres (-1: none)
        self.last_rt = np.zeros(n, dtype=np.uint32)  # latest reading, epoch seconds (0: none)
        self.last_rl = np.zeros(n, dtype=np.int32)  # its register, litres
        self.use_ref = np.full(n, np.nan, dtype=np.float16)  # usual metered m3/day
        self.acc = np.zeros(n, dtype=np.float16)  # CUSUM of the household's daily z (slow evidence)
        self.acc_start = np.zeros(n, dtype=np.uint16)  # day it last rose from 0 (days since 1970)
        self.acc_drop = np.zeros(n, dtype=np.uint16)  # first day since then its metered use dropped (0: none yet)
        self.acc_use = np.zeros(n, dtype=np.float16)  # metered m3 summed since then
        self.acc_gap = np.zeros(n, dtype=np.float16)  # the building gap's rise summed over those days
        self.acc_n = np.zeros(n, dtype=np.uint8)  # over this many judged days
        self.h_open = np.zeros(n, dtype=np.int8)  # 1: a bypass was raised on this household
        self.open_share = np.zeros(n, dtype=np.float16)  # its beta (unmetered per metered m3), taken out of the gap
        self.c_was = np.zeros(n, dtype=np.int8)  # 1: its metered day collapsed on the last day judged
        self.m_ring = np.full((nb, R), np.nan, dtype=np.float16)  # master m3 per hour
        self.s_ring = np.zeros((nb, R), dtype=np.float16)  # households' summed m3 per hour (not log-coded; ~0.05 % steps)
        self.gap_ref = np.full(nb, np.nan, dtype=np.float32)  # usual gap m3/day
        self.gap_dev = np.full(nb, np.nan, dtype=np.float32)  # its usual day-to-day swing (mean absolute deviation)
        self.base_n = np.zeros(nb, dtype=np.int16)  # days the gap baselines have learned (capped)
        self.cand = np.full(nb, -1, dtype=np.int32)  # household that explained the gap on the latest days
        self.cand_day = np.zeros(nb, dtype=np.int32)
        self.cand_beta = np.zeros(nb, dtype=np.float32)
        self.streak = np.zeros(nb, dtype=np.int16)
        self.cand_use = np.zeros(nb, dtype=np.float32)  # its metered m3 summed over the streak's days
        self.cand_gap = np.zeros(nb, dtype=np.float32)  # the building's daily gap summed over the streak's days
        self.cand_zmin = np.zeros(nb, dtype=np.float32)  # its weakest day's z in the streak
        self.cand_zsum = np.zeros(nb, dtype=np.float32)  # and their sum
        self.c_cand = np.full(nb, -1, dtype=np.int32)  # household whose metered use collapsed while the gap rose
        self.c_day = np.zeros(nb, dtype=np.int32)
        self.c_streak = np.zeros(nb, dtype=np.int16)
        self.c_start = np.zeros(nb, dtype=np.int32)
        self.c_ref = np.zeros(nb, dtype=np.float32)  # the gap level the collapse streak's rise is measured from
        self.gap_recent = np.full(nb, np.nan, dtype=np.float32)  # the gap's recent level (learns every day)
        self.c_first = np.zeros(nb, dtype=np.int8)  # 1: the gap rose on the collapse streak's first day (and it is
        #                                            not older than collapse_max_days)
        self.c_lsum = np.zeros(nb, dtype=np.float32)  # its lost use summed over the collapse streak's days
        self.c_rsum = np.zeros(nb, dtype=np.float32)  # and the building gap's rise
        self.c_event = np.zeros(nb, dtype=np.int8)  # 1: the pending raise is a full bypass (meter nearly still)
        self.taint = np.zeros(nb, dtype=np.uint64)  # bit per ring hour: a household's reading that hour was broken
        self.start_day = np.zeros(nb, dtype=np.int32)
        self.pend = np.full(nb, -1, dtype=np.int32)  # household of a raise decided, not yet emitted
        self.est = np.zeros(nb, dtype=np.float32)
        self.strength = np.zeros(nb, dtype=np.float32)  # of the pending raise: pooled z, or loss / daily swing
        self.days_seen = np.zeros(nb, dtype=np.int16)  # days that made it
        self.gap_after = np.zeros(nb, dtype=np.float32)
        self.use_after = np.zeros(nb, dtype=np.float32)
        self.gap_before = np.zeros(nb, dtype=np.float32)
        self.use_before = np.zeros(nb, dtype=np.float32)
        self.next_day = np.full(1, -1, dtype=np.int64)
        self.now = np.zeros(1, dtype=np.int64)

    def restore(self, blob: dict[str, np.ndarray], remap: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        super().restore(blob, remap)
        if "open_h" in blob and "open_share" not in blob and remap is None:
            # a checkpoint from when one open bypass per building was held: its share moves to its household
            oh, ob = np.asarray(blob["open_h"]), np.asarray(blob["open_beta"])
            self.open_share[oh[oh >= 0]] = ob[oh >= 0]

    def _after_restore(self) -> None:
        # a checkpoint from before base_n was kept: a building with a learned swing has learned enough days
        self.base_n[(self.base_n == 0) & np.isfinite(self.gap_dev)] = self.params.collapse_baseline_days

    def _lo_hour(self) -> int:
        return self.calendar.day_start_ns(int(self.next_day[0])) // HOUR_NS

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, view: MeterView) -> None:
        for e in batch.events:
            if e.device == "meter" and e.type == "replacement" and self.in_balance[e.index]:
                self.last_l[e.index] = -1  # no increment across a restarted register
                self.last_rt[e.index] = 0
        if view.n == 0:
            return None
        t = view.ts  # ns
        gm = view.meter
        # rows older than the meter's latest reading are late copies of what it already told us
        take = t > self.last_rt[gm].astype(np.int64) * NS
        if not self.all_in_balance:
            take &= self.in_balance[gm]
        if take.all():
            # the usual case: the view's shared column and meter groups as they are (read only)
            tot = view.col("total_m3")
            fi, la, fm = view.starts, view.ends, view.meters
        else:
            rows = np.flatnonzero(take)
            if rows.size == 0:
                return None
            t, gm, tot = t[rows], gm[rows], view.col("total_m3")[rows]
            first = np.ones(rows.size, dtype=bool)
            np.not_equal(gm[1:], gm[:-1], out=first[1:])
            fi = np.flatnonzero(first)
            la = np.append(fi[1:] - 1, rows.size - 1)
            fm = gm[fi]
        # fi, la: each meter's first and latest row (the latest carries over to the next batch); fm: its meter
        self.now[0] = max(int(self.now[0]), int(t.max()))
        lit = np.rint(tot * 1000).astype(np.int64)
        n = t.size
        # The register at each whole hour, interpolated between the readings around it (a reading on the hour
        # gives it exactly), so meters that read at any minute balance alike. Rows run by meter, then time.
        pt = np.empty_like(t)
        pt[1:] = t[:-1]
        pl = np.empty_like(lit)
        pl[1:] = lit[:-1]
        pt[fi] = self.last_rt[fm].astype(np.int64) * NS
        pl[fi] = self.last_rl[fm]
        gap = t - pt
        span = (gap > 0) & (gap <= self.params.max_reading_gap_s * NS)
        span[fi] &= pt[fi] > 0
        th = t // HOUR_NS
        # a reading on the hour with no usable reading before it still gives that hour's register itself
        alone = np.flatnonzero(~span & (th * HOUR_NS == t))
        pt[alone] = t[alone] - 1
        pl[alone] = lit[alone]
        span[alone] = True
        pth = np.empty_like(th)  # the previous reading's hour: the row before's, except where it came from elsewhere
        pth[1:] = th[:-1]
        fix = np.concatenate([fi, alone])
        pth[fix] = pt[fix] // HOUR_NS
        cnt = th - pth  # whole hours in (previous reading, this reading]
        cnt[~span] = 0
        if n and int(cnt.max()) <= 1:
            src = np.flatnonzero(cnt)  # the usual case: at most one hour between two readings
            hb = th[src]
        else:
            src = np.repeat(np.arange(n), cnt)
            hb = pth[src] + 1 + (np.arange(src.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        rb = lit[src].astype(np.float64)  # litres at hour hb: a reading on the hour is it
        off = np.flatnonzero(t[src] != hb * HOUR_NS)
        if off.size:
            so = src[off]
            d = lit[so] - pl[so]
            mx = self.max_l[gm[so]]
            d = np.where(d < -mx // 2, d + mx, d)  # across a wrap at register_max
            # between two readings, in proportion to time (may pass register_max: unwrapped below)
            rb[off] = pl[so] + d * ((hb[off] * HOUR_NS - pt[so]) / (t[so] - pt[so]))
        bm = gm[src]
        # increments between consecutive whole hours of a meter; the first one against the hour held from before
        bf = np.ones(src.size, dtype=bool)
        bf[1:] = bm[1:] != bm[:-1]
        prev_r = np.empty_like(rb)
        prev_r[1:] = rb[:-1]
        step = np.empty_like(hb)
        step[1:] = hb[1:] - hb[:-1]
        bfi = np.flatnonzero(bf)
        bfm = bm[bfi]
        prev_r[bfi] = self.last_l[bfm]
        step[bfi] = np.where(self.last_l[bfm] >= 0, hb[bfi] - self.last_rt[bfm].astype(np.int64) // 3600, 0)
        inc = rb - prev_r
        neg = np.flatnonzero(inc < -0.5)  # across a wrap at register_max (rare)
        if neg.size:
            inc[neg] += np.where(inc[neg] < -self.max_l[bm[neg]] / 2, self.max_l[bm[neg]], 0)
            # a meter installed backwards counts down the water that passes it: for the building's balance its fall
            # is its use; a fall beyond what the pipe can carry in an hour is a wound-back register (dropped below)
            inc[neg] = np.abs(inc[neg])
        ok = step == 1
        # an increment beyond what the pipe can carry is a broken reading: its hour is unknown, and so is the
        # building's balance that hour (the master may have seen the water), so it is kept as NaN to mark it
        inc[ok & ~(inc <= self.cap_l[bm])] = np.nan
        # the register at the whole hour before each meter's newest reading is held for the next batch: from this
        # batch when it reached that hour, kept when no hour has passed, unknown otherwise (a gap too long)
        new_h = th[la]
        old_h = self.last_rt[fm].astype(np.int64) // 3600
        hold = np.where(new_h == old_h, self.last_l[fm].astype(np.int64), -1)
        if src.size:
            bl = np.empty(bfi.size, dtype=np.int64)
            bl[:-1] = bfi[1:] - 1
            bl[-1] = src.size - 1
            at = np.searchsorted(fm, bm[bl])  # both in meter order
            reach = hb[bl] == new_h[at]
            hold[at[reach]] = np.rint(rb[bl[reach]]).astype(np.int64) % np.maximum(self.max_l[bm[bl[reach]]], 1)
        self.last_l[fm] = hold
        self.last_rt[fm] = t[la] // NS
        self.last_rl[fm] = lit[la]
        gm, hr, inc = bm[ok], hb[ok], np.maximum(inc[ok], 0.0)  # (NaN stays NaN)
        h = hr - 1  # the increment is the use of the hour before the whole hour
        if gm.size == 0:
            return None
        if self.next_day[0] < 0:
            self.next_day[0] = self.calendar.day_of_one(int(h.min()) * HOUR_NS) + 1
        # a batch reaching beyond the ring (a backlog, no tick in between): the hours that fit are stored, the oldest
        # day is judged with them, and so on (judging before storing would lose that day's hours in this batch)
        while int(h.max()) >= self._lo_hour() + R:
            fits = h < self._lo_hour() + R
            self._store(gm[fits], h[fits], inc[fits])
            gm, h, inc = gm[~fits], h[~fits], inc[~fits]
            self._judge(int(self.next_day[0]))
            self.next_day[0] += 1
        self._store(gm, h, inc)
        return None

    def _store(self, gm: np.ndarray, h: np.ndarray, inc: np.ndarray) -> None:
        """Hourly uses (meter, hour, litres) into the rings; hours of days already judged are dropped."""
        w = h >= self._lo_hour()
        if not w.all():
            gm, h, inc = gm[w], h[w], inc[w]
        if gm.size == 0:
            return
        slot = h & (R - 1)  # h % R (R is a power of two)
        mb = self.master_of[gm]
        ism = mb >= 0
        mi = np.flatnonzero(ism)
        self.m_ring[mb[mi], slot[mi]] = inc[mi] / 1000.0
        hi = np.flatnonzero(~ism)
        broken = np.isnan(inc[hi])
        if broken.any():
            # a household's broken hour: the building cannot be balanced that hour
            bh = hi[broken]
            np.bitwise_or.at(self.taint, self.bld[gm[bh]], np.left_shift(np.uint64(1), slot[bh].astype(np.uint64)))
            hi = hi[~broken]
        hm, hs = gm[hi], slot[hi]
        cell = hm * R + hs  # flat index into the (meter, hour) code ring
        codes = self.code.reshape(-1)
        fresh = codes[cell] == MISSING  # a repeated reading is not summed twice
        if not fresh.all():
            hi, hm, hs, cell = hi[fresh], hm[fresh], hs[fresh], cell[fresh]
        hinc = inc[hi]
        codes[cell] = encode_litres(hinc)
        nb = len(self.registry.buildings)
        add = np.bincount(self.bld[hm] * R + hs, weights=hinc / 1000.0, minlength=nb * R)
        self.s_ring += add.reshape(nb, R).astype(np.float16)

    # ------------------------------------------------------------------ daily judgement
    def tick(self, now_ns: int) -> list[AlertEvent]:
        now = max(int(now_ns), int(self.now[0]))
        self.now[0] = now
        if self.next_day[0] >= 0:
            lag = self.params.finalize_lag_s * NS
            while self.calendar.day_start_ns(int(self.next_day[0]) + 1) + lag <= now:
                self._judge(int(self.next_day[0]))
                self.next_day[0] += 1
        return self._emit(now)

    def _judge(self, day: int) -> None:
        p = self.params
        h0 = self.calendar.day_start_ns(day) // HOUR_NS
        h1 = self.calendar.day_start_ns(day + 1) // HOUR_NS
        slots = np.arange(h0, h0 + T) % R
        in_day = np.arange(T) < (h1 - h0)
        hh = self.hh_idx
        b = self.bld[hh]
        c = self.code[hh][:, slots]
        hv = M3_OF_CODE[c]  # households x hours (0 where missing)
        known = (c != MISSING) & in_day[None, :]
        nb = len(self.registry.buildings)
        cnt = np.zeros((nb, T), dtype=np.int64)  # households known per building and hour
        if self.hh_idx.size:
            cnt[self.b_with] = np.add.reduceat(known[self.by_b], self.b_start, axis=0, dtype=np.int64)
        M = self.m_ring[:, slots].astype(np.float64)
        S = self.s_ring[:, slots].astype(np.float64)
        usable = np.isfinite(M) & (cnt >= p.min_reported_fraction * self.n_households[:, None]) & in_day[None, :]
        if p.broken_hour_unusable:
            usable &= (np.right_shift(self.taint[:, None], slots[None, :].astype(np.uint64)) & np.uint64(1)) == 0
        G = M - S
        # every open bypass's share is taken out of the gap, so another one in the building still shows (an hour
        # one of them was not heard is not usable)
        oi = np.flatnonzero(self.open_share[hh] > 0)
        if oi.size:
            co = c[oi]
            taken = np.zeros((nb, T))
            np.add.at(taken, b[oi], self.open_share[hh[oi], None].astype(np.float64) * M3_OF_CODE[co])
            unheard_h = np.zeros((nb, T), dtype=np.int64)
            np.add.at(unheard_h, b[oi], co == MISSING)
            usable &= unheard_h == 0
            G -= taken
        w = known & usable[b]
        x = np.where(w, S[b] - hv, 0.0)  # the other households: the building's own rhythm
        y = np.where(w, G[b], 0.0)
        hx = np.where(w, hv, 0.0)
        n = w.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            nn = np.maximum(n, 1)
            # centred sums of squares and products from the raw ones (each row's own mean over its usable hours)
            sx, sh, sy = x.sum(1), hx.sum(1), y.sum(1)
            hh2 = np.einsum("ij,ij->i", hx, hx)
            sxx = np.einsum("ij,ij->i", x, x) - sx * sx / nn
            shh = hh2 - sh * sh / nn
            sxh = np.einsum("ij,ij->i", x, hx) - sx * sh / nn
            sxy = np.einsum("ij,ij->i", x, y) - sx * sy / nn
            shy = np.einsum("ij,ij->i", hx, y) - sh * sy / nn
            syy = np.einsum("ij,ij->i", y, y) - sy * sy / nn
            det = sxx * shh - sxh * sxh
            beta = (sxx * shy - sxh * sxy) / det
            cx = (shh * sxy - sxh * shy) / det
            rss = np.maximum(syy - cx * sxy - beta * shy, 0.0)
            se = np.sqrt(rss / np.maximum(n - 3, 1) * sxx / det)
            z = beta / np.maximum(se, 1e-12)
            day_use = hx.sum(1) * 24 / nn
        fit = (n >= p.min_hours) & (det > 0) & (shh > 1e-9 * hh2) & np.isfinite(z) & (day_use >= p.min_use_m3)
        # daily gap (hours known, scaled to a day) and households' daily use, for the evidence, checks and baselines
        with np.errstate(invalid="ignore", divide="ignore"):
            nu = usable.sum(1)
            gap_day = np.where(usable, G, 0.0).sum(1) * 24 / np.maximum(nu, 1)
        unheard = (n < p.min_hours) & np.isfinite(self.use_ref[hh])
        # the gap vouches for a streak only on a day every household was heard: a silent one's use in it is a guess
        # (slow evidence at twice its bar still may: weeks of fits outweigh it)
        may_vouch = (np.bincount(b[unheard], minlength=nb) == 0) | (not p.vouch_all_heard)
        if p.silent_at_usual_use:
            # a household not heard that day still used water: its usual use is taken out of the day's gap, so a
            # meter falling silent (a dead battery, a shielded meter) does not look like a rise of the gap
            gap_day = gap_day - np.bincount(b[unheard], weights=self.use_ref[hh[unheard]].astype(np.float64),
                                            minlength=nb)
        # a day the household used as much as usual while the gap fell is a chance fit: with nothing lost on its
        # meter and nothing gained in the gap, it neither starts a streak nor adds to the slow evidence
        lost = self.use_ref[hh].astype(np.float64) - day_use  # what each household's meter lost against its usual
        supported = np.ones(hh.size, dtype=bool)
        if p.support_share > -1:
            with np.errstate(invalid="ignore"):
                shown = np.fmax(lost, gap_day[b] - self.gap_ref[b])
                supported = ~(shown <= p.support_share * beta * day_use)  # unknown baselines: the day counts
        elig = fit & supported & (beta >= p.beta_min) & (beta <= p.beta_max) & (z >= p.min_z) & (self.h_open[hh] == 0)
        # the household that explains the gap best (its neighbours share the rhythm, less well)
        ei = np.flatnonzero(elig)
        best_i = first_per_building(ei, b, nb, -z[ei])
        best = np.where(best_i >= 0, hh[np.maximum(best_i, 0)], -1)
        # yesterday's household keeps its streak on a day it still fits (z >= keep_z), even if a neighbour whose
        # rhythm is alike fits better that day; otherwise the day's best household starts a new one
        cb = np.flatnonzero((self.cand >= 0) & (self.cand_day == day - 1))
        ck = np.searchsorted(hh, self.cand[cb])
        with np.errstate(invalid="ignore", divide="ignore"):
            cr = beta[ck] / self.cand_beta[cb]
        keep = np.zeros(nb, dtype=bool)
        keep[cb] = (fit[ck] & (z[ck] >= p.keep_z) & (beta[ck] >= p.beta_min) & (beta[ck] <= p.beta_max)
                    & (cr <= p.beta_ratio) & (cr >= 1 / p.beta_ratio) & (self.h_open[self.cand[cb]] == 0))
        best[cb[keep[cb]]] = self.cand[cb[keep[cb]]]
        best_i[cb[keep[cb]]] = ck[keep[cb]]
        has = best >= 0
        bi = np.flatnonzero(has)
        k = best_i[bi]
        same = keep[bi]
        self.streak[bi] = np.where(same, self.streak[bi] + 1, 1)
        self.start_day[bi] = np.where(same, self.start_day[bi], day)
        self.cand_use[bi] = np.where(same, self.cand_use[bi], 0.0) + day_use[k]
        self.cand_gap[bi] = np.where(same, self.cand_gap[bi], 0.0) + gap_day[bi]
        self.cand_zmin[bi] = np.where(same, np.minimum(self.cand_zmin[bi], z[k]), z[k])
        self.cand_zsum[bi] = np.where(same, self.cand_zsum[bi], 0.0) + z[k]
        self.cand[bi] = best[bi]
        self.cand_day[bi] = day
        self.cand_beta[bi] = beta[k]
        self.streak[~has] = 0
        self.cand[~has] = -1

        # slow evidence: days that each fit only weakly add up (CUSUM of z), for households too small to stand out
        # on one day; a day that fits outside the beta range pulls the sum down, a day without data holds it
        old = self.acc[hh].astype(np.float64)
        inr = fit & supported & (beta >= p.beta_min) & (beta <= p.beta_max)
        # a day heard but with (almost) no use pulls it down too: an empty home is no bypass
        idle = (n >= p.min_hours) & ~(day_use >= p.min_use_m3)
        step = np.where(inr, np.minimum(z, p.cusum_zcap), np.where(fit, np.minimum(z, 0.0),
                                                                   np.where(idle, 0.0, p.cusum_k))) - p.cusum_k
        acc = np.where(self.h_open[hh] == 0, np.maximum(old + np.nan_to_num(step), 0.0), 0.0)
        began = (old <= 0) & (acc > 0)
        self.acc_start[hh[began]] = day
        on = acc > 0
        # the bypass began when the meter first lost use within the run, not on a chance good day before it
        with np.errstate(invalid="ignore"):
            fell = on & (n >= p.min_hours) & (day_use <= p.drop_max * self.use_ref[hh])
        self.acc_drop[hh] = np.where(began | ~on, 0, self.acc_drop[hh])
        self.acc_drop[hh[fell & (self.acc_drop[hh] == 0)]] = day
        self.acc_use[hh] = run_sum(self.acc_use[hh].astype(np.float64), np.where(fit, day_use, 0.0), on, began)
        self.acc_n[hh] = run_sum(self.acc_n[hh].astype(np.int64), fit, on, began).clip(0, 255)
        self.acc_gap[hh] = run_sum(self.acc_gap[hh].astype(np.float64),
                                   np.where(fit, np.nan_to_num(gap_day[b] - self.gap_ref[b]), 0.0), on, began)
        self.acc[hh] = acc
        # the household's metered use must have dropped, unless the hourly evidence alone is overwhelming
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_use = self.cand_use / np.maximum(self.streak, 1)
            usual = self.use_ref[np.maximum(self.cand, 0)]
            dropped = mean_use <= p.drop_max * usual
            pooled = self.cand_zsum / np.sqrt(np.maximum(self.streak, 1))
            # what the gap says bypasses the meter cannot be much more than what the meter lost
            matched = loss_matches(self.cand_beta, mean_use, usual, p.lost_match)
            # … and the building's gap must have risen by about as much (beyond its usual day-to-day swing)
            s_days = np.maximum(self.streak, 1)
            g_rise = self.cand_gap / s_days - self.gap_ref
            rose = g_rise >= self.cand_beta * mean_use - p.rise_k * self.gap_dev / np.sqrt(s_days)
            if p.rise_min_share > -1:
                rose &= g_rise >= p.rise_min_share * self.cand_beta * mean_use  # (the rise, not only the swing)
            rose |= ~np.isfinite(self.gap_ref) | ~np.isfinite(self.gap_dev)
            # a gap risen by about the estimate and far beyond its usual swing vouches for it where the household's
            # own use is too changeable for the loss check (a business's week)
            matched |= may_vouch & gap_vouches(g_rise, self.cand_beta * mean_use, self.gap_dev, s_days, p.vouch_share,
                                               p.vouch_k)
        ripe = (has & (self.streak >= p.persist_days) & (self.pend < 0) & (pooled >= p.pooled_z)
                & (dropped | (self.cand_zmin >= p.strong_z)) & matched & rose)
        # a household whose slow evidence reached cusum_h (the strongest in its building) when no streak ripened
        with np.errstate(invalid="ignore", divide="ignore"):
            a_days = np.maximum(self.acc_n[hh].astype(np.int64), 1)  # the judged days behind it
            a_mean = self.acc_use[hh] / a_days
            # (the day's beta is noisy next to a streak's, so the loss check is looser here)
            a_drop = ((a_mean <= p.drop_max * self.use_ref[hh])
                      & loss_matches(beta, a_mean, self.use_ref[hh], p.cusum_lost_match))
            # … or the slow evidence is overwhelming and the building's gap rose by about what the fits imply
            a_drop |= (gap_vouches(self.acc_gap[hh] / a_days, beta * a_mean, self.gap_dev[b], a_days, p.vouch_share,
                                   p.vouch_k) & (acc >= p.cusum_strong * p.cusum_h))
            # a deep drop of the meter over enough days needs less of the hourly evidence
            deep = ((acc >= p.cusum_drop_h) & (a_days >= p.cusum_drop_days)
                    & (a_mean <= p.cusum_drop_share * self.use_ref[hh]))
            deep |= ((acc >= p.cusum_deeper_h) & (a_days >= p.cusum_deeper_days)
                     & (a_mean <= p.cusum_deeper_share * self.use_ref[hh]))
        a_ok = np.flatnonzero(((acc >= p.cusum_h) | deep) & a_drop & inr & (self.h_open[hh] == 0))
        a_best = first_per_building(a_ok, b, nb, -acc[a_ok])
        a_ripe = (a_best >= 0) & ~ripe & (self.pend < 0)
        ab = np.flatnonzero(a_ripe)
        if ab.size:
            k = a_best[ab]
            best[ab] = hh[k]
            best_i[ab] = k
            dropped_on = self.acc_drop[hh[k]]
            self.start_day[ab] = np.where(dropped_on > 0, dropped_on, self.acc_start[hh[k]])
            self.streak[ab] = a_days[k]
            self.cand_use[ab] = self.acc_use[hh[k]]
            self.cand_zsum[ab] = acc[k] * np.sqrt(a_days[k])  # the strength shown is the CUSUM itself
            has[ab] = True
            mean_use = self.cand_use / np.maximum(self.streak, 1)
            pooled = self.cand_zsum / np.sqrt(np.maximum(self.streak, 1))
            ripe = ripe | a_ripe
        rb = np.flatnonzero(ripe)
        if rb.size:
            k = best_i[rb]
            hm = best[rb]
            self.pend[rb] = hm
            self.est[rb] = beta[k] * mean_use[rb]
            self.strength[rb] = pooled[rb]
            self.days_seen[rb] = self.streak[rb]
            self.gap_after[rb] = gap_day[rb]
            self.use_after[rb] = mean_use[rb]
            self.gap_before[rb] = self.gap_ref[rb]
            self.use_before[rb] = self.use_ref[hm]
            self.h_open[hm] = 1
            self.open_share[hm] = beta[k]
            self.streak[rb] = 0
            self.cand[rb] = -1
        # A full bypass leaves the meter (almost) still, so there is no hourly pattern to fit: the household's day
        # collapses against its own usual use while the building gap rises by about what it lost. A vacancy
        # collapses too, but the master falls with it and the gap stays.
        with np.errstate(invalid="ignore"):
            # against the building's usual gap, or its recent level if that is higher (a neighbour's bypass not yet
            # named raises it, and a family leaving then must not look like one); a streak keeps its first day's
            c_open = (self.c_cand >= 0) & (self.c_day == day - 1) & (self.c_first == 1)
            ref_b = np.where(c_open, self.c_ref, np.fmax(self.gap_ref, self.gap_recent))
            rise = gap_day[b] - ref_b[b]
            # the day's own tests; the gap's rise and the noise are judged over the streak's days together
            collapsed = ((n >= p.min_hours) & np.isfinite(lost) & (lost >= p.collapse_min_m3)
                         & (day_use <= p.collapse_fraction * self.use_ref[hh]) & usable.any(1)[b]
                         & np.isfinite(rise) & (self.h_open[hh] == 0))
        # A collapse is followed from its first day only, and only if the gap rose that day by about what the meter
        # lost (less collapse_first_k daily swings): a home that fell still days before the gap rose for another
        # reason is empty, and it is not taken up then. Several at once in one building: yesterday's household if
        # it still collapsed, else the one whose loss is closest to the gap's rise.
        held_h = (self.c_cand[b] == hh) & (self.c_day[b] == day - 1) & (self.c_first[b] == 1)
        ci = np.flatnonzero(collapsed & (held_h | (self.c_was[hh] == 0)))
        held = held_h[ci]
        c_pos = first_per_building(ci, b, nb, np.abs(rise[ci] - lost[ci]), ~held)
        c_best = np.where(c_pos >= 0, hh[np.maximum(c_pos, 0)], -1)
        c_lost = np.where(c_pos >= 0, lost[np.maximum(c_pos, 0)], 0.0)
        c_has = c_best >= 0
        cb = np.flatnonzero(c_has)
        c_same = (self.c_cand[cb] == c_best[cb]) & (self.c_day[cb] == day - 1)
        self.c_streak[cb] = np.where(c_same, self.c_streak[cb] + 1, 1)
        self.c_start[cb] = np.where(c_same, self.c_start[cb], day)
        self.c_ref[cb] = ref_b[cb]
        self.c_lsum[cb] = np.where(c_same, self.c_lsum[cb], 0.0) + c_lost[cb]
        # a day's rise counts up to what its loss could explain (a swing of the gap from elsewhere is no evidence),
        # less the share (beta x use) of another household whose hours the gap follows that day
        c_rise = rise[np.maximum(c_pos[cb], 0)]
        bk = best_i[cb]
        with np.errstate(invalid="ignore"):
            kk = np.maximum(bk, 0)
            share = beta[kk] * day_use[kk]
            if p.collapse_other_lost:
                share = np.fmax(share, lost[kk])  # … or what its own meter lost, if more
            c_expl = np.where((bk >= 0) & (best[cb] != c_best[cb]), np.maximum(share, 0.0), 0.0)
        c_cap = c_lost[cb] / p.collapse_gap_match
        self.c_rsum[cb] = np.where(c_same, self.c_rsum[cb], 0.0) + np.clip(c_rise - c_expl, -c_cap, c_cap)
        with np.errstate(invalid="ignore"):
            first_ok = ~(c_rise < p.collapse_gap_match * c_lost[cb] - p.collapse_first_k * self.gap_dev[cb])
        # a streak that has not shown a bypass within collapse_max_days is let go (an empty home)
        self.c_first[cb] = np.where(c_same, self.c_first[cb], first_ok) & (self.c_streak[cb] <= p.collapse_max_days)
        self.c_was[hh] = collapsed
        self.c_cand[cb] = c_best[cb]
        self.c_day[cb] = day
        self.c_streak[~c_has] = 0
        self.c_cand[~c_has] = -1
        # not on a day a household whose hours the gap follows explains it (the streak goes on meanwhile)
        c_ripe = (c_has & (self.c_streak >= p.collapse_persist_days) & (self.pend < 0) & ~ripe & ~has
                  & (self.c_first == 1)
                  & (self.base_n >= p.collapse_baseline_days))
        with np.errstate(invalid="ignore", divide="ignore"):
            cs = np.maximum(self.c_streak, 1).astype(np.float64)
            ml, mr = self.c_lsum / cs, self.c_rsum / cs
            noise = p.collapse_noise_k * self.gap_dev / np.sqrt(cs)
            c_ripe &= ((mr >= p.collapse_gap_match * ml) & (mr <= ml / p.collapse_gap_match)
                       & (ml >= noise) & (mr >= noise))
        c_lost = np.where(c_ripe, ml, c_lost)
        rb = np.flatnonzero(c_ripe)
        if rb.size:
            hm = c_best[rb]
            self.pend[rb] = hm
            self.start_day[rb] = self.c_start[rb]
            self.est[rb] = c_lost[rb]
            with np.errstate(invalid="ignore", divide="ignore"):
                self.strength[rb] = c_lost[rb] / self.gap_dev[rb]  # the loss in units of the building's daily swing
            self.days_seen[rb] = self.c_streak[rb]
            self.gap_after[rb] = gap_day[rb]
            self.use_after[rb] = self.use_ref[hm] - c_lost[rb]
            self.gap_before[rb] = self.gap_ref[rb]
            self.use_before[rb] = self.use_ref[hm]
            self.h_open[hm] = 1
            self.c_event[rb] = 1
            self.c_streak[rb] = 0
            self.c_cand[rb] = -1
            # the lost use is now the building's new normal gap until the crew closes the case
            self.gap_ref[rb] = gap_day[rb]
            ripe = ripe | c_ripe
        # baselines learn on days no household is suspected
        a = p.baseline_alpha
        quiet = (nu >= p.min_hours) & (self.streak == 0) & (self.c_streak == 0) & ~ripe
        # … nor while a household heard that day has slow evidence on its way (its unmetered use would become the
        # building's norm before the evidence is in)
        building_up = (self.acc[hh] >= p.cusum_hold * p.cusum_h) & (n >= p.min_hours)
        quiet &= np.bincount(b, weights=building_up, minlength=nb) == 0
        g_old = self.gap_ref[quiet]
        d_old = self.gap_dev[quiet]
        dev = np.abs(gap_day[quiet] - g_old)
        self.gap_dev[quiet] = ewma(d_old, dev, a)
        self.base_n[quiet] = np.minimum(self.base_n[quiet] + 1, 10000)
        self.gap_ref[quiet] = ewma(g_old, gap_day[quiet], a)
        # a household's usual use learns on those days too; one not known yet learns on any day it was heard and is not
        # suspected itself (a large building may have some household under suspicion on every day)
        first_use = ~np.isfinite(self.use_ref[hh]) & (self.cand[b] != hh) & (self.c_cand[b] != hh)
        hq = (n >= p.min_hours) & (quiet[b] | first_use) & (self.h_open[hh] == 0) & (self.acc[hh] <= 0)
        u_old = self.use_ref[hh[hq]].astype(np.float64)
        self.use_ref[hh[hq]] = ewma(u_old, day_use[hq], a)
        # the gap's recent level learns every day the building is heard
        heard_b = nu >= p.min_hours
        self.gap_recent[heard_b] = ewma(self.gap_recent[heard_b], gap_day[heard_b], p.recent_alpha)
        # the judged hours are free for the hours to come
        self.code[:, slots[in_day]] = MISSING
        self.m_ring[:, slots[in_day]] = np.nan
        self.s_ring[:, slots[in_day]] = 0.0
        self.taint &= ~np.bitwise_or.reduce(np.left_shift(np.uint64(1), slots[in_day].astype(np.uint64)))

    def _emit(self, now: int) -> list[AlertEvent]:
        out = []
        for b in np.flatnonzero(self.pend >= 0).tolist():
            out.append(self._event(b, now))
            self.pend[b] = -1
        return out

    def _event(self, b: int, now: int) -> AlertEvent:
        reg = self.registry
        h = int(self.pend[b])
        meter_id, district = str(reg.meters.ids[h]), str(reg.meters.district[h])
        start = self.calendar.day_start_ns(int(self.start_day[b]))
        est = float(self.est[b])
        full = bool(self.c_event[b])
        self.c_event[b] = 0
        if full:
            before, after = float(self.use_before[b]), float(self.use_after[b])
            registered = max(after, 0.0) / before if before > 0 else 0.0
        else:
            registered = 1.0 / (1.0 + float(self.open_share[h]))
        ev = {
            "building_id": str(reg.buildings.ids[b]),
            "master_meter_id": str(reg.buildings.master_meter_id[b]),
            "building_gap_m3_per_day_before": round_or_none(self.gap_before[b]),
            "building_gap_m3_per_day_after": round_or_none(self.gap_after[b]),
            "household_use_m3_per_day_before": round_or_none(self.use_before[b]),
            "household_use_m3_per_day_after": round_or_none(self.use_after[b]),
            "estimated_unmetered_m3_per_day": round_or_none(est),
            "estimated_registered_fraction": round_or_none(registered),
            "since_day": str(self.calendar.date_of(int(self.start_day[b]))),
            # how sure: the hourly fit's weight of evidence in standard errors (a full bypass: its lost use in
            # multiples of the building's usual day-to-day gap swing), and over how many days it was seen
            "evidence_strength": round_or_none(self.strength[b]),
            "days_observed": int(self.days_seen[b]),
        }
        addr = str(reg.buildings.address[b])
        where = f"{meter_id} ({reg.buildings.ids[b]}{', ' + addr if addr else ''})"
        how = ("its meter nearly stopped while the building gap rose by what it used to register" if full
               else "the building gap follows this household's hourly use")
        summary = (f"Meter {where}: about {est:.2f} m3/day bypasses the meter since {ev['since_day']} ({how}; "
                   f"it registers ~{100 * registered:.0f} %): inspect for a bypass pipe")
        return AlertEvent(
            alert_id=alert_id("bypass", meter_id, start), event="raised", kind="bypass",
            severity="warning", subject_type="meter", subject_id=meter_id, district=district, start_ns=start,
            detected_at_ns=now, summary=summary,
            evidence=ev)

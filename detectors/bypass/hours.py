"""Meter readings to each meter's use in each whole hour: the register at a whole hour is interpolated between the
readings around it, so meters that read at any minute balance alike; a register that ran backwards, or moved more
than its pipe can carry, leaves its hour marked instead of measured."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devices.batch import NS

from ..base import HOUR_NS, MeterView, first_rows

# A household's hourly use is held as one byte: litres on a log scale (16 codes per doubling, 4.4 % steps up to
# about 55 m3), or a mark. Its building's balance is held exactly (see detector.BypassDetector._store).
CODE_STEPS = 16.0
TOP_CODE = 252
REVERSED = 253  # the register ran backwards in that hour (beyond pressure-transient noise): the volume is in the gap
BROKEN = 254  # more than the pipe can carry: a broken reading
MISSING = 255  # not heard (yet)
SPREAD_GAP_NS = 75 * 60 * 1_000_000_000  # readings further apart than this leave the hours between them spread


def encode_litres(litres: np.ndarray) -> np.ndarray:
    return np.minimum(np.rint(CODE_STEPS * np.log2(1.0 + np.maximum(litres, 0.0))), TOP_CODE).astype(np.uint8)


# code -> m3 (the marks as 0: callers mask them)
M3_OF_CODE = np.where(np.arange(256) <= TOP_CODE, (np.exp2(np.arange(256) / CODE_STEPS) - 1.0) / 1000.0, 0.0)


@dataclass
class HourlyUses:
    """Use of whole hours found in one batch: meter, hour (UTC hours since 1970; the hour the use happened in),
    litres, and a mark (0, REVERSED or BROKEN)."""

    meter: np.ndarray
    hour: np.ndarray
    litres: np.ndarray
    mark: np.ndarray
    spread: np.ndarray  # the hour's use was spread over a gap between readings: its total is known, not its hour

    def take(self, rows: np.ndarray) -> HourlyUses:
        return HourlyUses(self.meter[rows], self.hour[rows], self.litres[rows], self.mark[rows], self.spread[rows])


@dataclass
class RegisterMemory:
    """What each meter's register said last (carried from batch to batch): the register at the whole hour before
    its latest reading (litres, -1 unknown), the latest reading's time (epoch s, 0 none) and register (litres)."""

    last_l: np.ndarray
    last_rt: np.ndarray
    last_rl: np.ndarray


def fresh_rows(view: MeterView, last_rt: np.ndarray, wanted: np.ndarray | None) -> tuple | None:
    """The batch's readings newer than each meter's latest (older ones are late copies), of the wanted meters,
    in (meter, time) order: (ts_ns, meter, total_m3, first row of each meter, last row, its meter); None if none."""
    t, gm = view.ts, view.meter
    take = t > last_rt[gm].astype(np.int64) * NS
    if wanted is not None:
        take &= wanted[gm]
    if take.all():
        # the usual case: the view's shared columns and meter groups as they are (read only)
        return t, gm, view.col("total_m3"), view.starts, view.ends, view.meters
    rows = np.flatnonzero(take)
    if rows.size == 0:
        return None
    t, gm, tot = t[rows], gm[rows], view.col("total_m3")[rows]
    fi = np.flatnonzero(first_rows(gm))
    la = np.append(fi[1:] - 1, rows.size - 1)
    return t, gm, tot, fi, la, gm[fi]


def _registers_at_whole_hours(t, gm, lit, fi, mem: RegisterMemory, max_gap_ns: int, max_l: np.ndarray):
    """Each whole hour crossed between consecutive readings of a meter, with the register interpolated there:
    (source row, hour, register litres)."""
    n = t.size
    fm = gm[fi]
    pt = np.empty_like(t)
    pt[1:] = t[:-1]
    pl = np.empty_like(lit)
    pl[1:] = lit[:-1]
    pt[fi] = mem.last_rt[fm].astype(np.int64) * NS
    pl[fi] = mem.last_rl[fm]
    gap = t - pt
    span = (gap > 0) & (gap <= max_gap_ns)
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
        # the k-th hour after a reading's previous one: its run's base repeated, plus the position in all runs
        hb = np.repeat(pth + 1 - (np.cumsum(cnt) - cnt), cnt) + np.arange(src.size)
    rb = lit[src].astype(np.float64)  # litres at hour hb: a reading on the hour is it
    off = np.flatnonzero(t[src] != hb * HOUR_NS)
    if off.size:
        so = src[off]
        d = lit[so] - pl[so]
        mx = max_l[gm[so]]
        d = np.where(d < -mx // 2, d + mx, d)  # across a wrap at register_max
        # between two readings, in proportion to time (may pass register_max: unwrapped by the caller)
        rb[off] = pl[so] + d * ((hb[off] * HOUR_NS - pt[so]) / (t[so] - pt[so]))
    # a register interpolated across more than an hour without a reading: the hours around it share the use evenly
    spread = (t[src] - pt[src]) > SPREAD_GAP_NS
    return src, hb, rb, th, spread


def hourly_uses(rows: tuple, mem: RegisterMemory, max_gap_ns: int, max_l: np.ndarray, cap_l: np.ndarray,
                reverse_noise_l: float) -> HourlyUses | None:
    """Use in each whole hour the fresh rows complete, and the registers carried to the next batch."""
    t, gm, tot, fi, la, fm = rows
    lit = np.rint(tot * 1000).astype(np.int64)
    src, hb, rb, th, spread = _registers_at_whole_hours(t, gm, lit, fi, mem, max_gap_ns, max_l)
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
    prev_r[bfi] = mem.last_l[bfm]
    step[bfi] = np.where(mem.last_l[bfm] >= 0, hb[bfi] - mem.last_rt[bfm].astype(np.int64) // 3600, 0)
    inc = rb - prev_r
    neg = np.flatnonzero(inc < 0)
    if neg.size:  # across a wrap at register_max (rare): a rollover is not a reverse flow
        inc[neg] += np.where(inc[neg] < -max_l[bm[neg]] / 2, max_l[bm[neg]], 0)
    mark = np.zeros(src.size, dtype=np.uint8)
    mark[inc < -reverse_noise_l] = REVERSED
    mark[np.abs(inc) > cap_l[bm]] = BROKEN  # more than the pipe carries, either way (a register set back at once)
    # a register running backwards still measured the water that passed (a meter installed the wrong way round):
    # its hour keeps that volume, marked; a few litres back (a pressure transient) is no use and no reversal
    inc = np.where(mark == REVERSED, -inc, np.maximum(inc, 0.0))
    _carry_registers(mem, hb, rb, bfi, th[la], fm, max_l, bm)
    mem.last_rt[fm] = t[la] // NS
    mem.last_rl[fm] = lit[la]
    ok = step == 1
    spread_prev = np.empty_like(spread)
    spread_prev[1:] = spread[:-1]
    spread_prev[bfi] = False
    # the increment up to a whole hour is the use of the hour before it
    return HourlyUses(meter=bm[ok], hour=hb[ok] - 1, litres=inc[ok], mark=mark[ok], spread=(spread | spread_prev)[ok])


def _carry_registers(mem: RegisterMemory, hb, rb, bfi, new_h, fm, max_l, bm) -> None:
    """The register at the whole hour before each meter's newest reading, held for the next batch: from this batch
    when it reached that hour, kept when no hour has passed, unknown otherwise (a gap too long)."""
    old_h = mem.last_rt[fm].astype(np.int64) // 3600
    hold = np.where(new_h == old_h, mem.last_l[fm].astype(np.int64), -1)
    if hb.size:
        bl = np.empty(bfi.size, dtype=np.int64)
        bl[:-1] = bfi[1:] - 1
        bl[-1] = hb.size - 1
        at = np.searchsorted(fm, bm[bl])  # both in meter order
        reach = hb[bl] == new_h[at]
        hold[at[reach]] = np.rint(rb[bl[reach]]).astype(np.int64) % np.maximum(max_l[bm[bl[reach]]], 1)
    mem.last_l[fm] = hold

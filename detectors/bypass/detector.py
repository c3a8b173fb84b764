"""The bypass detector: every meter's hourly use held for two days, each building's local day balanced once all its
households have reported (or are known silent), and a household named only when its own metered use fell and its
building's unmetered use rose by as much, with something only that household explains (see README.md)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from devices.alerts import AlertEvent
from devices.batch import Batch
from devices.registry import Registry

from ..base import HOUR_NS, Detector, LocalCalendar, MeterView, Params
from . import events as ev
from . import judge, learn
from .day import B_INCIDENT, B_RECAND, B_REPORTED, E_VY, E_Y, DayStep, R
from .hours import (
    BROKEN,
    MISSING,
    REVERSED,
    HourlyUses,
    RegisterMemory,
    encode_litres,
    fresh_rows,
    hourly_uses,
)
from .params import BypassParams

NEVER = np.iinfo(np.int64).max
FORCE_H = 24  # a day is balanced with what is known at the latest a day after it ends (the ring holds two days)


POW2 = np.left_shift(np.uint64(1), np.arange(R, dtype=np.uint64))  # ring slot -> its bit


class BypassDetector(Detector):
    name = "bypass"
    kinds = ("bypass", "building_unmetered_use")
    Params: ClassVar[type[Params]] = BypassParams
    params: BypassParams
    state_axes: ClassVar[dict[str, str]] = {
        # hourly use as it arrives, until its building's day is balanced
        "code": "meter", "last_l": "meter", "last_rt": "meter", "last_rl": "meter",
        "gap_h": "building", "m_known": "building", "taint": "building", "spread": "building", "next_day": "building", "first_h": "building",
        # each household: its baseline, state, the drop followed, and its window of evidence
        "rate": "meter", "wkf": "meter", "dev": "meter", "n_learn": "meter", "phase": "meter", "open_share": "meter",
        "hc": "meter", "low_days": "meter", "unc_day": "meter", "w_sum": "meter", "w_n": "meter", "w_x1": "meter",
        "w_first": "meter",
        # each building: normal loss model and noise, its episode of rising unmetered use, its incident
        "b_loss": "building", "rprof": "building", "sig_h2": "building", "sig_d2": "building", "n_gap": "building",
        "phi2": "building", "cus_b": "building", "ep_start": "building", "ep_n": "building", "ep_sum": "building",
        "ep_night": "building", "b_flags": "building", "b_start_day": "building",
        "now": "scalar",
    }
    derived: ClassVar[tuple[str, ...]] = ("household", "bld", "master_of", "hh_sorted", "b_first", "b_count",
                                          "interval_s", "_silent_s", "max_l", "cap_l")

    def __init__(self, registry: Registry, params: Params | dict | None, calendar: LocalCalendar):
        super().__init__(registry, params, calendar)
        self._derive()

    def _derive(self) -> None:
        """Caches from the registry and the settings (never checkpointed)."""
        m, b = self.registry.meters, self.registry.buildings
        has_master = b.master_meter >= 0
        bld = m.building.astype(np.int64)
        self.household = (bld >= 0) & ~m.is_master & np.where(bld >= 0, has_master[np.maximum(bld, 0)], False)
        self.bld = np.maximum(bld, 0)
        self.master_of = np.full(len(m), -1, dtype=np.int64)  # meter -> building it is the master of
        self.master_of[b.master_meter[has_master]] = np.flatnonzero(has_master)
        hh = np.flatnonzero(self.household)
        self.hh_sorted = hh[np.argsort(self.bld[hh], kind="stable")]  # households grouped by building
        self.b_count = np.bincount(self.bld[hh], minlength=len(b)).astype(np.int64)
        self.b_first = np.cumsum(self.b_count) - self.b_count
        self.interval_s = m.report_interval_s.astype(np.int64)
        self._silent_s = self.params.silent_after_intervals * self.interval_s
        self._starts_h = (0, np.empty(0, dtype=np.int64))  # _day_start_h's table: (first day, its start hours)
        self.max_l = np.rint(m.register_max_m3 * 1000).astype(np.int64)
        v = self.params.max_pipe_velocity_m_s
        self.cap_l = np.where(m.pipe_dn_mm > 0, v * 1000 * np.pi * (m.pipe_dn_mm / 1000) ** 2 / 4 * 3600, np.inf)

    def _init_state(self) -> None:
        n, nb = len(self.registry.meters), len(self.registry.buildings)
        self.code = np.full((n, R), MISSING, dtype=np.uint8)  # hourly use, log-coded litres or a mark (a ring)
        self.last_l = np.full(n, -1, dtype=np.int32)  # register at the whole hour before last_rt, litres
        self.last_rt = np.zeros(n, dtype=np.uint32)  # latest reading, epoch s (0: none)
        self.last_rl = np.zeros(n, dtype=np.int32)  # its register, litres
        self.gap_h = np.zeros((nb, R), dtype=np.float32)  # master less the heard households, litres per hour
        self.m_known = np.zeros(nb, dtype=np.uint64)  # bit per ring slot: the master's hour is known
        self.taint = np.zeros(nb, dtype=np.uint64)  # bit per slot: a household's reading broken (hour unusable)
        self.spread = np.zeros(nb, dtype=np.uint64)  # bit per slot: a household's hour spread over a reading gap
        self.next_day = np.full(nb, -1, dtype=np.int32)  # next local day to balance (-1: not started)
        self.first_h = np.full(nb, -1, dtype=np.int32)  # earliest hour stored before the building started
        self.rate = np.zeros((n, 4), dtype=np.float16)  # usual use by quarter of the day, litres/h (weekdays)
        self.wkf = np.full(n, 64, dtype=np.uint8)  # weekend day / weekday, x64
        self.dev = np.zeros(n, dtype=np.float16)  # day-to-day swing of its daily use, litres
        self.n_learn = np.zeros(n, dtype=np.uint8)  # days learned (capped)
        self.phase = np.zeros(n, dtype=np.uint8)  # NORMAL, or OPEN (named for a bypass)
        self.open_share = np.zeros(n, dtype=np.float16)  # an open bypass: the share of its usual use unmetered
        self.hc = np.zeros(n, dtype=np.float16)  # CUSUM of its daily drop, standard errors
        self.low_days = np.zeros(n, dtype=np.uint8)  # days the CUSUM has been up (open: days back to usual)
        self.unc_day = np.zeros(n, dtype=np.uint8)  # last day its use had to be guessed (mod 256)
        self.w_sum = np.zeros((n, 6), dtype=np.float16)  # its window: drop and hourly regression sums (W_SCALE)
        self.w_n = np.zeros(n, dtype=np.uint8)  # days in the window, and whether its drop predates it (PRE_DROP)
        self.w_x1 = np.zeros(n, dtype=np.float16)  # the window's first day's drop, litres
        self.w_first = np.full(n, 0xFFFF, dtype=np.uint16)  # first day its drop stood out (open: since when)
        self.b_loss = np.zeros((nb, 4), dtype=np.float32)  # mean S, G, S^2, S*G per hour (normal loss)
        self.rprof = np.zeros((nb, 4), dtype=np.float32)  # the loss model's own misfit by quarter of the day
        self.sig_h2 = np.zeros(nb, dtype=np.float32)  # hour-to-hour noise of the unmetered use, litres^2
        self.sig_d2 = np.zeros(nb, dtype=np.float32)  # day-to-day noise, litres^2
        self.n_gap = np.zeros(nb, dtype=np.uint16)  # days the loss model learned
        self.phi2 = np.ones(nb, dtype=np.float32)  # calibration of the hourly fits' z (their spread squared)
        self.cus_b = np.zeros(nb, dtype=np.float32)  # CUSUM of the daily rise, standard errors
        self.ep_start = np.full(nb, -1, dtype=np.int32)  # day the episode of rising unmetered use began (-1: none)
        self.ep_n = np.zeros(nb, dtype=np.uint8)  # days in it
        self.ep_sum = np.zeros((nb, 8), dtype=np.float32)  # its rise and the building's regression sums
        self.ep_night = np.zeros((nb, 2), dtype=np.float16)  # its nights: unmetered litres, and nights counted
        self.b_flags = np.zeros(nb, dtype=np.uint8)  # building incident open / raised in this episode
        self.b_start_day = np.zeros(nb, dtype=np.int32)  # the building incident's first day
        self.now = np.zeros(1, dtype=np.int64)

    def restore(self, blob: dict[str, np.ndarray], remap: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """A checkpoint of the hourly detector this one replaced (no windows in it) keeps only the registers read
        last and the clock: the rest is another model's, and is learned afresh."""
        if blob and "w_sum" not in blob:
            blob = {k: v for k, v in blob.items() if k in ("last_l", "last_rt", "last_rl", "now")}
        super().restore(blob, remap)

    def _after_restore(self) -> None:
        self._derive()

    def day_now(self) -> int:
        return self.calendar.day_of_one(int(self.now[0])) if self.now[0] else 0

    def loss_model(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The building's normal loss: lam (share of the water used) and a steady flow (litres/day)."""
        s, g, ss, sg = (self.b_loss[b, k].astype(np.float64) for k in range(4))
        var = ss - s * s
        lam = np.where(var > 1e-6, (sg - s * g) / np.maximum(var, 1e-6), 0.0)
        lam = np.clip(lam, -self.params.max_loss_share, self.params.max_loss_share)
        return lam, (g - lam * s) * 24

    # ------------------------------------------------------------------ readings in
    def update(self, batch: Batch, view: MeterView) -> list[AlertEvent] | None:
        for e in batch.events:
            if e.device == "meter" and e.type == "replacement":
                self.last_l[e.index] = -1  # no increment across a restarted register
                self.last_rt[e.index] = 0
        if view.n == 0:
            return None
        watched = self.household | (self.master_of >= 0)
        rows = fresh_rows(view, self.last_rt, None if bool(watched.all()) else watched)
        if rows is None:
            return None
        self.now[0] = max(int(self.now[0]), int(rows[0].max()))
        p = self.params
        mem = RegisterMemory(self.last_l, self.last_rt, self.last_rl)
        uses = hourly_uses(rows, mem, p.max_reading_gap_s * 10**9, self.max_l, self.cap_l, p.reverse_noise_m3 * 1000)
        if uses is None or uses.meter.size == 0:
            return None
        return self._store_all(uses) or None

    def _day_start_h(self, days: np.ndarray) -> np.ndarray:
        """First hour (UTC hours since 1970) of each local day: a table of the days around those asked for (the
        buildings' days lie within a few days of each other; asked for on every tick)."""
        lo, hi = int(days.min()), int(days.max())
        t_lo, table = self._starts_h
        if lo < t_lo or hi >= t_lo + table.size:
            if hi - lo > 400:  # (days far apart: one lookup each)
                u, inv = np.unique(days, return_inverse=True)
                return np.array([self.calendar.day_start_ns(int(x)) // HOUR_NS for x in u])[inv].reshape(days.shape)
            t_lo = lo - 7
            table = np.array([self.calendar.day_start_ns(x) // HOUR_NS for x in range(t_lo, hi + 60)], dtype=np.int64)
            self._starts_h = (t_lo, table)
        return table[days - t_lo]

    def _store_all(self, uses: HourlyUses) -> list[AlertEvent]:
        """Store the hours that fit the ring; a backlog reaching beyond it balances its buildings' pending days
        first, with what is known of them."""
        out: list[AlertEvent] = []
        b = self.bld[uses.meter]
        # a building starts at the day of its earliest hour (whatever the order the first hours come in)
        fresh = self.next_day[b] < 0
        if fresh.any():
            first = np.full(len(self.first_h), np.iinfo(np.int32).max, dtype=np.int64)
            np.minimum.at(first, b[fresh], uses.hour[fresh])
            seen = first < np.iinfo(np.int32).max
            old = np.where(self.first_h >= 0, self.first_h, np.iinfo(np.int32).max)
            self.first_h[seen] = np.minimum(old[seen], first[seen])
        while uses.meter.size:
            b = self.bld[uses.meter]
            base = self._base_h()
            fits = uses.hour < base[b] + R
            if fits.all():
                self._store(uses, base, b)
                break
            self._start(np.unique(b[~fits]))  # a backlog beyond the ring: the buildings it reaches start now
            base = self._base_h()
            fits = uses.hour < base[b] + R
            self._store(uses.take(fits), base,
                        b[fits])
            out += self._process(np.unique(b[~fits]), forced=True)
            rest = ~fits
            uses = uses.take(rest)
        return out

    def _base_h(self) -> np.ndarray:
        """Per building, the first hour the ring holds: its next day's start, or its earliest hour (not started)."""
        started = self.next_day >= 0
        if not started.any():
            return self.first_h.astype(np.int64)
        return np.where(started, self._day_start_h(np.where(started, self.next_day, self.next_day.max())),
                        self.first_h.astype(np.int64))

    def _start(self, buildings: np.ndarray) -> None:
        """Buildings not started yet begin with the day of their earliest hour stored."""
        b = buildings[(self.next_day[buildings] < 0) & (self.first_h[buildings] >= 0)]
        if b.size:
            days = self.calendar.day_of(self.first_h[b].astype(np.int64) * HOUR_NS)
            self.next_day[b] = days

    def _store(self, uses: HourlyUses, base: np.ndarray, b: np.ndarray) -> None:
        """Hourly uses into the rings (b: each one's building); hours of days already balanced are dropped (too
        late)."""
        keep = (uses.hour >= base[b]) | (self.next_day[b] < 0)
        if not keep.all():
            uses = uses.take(keep)
            b = b[keep]
        gm, mark = uses.meter, uses.mark
        slot = uses.hour % R
        flat = b * R + slot
        lit = np.rint(uses.litres)
        # (each meter's hour comes once: readings older than a meter's latest are dropped before)
        master = self.master_of[gm] >= 0
        counted = (mark == 0) | ((mark == REVERSED) & ~master)  # (a register run backwards measured its water)
        into = np.where(master, lit, -lit) * (counted & (master | self.household[gm]))
        self.gap_h += np.bincount(flat, weights=into, minlength=self.gap_h.size).reshape(self.gap_h.shape)
        mi = master & (mark == 0)
        if mi.any():
            np.bitwise_or.at(self.m_known, b[mi], POW2[slot[mi]])
        hi = ~master & self.household[gm]
        codes = self.code.reshape(-1)
        codes[gm[hi] * R + slot[hi]] = np.where(mark[hi] == 0, encode_litres(uses.litres[hi]), mark[hi])
        # a household's hour spread over a gap in its readings: the building's hour holds in the day's balance,
        # not in the hourly fit
        spread = (hi | master) & uses.spread
        if spread.any():
            np.bitwise_or.at(self.spread, b[spread], POW2[slot[spread]])
        broke = hi & (mark == BROKEN)  # the master may have seen that water: the building's hour is unusable
        if broke.any():
            np.bitwise_or.at(self.taint, b[broke], POW2[slot[broke]])

    # ------------------------------------------------------------------ the clock
    def tick(self, now_ns: int) -> list[AlertEvent] | None:
        now = max(int(now_ns), int(self.now[0]))
        self.now[0] = now
        self._start(np.flatnonzero(self.next_day < 0))
        out: list[AlertEvent] = []
        for _ in range(64):  # a building at most this many days behind catches up in one tick
            ready = np.flatnonzero(self._ready(now))
            if ready.size == 0:
                break
            out += self._process(ready)
        return out or None

    def _ready(self, now_ns: int) -> np.ndarray:
        """Buildings whose next day can be balanced: the master and every household reported past its end (or are
        silent), or it ended FORCE_H ago."""
        has = (self.next_day >= 0) & (self.registry.buildings.master_meter >= 0)
        if not has.any():
            return has
        end_h = np.where(has, self._day_start_h(np.where(has, self.next_day, self.next_day.max()) + 1), NEVER)
        last = self.last_rt.astype(np.int64)
        reach = last // 3600
        silent = (now_ns // 10**9 - last > self._silent_s) | (last == 0)
        reach_h = np.where(silent, NEVER, reach)[self.hh_sorted]
        closed = np.full(len(self.next_day), NEVER, dtype=np.int64)
        with_hh = self.b_count > 0
        if reach_h.size:
            closed[with_hh] = np.minimum.reduceat(reach_h, self.b_first[with_hh])
        masters = self.registry.buildings.master_meter
        closed[has] = np.minimum(closed[has], reach[masters[has]])
        now_h = now_ns // HOUR_NS
        return has & (end_h <= now_h) & ((end_h <= closed) | (end_h + FORCE_H <= now_h))

    def _process(self, buildings: np.ndarray, forced: bool = False) -> list[AlertEvent]:
        """Balance the next day of each building given (those at the same day together). A day forced by hours
        beyond the ring is dated when the ring filled (the same whatever the batches' boundaries)."""
        out: list[AlertEvent] = []
        board = self.board
        other = board.open_mask("reverse_flow") | board.open_mask("signal_blocking")
        days = self.next_day[buildings]
        for day in np.unique(days).tolist():
            now = int(self.now[0])
            if forced:
                now = min(now, self.calendar.day_start_ns(int(day)) + R * HOUR_NS)
            out += self._balance_day(buildings[days == day], int(day), other, now)
        return out

    def _balance_day(self, buildings: np.ndarray, day: int, other: np.ndarray, now: int) -> list[AlertEvent]:
        step = DayStep(self, buildings, day)
        step.inputs(other)
        step.expected()
        step.balance()
        fresh = step.episodes()
        step.evidence(fresh)
        out, named_b, cand = self._attribute(step, now)
        learn.follow_drops(step)
        learn.households(step)
        stale, reports = self._unexplained(step, day, cand, named_b, now)
        out += reports
        learn.buildings(step, stale)
        out += self._close(step, stale | np.isin(buildings, named_b), now)
        self._free(step)
        return out

    def _unexplained(self, step: DayStep, day: int, cand: np.ndarray, named_b: np.ndarray,
                     now: int) -> tuple[np.ndarray, list[AlertEvent]]:
        """Episodes (rows of step.b) no household was named for within max_episode_days: the rise is the building's
        own, reported (with the households whose drop matched it, if any) when it is as clear as a pattern must be to
        name a household (a smaller one is the loss's noise), and the loss model learns it."""
        b, p = step.b, self.params
        age = day - self.ep_start[b]
        held = step.holding & (age < p.baseline_days)
        stale = (self.ep_start[b] >= 0) & (age >= p.max_episode_days) & ~held
        e = self.ep_sum[b].astype(np.float64)
        clear = e[:, E_Y] >= p.z_pattern * np.sqrt(np.maximum(e[:, E_VY], 1.0))
        # (a building whose household was named today is not reported for the same rise)
        unreported = ~np.isin(b, named_b) & ((self.b_flags[b] & B_REPORTED) == 0)
        reports = [ev.building_raised(self, int(b[q]), [int(step.hh[c]) for c in cand if step.pos[c] == q], now)
                   for q in np.flatnonzero(stale & clear & unreported).tolist()]
        return stale, reports

    def _attribute(self, step: DayStep, now: int) -> tuple[list[AlertEvent], np.ndarray, np.ndarray]:
        """Events of the day's attribution, the buildings (registry index) whose rise it explained, and the
        candidate households (rows of step.hh)."""
        named, unclear_b, cand = judge.decide(step)
        out: list[AlertEvent] = []
        for r in named.tolist():
            out.append(ev.bypass_raised(step, r, step.window, int(np.flatnonzero(step.window_rows == r)[0]), now))
        for q in unclear_b.tolist():
            b = int(step.b[q])
            cands = [int(step.hh[c]) for c in cand if step.pos[c] == q]
            if self.b_flags[b] & B_REPORTED:
                # a case keeps the candidates it was raised with: a meter left with nothing that qualified after it
                # (named by the hour it fell, or never: a family away looks the same day by day) is sent to it, once
                left = bool(np.any(step.pos[step.left_rows] == q))
                if left and not self.b_flags[b] & B_RECAND:
                    out.append(ev.building_raised(self, b, cands, now))
                    self.b_flags[b] |= B_RECAND
                continue
            out.append(ev.building_raised(self, b, cands, now))
        return out, step.b[np.unique(step.pos[named])], cand

    def _close(self, step: DayStep, done: np.ndarray, now: int) -> list[AlertEvent]:
        """Episodes that ended (explained, or left to the loss model), building incidents whose rise is gone, and
        bypasses whose meter registers its usual use again."""
        b = step.b
        out: list[AlertEvent] = []
        stale = done & (self.ep_start[b] >= 0)
        self.cus_b[b[done]] = 0
        self.ep_start[b[done]] = -1
        self.ep_sum[b[done]] = 0
        self.ep_night[b[done]] = 0
        self.ep_n[b[done]] = 0
        quiet = step.usable & (self.ep_start[b] < 0) & ((self.b_flags[b] & B_INCIDENT) != 0) & ~stale
        for q in np.flatnonzero(quiet).tolist():
            out.append(ev.building_cleared(self, int(b[q]), now))
        for r in learn.open_households(step).tolist():
            out.append(ev.bypass_cleared(self, int(step.hh[r]), now))
        return out

    def _free(self, step: DayStep) -> None:
        """The day's hours are balanced: their ring slots are free for the hours to come."""
        slots = step.slots
        a = int(slots[0])
        if a + slots.size <= R:  # (the day's slots in one run: the usual case)
            self.code[step.hh, a:a + slots.size] = MISSING
            self.gap_h[step.b, a:a + slots.size] = 0.0
        else:
            self.code[np.ix_(step.hh, slots)] = MISSING
            self.gap_h[np.ix_(step.b, slots)] = 0.0
        mask = ~np.bitwise_or.reduce(np.left_shift(np.uint64(1), slots.astype(np.uint64)))
        self.m_known[step.b] &= mask
        self.taint[step.b] &= mask
        self.spread[step.b] &= mask
        self.next_day[step.b] += 1


"""A small hand-built town for checking detectors (no I/O): registry, meter and pump-room traffic in publish
order, and injectable incidents and look-alikes with their labels. Used by tests/unit/test_detectors_*.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from devices.alerts import AlertEvent, iso_utc
from devices.batch import NS, Batch, DeviceEvent, MeterReadings
from devices.registry import Registry

from .rooms import RoomPlan, build_rooms

HOUR = 3600 * NS
DAY = 24 * HOUR
T0 = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * NS


@dataclass
class Plan:
    """What happens to the town; filled by the inject_* methods before build()."""

    blocked: dict[int, tuple[int, int | None, bool]] = field(default_factory=dict)  # meter -> (from, to, rsrp sinks)
    cell_outages: list[tuple[int, int, int]] = field(default_factory=list)  # (cell, from, to)
    dead: dict[int, int] = field(default_factory=dict)  # meter -> time the battery dies
    lost: list[tuple[int, int]] = field(default_factory=list)  # (meter, hour): a message lost for good
    backwards: dict[int, int] = field(default_factory=dict)  # meter -> from (register runs backwards)
    wound_back: dict[int, tuple[int, float]] = field(default_factory=dict)  # meter -> (when, m3)
    reverse_register: dict[int, tuple[int, float]] = field(default_factory=dict)  # meter -> (from, m3/h)
    transients: set[int] = field(default_factory=set)  # meters with a few litres backflow now and then
    forward_transients: set[int] = field(default_factory=set)  # meters whose forward register rocks back a few litres
    replacements: dict[int, tuple[int, float]] = field(default_factory=dict)  # meter -> (when, new register)
    record_late: dict[int, int | None] = field(default_factory=dict)  # meter -> seconds its record comes late
    bypass: dict[int, tuple[int, float]] = field(default_factory=dict)  # household -> (from, share bypassed)
    vacancy: dict[int, int] = field(default_factory=dict)  # household -> from (nobody home)
    use_scale: dict[int, tuple[float, int]] = field(default_factory=dict)  # household -> (factor on its use, from)
    leak: dict[int, tuple[int, float]] = field(default_factory=dict)  # building -> (from, m3/h)
    chance_fit: dict[int, tuple[int, float, bool]] = field(default_factory=dict)  # household -> (day, beta, falls)
    burst: dict[int, tuple[int, float]] = field(default_factory=dict)  # household -> (hour, m3 used in it)
    trips: dict[int, tuple[int, int]] = field(default_factory=dict)  # household -> (leaves, comes back): no use
    disinfections: list[tuple[int, int, int]] = field(default_factory=list)  # (tank, refilled at, record at)
    rooms: RoomPlan = field(default_factory=RoomPlan)


class Town:
    """`Town(seed).build()` then `chunks(n)` yields (Batch, watermark) in publish order."""

    def __init__(self, seed: int = 0, buildings: int = 4, households: int = 8, days: int = 20, cells: int = 3,
                 start_ns: int = T0, overdue_tanks: int = 0, hourly_every: int = 3,
                 upload_hours: tuple[int, int] = (0, 24), masters_in_cell: bool = True,
                 room_intervals: tuple[int, ...] = (900, 300)):
        """`hourly_every`: every k-th household of a building reports hourly, the rest daily (0: all daily);
        `upload_hours`: the UTC hours within which each daily meter has its own upload time; `masters_in_cell`:
        the master meters report over the NB-IoT cell too (otherwise wired, as in the simulated city);
        `room_intervals`: the pump rooms' reporting intervals in seconds, cycled over the rooms."""
        self.rng = np.random.default_rng(seed)
        self.upload_hours = upload_hours
        self.days = days
        self.start = start_ns
        self.plan = Plan()
        self.plan.rooms.intervals = room_intervals
        self.labels: list[dict] = []
        rng = self.rng
        m: dict[str, list] = {k: [] for k in ("meter_id", "district", "building_id", "role", "customer_class",
                                              "pipe_dn_mm", "prepaid", "report_interval_s", "cell_id",
                                              "register_max_m3", "business_hours_per_day")}
        b: dict[str, list] = {k: [] for k in ("building_id", "district", "address", "pump_room_id", "master_meter_id")}
        n_rooms = max(1, buildings // 2)
        r = {"room_id": [f"P{i:03d}" for i in range(n_rooms)], "district": ["d01"] * n_rooms,
             "address": [f"{i} Pump Lane" for i in range(n_rooms)],
             "maintenance_unit": [f"Unit {i}" for i in range(n_rooms)],
             "supervisor_unit": ["District water office"] * n_rooms}
        start_day = (dt.datetime.fromtimestamp(start_ns / NS, dt.UTC) + dt.timedelta(hours=8)).date()
        t: dict[str, list] = {"tank_id": [], "room_id": [], "capacity_m3": [], "last_disinfected": []}
        for i in range(n_rooms):
            for k in (1, 2):
                t["tank_id"].append(f"P{i:03d}-T{k}")
                t["room_id"].append(f"P{i:03d}")
                t["capacity_m3"].append("50")
                back = 200 if len(t["tank_id"]) <= overdue_tanks else int(rng.integers(10, 60))
                t["last_disinfected"].append((start_day - dt.timedelta(days=back)).isoformat())

        def meter(mid, bid, role, interval, cell, regmax, prepaid=False):
            m["meter_id"].append(mid)
            m["district"].append("d01")
            m["building_id"].append(bid)
            m["role"].append(role)
            m["customer_class"].append("residential" if role == "household" else "")
            m["pipe_dn_mm"].append(15 if role == "household" else 50)
            m["prepaid"].append(prepaid)
            m["report_interval_s"].append(interval)
            m["cell_id"].append(cell)
            m["register_max_m3"].append(regmax)
            m["business_hours_per_day"].append("")

        for bi in range(buildings):
            bid = f"B{bi:03d}"
            cell = f"C{bi % cells}"
            meter(f"M{bi:03d}00", bid, "master", 900, cell if masters_in_cell else "", 99999.0)
            for h in range(households):
                interval = 3600 if hourly_every and h % hourly_every == 0 else 86400
                meter(f"M{bi:03d}{h + 1:02d}", bid, "household", interval, cell, 9999.0, prepaid=h % 4 == 1)
            b["building_id"].append(bid)
            b["district"].append("d01")
            b["address"].append(f"{bi + 1} Water Street")
            b["pump_room_id"].append(f"P{bi // 2:03d}" if bi // 2 < n_rooms else "")
            b["master_meter_id"].append(f"M{bi:03d}00")
        conv = {"pipe_dn_mm": int, "report_interval_s": int, "register_max_m3": float}
        for k, f in conv.items():
            m[k] = [f(x) for x in m[k]]
        m["business_hours_per_day"] = [np.nan] * len(m["meter_id"])
        t["capacity_m3"] = [50.0] * len(t["tank_id"])
        t["last_disinfected"] = [np.datetime64(d, "D") for d in t["last_disinfected"]]
        self.registry = Registry.from_columns(m, b, r, t)
        self.n = len(m["meter_id"])
        self.households = np.flatnonzero(~self.registry.meters.is_master)

    # ------------------------------------------------------------------ injections
    def t(self, days: float) -> int:
        return self.start + int(days * DAY)

    def label(self, kind: str, subject_type: str, subject_id: str, start: int, end: int | None, decoy: str = "") -> None:
        lab = {"kind": kind, "subject": {"type": subject_type, "id": subject_id}, "start": iso_utc(start),
               "end": iso_utc(end if end is not None else self.t(self.days))}
        if decoy:
            lab["decoy"] = decoy
        self.labels.append(lab)

    def mid(self, i: int) -> str:
        return str(self.registry.meters.ids[i])

    def block(self, i: int, start: int, end: int | None = None, rsrp_sinks: bool = True) -> None:
        self.plan.blocked[i] = (start, end, rsrp_sinks)
        self.label("signal_blocking", "meter", self.mid(i), start, end)

    def cell_outage(self, cell: int, start: int, end: int) -> None:
        self.plan.cell_outages.append((cell, start, end))
        cid = str(self.registry.cell_ids[cell])
        self.label("network_outage", "cell", cid, start, end)
        for i in np.flatnonzero(self.registry.meters.cell == cell):
            self.label("none", "meter", self.mid(i), start, end, decoy="cell_outage")

    def lose(self, i: int, when: int) -> None:
        """Meter i's message sent in the hour from `when` is lost for good (an uplink that failed; an hourly meter
        sends its next reading as usual, so the hour's use is known only with the next hour's, unlabelled)."""
        self.plan.lost.append((i, when))

    def battery_dies(self, i: int, when: int) -> None:
        self.plan.dead[i] = when
        self.label("none", "meter", self.mid(i), when - 5 * DAY, None, decoy="battery")

    def backwards(self, i: int, start: int) -> None:
        self.plan.backwards[i] = start
        self.label("reverse_flow", "meter", self.mid(i), start, None)

    def wind_back(self, i: int, when: int, m3: float) -> None:
        self.plan.wound_back[i] = (when, m3)
        self.label("reverse_flow", "meter", self.mid(i), when, when + DAY)

    def reverse_register(self, i: int, start: int, m3h: float) -> None:
        self.plan.reverse_register[i] = (start, m3h)
        self.label("reverse_flow", "meter", self.mid(i), start, None)

    def transients(self, i: int, forward: bool = False) -> None:
        """Pressure transients: a few litres backwards now and then, on the reverse register (or, `forward`, on the
        forward register, won back by the next reading)."""
        (self.plan.forward_transients if forward else self.plan.transients).add(i)
        self.label("none", "meter", self.mid(i), self.start, None, decoy="transient")

    def replace(self, i: int, when: int, register_m3: float = 0.0, record_late_s: int | None = 0) -> None:
        """A new meter from `when`; its replacement record is published `record_late_s` later (None: never)."""
        self.plan.replacements[i] = (when, register_m3)
        self.plan.record_late[i] = record_late_s
        if record_late_s is None:  # a register set back to zero with no record: rolled back
            self.label("reverse_flow", "meter", self.mid(i), when, None)
        else:
            self.label("none", "meter", self.mid(i), when, when + DAY, decoy="replacement")

    def bypass(self, i: int, start: int, share: float = 0.9) -> None:
        self.plan.bypass[i] = (start, share)
        self.label("bypass", "meter", self.mid(i), start, None)

    def vacancy(self, i: int, start: int) -> None:
        self.plan.vacancy[i] = start
        self.label("none", "meter", self.mid(i), start, None, decoy="vacancy")

    def scale_use(self, i: int, factor: float, since: int | None = None) -> None:
        """The household uses `factor` times its drawn daily use (a single person, a large family), from `since`
        (a relative moving in) or all along."""
        self.plan.use_scale[i] = (factor, self.start if since is None else since)

    def chance_fit(self, i: int, start: int, beta: float, gap_falls: bool = True) -> None:
        """For one day from `start` the building's gap follows household i's hours (beta x its use) by chance,
        while the household uses twice its usual water: nothing was lost on its meter. With `gap_falls` the day's
        gap also falls by twice what the fit implies (nothing gained in the gap); otherwise it rises by the fit."""
        self.plan.chance_fit[i] = (start, beta, gap_falls)

    def burst(self, i: int, when: int, m3: float) -> None:
        """Household i draws `m3` in the hour from `when` (filling a tank): more than its pipe carries at 1 m/s, so
        its meter's hour reads as broken, while the master sees the water."""
        self.plan.burst[i] = (when, m3)

    def trip(self, i: int, start: int, end: int) -> None:
        """Household i is away from `start` to `end` (a weekend away: unlabelled, nobody uses water)."""
        self.plan.trips[i] = (start, end)

    def leak(self, b: int, start: int, m3h: float) -> None:
        self.plan.leak[b] = (start, m3h)
        mi = int(self.registry.buildings.master_meter[b])
        self.label("none", "meter", self.mid(mi), start, None, decoy="leak")

    def disinfect(self, tank: int, when: int, drawdown: bool = True, chlorine_peak: float | None = None,
                  record_late_h: float = 0.0) -> None:
        """Tank cleaned and refilled at `when` (drained for 6 hours before it when `drawdown`); its record is published
        `record_late_h` later. With `chlorine_peak` the refilled water starts that high in chlorine (a look-alike)."""
        self.plan.disinfections.append((tank, when, when + int(record_late_h * HOUR)))
        if drawdown:
            self.plan.rooms.drawdowns.append((tank, when))
        if chlorine_peak is not None:
            self.plan.rooms.peaks.append((tank, when, chlorine_peak))

    # ------------------------------------------------------------------ pump rooms
    def tank_id(self, tank: int) -> str:
        return str(self.registry.tanks.ids[tank])

    def water(self, tank: int, parameter: str, start: int, end: int, value: float) -> None:
        """The tank's `parameter` (free_chlorine_mg_l, turbidity_ntu, ph) reads about `value` from start to end."""
        self.plan.rooms.episodes.append((tank, parameter, start, end, value))

    def intrusion(self, room: int, start: int, end: int, chlorine_to: float | None = None,
                  low_until: int | None = None) -> None:
        """The door open from start to end with no work order; with `chlorine_to` the room's first tank is tampered
        with: its chlorine falls to that within an hour and stays there until the door closes (or `low_until`)."""
        self.plan.rooms.openings.append((room, start, end, "", 0, ""))
        if chlorine_to is not None:
            tank = int(np.flatnonzero(self.registry.tanks.room == room)[0])
            self.plan.rooms.tamper.append((tank, start, low_until or end, chlorine_to))

    def visit(self, room: int, start: int, end: int, event_type: str = "maintenance", lead_min: float = 30) -> None:
        """A crew's visit: its work-order event `lead_min` before the door opens (negative: after)."""
        self.plan.rooms.openings.append((room, start, end, event_type, int(lead_min * 60), "maintenance_visit"))

    def stuck(self, tank: int, parameter: str, start: int, end: int) -> None:
        self.plan.rooms.stuck.append((tank, parameter, start, end))

    def spike(self, tank: int, parameter: str, at: int, value: float) -> None:
        self.plan.rooms.spikes.append((tank, parameter, at, value))

    # ------------------------------------------------------------------ traffic
    def build(self) -> Town:
        """Draw the town's water use, meter registers and reports (with every injection applied) in publish order."""
        hts = self.start + np.arange(self.days * 24 + 1, dtype=np.int64) * HOUR
        true_use, metered = self._use(hts)
        self._balance(hts, true_use, metered)
        register, reverse = self._registers(hts, metered)
        self._meter_rows(hts, register, reverse, self._delivered(hts))
        self._pump_rooms()
        return self

    def _use(self, hts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each household's true use per hour (diurnal, noisy, with the injected changes) and what its meter sees."""
        rng, p, n, hours = self.rng, self.plan, self.n, hts.size
        local_h = ((hts // HOUR) + 8) % 24
        diurnal = np.where((local_h >= 6) & (local_h <= 9), 2.0, np.where((local_h >= 18) & (local_h <= 22), 1.8,
                           np.where((local_h >= 1) & (local_h <= 5), 0.15, 0.8)))
        daily_m3 = rng.uniform(0.2, 0.6, n)
        use = daily_m3[:, None] / 24 * diurnal[None, :] / diurnal[:24].mean() * rng.gamma(4, 0.25, (n, hours))
        for i, (f, since) in p.use_scale.items():
            use[i, hts >= since] *= f
        for i, (st, _beta, _falls) in p.chance_fit.items():
            use[i, (hts >= st) & (hts < st + DAY)] *= 2.0
        for i, (when, m3) in p.burst.items():
            use[i, np.searchsorted(hts, when)] += m3
        for i, (st, end) in p.trips.items():
            use[i, (hts >= st) & (hts < end)] = 0.0
        true_use = use.copy()
        for i, st in p.vacancy.items():
            true_use[i, hts >= st] *= 0.01
        metered = true_use.copy()
        for i, (st, share) in p.bypass.items():
            metered[i, hts >= st] *= 1 - share
        return true_use, metered

    def _balance(self, hts: np.ndarray, true_use: np.ndarray, metered: np.ndarray) -> None:
        """Each master meter sees its households' true use plus a few percent unaccounted, leaks and chance fits."""
        rng, reg, p, hours = self.rng, self.registry, self.plan, hts.size
        meters = reg.meters
        hh = ~meters.is_master
        for b in range(len(reg.buildings)):
            mi = reg.buildings.master_meter[b]
            members = hh & (meters.building == b)
            total = true_use[members].sum(axis=0)
            # unaccounted water: a few percent, plus any injected leak
            extra = total * 0.04 + rng.normal(0, 0.002, hours).clip(-0.001)
            for i, (st, beta, falls) in p.chance_fit.items():
                if meters.building[i] == b:
                    day = (hts >= st) & (hts < st + DAY)
                    fall = 2 * beta * true_use[i, day].sum() / 24 if falls else 0.0
                    extra = extra + np.where(day, beta * true_use[i] - fall, 0.0)
            if b in p.leak:
                st, m3h = p.leak[b]
                extra = extra + np.where(hts >= st, m3h, 0.0)
            metered[mi] = total + extra
            true_use[mi] = metered[mi]

    def _registers(self, hts: np.ndarray, metered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward registers (with reversals, roll-backs, replacements and one wrap) and reverse registers."""
        rng, p, n, hours = self.rng, self.plan, self.n, hts.size
        meters = self.registry.meters
        metered[:, 0] = 0
        reg0 = rng.uniform(10, 800, n)
        register = reg0[:, None] + np.cumsum(metered, axis=1)
        for i, st in p.backwards.items():
            k = hts >= st
            base = register[i, np.argmax(k)]
            register[i, k] = base - np.cumsum(metered[i, k])
        for i, (when, m3) in p.wound_back.items():
            register[i, hts >= when] -= m3
        for i, (when, new) in p.replacements.items():
            k = hts >= when
            register[i, k] = new + np.cumsum(metered[i, k])
        # one small meter starts near its wrap so every run crosses register_max
        wrap_i = int(self.households[-1])
        register[wrap_i] = (register[wrap_i] - register[wrap_i, 0] + meters.register_max_m3[wrap_i] - 2.0) % \
            meters.register_max_m3[wrap_i]
        self.label("none", "meter", self.mid(wrap_i), self.start, None, decoy="rollover")
        for i in p.forward_transients:
            register[i] -= np.where(rng.random(hours) < 0.1, 0.004, 0.0)
        reverse = np.zeros((n, hours))
        for i in p.transients:
            reverse[i] = np.cumsum(np.where(rng.random(hours) < 0.05, 0.003, 0.0))
        for i, (st, m3h) in p.reverse_register.items():
            reverse[i] = np.cumsum(np.where(hts >= st, m3h, 0.0))

        return register, reverse

    def _silenced(self, i: int, pub: int) -> tuple[bool, int | None]:
        """Whether meter i's message at `pub` is lost, and when its stored readings go out instead."""
        p = self.plan
        if i in p.dead and pub >= p.dead[i]:
            return True, None
        if any(j == i and h <= pub < h + HOUR for j, h in p.lost):
            return True, None
        if i in p.blocked:
            st, en, _ = p.blocked[i]
            if pub >= st and (en is None or pub < en):
                return True, en
        c = self.registry.meters.cell[i]
        for cell, st, en in p.cell_outages:
            if c == cell and st <= pub < en:
                return True, en + int(self.rng.integers(0, 1800)) * NS
        return False, None

    def _delivered(self, hts: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """(publish time, meter, reading times) of every message that reaches the broker before the end."""
        rng, n, hours = self.rng, self.n, hts.size
        interval = self.registry.meters.report_interval_s
        msgs: list[tuple[int, int, np.ndarray]] = []
        pending: dict[tuple[int, int], list] = {}
        for i in range(n):
            if interval[i] == 900:
                ts = self.start + np.arange(self.days * 96, dtype=np.int64) * 900 * NS
                for tq in ts.tolist():
                    msgs.append((tq + 5 * NS, i, np.array([tq])))
            elif interval[i] == 3600:
                for k in range(hours):
                    msgs.append((int(hts[k]) + int(rng.integers(1, 120)) * NS, i, np.array([int(hts[k])])))
            else:
                off = int(rng.integers(self.upload_hours[0] * 3600, self.upload_hours[1] * 3600)) * NS
                for d in range(self.days):
                    up = self.start + d * DAY + off
                    hs = hts[(hts <= up) & (hts > up - DAY)]
                    if hs.size:
                        msgs.append((up, i, hs))
        delivered: list[tuple[int, int, np.ndarray]] = []
        for pub, i, ts in msgs:
            lost, resend = self._silenced(i, pub)
            if not lost:
                delivered.append((pub, i, ts))
            elif resend is not None:
                pending.setdefault((i, resend), []).append(ts)
        for (i, resend), parts in pending.items():
            delivered.append((resend, i, np.concatenate(parts)))
        delivered.sort(key=lambda x: (x[0], x[1]))
        end = self.start + self.days * DAY
        delivered = [x for x in delivered if x[0] < end]
        return delivered

    def _meter_rows(self, hts: np.ndarray, register: np.ndarray, reverse: np.ndarray,
                    delivered: list[tuple[int, int, np.ndarray]]) -> None:
        """Readings of the delivered messages, registers interpolated, status fields on each message's latest."""
        rng, p, hours = self.rng, self.plan, hts.size
        meters = self.registry.meters
        rows_m, rows_t, rows_msg = [], [], []
        msg_pub: list[int] = []
        for j, (pub, i, ts) in enumerate(delivered):
            msg_pub.append(pub)
            rows_m.append(np.full(ts.size, i, dtype=np.int32))
            rows_t.append(ts)
            rows_msg.append(np.full(ts.size, j, dtype=np.int64))
        mtr = np.concatenate(rows_m)
        tsr = np.concatenate(rows_t).astype(np.int64)
        msg = np.concatenate(rows_msg)
        frac = (tsr - self.start) / HOUR
        lo = np.clip(np.floor(frac).astype(np.int64), 0, hours - 2)
        w = frac - lo
        total = register[mtr, lo] * (1 - w) + register[mtr, lo + 1] * w
        wrapped = register[mtr, lo + 1] < register[mtr, lo] - 1000
        total = np.where(wrapped, register[mtr, lo], total)
        total = np.round(total, 4)
        rev = np.where(np.isin(mtr, list(p.transients) + list(p.reverse_register)),
                       np.round(reverse[mtr, lo], 4), np.nan)
        # status fields on each message's latest reading
        is_last = np.ones(mtr.size, dtype=bool)
        is_last[:-1] = msg[1:] != msg[:-1]
        rsrp = np.where(is_last, -90 + rng.normal(0, 2, mtr.size), np.nan)
        for i, (st, _en, sinks) in p.blocked.items():
            if sinks:
                k = is_last & (mtr == i) & (tsr >= st - 3 * DAY) & (tsr < st)
                rsrp[k] -= 30 * (1 - (st - tsr[k]) / (3 * DAY))
        bat = np.where(is_last, 3.6 + rng.normal(0, 0.01, mtr.size), np.nan)
        for i, when in p.dead.items():
            k = is_last & (mtr == i) & (tsr >= when - 5 * DAY)
            bat[k] -= 0.6 * (1 - (when - tsr[k]) / (5 * DAY))
        bal = np.where(is_last & meters.prepaid[mtr], 30.0, np.nan)
        self.meter_rows = MeterReadings.from_columns(
            meter=mtr, ts_ns=tsr, total_m3=total, reverse_m3=rev, rsrp_dbm=rsrp, snr_db=np.where(is_last, 5.0, np.nan),
            ecl=np.where(is_last, 0.0, np.nan), battery_v=bat, balance_cny=bal)
        self.meter_msg = msg
        self.msg_pub = np.asarray(msg_pub, dtype=np.int64)


    def _pump_rooms(self) -> None:
        """Pump-room telemetry (rooms.py), disinfection and replacement records."""
        reg, p = self.registry, self.plan
        traffic = build_rooms(reg, p.rooms, self.start, self.days, int(self.rng.integers(1 << 30)))
        events = list(traffic.events)
        self.labels += traffic.labels
        for tank, _when, record in p.disinfections:
            room = int(reg.tanks.room[tank])
            events.append((record, DeviceEvent("pumproom", room, str(reg.rooms.ids[room]), "d01", record,
                                               "disinfection", {"tank_id": self.tank_id(tank), "work_order": "WO-1"})))
        for i, (when, new) in p.replacements.items():
            late = p.record_late.get(i, 0)
            if late is None:
                continue  # never recorded: to the detectors the register simply fell
            events.append((when + late * NS, DeviceEvent("meter", i, self.mid(i), "d01", when, "replacement",
                                                         {"register_m3": new, "work_order": "WO-2"})))
        self.tank_rows, self.room_rows, self.pump_rows = traffic.tanks, traffic.rooms, traffic.pumps
        self.events = sorted(events, key=lambda x: x[0])

    def chunks(self, messages: int = 200, shuffle: bool = False, seed: int = 1) -> Iterator[tuple[Batch, int]]:
        """Publish order, `messages` meter messages (plus the pump-room traffic and events of that span) a chunk,
        rows in message order as the decoder gives them (or shuffled). Yields (batch, watermark so far)."""
        rng = np.random.default_rng(seed)
        n_msg = self.msg_pub.size
        wm = 0
        t_prev = -1
        for a in range(0, n_msg, messages):
            b = min(n_msg, a + messages)
            t_hi = int(self.msg_pub[b - 1]) if b < n_msg else self.start + self.days * DAY
            lo, hi = np.searchsorted(self.meter_msg, [a, b])
            idx = np.arange(lo, hi)
            span = {name: np.flatnonzero((tab.ts_ns > t_prev) & (tab.ts_ns <= t_hi)) for name, tab in
                    (("tanks", self.tank_rows), ("rooms", self.room_rows), ("pumps", self.pump_rows))}
            if shuffle:
                idx = rng.permutation(idx)
                span = {k: rng.permutation(v) for k, v in span.items()}
            ev = [e for t, e in self.events if t_prev < t <= t_hi]
            t_prev = t_hi
            batch = Batch(meters=self.meter_rows.take(idx), tanks=self.tank_rows.take(span["tanks"]),
                          rooms=self.room_rows.take(span["rooms"]), pumps=self.pump_rows.take(span["pumps"]),
                          events=ev)
            top = batch.max_ts_ns()
            wm = max(wm, top if top is not None else 0)
            yield batch, wm

    def end_ns(self) -> int:
        return self.start + self.days * DAY


def run(ds, town: Town, messages: int = 200, shuffle: bool = False, seed: int = 1) -> list[AlertEvent]:
    """Feed a town through a DetectorSet the way the pipeline does: update, then tick at the watermark."""
    out: list[AlertEvent] = []
    for batch, wm in town.chunks(messages, shuffle, seed):
        out += ds.update(batch)
        out += ds.tick(wm)
    out += ds.tick(town.end_ns())
    return out

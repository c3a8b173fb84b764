"""The city's MQTT traffic: when each device publishes what, and the capture file (docs/FORMATS.md) in publish order.

Meter uploads are a table (meter, publish time, first and last reading hour) built with numpy; silences
(blocking, dead batteries, cell outages, lost packets) edit that table; serialization runs in publish-time
chunks so only the readings of one chunk are ever turned into Python objects.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from simulator.behaviour import Measurements
from simulator.city import HOUR_S, NS, City, SimConfig
from simulator.incidents import Plan
from simulator.pumprooms import RoomLines, crew_events, room_rows

UPLOAD, MASTER, ROOM, METER_EVENT, ROOM_EVENT = 0, 1, 2, 3, 4
QUARTER_S = 900


@dataclass
class Uploads:
    """One row per meter message that is actually published (households only)."""

    meter: np.ndarray
    pub_ns: np.ndarray
    lo: np.ndarray  # first reading hour in the message
    hl: np.ndarray  # last reading hour in the message
    single: np.ndarray  # one reading (hourly meter) rather than a batch
    rsrp: np.ndarray
    snr: np.ndarray
    ecl: np.ndarray
    battery: np.ndarray
    balance: np.ndarray


@dataclass
class Traffic:
    uploads: Uploads
    pub_ns: np.ndarray  # every message, sorted
    cls: np.ndarray
    dev: np.ndarray
    aux: np.ndarray  # upload row, or quarter index, or event number
    events: list[tuple[str, dict]]  # (topic, payload) of meter and pump-room events
    cleaned_at_ns: dict[int, int]  # tank -> ts of its disinfection record

    def __len__(self) -> int:
        return len(self.pub_ns)


def hour_ts(cfg: SimConfig, n: int, step_s: int) -> list[str]:
    t0 = cfg.start_ns // NS
    return [dt.datetime.fromtimestamp(t0 + i * step_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(n)]


def build_uploads(city: City, cfg: SimConfig, plan: Plan, meas: Measurements) -> Uploads:
    rng = np.random.default_rng([cfg.seed, 4])
    t0, H, D = cfg.start_ns, cfg.days * 24, cfg.days
    n = city.n_meters
    hourly = np.flatnonzero(~city.is_master & (city.interval_s == 3600))
    daily = np.flatnonzero(~city.is_master & (city.interval_s == 86400))
    delay = rng.integers(2, 40, n)
    offset = rng.integers(0, 86_400, n)  # staggered daily upload time
    weak = meas.rsrp_base < -115
    mA = np.repeat(hourly, H)
    hA = np.tile(np.arange(H), len(hourly))
    pA = t0 + (hA * HOUR_S + delay[mA] + rng.integers(0, 20, len(mA))) * NS
    mB = np.repeat(daily, D)
    dB = np.tile(np.arange(D), len(daily))
    sB = np.clip(dB * 86_400 + offset[mB] + rng.integers(-300, 300, len(mB)), 60, D * 86_400 - 1)
    pB = t0 + sB * NS
    hB = sB // HOUR_S
    m = np.concatenate([mA, mB])
    p = np.concatenate([pA, pB])
    hl = np.concatenate([hA, hB])
    carry = np.concatenate([np.zeros(len(mA), bool), np.ones(len(mB), bool)])  # daily batches carry the backlog
    # Lost uplinks: an hourly reading is gone; a daily meter sends the backlog next time. Weak cells lose more.
    loss = np.where(carry, 0.005 + 0.04 * weak[m], 0.003 + 0.03 * weak[m])
    keep = rng.random(len(m)) >= loss
    m, p, hl, carry = m[keep], p[keep], hl[keep], carry[keep]
    order = np.lexsort((p, m))
    m, p, hl, carry = m[order], p[order], hl[order], carry[order]
    keep = np.ones(len(m), bool)
    first = np.searchsorted(m, np.arange(n + 1))

    def rows(meter: int) -> slice:
        return slice(first[meter], first[meter + 1])

    for b in plan.blocking:
        r = rows(b.meter)
        pr = p[r]
        stop = pr >= b.silence_ns
        if b.resume_ns is not None:
            stop &= pr < b.resume_ns
            after = np.flatnonzero(pr >= b.resume_ns)
            if after.size:
                carry[r.start + after[0]] = True
        keep[r] &= ~stop
    for bd in plan.battery:
        r = rows(bd.meter)
        keep[r] &= p[r] < bd.silence_ns
    for o in plan.outage:
        for mm in city.cell_members[o.cell].tolist():
            r = rows(mm)
            back = o.end_ns + int(rng.integers(30, 1200)) * NS
            hit = (p[r] >= o.start_ns) & (p[r] < back)
            p[r][hit] = back  # the uplink retries once the cell is back, with what the meter stored
            carry[r][hit] = True
    hl = np.where(carry, np.minimum(H - 1, (p - t0) // (HOUR_S * NS)), hl)
    m, p, hl, carry = m[keep], p[keep], hl[keep], carry[keep]
    order = np.lexsort((p, m))
    m, p, hl, carry = m[order], p[order], hl[order], carry[order]
    # Highest hour already sent by the meter before each row.
    key = m * (H + 2) + hl + 1
    run = np.maximum.accumulate(key)
    prev_key = np.concatenate([[-1], run[:-1]])
    prev = np.where(prev_key >= m * (H + 2), prev_key - m * (H + 2) - 1, -1)
    ok = hl > prev
    m, p, hl, carry, prev = m[ok], p[ok], hl[ok], carry[ok], prev[ok]
    lo = np.where(carry, prev + 1, hl)
    single = (city.interval_s[m] == 3600) & (lo == hl)

    # Status at upload time.
    k = len(m)
    rsrp = meas.rsrp_base[m] + rng.normal(0, 2.5, k)
    for b in plan.blocking:
        if b.variant == "rsrp_sinking":
            sel = (m == b.meter) & (p >= b.sink_ns) & (p < b.silence_ns)
            depth = rng.uniform(12, 25)
            rsrp[sel] -= depth * (p[sel] - b.sink_ns) / (b.silence_ns - b.sink_ns)
    rsrp = np.clip(rsrp, -140, -44)
    snr = np.clip((rsrp + 112) * 0.45 + rng.normal(0, 1.5, k), -10, 30)
    ecl = np.where(rsrp >= -105, 0, np.where(rsrp >= -117, 1, 2))
    days_in = (p - t0) / (86_400 * NS)
    battery = meas.battery_base[m] - 0.0004 * days_in + rng.normal(0, 0.006, k)
    for bd in plan.battery:
        sel = (m == bd.meter) & (p >= bd.decline_ns)
        end_v = 3.0 + 0.1 * (bd.meter % 2)
        start_v = meas.battery_base[bd.meter]
        frac = (p[sel] - bd.decline_ns) / (bd.silence_ns - bd.decline_ns)
        battery[sel] = start_v - (start_v - end_v) * frac ** 1.5 + rng.normal(0, 0.01, int(sel.sum()))
    balance = meas.balance[m, hl]
    return Uploads(meter=m, pub_ns=p, lo=lo, hl=hl, single=single, rsrp=np.round(rsrp, 1), snr=np.round(snr, 1),
                   ecl=ecl, battery=np.round(battery, 2), balance=balance)


def build_traffic(city: City, cfg: SimConfig, plan: Plan, meas: Measurements) -> Traffic:
    rng = np.random.default_rng([cfg.seed, 5])
    up = build_uploads(city, cfg, plan, meas)
    t0 = cfg.start_ns
    n_b, Q = meas.master_total.shape
    q = np.arange(Q)
    m_delay = rng.integers(1, 20, n_b)
    rng.integers(2, 30, n_b)  # the rooms' delays when they reported by the quarter: drawn, so later draws stay put
    parts_p = [up.pub_ns]
    parts_c = [np.full(len(up.pub_ns), UPLOAD, np.int8)]
    parts_d = [up.meter]
    parts_a = [np.arange(len(up.pub_ns))]
    bq_b = np.repeat(np.arange(n_b), Q)
    bq_q = np.tile(q, n_b)
    parts_p += [t0 + (bq_q * QUARTER_S + m_delay[bq_b] + rng.integers(0, 5, len(bq_b))) * NS]
    rng.integers(0, 5, len(bq_b))  # drawn as when rooms reported by the quarter, so every other time stays put
    r_pub, r_room, r_five = room_rows(cfg, meas)
    parts_p.append(r_pub)
    parts_c += [np.full(len(bq_b), MASTER, np.int8), np.full(len(r_pub), ROOM, np.int8)]
    parts_d += [bq_b, r_room]
    parts_a += [bq_q, r_five]

    events: list[tuple[str, dict]] = []
    ev_p, ev_c, ev_d = [], [], []
    prefix = "water"
    for rep in plan.replacement:
        mid = city.meter_ids[rep.meter]
        d = city.districts[city.meter_district[rep.meter]]
        ts = dt.datetime.fromtimestamp(rep.t_ns // NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        events.append((f"{prefix}/{d}/meter/{mid}/event",
                       {"meter_id": mid, "ts": ts, "type": "replacement", "register_m3": rep.register_m3,
                        "work_order": rep.work_order}))
        ev_p.append(rep.t_ns + int(rng.integers(60, 900)) * NS)
        ev_c.append(METER_EVENT)
        ev_d.append(rep.meter)
    cleaned: dict[int, int] = {}
    for cl in plan.cleanings:
        if cl.tank not in meas.cleaning_done_q:
            continue
        qd = meas.cleaning_done_q[cl.tank]
        room = int(city.tank_room[cl.tank])
        ts_ns = t0 + qd * QUARTER_S * NS
        cleaned[cl.tank] = ts_ns
        rid = city.room_ids[room]
        d = city.districts[city.building_district[room]]
        events.append((f"{prefix}/{d}/pumproom/{rid}/event",
                       {"room_id": rid, "ts": dt.datetime.fromtimestamp(ts_ns // NS, dt.UTC)
                        .strftime("%Y-%m-%dT%H:%M:%SZ"), "type": "disinfection",
                        "tank_id": city.tank_ids[cl.tank], "work_order": cl.work_order,
                        "operator": city.room_maintenance[room],
                        "quality": {"free_chlorine_mg_l": float(meas.tank_chlorine[cl.tank, 3 * qd]),
                                    "turbidity_ntu": float(meas.tank_turbidity[cl.tank, 3 * qd]),
                                    "ph": float(meas.tank_ph[cl.tank, 3 * qd])}}))
        ev_p.append(ts_ns + int(rng.integers(30, 300)) * NS)
        ev_c.append(ROOM_EVENT)
        ev_d.append(room)
    for pub_ns, room, topic, payload in crew_events(city, cfg, meas, prefix):
        events.append((topic, payload))
        ev_p.append(pub_ns)
        ev_c.append(ROOM_EVENT)
        ev_d.append(room)
    parts_p.append(np.array(ev_p, dtype=np.int64))
    parts_c.append(np.array(ev_c, dtype=np.int8))
    parts_d.append(np.array(ev_d, dtype=np.int64))
    parts_a.append(np.arange(len(ev_p)))
    pub = np.concatenate(parts_p)
    cls = np.concatenate(parts_c)
    dev = np.concatenate(parts_d)
    aux = np.concatenate(parts_a)
    keep = pub < cfg.end_ns  # what would be published after the period is not in this capture
    pub, cls, dev, aux = pub[keep], cls[keep], dev[keep], aux[keep]
    order = np.lexsort((aux, dev, cls, pub))
    return Traffic(uploads=up, pub_ns=pub[order], cls=cls[order], dev=dev[order], aux=aux[order],
                   events=events, cleaned_at_ns=cleaned)


class _Serializer:
    """Turns a slice of the sorted message table into capture lines (bytes, newline-terminated)."""

    def __init__(self, city: City, cfg: SimConfig, meas: Measurements, tr: Traffic, prefix: str):
        H, Q = cfg.days * 24, cfg.days * 96
        self.hts = hour_ts(cfg, H, HOUR_S)
        self.qts = hour_ts(cfg, Q, QUARTER_S)
        self.mids = city.meter_ids
        self.m_topic = [f"{prefix}/{city.districts[d]}/meter/{mid}/reading"
                        for mid, d in zip(self.mids, city.meter_district.tolist(), strict=True)]
        self.r_topic = [f"{prefix}/{city.districts[city.building_district[b]]}/pumproom/{rid}/telemetry"
                        for b, rid in enumerate(city.room_ids)]
        self.master_of = city.building_master.tolist()
        self.prepaid = city.prepaid.tolist()
        self.events = [(t if prefix == "water" else prefix + t[len("water"):], pl) for t, pl in tr.events]
        self.meas = meas
        self.tr = tr
        self.rooms = RoomLines(city, cfg, meas)

    def lines(self, c0: int, c1: int) -> bytes:
        hts, qts, mids, m_topic, r_topic = self.hts, self.qts, self.mids, self.m_topic, self.r_topic
        master_of, prepaid, events = self.master_of, self.prepaid, self.events
        meas, tr = self.meas, self.tr
        up = tr.uploads
        dumps = orjson.dumps
        sl = slice(c0, c1)
        cls = tr.cls[sl]
        dev = tr.dev[sl]
        aux = tr.aux[sl]
        # Uploads in this chunk: gather their readings and status in one go.
        urows = aux[cls == UPLOAD]
        um = up.meter[urows]
        ulo, uhl = up.lo[urows], up.hl[urows]
        lens = uhl - ulo + 1
        flat_m = np.repeat(um, lens)
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        flat_h = np.repeat(ulo, lens) + (np.arange(lens.sum()) - starts)
        ftot = meas.total[flat_m, flat_h].tolist()
        frev = meas.reverse[flat_m, flat_h].tolist()
        fflow = meas.flow[um, uhl].tolist()
        fh = flat_h.tolist()
        off = (np.cumsum(lens) - lens).tolist()
        ulen = lens.tolist()
        usingle = up.single[urows].tolist()
        umeter = um.tolist()
        urs, usn, uec = up.rsrp[urows].tolist(), up.snr[urows].tolist(), up.ecl[urows].tolist()
        ubat = up.battery[urows].tolist()
        ubal = up.balance[urows].tolist()
        # Quarter-hour devices: the chunk's quarter range for every building and tank.
        qsel = aux[cls == MASTER]
        self.rooms.chunk(aux[cls == ROOM])
        qa = int(qsel.min()) if qsel.size else 0
        qb = int(qsel.max()) + 1 if qsel.size else 0
        mt = meas.master_total[:, qa:qb].tolist()
        mf = meas.master_flow[:, qa:qb].tolist()
        lines = []
        iu = 0
        for c, d, a in zip(cls.tolist(), dev.tolist(), aux.tolist(), strict=True):
            if c == UPLOAD:
                mm = umeter[iu]
                o = off[iu]
                if prepaid[mm]:
                    tail = {"valve": "open", "balance_cny": ubal[iu]}
                else:
                    tail = None
                sig = {"rsrp_dbm": urs[iu], "snr_db": usn[iu], "ecl": uec[iu]}
                if usingle[iu]:
                    pl = {"meter_id": mids[mm], "ts": hts[fh[o]], "total_m3": ftot[o], "reverse_m3": frev[o],
                          "flow_m3h": fflow[iu], "signal": sig, "battery_v": ubat[iu]}
                else:
                    pl = {"meter_id": mids[mm],
                          "readings": [{"ts": hts[fh[j]], "total_m3": ftot[j], "reverse_m3": frev[j]}
                                       for j in range(o, o + ulen[iu])],
                          "signal": sig, "battery_v": ubat[iu]}
                if tail is not None:
                    pl.update(tail)
                if ubat[iu] < 3.3:
                    pl["status"] = ["low_battery"]
                lines.append(dumps({"topic": m_topic[mm], "payload": pl}))
                iu += 1
            elif c == MASTER:
                k = a - qa
                mm = master_of[d]
                lines.append(dumps({"topic": m_topic[mm], "payload": {
                    "meter_id": mids[mm], "ts": qts[a], "total_m3": mt[d][k], "reverse_m3": 0.0,
                    "flow_m3h": mf[d][k]}}))
            elif c == ROOM:
                lines.append(dumps({"topic": r_topic[d], "payload": self.rooms.payload(d, a)}))
            else:
                topic, pl = events[a]
                lines.append(dumps({"topic": topic, "payload": pl}))
        return b"\n".join(lines) + b"\n"


_ACTIVE: _Serializer | None = None  # the forked workers' copy of the serializer


def _chunk(bounds: tuple[int, int]) -> bytes:
    assert _ACTIVE is not None
    return _ACTIVE.lines(*bounds)


def write_capture(path: Path, city: City, cfg: SimConfig, meas: Measurements, tr: Traffic,
                  prefix: str = "water", chunk: int = 20_000, workers: int | None = None) -> int:
    """Serialize every message in publish order, one JSON line each; returns the number of lines.

    Serialization is the bottleneck, so big captures are cut into chunks serialized by forked workers
    (the arrays are shared copy-on-write); chunks are written in order, so the file is the same either way.
    """
    global _ACTIVE
    ser = _Serializer(city, cfg, meas, tr, prefix)
    bounds = [(c0, min(len(tr), c0 + chunk)) for c0 in range(0, len(tr), chunk)]
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(tr) > 20 * chunk else 1
    with path.open("wb") as f:
        if workers > 1 and "fork" in mp.get_all_start_methods():
            _ACTIVE = ser
            try:
                with mp.get_context("fork").Pool(workers) as pool:
                    for data in pool.imap(_chunk, bounds):
                        f.write(data)
            finally:
                _ACTIVE = None
        else:
            for b in bounds:
                f.write(ser.lines(*b))
    return len(tr)

"""labels.jsonl (docs/FORMATS.md): every injected incident and decoy, with start and end read off the traffic itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from simulator.behaviour import Measurements, hour_of
from simulator.city import HOUR_S, NS, City, SimConfig
from simulator.incidents import Plan, local_midnight_ns
from simulator.pumprooms import room_labels
from simulator.traffic import Traffic


def iso(ts_ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(int(ts_ns) // NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_labels(city: City, cfg: SimConfig, plan: Plan, meas: Measurements, tr: Traffic) -> list[dict]:
    t0, t1, H = cfg.start_ns, cfg.end_ns, cfg.days * 24
    up = tr.uploads
    first = np.searchsorted(up.meter, np.arange(city.n_meters + 1))
    out: list[dict] = []

    def hour_ns(h: int) -> int:
        return t0 + int(h) * HOUR_S * NS

    def meter(m: int) -> dict:
        return {"type": "meter", "id": city.meter_ids[m]}

    def add(kind: str, subject: dict, start: int, end: int, district: str, **extra) -> None:
        rec = {"kind": kind, "subject": subject, "start": iso(start), "end": iso(max(start, end)),
               "district": district}
        rec.update(extra)
        out.append(rec)

    def dist(m: int) -> str:
        return city.districts[city.meter_district[m]]

    def last_heard(m: int, before_ns: int) -> int:
        """Latest reading time in the last message the meter got out before `before_ns`."""
        r = slice(first[m], first[m + 1])
        i = np.searchsorted(up.pub_ns[r], before_ns) - 1
        return hour_ns(up.hl[r][i]) if i >= 0 else t0

    def first_after(m: int, after_ns: int) -> int | None:
        r = slice(first[m], first[m + 1])
        i = np.searchsorted(up.pub_ns[r], after_ns)
        return int(up.pub_ns[r][i]) if i < len(up.pub_ns[r]) else None

    def first_drop(series: np.ndarray, h: int) -> int:
        """First reading hour after h where the register is lower than the one before."""
        d = np.flatnonzero(np.diff(series[h:]) < 0)
        return h + 1 + int(d[0]) if d.size else min(H - 1, h + 1)

    for b in plan.blocking:
        end = t1
        if b.resume_ns is not None:
            end = first_after(b.meter, b.resume_ns) or t1
        add("signal_blocking", meter(b.meter), last_heard(b.meter, b.silence_ns), end, dist(b.meter),
            variant=b.variant, resumed=b.resume_ns is not None and end < t1)
    for o in plan.outage:
        members = city.cell_members[o.cell].tolist()
        start = max(last_heard(m, o.start_ns) for m in members)
        d = city.districts[city.meter_district[members[0]]]
        add("network_outage", {"type": "cell", "id": city.cell_ids[o.cell]}, start, o.end_ns, d,
            meters=len(members))
        for m in members:
            add("none", meter(m), start, o.end_ns, dist(m), decoy="cell_outage", cell=city.cell_ids[o.cell])
    for r in plan.reverse:
        h = hour_of(cfg, r.t_ns)
        if r.variant == "reverse_register":
            s = hour_ns(first_drop(-meas.reverse[r.meter], h))
            add("reverse_flow", meter(r.meter), s, t1, dist(r.meter), variant=r.variant,
                mode="backflow" if r.amount > 0 else "turned_round")
        else:
            s = hour_ns(first_drop(meas.total[r.meter], h))
            end = s + HOUR_S * NS if r.variant == "rollback" else t1
            extra = {"rollback_m3": r.amount} if r.variant == "rollback" else {}
            add("reverse_flow", meter(r.meter), s, end, dist(r.meter), variant=r.variant, **extra)
    for bp in plan.bypass:
        add("bypass", meter(bp.meter), bp.t_ns, t1, dist(bp.meter), registered_fraction=bp.fraction)
    for v in plan.vacancy:
        add("none", meter(v.meter), v.start_ns, v.end_ns, dist(v.meter), decoy="vacancy")
    for mo in plan.move_out:
        add("none", meter(mo.meter), mo.start_ns, mo.end_ns, dist(mo.meter), decoy="move_out", factor=mo.factor)
    for lk in plan.leak:
        m = int(city.building_master[lk.building])
        add("none", meter(m), lk.start_ns, t1, dist(m), decoy="leak", m3_per_day=round(24 * lk.m3h, 3))
    for ro in plan.rollover:
        s = hour_ns(first_drop(meas.total[ro.meter], max(0, hour_of(cfg, ro.wrap_ns) - 2)))
        add("none", meter(ro.meter), s, s + HOUR_S * NS, dist(ro.meter), decoy="rollover")
    for rep in plan.replacement:
        add("none", meter(rep.meter), rep.t_ns, rep.t_ns + HOUR_S * NS, dist(rep.meter), decoy="replacement",
            work_order=rep.work_order)
    for bd in plan.battery:
        add("none", meter(bd.meter), bd.decline_ns, t1, dist(bd.meter), decoy="battery_depleted",
            silent_from=iso(last_heard(bd.meter, bd.silence_ns)))
    for tp in plan.tanks:
        room = int(city.tank_room[tp.tank])
        d = city.districts[city.building_district[room]]
        subject = {"type": "tank", "id": city.tank_ids[tp.tank]}
        cleaned = tr.cleaned_at_ns.get(tp.tank)
        due_ns = local_midnight_ns(tp.due)
        if tp.kind == "disinfected" and cleaned is not None and cleaned < due_ns:
            add("none", subject, cleaned, t1, d, decoy="disinfected", due=tp.due.isoformat())
        elif tp.kind != "normal" and due_ns < t1:
            end = cleaned if cleaned is not None and cleaned > due_ns else t1
            add("disinfection_overdue", subject, due_ns, end, d, due=tp.due.isoformat(),
                last_disinfected=city.last_disinfected[tp.tank].isoformat())
    out += room_labels(city, cfg, meas)
    out.sort(key=lambda r: (r["start"], r["kind"], r["subject"]["type"], r["subject"]["id"]))
    return out


def write_labels(path: Path, labels: list[dict]) -> None:
    with path.open("wb") as f:
        for rec in labels:
            f.write(orjson.dumps(rec) + b"\n")

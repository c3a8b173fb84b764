"""A year in operation: a small town run through the service's own pipeline and dispatch, with the registry changed
every week (a new estate metered flat by flat, meters replaced by new ones, a re-sorted export, a meter removed,
corrected addresses and units), reloaded as an operator does (SIGHUP, or changed while the service is stopped),
restarts, and an upgrade from the first release's checkpoint format. Detection on the meters and tanks the changes
did not touch is identical to a year without any of them, and every reading of theirs is stored the same.

The town (detectors.testing.Town) has six buildings: four make up the first registry, two are the new estate, on
a cell of their own. Traffic is cut into batches by the hour of its publishing in both runs, as the live service
cuts them by time, so the two runs judge at the same moments."""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from detectors.testing import Town
from devices.messages import RawMessage
from devices.registry import Registry
from ingest.app import make_dispatcher, make_pipeline
from ingest.config import Settings
from ingest.pipeline.checkpoint import FILE_NAME
from ingest.pipeline.reload import RegistryWatch

NS = 10**9
HOUR = 3600 * NS
DAY = 24 * HOUR
WEEK = 7 * DAY
DAYS = 364
OLD_BUILDINGS, NEW_BUILDINGS = (0, 1, 2, 3), (4, 5)
WINDOW = 12 * HOUR  # one batch per twelve hours of publishing


# --- the town and its traffic ----------------------------------------------------------------------------------

def build_town() -> Town:
    t = Town(seed=7, buildings=6, households=6, days=DAYS, cells=3, hourly_every=3, masters_in_cell=False,
             overdue_tanks=1)
    hh = [int(i) for i in t.households]  # six households a building, building by building
    t.block(hh[1], t.t(40), t.t(47))
    t.block(hh[8], t.t(150))
    t.cell_outage(0, t.t(200), t.t(200.4))
    t.battery_dies(hh[13], t.t(120))
    t.backwards(hh[14], t.t(90))
    t.wind_back(hh[2], t.t(250), 30.0)
    t.reverse_register(hh[15], t.t(300), 0.01)
    t.bypass(hh[9], t.t(60), 0.9)
    t.bypass(hh[4], t.t(280), 0.8)
    t.vacancy(hh[21], t.t(245))  # M00304: the flat removed from the registry in week 35
    t.block(hh[20], t.t(130), t.t(140))  # M00303, shielded until it is replaced by a new meter in week 20
    t.replace(hh[7], t.t(170), 0.0)  # a meter replaced under the same id, with its event
    t.disinfect(1, t.t(100), True)
    t.disinfect(3, t.t(200), True)
    return t.build()


@dataclass
class Message:
    pub_ns: int
    meter: int | None  # Town meter index, None for pump-room traffic
    ts_ns: np.ndarray  # reading times (meters)
    make: Callable[[str, float], tuple[str, bytes]]  # (meter id, register offset) -> (topic, payload)
    made: tuple | None = None  # ((meter id, offset), RawMessage): made once, the same in both years

    def raw(self, mid: str, offset: float) -> RawMessage:
        if self.made is not None and self.made[0] == (mid, offset):
            return self.made[1]
        msg = RawMessage(*self.make(mid, offset))
        self.made = self.made or ((mid, offset), msg)
        return msg


def traffic(town: Town) -> list[Message]:
    """The town's messages in publish order: meters (masters thinned to hourly), pump rooms hourly, events."""
    reg, rows = town.registry, town.meter_rows
    out: list[Message] = []
    starts = np.flatnonzero(np.r_[True, town.meter_msg[1:] != town.meter_msg[:-1]])
    ends = np.r_[starts[1:], len(town.meter_msg)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        i = int(rows.meter[a])
        ts = rows.ts_ns[a:b]
        if reg.meters.is_master[i] and ts[-1] % HOUR:
            continue
        daily = reg.meters.report_interval_s[i] == 86400
        total, rev = rows.total_m3[a:b], rows.reverse_m3[a:b]
        last = b - 1
        status = {"signal": {"rsrp_dbm": float(rows.rsrp_dbm[last]), "snr_db": 5.0, "ecl": 0},
                  "battery_v": float(rows.battery_v[last])}
        if not np.isnan(rows.balance_cny[last]):
            status["balance_cny"] = float(rows.balance_cny[last])

        def make(mid: str, offset: float, ts=ts, total=total, rev=rev, daily=daily, status=status):
            def one(k: int) -> dict:
                r = {"ts": int(ts[k] // NS), "total_m3": round(float(total[k]) - offset, 4)}
                if not np.isnan(rev[k]):
                    r["reverse_m3"] = float(rev[k])
                return r
            body = ({"meter_id": mid, "readings": [one(k) for k in range(len(ts))], **status} if daily
                    else {"meter_id": mid, **one(0), **status})
            return f"water/d01/meter/{mid}/reading", orjson.dumps(body)
        out.append(Message(int(town.msg_pub[int(town.meter_msg[a])]), i, ts, make))
    tanks = town.tank_rows
    hourly = np.flatnonzero(tanks.ts_ns % HOUR == 0)
    telemetry: dict[tuple[int, int], list] = {}  # (time, room) -> its tanks' readings
    for k in hourly[np.lexsort((tanks.tank[hourly], tanks.ts_ns[hourly]))].tolist():
        ti = int(tanks.tank[k])
        telemetry.setdefault((int(tanks.ts_ns[k]), int(reg.tanks.room[ti])), []).append(
            {"tank_id": str(reg.tanks.ids[ti]), "level_m": round(float(tanks.level_m[k]), 3)})
    for (t_ns, room), tks in telemetry.items():
        rid = str(reg.rooms.ids[room])
        topic, body = f"water/d01/pumproom/{rid}/telemetry", orjson.dumps({"room_id": rid, "ts": t_ns // NS, "tanks": tks})
        out.append(Message(t_ns + 30 * NS, None, np.array([t_ns]), lambda _m, _o, t=topic, b=body: (t, b)))
    for pub, e in town.events:
        if e.device == "meter":  # under whichever id the meter has in the world it is sent in
            def make_event(mid: str, _o: float, e=e) -> tuple[str, bytes]:
                return f"water/d01/meter/{mid}/event", orjson.dumps(
                    {"meter_id": mid, "ts": e.ts_ns // NS, "type": e.type, **e.fields})
            out.append(Message(pub, e.index, np.array([e.ts_ns]), make_event))
        else:
            topic = f"water/d01/pumproom/{e.device_id}/event"
            body = orjson.dumps({"room_id": e.device_id, "ts": e.ts_ns // NS, "type": e.type, **e.fields})
            out.append(Message(pub, None, np.array([e.ts_ns]), lambda _m, _o, t=topic, b=body: (t, b)))
    out.sort(key=lambda m: m.pub_ns)
    return out


# --- the registry, as the utility exports it --------------------------------------------------------------------

COLUMNS = {
    "meters.csv": ["meter_id", "district", "building_id", "role", "customer_class", "pipe_dn_mm", "prepaid",
                   "report_interval_s", "cell_id", "register_max_m3", "business_hours_per_day"],
    "buildings.csv": ["building_id", "district", "address", "pump_room_id", "master_meter_id"],
    "pump_rooms.csv": ["room_id", "district", "address", "maintenance_unit", "supervisor_unit"],
    "tanks.csv": ["tank_id", "room_id", "capacity_m3", "last_disinfected"],
}


def rows_of(town: Town) -> dict[str, dict[str, list]]:
    """Every row the utility could export, by file and id (the new estate's on a cell of its own)."""
    reg = town.registry
    m, b, r, t = reg.meters, reg.buildings, reg.rooms, reg.tanks
    meters = {}
    for i, mid in enumerate(m.ids.tolist()):
        new = int(m.building[i]) in NEW_BUILDINGS
        meters[mid] = [mid, "d01", b.ids[m.building[i]], m.role[i], m.customer_class[i], str(m.pipe_dn_mm[i]),
                       "1" if m.prepaid[i] else "0", "3600" if m.is_master[i] else str(m.report_interval_s[i]),
                       "CNEW" if new and not m.is_master[i] else m.cell_id[i], f"{m.register_max_m3[i]:g}", ""]
    buildings = {bid: [bid, "d01", b.address[k], b.pump_room_id[k], b.master_meter_id[k]]
                 for k, bid in enumerate(b.ids.tolist())}
    rooms = {rid: [rid, "d01", r.address[k], r.maintenance_unit[k], r.supervisor_unit[k]]
             for k, rid in enumerate(r.ids.tolist())}
    tanks = {tid: [tid, t.room_id[k], f"{t.capacity_m3[k]:g}", str(t.last_disinfected[k])]
             for k, tid in enumerate(t.ids.tolist())}
    return {"meters.csv": meters, "buildings.csv": buildings, "pump_rooms.csv": rooms, "tanks.csv": tanks}


@dataclass
class Export:
    """The registry files an operator maintains: rows by file, written out in the order kept (or shuffled)."""

    rows: dict[str, dict[str, list]]
    order_seed: int | None = None

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.rows.items():
            body = list(rows.values())
            if self.order_seed is not None:
                random.Random(self.order_seed + len(name)).shuffle(body)
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows([COLUMNS[name], *body])
            tmp = folder / f".{name}.tmp"
            tmp.write_text(out.getvalue(), encoding="utf-8")
            tmp.replace(folder / name)  # replaced whole, as the docs say


# --- the operator's year ----------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What changes in which week, and how the devices' traffic follows."""

    town: Town
    all_rows: dict[str, dict[str, list]]
    registry: Export
    weekly: dict[int, Callable[[], None]] = field(default_factory=dict)
    restarts: dict[int, str] = field(default_factory=dict)  # week -> "restart" | "upgrade"
    added_at: dict[str, int] = field(default_factory=dict)  # meter id -> when the registry got it
    replaced: dict[int, tuple[int, str, float]] = field(default_factory=dict)  # Town meter -> (when, new id, offset)
    removed: dict[int, int] = field(default_factory=dict)  # Town meter -> when
    touched: set[str] = field(default_factory=set)  # device ids whose own rows changed

    def week_start(self, w: int) -> int:
        return self.town.start + w * WEEK


def year_plan(town: Town) -> Plan:
    rows = rows_of(town)
    reg = town.registry
    ids = reg.meters.ids.tolist()
    first = {name: {k: v for k, v in r.items()} for name, r in rows.items()}
    new_meters = [mid for i, mid in enumerate(ids) if int(reg.meters.building[i]) in NEW_BUILDINGS]
    for mid in new_meters:
        del first["meters.csv"][mid]
    for bid in ("B004", "B005"):
        del first["buildings.csv"][bid]
    del first["pump_rooms.csv"]["P002"]
    for tid in ("P002-T1", "P002-T2"):
        del first["tanks.csv"][tid]
    plan = Plan(town, rows, Export(first))
    f = plan.registry.rows

    def add(name: str, key: str) -> Callable[[], None]:
        def do() -> None:
            f[name][key] = rows[name][key]
        return do

    # the new estate: its pump room, then each building with its master, then a flat a week
    schedule: list[tuple[int, Callable[[], None]]] = [(2, lambda: (add("pump_rooms.csv", "P002")(),
                                                                     add("tanks.csv", "P002-T1")(),
                                                                     add("tanks.csv", "P002-T2")()))]
    week = 3
    for bid in ("B004", "B005"):
        master = rows["buildings.csv"][bid][4]
        schedule.append((week, lambda bid=bid, master=master: (add("meters.csv", master)(),
                                                               add("buildings.csv", bid)())))
        plan.added_at[master] = plan.week_start(week)
        week += 1
        for mid in [m for m in new_meters if rows["meters.csv"][m][2] == bid and m != master]:
            schedule.append((week, add("meters.csv", mid)))
            plan.added_at[mid] = plan.week_start(week)
            week += 1
    # meters replaced by new ones (new ids, registers from zero), all in building B003
    for week, old in ((20, "M00303"), (30, "M00305"), (40, "M00306")):
        i = ids.index(old)
        new = "R" + old[1:]
        plan.replaced[i] = (plan.week_start(week), new, 0.0)
        plan.touched |= {old, new}

        def swap(old=old, new=new) -> None:
            row = f["meters.csv"].pop(old)
            f["meters.csv"][new] = [new, *row[1:]]
        schedule.append((week, swap))
    # a flat merged into its neighbour: its meter removed (it has stood vacant since day 245)
    gone = ids.index("M00304")
    plan.removed[gone] = plan.week_start(35)
    plan.touched.add("M00304")
    schedule.append((35, lambda: f["meters.csv"].pop("M00304")))
    # an export in another order, on the same week as the upgrade
    schedule.append((26, lambda: setattr(plan.registry, "order_seed", 26)))
    # every other week a correction somewhere: an address, a maintenance unit
    for w in range(1, 52):
        if w not in {s[0] for s in schedule}:
            if w % 2:
                schedule.append((w, lambda w=w: f["buildings.csv"]["B001"].__setitem__(2, f"{w} Water Street")))
            else:
                schedule.append((w, lambda w=w: f["pump_rooms.csv"]["P000"].__setitem__(3, f"Unit {w}")))
    for w, do in schedule:
        plan.weekly[w] = do
    plan.restarts = {13: "restart", 26: "upgrade", 35: "restart", 44: "restart"}
    # the replaced meters' new registers start from the old register at the change
    for i, (when, new, _) in list(plan.replaced.items()):
        m = town.meter_rows
        before = (m.meter == i) & (m.ts_ns <= when)
        plan.replaced[i] = (when, new, float(m.total_m3[before][-1]))
    return plan


def world(plan: Plan | None, messages: list[Message], ids: list[str]) -> list[tuple[int, RawMessage]]:
    """The messages that reach the broker. Without a plan: the first registry's devices as they always were. With
    it: the new estate's devices from their installation on (two weeks before the registry lists them: meanwhile
    their messages wait in quarantine), replaced meters under their new id from the replacement on, registers from
    zero, and the removed meter silent."""
    out = []
    for msg in messages:
        mid, offset = (ids[msg.meter], 0.0) if msg.meter is not None else ("", 0.0)
        installed = plan.added_at.get(mid, 0) - 2 * WEEK if plan is not None else 0
        topic = msg.raw(mid, offset).topic
        estate = mid[:4] in ("M004", "M005") or "/P002/" in topic
        if plan is None:
            if estate:
                continue
        elif estate and msg.pub_ns < (installed if msg.meter is not None else plan.week_start(2)):
            continue
        elif msg.meter in plan.removed and msg.pub_ns >= plan.removed[msg.meter]:
            continue
        elif msg.meter in plan.replaced and msg.pub_ns >= plan.replaced[msg.meter][0]:
            when, new, base = plan.replaced[msg.meter]
            if msg.ts_ns.min() < when:
                continue  # the old meter's last day went with it
            mid, offset = new, base
        out.append((msg.pub_ns, msg.raw(mid, offset)))
    return out


# --- the service ------------------------------------------------------------------------------------------------

class Hours:
    """A source that hands over the messages published in each window, in order; at a week's start it first lets
    the operator change the registry (an empty poll, as when nothing arrives), and it ends at a restart."""

    def __init__(self, messages: list[tuple[int, RawMessage]], start: int, end: int,
                 at_week: Callable[[int], None] | None = None, town_start: int = 0):
        self.messages = [m for m in messages if start <= m[0] < end]
        self.windows = list(range(start, end, WINDOW))
        self.k = self.pos = 0
        self.at_week, self.town_start = at_week, town_start
        self.done_weeks: set[int] = set()

    def poll(self, max_messages: int, timeout_s: float = 0.0) -> list[RawMessage]:
        w0 = self.windows[self.k]
        week, rem = divmod(w0 - self.town_start, WEEK)
        if rem == 0 and week not in self.done_weeks and self.at_week is not None:
            self.done_weeks.add(week)
            self.at_week(week)
            return []
        end = w0 + WINDOW
        out = []
        while self.pos < len(self.messages) and self.messages[self.pos][0] < end:
            out.append(self.messages[self.pos][1])
            self.pos += 1
        self.k += 1
        return out

    def ack(self, messages) -> None:
        pass

    def take_rejects(self) -> list:
        return []

    @property
    def exhausted(self) -> bool:
        return self.k >= len(self.windows)

    def close(self) -> None:
        pass


class Stored:
    """The database: the meter readings written, by meter id."""

    def __init__(self) -> None:
        self.lines: dict[str, list[bytes]] = {}

    def write(self, body: bytes) -> list:
        for line in body.splitlines():
            if line.startswith(b"meter_reading,"):
                mid = line.split(b"meter_id=", 1)[1].split(b",", 1)[0].split(b" ", 1)[0].decode()
                self.lines.setdefault(mid, []).append(line)
        return []

    def close(self) -> None:
        pass


def run(settings: Settings, source: Hours, stored: Stored, events: list, watch: RegistryWatch | None,
        restore: bool) -> None:
    registry = Registry.load(settings.registry)
    dispatcher = make_dispatcher(registry, settings, settings.state_dir, resume=True)
    pipeline = make_pipeline(registry, settings, source, writer=stored, dispatcher=dispatcher, live=False,
                             restore=restore, on_alerts=events.extend, registry_watch=watch,
                             batch_max_messages=100_000)
    try:
        pipeline.run()
    finally:
        dispatcher.close()


def as_first_release(path: Path, registry_folder: Path) -> None:
    """Rewrite a checkpoint as Cistern 0.1.0 wrote it: no format or version, a fingerprint of device counts."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = orjson.loads(bytes(arrays["__meta__"]))
    for k in ("format", "version", "saved_by"):
        meta.pop(k)
    counts = [sum(1 for _ in open(registry_folder / n)) - 1 for n in COLUMNS]
    meta["registry_fingerprint"] = [counts[0], counts[1], counts[2], counts[3]]
    arrays["__meta__"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    np.savez(path, **arrays)


def key(e) -> tuple:
    return (e.alert_id, e.event, e.kind, e.subject_type, e.subject_id, e.start_ns, e.detected_at_ns, e.severity,
            e.sequence)


def test_a_year_of_weekly_registry_changes_leaves_detection_on_unchanged_devices_as_it_was(tmp_path, caplog):
    # Dispatch commits every batch's case clock with a sync to disk; in memory (where there is one) the year's
    # 1,500 batches do not wait on the disk. The files are the same either way.
    if os.access("/dev/shm", os.W_OK):
        tmp_path = Path(tempfile.mkdtemp(prefix="cistern-year-", dir="/dev/shm"))
    try:
        year(tmp_path, caplog)
    finally:
        if str(tmp_path).startswith("/dev/shm/"):
            shutil.rmtree(tmp_path, ignore_errors=True)


def year(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    town = build_town()
    ids = town.registry.meters.ids.tolist()
    plan = year_plan(town)
    messages = traffic(town)
    end = town.start + DAYS * DAY

    # a year without any change: the first registry, one service that never stops
    base_dir = tmp_path / "baseline"
    Export({n: dict(r) for n, r in plan.registry.rows.items()}).write(base_dir / "registry")
    base = Settings(registry=base_dir / "registry", state_dir=base_dir / "state")
    base_events: list = []
    base_stored = Stored()
    run(base, Hours(world(None, messages, ids), town.start, end), base_stored, base_events, None, False)

    # the same year as the utility lives it
    op_dir = tmp_path / "operated"
    folder = op_dir / "registry"
    plan.registry.write(folder)
    op = Settings(registry=folder, state_dir=op_dir / "state")
    op_events: list = []
    op_stored = Stored()
    changed = world(plan, messages, ids)
    watch = RegistryWatch(folder, 0, 0.1)

    def at_week(w: int) -> None:
        if w in plan.weekly and w not in plan.restarts:
            plan.weekly[w]()
            plan.registry.write(folder)
            watch.request()  # systemctl reload cistern

    bounds = [0, *sorted(plan.restarts), 52]
    for a, b in zip(bounds, bounds[1:], strict=False):
        if a in plan.restarts:  # changed while the service was stopped
            plan.weekly[a]()
            plan.registry.write(folder)
            if plan.restarts[a] == "upgrade":
                as_first_release(op.state_dir / FILE_NAME, folder)
        start, stop = plan.week_start(a), min(plan.week_start(b), end)
        run(op, Hours(changed, start, stop, at_week, town.start), op_stored, op_events, watch, restore=a > 0)

    # the year did happen: reloads every week, the upgrade, the new estate stored, the replaced meter's case closed
    log = caplog.text
    assert log.count("registry reloaded (SIGHUP)") == 51 - len(plan.restarts), "one reload a week, weeks 1 to 51"
    assert "migrated from format version 1 to 2" in log and "registry changed since the checkpoint" in log
    assert {"M00401", "M00506", "R00303", "R00305", "R00306"} <= set(op_stored.lines)
    assert max(int(x.rsplit(b" ", 1)[1]) for x in op_stored.lines["M00304"]) < plan.removed[ids.index("M00304")]
    assert b"M00506" in (op.state_dir / "quarantine.jsonl").read_bytes()  # installed before the registry knew it
    gone = [e for e in op_events if e.subject_id == "M00303" and e.event == "cleared"]
    assert [e.evidence.get("resolution") for e in gone] == ["removed_from_registry"]
    replaced_at = plan.replaced[ids.index("M00303")][0]  # cleared at the reload, on the event-time clock
    assert replaced_at - HOUR <= gone[0].detected_at_ns <= replaced_at

    untouched = {m for m in ids if m not in plan.touched and m not in plan.added_at}
    tanks_before = {t for t in plan.all_rows["tanks.csv"] if not t.startswith("P002")}
    keep = untouched | tanks_before | {c for c in town.registry.cell_ids.tolist()}

    def of(events):
        return sorted(key(e) for e in events if e.subject_id in keep)

    want, got = of(base_events), of(op_events)
    assert len(want) > 30
    assert {k[2] for k in want} >= {"signal_blocking", "network_outage", "reverse_flow", "bypass",
                                    "disinfection_overdue"}
    assert got == want
    for mid in untouched:
        assert op_stored.lines.get(mid) == base_stored.lines.get(mid), mid

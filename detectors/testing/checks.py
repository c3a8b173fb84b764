"""The checks every registered detector must pass (scikit-learn's `check_estimator` habit): quiet on clean traffic,
the same incidents whatever the batch boundaries and the device order, a checkpoint round trip mid-stream that
changes nothing (also into a re-sorted, grown registry), every mutable attribute either learned state (checkpointed) or a derived cache (recomputed on
restore), and every parameter described with a unit.

    from detectors.testing import check_detector
    check_detector("signal")            # raises AssertionError naming the failed check
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from devices.batch import NS, Batch
from devices.registry import Registry

from ..base import Detector, unit_of
from .town import HOUR, Town, run


def busy_town(seed: int = 3, incidents: bool = True) -> Town:
    """A town of 4 buildings with one of every incident and look-alike the detectors know."""
    t = Town(seed=seed, buildings=4, households=8, days=18, overdue_tanks=1 if incidents else 0)
    if incidents:
        hh = t.households
        t.block(int(hh[2]), t.t(8))
        t.block(int(hh[9]), t.t(6), t.t(10))
        t.cell_outage(2, t.t(12), t.t(12.5))
        t.battery_dies(int(hh[5]), t.t(9))
        t.backwards(int(hh[12]), t.t(7))
        t.wind_back(int(hh[14]), t.t(9), 30.0)
        t.reverse_register(int(hh[26]), t.t(10), 0.01)
        t.transients(int(hh[17]))
        t.replace(int(hh[18]), t.t(11), 0.0)
        t.bypass(int(hh[28]), t.t(8), 0.9)
        t.vacancy(int(hh[30]), t.t(8))
        t.disinfect(1, t.t(5), True)
        t.disinfect(2, t.t(6), False)
        # pump rooms: P000 reports every 15 minutes (tanks 0, 1), P001 every 5 (tanks 2, 3); t(d) is local midnight
        h = HOUR
        t.water(0, "free_chlorine_mg_l", t.t(3.3), t.t(3.3) + 3 * h, 0.02)
        t.water(3, "turbidity_ntu", t.t(4.2), t.t(4.2) + 2 * h, 2.5)
        t.water(2, "ph", t.t(9.5), t.t(9.5) + 5 * h, 9.2)
        t.intrusion(1, t.t(7.1), t.t(7.1) + 3 * h, chlorine_to=0.01)  # at night, the tank tampered with
        t.intrusion(0, t.t(10.5), t.t(10.5) + 20 * 60 * NS)
        t.visit(0, t.t(11.4), t.t(11.4) + 2 * h)
        t.disinfect(3, t.t(12.4), True, chlorine_peak=3.5, record_late_h=2)
        t.stuck(1, "ph", t.t(13), t.t(14.2))
        t.spike(3, "turbidity_ntu", t.t(15.3), 4.0)
    return t.build()


def _set(name: str, registry: Registry, **kw):
    from .. import DetectorSet

    return DetectorSet(registry, only=[name], **kw)


def _key(e) -> tuple:
    return (e.alert_id, e.event, e.kind, e.subject_id, e.start_ns, e.detected_at_ns, e.severity)


def check_params_have_units(name: str, town: Town | None = None) -> None:
    from .. import DETECTORS

    for field, info in DETECTORS[name].Params.model_fields.items():
        assert info.description, f"{name}.{field} has no description"
        assert unit_of(info), f"{name}.{field} has no unit (make it with detectors.base.param)"


def check_quiet_on_clean_traffic(name: str, town: Town | None = None) -> None:
    clean = busy_town(seed=11, incidents=False)
    events = run(_set(name, clean.registry), clean)
    raised = [e for e in events if e.event == "raised" and e.kind != "disinfection_due_soon"]
    assert raised == [], f"{name} raised on clean traffic: {[(e.kind, e.subject_id) for e in raised]}"


def _split(batch: Batch, rng: np.random.Generator, pieces: int) -> list[Batch]:
    """The same readings cut into smaller batches, each device's readings still in time order across them (rows
    shuffled within a piece); a pump room's telemetry goes with the meter readings of its time."""
    m = batch.meters.take(np.argsort(batch.meters.ts_ns, kind="stable"))
    cuts = np.sort(rng.integers(0, len(m) + 1, pieces - 1))
    parts = np.split(np.arange(len(m)), cuts)
    edge = np.append(m.ts_ns, np.iinfo(np.int64).max)[cuts]
    tables = {name: getattr(batch, name) for name in ("tanks", "rooms", "pumps")}
    piece = {name: np.searchsorted(edge, t.ts_ns, side="right") for name, t in tables.items()}
    return [Batch(meters=m.take(rng.permutation(idx)),
                  **{name: t.take(rng.permutation(np.flatnonzero(piece[name] == k))) for name, t in tables.items()},
                  events=batch.events if k == 0 else []) for k, idx in enumerate(parts)]


def check_split_invariance(name: str, town: Town | None = None) -> None:
    town = town or busy_town()
    whole = _set(name, town.registry, tick_every_s=0)
    cut = _set(name, town.registry, tick_every_s=0)
    rng = np.random.default_rng(5)
    a: list = []
    b: list = []
    for batch, wm in town.chunks(messages=600, shuffle=True):
        a += whole.update(batch)
        a += whole.tick(wm)
        for piece in _split(batch, rng, int(rng.integers(2, 6))):
            b += cut.update(piece)
        b += cut.tick(wm)
    a += whole.tick(town.end_ns())
    b += cut.tick(town.end_ns())
    assert a, f"the busy town must raise something for {name}"
    assert [_key(e) for e in a] == [_key(e) for e in b], f"{name}: other batch boundaries, other incidents"


def _attributes(d: Detector) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(d).items() if isinstance(v, np.ndarray)}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def check_state_round_trip(name: str, town: Town | None = None) -> None:
    """Half the town, a checkpoint through np.savez, the other half on a fresh detector: the same incidents, and
    every array attribute equal to the uninterrupted detector's at the cut."""
    town = town or busy_town()
    straight = run(_set(name, town.registry), town)
    chunks = list(town.chunks())
    ds = _set(name, town.registry)
    d = ds.detectors[name]
    config = {k: v.copy() for k, v in _attributes(_set(name, town.registry).detectors[name]).items()
              if k not in d.state_axes and k not in d.derived}
    events: list = []
    half = len(chunks) // 2
    for batch, wm in chunks[:half]:
        events += ds.update(batch)
        events += ds.tick(wm)
    for k, v in config.items():
        assert _same(getattr(d, k), v), (f"{name}.{k} changed while running but is neither learned state "
                                         f"(state_axes) nor a derived cache (derived)")
    buf = io.BytesIO()
    np.savez(buf, **ds.state())
    buf.seek(0)
    resumed = _set(name, town.registry)
    resumed.restore(dict(np.load(buf, allow_pickle=False)))
    for k, v in _attributes(d).items():
        assert _same(getattr(resumed.detectors[name], k), v), f"{name}.{k} is not the same after a restore"
    for batch, wm in chunks[half:]:
        events += resumed.update(batch)
        events += resumed.tick(wm)
    events += resumed.tick(town.end_ns())
    assert [_key(e) for e in events] == [_key(e) for e in straight], f"{name}: a restart changed the incidents"


def _columns(reg: Registry) -> tuple[dict, dict, dict, dict]:
    """The registry back as the four files' columns (meters, buildings, rooms, tanks)."""
    m, b, r, t = reg.meters, reg.buildings, reg.rooms, reg.tanks
    meters = {k: list(getattr(m, a)) for k, a in (
        ("meter_id", "ids"), ("district", "district"), ("building_id", "building_id"), ("role", "role"),
        ("customer_class", "customer_class"), ("pipe_dn_mm", "pipe_dn_mm"), ("prepaid", "prepaid"),
        ("report_interval_s", "report_interval_s"), ("cell_id", "cell_id"), ("register_max_m3", "register_max_m3"),
        ("business_hours_per_day", "business_hours_per_day"))}
    buildings = {k: list(getattr(b, a)) for k, a in (
        ("building_id", "ids"), ("district", "district"), ("address", "address"), ("pump_room_id", "pump_room_id"),
        ("master_meter_id", "master_meter_id"))}
    rooms = {"room_id": list(r.ids), "district": list(r.district), "address": list(r.address),
             "maintenance_unit": list(r.maintenance_unit), "supervisor_unit": list(r.supervisor_unit)}
    tanks = {"tank_id": list(t.ids), "room_id": list(t.room_id), "capacity_m3": list(t.capacity_m3),
             "last_disinfected": list(t.last_disinfected)}
    return meters, buildings, rooms, tanks


def _permuted(reg: Registry, rng: np.random.Generator, grow: bool = False) -> tuple[Registry, dict[str, np.ndarray]]:
    """The registry with its meters, buildings, pump rooms and tanks in another order (and with `grow`, a new
    building of three meters that never report, in a cell of its own and in an existing one, a new pump room and a
    new tank, placed among the old rows); returns it with the old -> new meter, room and tank index maps."""
    meters, buildings, rooms, tanks = _columns(reg)
    if grow:
        cell = meters["cell_id"][-1]
        for k, (role, c) in enumerate((("master", "CNEW"), ("household", cell), ("household", "CNEW"))):
            for col, v in (("meter_id", f"MNEW{k}"), ("district", "d01"), ("building_id", "BNEW"), ("role", role),
                           ("customer_class", "" if role == "master" else "residential"),
                           ("pipe_dn_mm", 50 if role == "master" else 15), ("prepaid", False),
                           ("report_interval_s", 3600), ("cell_id", c),
                           ("register_max_m3", 99999.0 if role == "master" else 9999.0),
                           ("business_hours_per_day", np.nan)):
                meters[col].append(v)
        for col, v in (("building_id", "BNEW"), ("district", "d01"), ("address", "1 New Street"),
                       ("pump_room_id", rooms["room_id"][0]), ("master_meter_id", "MNEW0")):
            buildings[col].append(v)
        for col, v in (("room_id", "PNEW"), ("district", "d01"), ("address", "1 New Street"),
                       ("maintenance_unit", "Unit N"), ("supervisor_unit", "District water office")):
            rooms[col].append(v)
        for col, v in (("tank_id", "TNEW"), ("room_id", rooms["room_id"][0]), ("capacity_m3", 20.0),
                       ("last_disinfected", max(tanks["last_disinfected"]))):
            tanks[col].append(v)
    n = {"meter": len(reg.meters), "tank": len(reg.tanks), "room": len(reg.rooms)}
    perm = {"meter": rng.permutation(len(meters["meter_id"])), "tank": rng.permutation(len(tanks["tank_id"])),
            "room": rng.permutation(len(rooms["room_id"]))}
    pb = rng.permutation(len(buildings["building_id"]))
    meters = {k: [v[i] for i in perm["meter"]] for k, v in meters.items()}
    buildings = {k: [v[i] for i in pb] for k, v in buildings.items()}
    rooms = {k: [v[i] for i in perm["room"]] for k, v in rooms.items()}
    tanks = {k: [v[i] for i in perm["tank"]] for k, v in tanks.items()}
    maps = {}
    for name, p in perm.items():
        where = np.empty(len(p), dtype=np.int32)
        where[p] = np.arange(len(p))
        maps[name] = where[:n[name]]
    return Registry.from_columns(meters, buildings, rooms, tanks), maps


def _mapped(batch: Batch, maps: dict[str, np.ndarray]) -> Batch:
    """The batch with its meter, pump room and tank indexes in another registry's order."""
    meters = batch.meters.take(np.arange(len(batch.meters)))
    meters.meter = maps["meter"][meters.meter]
    tanks = batch.tanks.take(np.arange(len(batch.tanks)))
    tanks.tank = maps["tank"][tanks.tank]
    rooms = batch.rooms.take(np.arange(len(batch.rooms)))
    rooms.room = maps["room"][rooms.room]
    pumps = batch.pumps.take(np.arange(len(batch.pumps)))
    pumps.room = maps["room"][pumps.room]
    evs = [type(e)(e.device, int(maps["meter" if e.device == "meter" else "room"][e.index]), e.device_id,
                   e.district, e.ts_ns, e.type, e.fields) for e in batch.events]
    return Batch(meters=meters, tanks=tanks, rooms=rooms, pumps=pumps, events=evs)


def _as_set(evs: list) -> list:
    return sorted((e.alert_id, e.event, e.kind, e.subject_id, e.start_ns, e.detected_at_ns) for e in evs)


def check_device_order_invariance(name: str, town: Town | None = None) -> None:
    town = town or busy_town()
    straight = run(_set(name, town.registry), town)
    reg, maps = _permuted(town.registry, np.random.default_rng(9))
    ds = _set(name, reg)
    events: list = []
    for batch, wm in town.chunks():
        events += ds.update(_mapped(batch, maps))
        events += ds.tick(wm)
    events += ds.tick(town.end_ns())
    assert _as_set(events) == _as_set(straight), f"{name}: another order of the registry, other incidents"


def check_state_follows_device_ids(name: str, town: Town | None = None) -> None:
    """After every chunk a checkpoint, restored into the other of two registries: the town's, and the same
    re-sorted and grown (a new building, cell and tank, none of them heard). The same incidents as the
    uninterrupted run: state held per device, and device indexes held as values (state_refs), follow the device's
    id to its new row."""
    town = town or busy_town()
    straight = run(_set(name, town.registry), town)
    grown, maps = _permuted(town.registry, np.random.default_rng(4), grow=True)
    ds = _set(name, town.registry)
    events: list = []
    for k, (batch, wm) in enumerate(town.chunks()):
        on_grown = k % 2 == 1
        events += ds.update(_mapped(batch, maps) if on_grown else batch)
        events += ds.tick(wm)
        buf = io.BytesIO()
        np.savez(buf, **ds.state())
        buf.seek(0)
        ds = _set(name, town.registry if on_grown else grown)
        ds.restore(dict(np.load(buf, allow_pickle=False)))
    events += ds.tick(town.end_ns())
    assert _as_set(events) == _as_set(straight), (f"{name}: state restored into a re-sorted, grown registry "
                                                  f"changed the incidents")


CHECKS: dict[str, Callable[[str, Town | None], None]] = {
    "params_have_units": check_params_have_units,
    "quiet_on_clean_traffic": check_quiet_on_clean_traffic,
    "split_invariance": check_split_invariance,
    "state_round_trip": check_state_round_trip,
    "device_order_invariance": check_device_order_invariance,
    "state_follows_device_ids": check_state_follows_device_ids,
}


def check_detector(name: str, town: Town | None = None, only: list[str] | None = None) -> None:
    """Run the generic checks (all, or `only` these) on the registered detector `name`."""
    for check in only or list(CHECKS):
        CHECKS[check](name, town)

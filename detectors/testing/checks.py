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

from devices.batch import Batch
from devices.registry import Registry

from ..base import Detector, unit_of
from .town import Town, run


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
    """The same readings cut into smaller batches, each meter's readings still in time order across them."""
    m = batch.meters.take(np.argsort(batch.meters.ts_ns, kind="stable"))
    cuts = np.sort(rng.integers(0, len(m) + 1, pieces - 1))
    parts = np.split(np.arange(len(m)), cuts)
    t_cut = np.array_split(rng.permutation(len(batch.tanks)), pieces)
    return [Batch(meters=m.take(rng.permutation(idx)), tanks=batch.tanks.take(t_cut[k]),
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


def _permuted(reg: Registry, rng: np.random.Generator, grow: bool = False) -> tuple[Registry, np.ndarray, np.ndarray]:
    """The registry with its meters, buildings and tanks in another order (and with `grow`, a new building of
    three meters that never report, in a cell of its own and in an existing one, and a new tank, placed among the
    old rows); returns it with the old -> new meter and tank index maps."""
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
        for col, v in (("tank_id", "TNEW"), ("room_id", rooms["room_id"][0]), ("capacity_m3", 20.0),
                       ("last_disinfected", max(tanks["last_disinfected"]))):
            tanks[col].append(v)
    n_m, n_t = len(reg.meters), len(reg.tanks)
    pm, pt = rng.permutation(len(meters["meter_id"])), rng.permutation(len(tanks["tank_id"]))
    pb = rng.permutation(len(buildings["building_id"]))
    meters = {k: [v[i] for i in pm] for k, v in meters.items()}
    buildings = {k: [v[i] for i in pb] for k, v in buildings.items()}
    tanks = {k: [v[i] for i in pt] for k, v in tanks.items()}
    meter_map = np.empty(len(pm), dtype=np.int32)
    meter_map[pm] = np.arange(len(pm))
    tank_map = np.empty(len(pt), dtype=np.int32)
    tank_map[pt] = np.arange(len(pt))
    return Registry.from_columns(meters, buildings, rooms, tanks), meter_map[:n_m], tank_map[:n_t]


def _mapped(batch: Batch, meter_map: np.ndarray, tank_map: np.ndarray) -> Batch:
    """The batch with its meter and tank indexes in another registry's order."""
    meters = batch.meters.take(np.arange(len(batch.meters)))
    meters.meter = meter_map[meters.meter]
    tanks = batch.tanks.take(np.arange(len(batch.tanks)))
    tanks.tank = tank_map[tanks.tank]
    evs = [type(e)(e.device, int(meter_map[e.index]) if e.device == "meter" else e.index, e.device_id,
                   e.district, e.ts_ns, e.type, e.fields) for e in batch.events]
    return Batch(meters=meters, tanks=tanks, events=evs)


def _as_set(evs: list) -> list:
    return sorted((e.alert_id, e.event, e.kind, e.subject_id, e.start_ns, e.detected_at_ns) for e in evs)


def check_device_order_invariance(name: str, town: Town | None = None) -> None:
    town = town or busy_town()
    straight = run(_set(name, town.registry), town)
    reg, meter_map, tank_map = _permuted(town.registry, np.random.default_rng(9))
    ds = _set(name, reg)
    events: list = []
    for batch, wm in town.chunks():
        events += ds.update(_mapped(batch, meter_map, tank_map))
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
    grown, meter_map, tank_map = _permuted(town.registry, np.random.default_rng(4), grow=True)
    ds = _set(name, town.registry)
    events: list = []
    for k, (batch, wm) in enumerate(town.chunks()):
        on_grown = k % 2 == 1
        events += ds.update(_mapped(batch, meter_map, tank_map) if on_grown else batch)
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

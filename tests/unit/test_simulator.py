"""The simulator: reproducible output, a registry and capture the decoder accepts, labels that match the traffic."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.decode import Decoder
from simulator.behaviour import simulate_measurements
from simulator.city import SimConfig, build_city
from simulator.incidents import add_months, plan_incidents
from simulator.labels import build_labels
from simulator.run import simulate
from simulator.traffic import build_traffic

CFG = SimConfig(meters=320, days=21, seed=3)
HOUR_NS = 3600 * 10**9


def ns(ts: str) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp()) * 10**9


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    return simulate(CFG, out), out


@pytest.fixture(scope="module")
def capture(run):
    """Each capture line as (topic, payload dict), in file order."""
    _, out = run
    lines = (out / "capture.jsonl").read_bytes().splitlines()
    return [(o["topic"], o["payload"]) for o in map(orjson.loads, lines)]


@pytest.fixture(scope="module")
def timeline(capture):
    """Per meter: list of (line number, capture clock when sent, reading ts list). The clock is the latest
    reading time seen anywhere in the capture so far: what a listener would take as 'now'."""
    per: dict[str, list[tuple[int, int, list[int]]]] = defaultdict(list)
    clock = 0
    for i, (topic, p) in enumerate(capture):
        if "/meter/" in topic and topic.endswith("/reading"):
            ts = [ns(r["ts"]) for r in p["readings"]] if "readings" in p else [ns(p["ts"])]
            clock = max(clock, max(ts))
            per[p["meter_id"]].append((i, clock, ts))
        elif "ts" in p:
            clock = max(clock, ns(p["ts"]))
    return per


@pytest.fixture(scope="module")
def decoded(run, capture):
    _, out = run
    reg = Registry.load(out / "registry")
    batch, rejects = Decoder(reg, TopicLayout("water")).decode(
        [RawMessage(t, orjson.dumps(p)) for t, p in capture])
    return reg, batch, rejects


def labels_of(run, kind: str, decoy: str | None = None) -> list[dict]:
    result, _ = run
    return [r for r in result.labels if r["kind"] == kind and (decoy is None or r.get("decoy") == decoy)]


def meter_series(reg, batch, meter_id: str):
    m = batch.meters
    sel = m.meter == reg.meters.index[meter_id]
    order = np.argsort(m.ts_ns[sel], kind="stable")
    return m.ts_ns[sel][order], m.total_m3[sel][order], m.reverse_m3[sel][order], sel, order


def test_same_seed_gives_identical_files_and_another_seed_does_not(run, tmp_path):
    _, out = run
    simulate(CFG, tmp_path / "again")
    names = ["capture.jsonl", "labels.jsonl"] + [f"registry/{n}" for n in
                                                 ("meters.csv", "buildings.csv", "pump_rooms.csv", "tanks.csv")]
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    simulate(dataclasses.replace(CFG, seed=4, days=14), tmp_path / "other")
    assert (tmp_path / "other" / "labels.jsonl").read_bytes() != (out / "labels.jsonl").read_bytes()


def test_registry_loads_and_describes_the_city(run, decoded):
    result, _ = run
    reg, _, _ = decoded
    assert len(reg.meters) == CFG.meters
    assert set(reg.meters.report_interval_s[reg.meters.is_master].tolist()) == {900}
    assert set(reg.meters.report_interval_s[~reg.meters.is_master].tolist()) == {3600, 86400}
    assert set(reg.meters.register_max_m3[~reg.meters.is_master].tolist()) == {9999.0}
    assert (reg.meters.pipe_dn_mm[reg.meters.is_master] == 50).all()
    masters = reg.buildings.master_meter
    assert (masters >= 0).all() and reg.meters.is_master[masters].all()
    assert (reg.buildings.room >= 0).all()
    per_building = np.bincount(reg.meters.building[~reg.meters.is_master])
    lo, hi = result.city.style.households_per_building
    assert lo <= per_building[:-1].min() and per_building[:-1].max() <= hi  # (the last takes the remainder)
    # NB-IoT cells cover a few buildings each and only households sit on them.
    for c in range(len(reg.cell_ids)):
        assert 1 <= len(set(reg.meters.building[reg.meters.cell == c].tolist())) <= 5
    assert (reg.meters.cell[reg.meters.is_master] == -1).all()
    assert set(np.bincount(reg.tanks.room).tolist()) <= {1, 2}


def test_every_capture_line_decodes_without_rejects(capture, decoded):
    _, batch, rejects = decoded
    assert rejects == []
    assert len(batch.meters) > len(capture) and len(batch.tanks) and len(batch.pumps)
    topics = {t.split("/")[2] + "/" + t.split("/")[4] for t, _ in capture}
    assert topics == {"meter/reading", "meter/event", "pumproom/telemetry", "pumproom/event"}


def test_capture_is_in_publish_order_and_readings_are_not_from_the_future(capture):
    clock = ns(capture[0][1]["ts"])
    for _topic, p in capture:
        ts = [ns(r["ts"]) for r in p["readings"]] if "readings" in p else [ns(p["ts"])]
        # A message never carries a reading more than an hour ahead of what was already published.
        assert max(ts) <= clock + HOUR_NS
        clock = max(clock, max(ts))


def test_default_run_holds_every_incident_and_decoy_kind():
    cfg = SimConfig()
    city = build_city(cfg)
    plan = plan_incidents(city, cfg)
    meas = simulate_measurements(city, cfg, plan)
    labels = build_labels(city, cfg, plan, meas, build_traffic(city, cfg, plan, meas))
    kinds = {r["kind"] for r in labels}
    decoys = {r["decoy"] for r in labels if r["kind"] == "none"}
    assert kinds == {"signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection_overdue",
                     "water_quality", "pump_room_intrusion", "none"}
    assert decoys == {"vacancy", "move_out", "leak", "rollover", "replacement", "battery_depleted", "cell_outage",
                      "disinfected", "maintenance_visit", "disinfection_chlorine", "sensor_stuck", "brief_spike"}
    variants = {(r["kind"], r.get("variant")) for r in labels}
    for v in ("abrupt", "rsrp_sinking", "prepaid_balance"):
        assert ("signal_blocking", v) in variants
    for v in ("installed_backwards", "rollback", "reverse_register"):
        assert ("reverse_flow", v) in variants
    assert any(r.get("resumed") for r in labels)
    for kind in ("signal_blocking", "reverse_flow", "bypass"):
        assert sum(r["kind"] == kind for r in labels) >= 3


def test_labels_never_overlap_for_one_subject_and_kind(run):
    result, _ = run
    by = defaultdict(list)
    for r in result.labels:
        by[(r["kind"], r.get("decoy"), r["subject"]["id"])].append((r["start"], r["end"]))
    for spans in by.values():
        spans.sort()
        for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False):
            assert s1 > e0
    for r in result.labels:
        assert r["start"] <= r["end"]
        if r["kind"] in ("signal_blocking", "reverse_flow", "bypass"):
            assert not result.city.is_master[result.city.meter_ids.index(r["subject"]["id"])]


def test_blocked_meter_falls_silent_while_its_cell_keeps_reporting(run, timeline, decoded):
    reg, _, _ = decoded
    blocked = labels_of(run, "signal_blocking")
    assert blocked
    for lab in blocked:
        s, e = ns(lab["start"]), ns(lab["end"])
        mine = timeline[lab["subject"]["id"]]
        before = [x for x in mine if max(x[2]) <= s]
        assert before and max(before[-1][2]) == s  # start is the last reading heard before the silence
        after = [x for x in mine if x[0] > before[-1][0]]
        if after:  # resumed: nothing until the clock reaches the label's end, then the stored readings
            assert after[0][1] >= e - HOUR_NS
            assert min(after[0][2]) <= s + 25 * HOUR_NS
        m = reg.meters.index[lab["subject"]["id"]]
        cell = reg.meters.cell[m]
        neighbours = [reg.meters.ids[i] for i in np.flatnonzero(reg.meters.cell == cell) if i != m]
        heard = sum(1 for n in neighbours for x in timeline[n] if s + 2 * HOUR_NS < x[1] < min(e, s + 48 * HOUR_NS))
        assert heard > 20


def test_prepaid_blocked_meter_had_run_out_of_money(run, capture):
    prepaid = [lab for lab in labels_of(run, "signal_blocking") if lab["variant"] == "prepaid_balance"]
    assert prepaid
    for lab in prepaid:
        last = [p for t, p in capture if p.get("meter_id") == lab["subject"]["id"] and "balance_cny" in p
                and (ns(p["ts"]) if "ts" in p else ns(p["readings"][-1]["ts"])) <= ns(lab["start"])][-1]
        assert last["balance_cny"] <= 0 and last["valve"] == "open"


def test_outage_cell_goes_quiet_then_delivers_the_missed_readings(run, timeline, decoded):
    reg, _, _ = decoded
    outages = labels_of(run, "network_outage")
    assert outages
    for lab in outages:
        s, e = ns(lab["start"]), ns(lab["end"])
        members = [reg.meters.ids[i] for i in np.flatnonzero(reg.meters.cell_id == lab["subject"]["id"])]
        assert len(labels_of(run, "none", "cell_outage")) >= len(members)
        sent_inside = [x for m in members for x in timeline[m] if s + HOUR_NS < x[1] < e - HOUR_NS]
        assert sent_inside == []
        late = [x for m in members for x in timeline[m] if x[1] >= e and min(x[2]) < e - HOUR_NS]
        assert late  # readings taken during the outage arrive after it


def test_reverse_flow_registers_really_run_backwards(run, decoded):
    reg, batch, _ = decoded
    labels = labels_of(run, "reverse_flow")
    assert {lab["variant"] for lab in labels} == {"installed_backwards", "rollback", "reverse_register"}
    for lab in labels:
        ts, total, rev, _, _ = meter_series(reg, batch, lab["subject"]["id"])
        s = ns(lab["start"])
        i = int(np.searchsorted(ts, s))
        assert ts[i] == s
        if lab["variant"] == "reverse_register":
            assert rev[-1] - rev[i - 1] > 0.5 and rev[i] > rev[i - 1]
            assert np.all(np.diff(total[:i]) >= 0)
        else:
            assert total[i] < total[i - 1]
            assert np.all(np.diff(total[:i]) >= 0)  # it ran forwards before
            if lab["variant"] == "rollback":
                assert total[i - 1] - total[i] > 9
            else:
                assert total[-1] < total[i - 1]


def test_decoy_registers_wrap_or_restart_with_an_event(run, decoded):
    reg, batch, _ = decoded
    for lab in labels_of(run, "none", "rollover"):
        ts, total, _, _, _ = meter_series(reg, batch, lab["subject"]["id"])
        i = int(np.searchsorted(ts, ns(lab["start"])))
        assert total[i - 1] > 9990 and total[i] < 5
    events = {(e.device_id, e.type): e for e in batch.events}
    for lab in labels_of(run, "none", "replacement"):
        ev = events[(lab["subject"]["id"], "replacement")]
        assert ev.ts_ns == ns(lab["start"])
        ts, total, _, _, _ = meter_series(reg, batch, lab["subject"]["id"])
        i = int(np.searchsorted(ts, ev.ts_ns))
        assert total[i] < total[i - 1] and total[i] - ev.fields["register_m3"] < 2


def test_battery_sinks_for_days_before_the_meter_dies(run, capture):
    for lab in labels_of(run, "none", "battery_depleted"):
        volts = [(p.get("ts") or p["readings"][-1]["ts"], p["battery_v"]) for t, p in capture
                 if p.get("meter_id") == lab["subject"]["id"] and "battery_v" in p]
        assert volts[0][1] > 3.5 and volts[-1][1] < 3.3
        assert ns(volts[-1][0]) < ns(lab["end"]) - 2 * 86400 * 10**9  # silent afterwards


def test_vacancy_and_bypass_show_in_the_building_balance():
    """Counterfactual: the same city without the scenario. A vacancy lowers the master meter with the
    household; a bypass lowers only the household's meter."""
    cfg = CFG
    city = build_city(cfg)
    plan = plan_incidents(city, cfg)
    base = simulate_measurements(city, cfg, dataclasses.replace(plan, vacancy=[]))
    city2 = build_city(cfg)
    real = simulate_measurements(city2, cfg, plan_incidents(city2, cfg))
    q0 = cfg.start_ns
    for v in plan.vacancy:
        b = city.meter_building[v.meter]
        a, z = (v.start_ns - q0) // (900 * 10**9) + 8, (v.end_ns - q0) // (900 * 10**9) - 8
        missing = base.building_quarter_use[b, a:z].sum() - real.building_quarter_use[b, a:z].sum()
        # (the building may hold another vacancy, beside a bypass: the master misses both households' use)
        away = [x.meter for x in plan.vacancy if city.meter_building[x.meter] == b]
        household = (base.true_use[away, a // 4:z // 4] - real.true_use[away, a // 4:z // 4]).sum()
        assert base.true_use[v.meter, a // 4:z // 4].sum() > 0.3 and missing == pytest.approx(household, rel=0.1)
        assert real.total[v.meter, a // 4 + 1] == real.total[v.meter, z // 4 - 1]  # the meter stands still
    base = simulate_measurements(city, cfg, dataclasses.replace(plan, bypass=[]))
    for bp in plan.bypass:
        b = city.meter_building[bp.meter]
        np.testing.assert_allclose(real.master_total[b], base.master_total[b])
        h = (bp.t_ns - q0) // (3600 * 10**9) + 2
        used = base.total[bp.meter, -1] - base.total[bp.meter, h]
        metered = real.total[bp.meter, -1] - real.total[bp.meter, h]
        assert metered == pytest.approx(used * bp.fraction, rel=0.05, abs=0.01)


def test_each_city_draws_its_own_households():
    # domain randomisation: building sizes, use levels, daily profile family and weekend shape differ city to city
    styles = [build_city(SimConfig(meters=1500, days=14, seed=s)).style for s in range(1, 9)]
    assert len({st.size_family for st in styles}) >= 3
    assert len({round(st.use_median_m3, 3) for st in styles}) >= 6
    assert len({max(range(5), key=lambda f: st.family_weights[f]) for st in styles}) >= 3
    assert min(st.weekend_factor for st in styles) < 1 < max(st.weekend_factor for st in styles)
    city = build_city(SimConfig(meters=1500, days=14, seed=3))
    use = city.use_m3_day[city.households]
    assert ((use >= 0.05) & (use <= 0.3)).sum() > 20  # small households are there


def test_bypasses_have_confounders_beside_them_and_some_start_late():
    """Over a few cities: in the building of a bypass, around its start, a neighbour falls silent, one's register
    runs backwards, a family leaves, part of one moves out; some bypasses are small households, some start in the
    last week (with enough data left to see them), some at night, and some full ones leave the meter nothing."""
    seen: set[str] = set()
    late = small = night = nothing = 0
    near_ns = 2 * 86400 * 10**9 + 3600 * 10**9  # what "around a bypass's start" means in the plan
    for seed in range(1, 7):
        cfg = SimConfig(meters=1500, days=30, seed=seed)
        city = build_city(cfg)
        plan = plan_incidents(city, cfg)
        for bp in plan.bypass:
            b = city.meter_building[bp.meter]
            for name, items in (("silent", [(x.meter, x.silence_ns) for x in plan.blocking + plan.battery]),
                                ("reverse", [(x.meter, x.t_ns) for x in plan.reverse]),
                                ("vacancy", [(x.meter, x.start_ns) for x in plan.vacancy]),
                                ("move_out", [(x.meter, x.start_ns) for x in plan.move_out])):
                if any(city.meter_building[m] == b and m != bp.meter and abs(t - bp.t_ns) <= near_ns
                       for m, t in items):
                    seen.add(name)
            late += bp.t_ns >= cfg.end_ns - 7 * 86400 * 10**9
            assert bp.t_ns <= cfg.end_ns - int(2.5 * 86400) * 10**9
            small += city.use_m3_day[bp.meter] < 0.3
            night += (bp.t_ns // 10**9 + 8 * 3600) % 86400 < 6 * 3600  # (local time, UTC+8)
            nothing += bp.fraction <= 0.01  # (at most 1 % registered: next to nothing)
    assert seen == {"silent", "reverse", "vacancy", "move_out"}
    assert late >= 3 and small >= 3 and night >= 3 and nothing >= 1


def test_move_out_and_leak_show_in_the_balance():
    """Counterfactual: a move-out lowers the master with the household; a leak raises the master alone."""
    cfg = CFG
    city = build_city(cfg)
    plan = plan_incidents(city, cfg)
    real = simulate_measurements(city, cfg, plan)
    base = simulate_measurements(build_city(cfg), cfg, dataclasses.replace(plan, move_out=[], leak=[]))
    for mo in plan.move_out:
        h = (mo.start_ns - cfg.start_ns) // (3600 * 10**9) + 2
        assert real.true_use[mo.meter, h:].sum() == pytest.approx(mo.factor * base.true_use[mo.meter, h:].sum())
    for lk in plan.leak:
        q = (lk.start_ns - cfg.start_ns) // (900 * 10**9) + 8
        extra = real.building_quarter_use[lk.building, q:].sum() - base.building_quarter_use[lk.building, q:].sum()
        assert extra == pytest.approx(lk.m3h * (real.building_quarter_use.shape[1] - q) / 4, rel=0.05)


def test_a_meter_turned_round_counts_its_use_on_the_reverse_register(run, decoded):
    reg, batch, _ = decoded
    result, _ = run
    turned = [r for r in result.plan.reverse if r.variant == "reverse_register" and r.amount == 0]
    for r in turned:
        ts, total, rev, _, _ = meter_series(reg, batch, result.city.meter_ids[r.meter])
        after = ts > r.t_ns + 3600 * 10**9
        assert np.ptp(total[after]) < 1e-6  # the forward register stands
        assert rev[after][-1] - rev[after][0] > 0  # the use runs onto the reverse register


def test_tank_deadlines_follow_the_registry_and_cleanings_show_in_telemetry(run, decoded, capture):
    reg, batch, _ = decoded
    for lab in labels_of(run, "disinfection_overdue"):
        t = reg.tanks.index[lab["subject"]["id"]]
        last = reg.tanks.last_disinfected[t].astype(dt.date)
        due = add_months(last, 6)
        # Start = the due date on the utility's clock (UTC+8).
        assert ns(lab["start"]) == int(dt.datetime(due.year, due.month, due.day, tzinfo=dt.UTC).timestamp()
                                       - 8 * 3600) * 10**9
    cleaned = labels_of(run, "none", "disinfected")
    assert cleaned
    for lab in cleaned:
        t = reg.tanks.index[lab["subject"]["id"]]
        ev = [e for e in batch.events if e.type == "disinfection" and e.fields.get("tank_id") == lab["subject"]["id"]]
        assert len(ev) == 1 and ev[0].ts_ns == ns(lab["start"])
        due = add_months(reg.tanks.last_disinfected[t].astype(dt.date), 6)
        assert ev[0].ts_ns < ns(due.isoformat() + "T00:00:00+08:00")
        tk = batch.tanks
        sel = (tk.tank == t) & (tk.ts_ns <= ev[0].ts_ns) & (tk.ts_ns > ev[0].ts_ns - 8 * HOUR_NS)
        assert tk.level_m[sel].min() < 0.2  # drawn down to near empty
        after = (tk.tank == t) & (tk.ts_ns > ev[0].ts_ns) & (tk.ts_ns < ev[0].ts_ns + 2 * HOUR_NS)
        before = (tk.tank == t) & (tk.ts_ns < ev[0].ts_ns - 24 * HOUR_NS)
        assert tk.free_chlorine_mg_l[after].mean() > tk.free_chlorine_mg_l[before].mean() + 0.2
        assert tk.level_m[after].max() > 1.0


def test_cli_rejects_bad_usage(tmp_path, capsys):
    import argparse

    from simulator import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.main(p.parse_args(["--out", str(tmp_path / "x"), "--meters", "20"])) == 2
    assert "--meters" in capsys.readouterr().err
    assert cli.main(p.parse_args(["--out", str(tmp_path / "x"), "--days", "3"])) == 2
    assert cli.main(p.parse_args(["--out", str(tmp_path / "x"), "--publish", "--mqtt-url", "http://h:1"])) == 2
    assert not Path(tmp_path / "x").exists()

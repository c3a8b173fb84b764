"""Ingest benchmark: `cistern run` draining an MQTT backlog into InfluxDB 1.x, beside the broker's own drain
(mosquitto_sub) and the naive paho script, and `cistern replay` beside the json.loads floor — every figure next to
its baselines measured in the same run, with the machine's load (machines here are shared and noisy).

    .venv/bin/python bench/ingest.py                     # everything, 3 rounds: about 10 minutes
    .venv/bin/python bench/ingest.py --part single       # or: batch, replay, rss, profile
    .venv/bin/python bench/ingest.py --runs 5            # medians over more runs

How the drains are measured: Mosquitto and InfluxDB 1.x start from the project's launchers. Three persistent QoS 1
sessions subscribe to the meter topics first (`mosquitto_sub -c`, the naive script, `cistern run`, each started
once and stopped); then a raw-socket publisher streams the backlog at QoS 1 while all three are away (the load
generator stays out of the measured window); then each drains in turn: `mosquitto_sub -C N` from its first message
to its exit, the naive script and `cistern run` from the first point InfluxDB stores until it holds every reading.
Last in each round, InfluxDB alone stores the same points, encoded beforehand as the service encodes them: the
ceiling no consumer passes on this machine (bench/influx_ceiling.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

from drains import Drain, Servers  # noqa: E402
from influx_ceiling import ceiling_line, encode_backlog, influx_alone  # noqa: E402
from traffic import batch_messages, single_chunks, single_messages, write_fleet  # noqa: E402


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def median_of(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _fmt_runs(xs: list[float], fmt: str = "{:,.0f}") -> str:
    return "[" + " ".join(fmt.format(x) for x in xs) + "]"


# --- MQTT drains ---------------------------------------------------------------------------------------------

def drain_runs(srv: Servers, kind: str, messages: list[tuple[str, bytes]], per: int, registry: Path, tmp: Path,
               runs: int, timeout_s: float, variants: dict[str, dict[str, str]]) -> dict[str, list[Drain]]:
    """`runs` rounds of: three sessions (and one per variant), one backlog published, the drains in turn."""
    out: dict[str, list[Drain]] = {"sub": [], "naive": [], "cistern": [], "alone": [], **{v: [] for v in variants}}
    expected = len(messages) * per
    pub = srv.publisher()
    bodies = encode_backlog(registry, messages)
    for r in range(runs):
        tag = f"{kind}{r}-{os.getpid()}"
        db_naive, db_cistern = srv.influx.new_database(f"naive_{kind}"), srv.influx.new_database(f"cistern_{kind}")
        naive = srv.naive_cmd(f"naive-{tag}", db_naive)
        cistern = srv.cistern_cmd(f"cistern-{tag}", db_cistern, registry, tmp / f"state-{tag}")
        log = tmp / f"{tag}.log"
        srv.sub_session(f"ref-{tag}")
        srv.session(naive, "subscribed", tmp / f"{tag}-naive.log")
        srv.session(cistern, "MQTT subscribed", log)
        extra = {}
        for name, env in variants.items():
            db = srv.influx.new_database(f"{name}_{kind}")
            argv, base_env = srv.cistern_cmd(f"{name}-{tag}", db, registry, tmp / f"state-{name}-{tag}")
            extra[name] = ((argv, {**base_env, **env}), db)
            srv.session(extra[name][0], "MQTT subscribed", tmp / f"{tag}-{name}.log")
        pub_s = pub.publish(messages)
        print(f"    run {r + 1}: backlog of {len(messages):,} published in {pub_s:.2f} s "
              f"({len(messages) / pub_s:,.0f} msg/s); {load()}", flush=True)
        srv.settle()
        out["sub"].append(srv.sub_drain(f"ref-{tag}", len(messages)))
        # The consumers take turns going first: none always meets InfluxDB busy compacting the last one's data.
        consumers = [("naive", naive, db_naive, tmp / f"{tag}-naive.log"), ("cistern", cistern, db_cistern, log)]
        consumers += [(name, cmd, db, tmp / f"{tag}-{name}.log") for name, (cmd, db) in extra.items()]
        first = r % len(consumers)
        for name, cmd, db, clog in consumers[first:] + consumers[:first]:
            srv.settle()
            out[name].append(srv.consumer_drain(cmd, db, expected, clog, timeout_s))
        out["alone"].append(influx_alone(srv, bodies, expected))  # (it waits for a calm InfluxDB itself)
        for name in extra:
            v = out[name][-1]
            print(f"           variant {name}: {v.rate_msgs / per:,.0f} msg/s ({v.rate_msgs / out['cistern'][-1].rate_msgs:.2f}x"
                  f" cistern, RSS peak {v.peak_rss_mb:.0f} MB); {v.cpu_note(len(messages))}{'; '.join(v.notes)}",
                  flush=True)
        d = {k: v[-1] for k, v in out.items()}
        print(f"           msg/s: mosquitto_sub {d['sub'].rate_msgs:,.0f}, naive {d['naive'].rate_msgs / per:,.0f}, "
              f"cistern {d['cistern'].rate_msgs / per:,.0f} (RSS peak {d['cistern'].peak_rss_mb:.0f} MB), "
              f"InfluxDB alone {d['alone'].rate_msgs / per:,.0f} ({d['alone'].cpu_note(len(messages))})"
              f"{'; ' + '; '.join(d['naive'].notes + d['cistern'].notes) if d['naive'].notes + d['cistern'].notes else ''}"
              f"; {load()}", flush=True)
        for k in ("naive", "cistern"):
            note = d[k].cpu_note(len(messages))
            if note:
                print(f"           {k}: {note}", flush=True)
    return out


def report_drains(title: str, res: dict[str, list[Drain]], per: int, targets: Callable[[float, float], str]) -> None:
    sub = [d.rate_msgs for d in res["sub"]]
    naive = [d.rate_msgs / per for d in res["naive"]]
    cis = [d.rate_msgs / per for d in res["cistern"]]
    vs_naive = [c / n if n else 0.0 for c, n in zip(cis, naive, strict=True)]
    vs_sub = [c / s if s else 0.0 for c, s in zip(cis, sub, strict=True)]
    unit = "msg/s" if per == 1 else f"msg/s ({per} readings each)"
    print(f"  {title}, medians of {len(sub)} runs [each run]:")
    print(f"    mosquitto_sub -C N (broker drain)   {median_of(sub):>9,.0f} {unit}  {_fmt_runs(sub)}")
    print(f"    naive paho script -> InfluxDB        {median_of(naive):>9,.0f} {unit}  {_fmt_runs(naive)}")
    print(f"    cistern run -> InfluxDB              {median_of(cis):>9,.0f} {unit}  {_fmt_runs(cis)}")
    if per > 1:
        print(f"    in readings/s: broker {median_of(sub) * per:,.0f}, naive {median_of(naive) * per:,.0f}, "
              f"cistern {median_of(cis) * per:,.0f}")
    print(f"    cistern / naive   {median_of(vs_naive):.2f}x {_fmt_runs(vs_naive, '{:.2f}')}")
    print(f"    cistern / broker  {median_of(vs_sub):.2f}x {_fmt_runs(vs_sub, '{:.2f}')}")
    print(f"    {targets(median_of(vs_naive), median_of(vs_sub))}", flush=True)
    alone = [d.rate_msgs / per for d in res["alone"]]
    if alone:
        print(f"    {ceiling_line(alone, sub, naive, per)}", flush=True)
    budgets = {k: cpu_budget(res[k], per) for k in ("naive", "cistern")}
    for k, (us, _) in budgets.items():
        if us:
            print(f"    {k + ':':<9}CPU µs per message (medians) " + ", ".join(f"{p} {v:.1f}" for p, v in us.items())
                  + f"; all {sum(us.values()):.1f}", flush=True)
    if all(us for us, _ in budgets.values()):
        (n_us, n_busy), (c_us, c_busy) = budgets["naive"], budgets["cistern"]
        print(f"    where both keep the cores busy, the rates follow CPU per message: naive/cistern "
              f"{sum(n_us.values()) / sum(c_us.values()):.2f}, cores busy {n_busy:.2f} and {c_busy:.2f}", flush=True)
    for name in [k for k in res if k not in ("sub", "naive", "cistern", "alone")]:
        v = [d.rate_msgs / per for d in res[name]]
        r = [a / b if b else 0.0 for a, b in zip(v, naive, strict=True)]
        print(f"    variant {name}: {median_of(v):,.0f} {unit} {_fmt_runs(v)}, / naive {median_of(r):.2f}x", flush=True)


def cpu_budget(drains: list[Drain], per: int) -> tuple[dict[str, float], float]:
    """Median CPU µs per message of each process (consumer, InfluxDB, Mosquitto) over the runs, counted over the
    messages stored in the timed window, and the median of the cores they kept busy together."""
    runs = [d for d in drains if d.cpu_s and d.seconds and d.rate_msgs]
    if not runs:
        return {}, 0.0
    us = {k: median_of([1e6 * d.cpu_s[k] * per / (d.rate_msgs * d.seconds) for d in runs]) for k in runs[0].cpu_s}
    return us, median_of([sum(d.cpu_s.values()) / d.seconds for d in runs])


def part_single(srv: Servers, args, registry: Path, tmp: Path) -> list[Drain]:
    msgs = single_messages(args.meters, args.single)
    print(f"\nsingle-reading messages: a backlog of {len(msgs):,} from {args.meters:,} meters", flush=True)
    res = drain_runs(srv, "single", msgs, 1, registry, tmp, args.runs, args.timeout_s, args.variants)
    report_drains("single-reading messages", res, 1, lambda n, s: (
        f"targets: >= 2x naive ({'met' if n >= 2 else 'NOT met'}), >= 0.5x broker ({'met' if s >= 0.5 else 'NOT met'}"
        f"; goal 0.9x)"))
    return res["cistern"]


def part_batch(srv: Servers, args, registry: Path, tmp: Path) -> None:
    msgs = batch_messages(args.meters, args.batch)
    print(f"\ndaily batches: a backlog of {len(msgs):,} messages of 24 readings ({24 * len(msgs):,} readings)",
          flush=True)
    res = drain_runs(srv, "batch", msgs, 24, registry, tmp, args.runs, args.timeout_s, args.variants)
    report_drains("daily 24-reading batches", res, 24, lambda n, s: (
        f"target: >= 1.5x naive in readings/s ({'met' if n >= 1.5 else 'NOT met'})"))


def part_rss(srv: Servers, args, registry: Path, tmp: Path, small: list[Drain]) -> None:
    """A backlog of args.rss single readings drained by one `cistern run`, its resident memory sampled."""
    n = args.rss
    print(f"\nmemory: a backlog of {n:,} single-reading messages drained by cistern run", flush=True)
    db = srv.influx.new_database("cistern_rss")
    cmd = srv.cistern_cmd(f"cistern-rss-{os.getpid()}", db, registry, tmp / "state-rss")
    log = tmp / "rss.log"
    srv.session(cmd, "MQTT subscribed", log)
    pub_s = srv.publisher().publish(single_chunks(args.meters, n), total=n)
    print(f"    backlog published in {pub_s:.1f} s; {load()}", flush=True)
    d = srv.consumer_drain(cmd, db, n, log, max(args.timeout_s, n / 5000))
    before = f"; the {args.single:,}-message drains peaked at {max(x.peak_rss_mb for x in small):.0f} MB" if small else ""
    trail = d.rss_mb
    along = ", ".join(f"{trail[int(q * (len(trail) - 1))]:.0f}" for q in (0.1, 0.25, 0.5, 0.75, 1.0)) if trail else "?"
    print(f"    drained at {d.rate_msgs:,.0f} msg/s in {d.seconds:.1f} s; RSS peak {d.peak_rss_mb:.0f} MB{before}; "
          f"RSS at 10/25/50/75/100 % of the drain: {along} MB{'; ' + '; '.join(d.notes) if d.notes else ''}; "
          f"{load()}", flush=True)
    note = d.cpu_note(n)
    if note:
        print(f"    cistern: {note}", flush=True)


def mqtt_parts(args, parts: set[str], registry: Path, tmp: Path) -> None:
    srv = Servers()
    try:
        small: list[Drain] = []
        if "single" in parts:
            small = part_single(srv, args, registry, tmp)
        if "batch" in parts:
            part_batch(srv, args, registry, tmp)
        if "rss" in parts and args.rss:
            part_rss(srv, args, registry, tmp, small)
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", action="append", choices=("single", "batch", "replay", "rss", "profile"),
                    help="run only these parts (repeatable); default: all but profile")
    ap.add_argument("--runs", type=int, default=3, help="rounds of each measurement (medians are quoted)")
    ap.add_argument("--meters", type=int, default=20_000, help="fleet size of the MQTT backlogs")
    ap.add_argument("--single", type=int, default=60_000, help="single-reading messages in the backlog")
    ap.add_argument("--batch", type=int, default=20_000, help="daily 24-reading batches in the backlog")
    ap.add_argument("--rss", type=int, default=1_000_000, help="backlog drained while memory is sampled (0: skip)")
    ap.add_argument("--replay-meters", type=int, default=2000)
    ap.add_argument("--replay-days", type=int, default=30)
    ap.add_argument("--timeout-s", type=float, default=180.0, help="give up waiting for InfluxDB after this")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE,…",
                    help="also drain with cistern run under these CISTERN_* variables (A/B in the same rounds)")
    args = ap.parse_args(argv)
    args.variants = {v.split(":", 1)[0]: dict(kv.split("=", 1) for kv in v.split(":", 1)[1].split(","))
                     for v in args.variant}
    parts = set(args.part or ("single", "batch", "replay", "rss"))
    print(f"cistern ingest benchmark: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"{load()} (1, 5, 15 min)", flush=True)
    with tempfile.TemporaryDirectory(prefix="cistern-bench-") as t:
        tmp = Path(t)
        registry = write_fleet(tmp / "registry", args.meters)
        if parts & {"single", "batch", "rss"}:
            mqtt_parts(args, parts, registry, tmp)
        if "replay" in parts:
            from replaybench import part_replay

            part_replay(args.replay_meters, args.replay_days, args.runs, tmp)
        if "profile" in parts:
            from profile_ingest import part_profile

            part_profile(args, registry, tmp)
    print(f"\ndone: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`cistern demo`: Mosquitto and InfluxDB 1.x (or a line-protocol file when InfluxDB is not installed), a simulated
city published through the broker, the service's pipeline with live alerts, a summary with detection scores, and an
HTML report with pictures."""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from devices.alerts import AlertEvent
from devices.time import LocalCalendar
from ingest.tools.servers import INGEST_USER, ServerUnavailable, start_influx_v1, start_mosquitto

log = logging.getLogger("cistern.demo")

# Enough for every incident kind, and for the bypass detector's building baselines to settle before the
# bypasses start; about 200,000 messages, which this machine publishes through MQTT in a minute or two.
DEFAULT_METERS = 400
DEFAULT_DAYS = 45
DEMO_TIMEZONE = "Asia/Shanghai"  # the simulated city's clock: every time the demo shows is on it, offset shown
STALL_S = 30.0  # no message for this long after the publisher finished: stop waiting for the rest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)")
    parser.add_argument("--meters", type=int, default=DEFAULT_METERS, help=f"meters in the city ({DEFAULT_METERS})")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"days of traffic ({DEFAULT_DAYS})")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the city (1)")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="simulated seconds per wall second while publishing (0 = as fast as the broker "
                             "takes them, the default)")
    parser.add_argument("--database", choices=("auto", "influxd", "file"), default="auto",
                        help="auto: InfluxDB 1.x (influxd) when installed, else a line-protocol file")


class _Console:
    """Progress on one line (redrawn on a terminal, every few seconds otherwise) with alerts printed above it."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.lock = threading.Lock()
        self._status = ""
        self._last_plain = 0.0

    def say(self, text: str = "") -> None:
        with self.lock:
            if self.tty and self._status:
                self.stream.write("\r\x1b[2K")
            self.stream.write(text + "\n")
            if self.tty and self._status:
                self.stream.write(self._status)
            self.stream.flush()

    def status(self, text: str, force: bool = False) -> None:
        with self.lock:
            if self.tty:
                self._status = text
                self.stream.write("\r\x1b[2K" + text)
            elif force or time.monotonic() - self._last_plain > 10:
                self._last_plain = time.monotonic()
                self.stream.write(text + "\n")
            self.stream.flush()

    def end_status(self) -> None:
        with self.lock:
            if self.tty and self._status:
                self.stream.write("\n")
            self._status = ""
            self.stream.flush()


def _publish_worker(capture: str, pub_ns, device_class, url: str, speed: float) -> None:
    """Runs in its own process, so publishing and ingesting use both cores instead of sharing one interpreter."""
    from simulator.publish import PublishError, publish_capture

    try:
        publish_capture(Path(capture), pub_ns, device_class, url, speed, client_prefix="cistern-demo-sim",
                        progress=False)
    except PublishError as e:
        print(f"cistern demo: publishing failed: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        sys.exit(130)


SIM_USER = "cistern-sim"  # the simulator publishes for every device, so the demo gives it one account for all
SIM_ACL = f"# cistern demo: the simulator speaks for every device (never into the alerts tree)\nuser {SIM_USER}\n" \
          f"topic deny water/alerts/#\ntopic write water/+/meter/#\ntopic write water/+/pumproom/#\n"


class _Alerts:
    """Each raised or escalated case on the console as it goes out, counted by kind."""

    def __init__(self, console: _Console, calendar: LocalCalendar):
        self.console = console
        self.calendar = calendar  # the utility's clock, the one the summaries read in
        self.raised: Counter[str] = Counter()

    def __call__(self, events: list[AlertEvent]) -> None:
        for e in events:
            if e.event not in ("raised", "escalated"):
                continue
            if e.event == "raised":
                self.raised[e.kind] += 1
            mark = "!" if e.event == "escalated" else "▲"
            when = self.calendar.local_text(e.detected_at_ns)
            self.console.say(f"  [{when}] {mark} {e.kind:<22} {e.summary}")


def _start_broker(stack: contextlib.ExitStack):
    try:
        broker = start_mosquitto(use_docker=False, accounts=(SIM_USER,), acl_extra=SIM_ACL, from_env=False)
    except (ServerUnavailable, RuntimeError, OSError) as e:
        raise SystemExit(f"cistern demo: Mosquitto is needed ({e}); `make demo` installs it "
                         f"(or: sudo apt-get install mosquitto mosquitto-clients)") from None
    stack.callback(broker.stop)
    return broker, f"Mosquitto (local binary, the project's mosquitto.conf + ACL) on 127.0.0.1:{broker.port}"


def _start_database(choice: str, out: Path, console: _Console, stack: contextlib.ExitStack):
    """(InfluxDB server or None, writer, description)."""
    from ingest.sinks.file import LineProtocolFile
    from ingest.sinks.influx import V1Writer

    if choice in ("auto", "influxd"):
        try:
            server = start_influx_v1(use_docker=False)
            stack.callback(server.stop)
            return server, V1Writer(server.url, "water"), f'InfluxDB 1.x (local influxd) on {server.url}, ' \
                                                          f'database "water"'
        except (ServerUnavailable, RuntimeError, OSError) as e:
            if choice == "influxd":
                raise
            console.say(f"  ({e}; storing line protocol in a file instead)")
    sink = LineProtocolFile(out / "influx-lines.lp")
    return None, sink, sink.describe()


def _influx_counts(url: str) -> dict[str, int]:
    """Points per measurement as InfluxDB itself counts them (one field that every point of it carries)."""
    import urllib.parse
    import urllib.request

    import orjson

    fields = {"meter_reading": "total_m3", "tank": "level_m", "pump_room": "outlet_pressure_mpa", "pump": "running",
              "device_event": "work_order", "alert": "alert_id"}
    q = "; ".join(f'SELECT count("{f}") FROM "{m}"' for m, f in fields.items())
    with urllib.request.urlopen(f"{url}/query?{urllib.parse.urlencode({'db': 'water', 'q': q})}", timeout=30) as r:
        doc = orjson.loads(r.read())
    out: dict[str, int] = {}
    for m, res in zip(fields, doc.get("results", []), strict=False):
        for s in res.get("series", []):
            out[m] = int(s["values"][0][1])
    return out


def _fmt_duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{int(s // 60)} min {s % 60:.0f} s"


def _clean_out(out: Path) -> None:
    """Remove what an earlier demo wrote into `out` (and only that)."""
    for name in ("sim", "state", "charts"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("alerts.jsonl", "influx-lines.lp", "report.html", "summary.json", "cistern.log"):
        (out / name).unlink(missing_ok=True)


def _log_to_file(out: Path) -> logging.Handler:
    """The service's own log (health lines, every alert) goes to a file; the console shows the story."""
    from ingest.app import ZonedFormatter

    handler = logging.FileHandler(out / "cistern.log")
    handler.setFormatter(ZonedFormatter(DEMO_TIMEZONE))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("influxdb_client", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def _simulate(args: argparse.Namespace, out: Path, console: _Console):
    from simulator.city import SimConfig
    from simulator.run import simulate

    cfg = SimConfig(meters=args.meters, days=args.days, seed=args.seed)
    t = time.monotonic()
    sim = simulate(cfg, out / "sim", prefix="water")
    kinds = Counter(r["kind"] for r in sim.labels if r["kind"] != "none")
    decoys = Counter(r["decoy"] for r in sim.labels if r["kind"] == "none")
    console.say(f"  city:      {sim.city.n_meters} meters, {len(sim.city.building_ids)} buildings, "
                f"{len(sim.city.cell_ids)} cells, {len(sim.city.tank_ids)} tanks; {cfg.days} days from "
                f"{cfg.start:%Y-%m-%d} → {sim.messages:,} messages ({time.monotonic() - t:.1f} s)")
    console.say("  injected:  " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
                + "  (look-alikes that must stay quiet: "
                + ", ".join(f"{k} {n}" for k, n in sorted(decoys.items())) + ")")
    return sim, kinds


class _Run:
    """The service's pipeline fed by the broker while the simulator publishes the city into it."""

    def __init__(self, out: Path, broker, writer, console: _Console):
        from ingest.app import make_dispatcher, make_pipeline, mqtt_source
        from ingest.config import Settings

        # Event time, not wall time, is the clock here: the city's weeks go by in a minute, and the wall clock would
        # make every meter look silent. live=False gives exactly that (a tick at each batch's newest reading).
        # Small batches keep each one to a few hours of city time even when the publisher runs far ahead, so the
        # clock ticks often enough to see a cell go quiet for hours.
        self.settings = Settings(registry=out / "sim" / "registry", state_dir=out / "state", timezone=DEMO_TIMEZONE,
                                 alerts_file=out / "alerts.jsonl", mqtt_client_id="cistern-demo-ingest",
                                 batch_max_messages=1000, health_interval_s=10.0)
        from devices.registry import Registry
        from devices.topics import TopicLayout

        self.registry = Registry.load(self.settings.registry)
        self.source = mqtt_source(self.settings, TopicLayout("water"), url=broker.url(INGEST_USER),
                                  max_buffered=40_000)
        self.dispatcher = make_dispatcher(self.registry, self.settings, self.settings.state_dir, resume=False)
        self.calendar = LocalCalendar(DEMO_TIMEZONE)
        self.alerts = _Alerts(console, self.calendar)
        self.pipeline = make_pipeline(self.registry, self.settings, self.source, writer=writer,
                                      dispatcher=self.dispatcher, live=False, checkpoint_interval_s=float("inf"),
                                      restore=False, on_alerts=self.alerts)
        self.writer = writer
        self.failure: list[BaseException] = []
        self.worker = threading.Thread(target=self._run, name="cistern-pipeline", daemon=True)

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.failure.append(e)

    def start(self) -> None:
        self.source.start()
        self.worker.start()

    def stop(self) -> None:
        self.pipeline.stop()
        self.worker.join(30)
        self.source.close()
        self.dispatcher.drain(timeout_s=5)
        self.dispatcher.close()
        self.writer.close()


def _publish(out: Path, sim, broker, speed: float, stack: contextlib.ExitStack):
    import numpy as np

    # One connection for all devices: the broker then hands the messages over in the capture's order. With one
    # client per device class, a class whose queue drains faster runs hours of city time ahead at these speeds,
    # and the event-time clock (the newest reading) would make the others look silent.
    device_class = np.zeros(sim.messages, dtype=np.int64)
    publisher = multiprocessing.get_context("spawn").Process(
        target=_publish_worker, name="cistern-demo-publisher",
        args=(str(out / "sim" / "capture.jsonl"), sim.traffic.pub_ns, device_class, broker.url(SIM_USER), speed))
    publisher.start()
    stack.callback(lambda: publisher.is_alive() and publisher.terminate())
    return publisher


def _watch(run: _Run, publisher, total: int, console: _Console) -> None:
    """Progress until every message arrived, the publisher failed, or nothing came for STALL_S."""
    t_pub = time.monotonic()
    last_seen, last_change = -1, time.monotonic()
    while True:
        st = run.pipeline.stats
        if st.received != last_seen:
            last_seen, last_change = st.received, time.monotonic()
        wm = run.pipeline.watermark_ns
        clock = run.calendar.local_text(wm) if wm else "-"
        console.status(f"  received {st.received:,}/{total:,} ({100 * st.received / max(total, 1):.0f} %) · "
                       f"city clock {clock} · stored {st.written:,} points · "
                       f"{sum(run.alerts.raised.values())} incidents · {time.monotonic() - t_pub:.0f} s")
        if run.failure or st.received >= total:
            return
        if not publisher.is_alive() and (publisher.exitcode != 0 or time.monotonic() - last_change > STALL_S):
            return
        time.sleep(0.5)


def _summary(args: argparse.Namespace, out: Path, elapsed: float, st, total: int, stored: dict[str, int],
             where: str, texts: dict[str, str], kinds: Counter, console: _Console) -> None:
    import orjson

    from ingest.tools.evaluate import evaluate, format_table, read_jsonl
    from ingest.tools.report import write_report

    alerts = read_jsonl(out / "alerts.jsonl") if (out / "alerts.jsonl").exists() else []
    labels = read_jsonl(out / "sim" / "labels.jsonl")
    scores = evaluate(alerts, labels)
    raised = Counter(a["kind"] for a in alerts if a.get("event") == "raised")
    console.say()
    console.say(f"Summary (done in {_fmt_duration(elapsed)})")
    console.say(f"  messages:  {st.received:,} of {total:,} received, {st.dead_lettered} dead-lettered")
    console.say(f"  stored {where}: " + ", ".join(f"{m} {n:,}" for m, n in stored.items()))
    console.say("  incidents raised: " + (", ".join(f"{k} {n}" for k, n in sorted(raised.items())) or "none"))
    console.say("  detection against the simulator's labels:")
    for line in format_table(scores).splitlines():
        console.say("    " + line)
    summary = {"seconds": round(elapsed, 1), "meters": args.meters, "days": args.days, "seed": args.seed,
               "broker": texts["broker"], "database": texts["database"], "messages_published": total,
               "messages_received": st.received, "readings_decoded": st.readings, "readings_written": st.written,
               "dead_lettered": st.dead_lettered, "stored": stored, "incidents_raised": dict(sorted(raised.items())),
               "labels": dict(sorted(kinds.items())), "scores": scores}
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    report = write_report(out, alerts=alerts, labels=labels, capture=out / "sim" / "capture.jsonl",
                          registry_dir=out / "sim" / "registry", scores=scores,
                          facts={"Broker": texts["broker"], "Database": texts["database"],
                                 "City": f"{args.meters} meters, {args.days} days, seed {args.seed}",
                                 "Messages": f"{st.received:,} received of {total:,} published",
                                 "Points stored": f"{st.written:,} (readings and device events)",
                                 "Demo took": _fmt_duration(elapsed)})
    console.say(f"Report: {report.resolve()}")


def _check(args: argparse.Namespace) -> str | None:
    from simulator.cli import MIN_DAYS, MIN_METERS

    if args.meters < MIN_METERS or args.days < MIN_DAYS:
        return (f"--meters at least {MIN_METERS} and --days at least {MIN_DAYS} (every incident kind needs "
                f"them)")
    if args.speed < 0:
        return "--speed must be 0 (as fast as possible) or positive"
    return None


def main(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"cistern demo: {problem}", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    _clean_out(out)
    console = _Console()
    handler = _log_to_file(out)

    def _terminate(signum, frame):
        raise KeyboardInterrupt  # SIGTERM like Ctrl-C: stop the servers the demo started on the way out

    signal.signal(signal.SIGTERM, _terminate)
    console.say(f"Cistern demo → {out.resolve()}")
    try:
        with contextlib.ExitStack() as stack:
            broker, broker_text = _start_broker(stack)
            console.say(f"  broker:    {broker_text}")
            db_server, writer, db_text = _start_database(args.database, out, console, stack)
            console.say(f"  database:  {db_text}")
            sim, kinds = _simulate(args, out, console)
            run = _Run(out, broker, writer, console)
            run.start()
            pace = "as fast as the broker takes them" if args.speed == 0 else f"{args.speed:g}× real time"
            console.say(f"Publishing the city's traffic through the broker ({pace}); the service stores and "
                        "watches it. Alerts as they are raised:")
            publisher = _publish(out, sim, broker, args.speed, stack)
            try:
                _watch(run, publisher, sim.messages, console)
            except KeyboardInterrupt:
                console.end_status()
                console.say("interrupted: stopping")
                run.stop()
                return 1
            run.stop()
            publisher.join(10)
            console.end_status()
            if run.failure:
                raise run.failure[0]
            if publisher.exitcode not in (0, None):
                console.say(f"the publisher failed (exit {publisher.exitcode}); the summary covers what arrived")
            stored = _influx_counts(db_server.url) if db_server is not None else dict(writer.counts)
        st = run.pipeline.stats
        where = "in InfluxDB (counted by query)" if db_server is not None else "in the line-protocol file"
        _summary(args, out, time.monotonic() - t_start, st, sim.messages, stored, where,
                 {"broker": broker_text, "database": db_text}, kinds, console)
        return 0 if st.received >= sim.messages else 1
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()

"""The `cistern` command: run, replay, reingest, simulate, evaluate, demo, settings."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
from pathlib import Path

from devices.registry import Registry, RegistryError
from devices.topics import TopicLayout
from ingest.config import ConfigError, Settings, add_setting_flags, env_name, flag_name, load_settings
from ingest.influx import InfluxAuthError, InfluxConfigError

log = logging.getLogger("cistern")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # influxdb-client and urllib3 are chatty at INFO and may echo request details.
    for noisy in ("influxdb_client", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_detectors(registry: Registry, settings: Settings):
    if not settings.detect:
        return None
    from detectors import DetectorSet

    return DetectorSet(registry, params=settings.detectors, timezone=settings.timezone)


def make_writer(settings: Settings):
    from ingest.influx import open_writer

    return open_writer(settings.influx_url, api=settings.influx_api, bucket=settings.influx_bucket,
                       org=settings.influx_org, token=settings.influx_token, username=settings.influx_username,
                       password=settings.influx_password, timeout_s=settings.influx_timeout_s)


def make_dispatcher(registry: Registry, settings: Settings, state_dir: Path, *, resume: bool = True,
                    mqtt_publish=None):
    from ingest.dispatch import Dispatcher

    return Dispatcher(registry, state_dir, settings.dispatch, alerts_file=settings.alerts_file,
                      webhook_url=settings.alert_webhook_url, webhook_secret=settings.alert_webhook_secret,
                      mqtt_publish=mqtt_publish, topic_prefix=settings.mqtt_topic_prefix,
                      timezone=settings.timezone, resume=resume)


def parse_time(text: str) -> int:
    """RFC 3339 / ISO date-time (UTC when no offset) or epoch seconds → ns."""
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--until: {text!r} is not an ISO timestamp or epoch seconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000


def cmd_run(args: argparse.Namespace) -> int:
    from ingest.pipeline import Pipeline
    from ingest.sources import MqttSource

    s = load_settings(args)
    _setup_logging(s.log_level)
    registry = Registry.load(s.registry)
    log.info("registry: %s", registry.summary())
    layout = TopicLayout(s.mqtt_topic_prefix)
    writer = make_writer(s)
    source = MqttSource(s.mqtt, s.mqtt_client_id, layout.subscriptions(), shared_group=s.mqtt_shared_group,
                        ca_file=s.mqtt_ca_file, keepalive_s=s.mqtt_keepalive_s,
                        max_buffered=max(4 * s.batch_max_messages, 20_000))
    alerts_mqtt = None
    if s.alert_mqtt_publish:
        from ingest.dispatch_mqtt import DispatchMqtt

        alerts_mqtt = DispatchMqtt(s.mqtt, s.mqtt_client_id, s.mqtt_topic_prefix, ca_file=s.mqtt_ca_file,
                                   keepalive_s=s.mqtt_keepalive_s)
    dispatcher = make_dispatcher(registry, s, s.state_dir,
                                 mqtt_publish=alerts_mqtt.publish if alerts_mqtt is not None else None)
    if alerts_mqtt is not None:
        alerts_mqtt.on_ack = dispatcher.handle_ack_message
    pipeline = Pipeline(registry, layout, source, state_dir=s.state_dir, writer=writer,
                        detectors=make_detectors(registry, s), dispatcher=dispatcher, live=True,
                        batch_max_messages=s.batch_max_messages, batch_max_wait_s=s.batch_max_wait_s,
                        health_interval_s=s.health_interval_s, tick_interval_s=s.tick_interval_s,
                        spool_max_bytes=s.spool_max_bytes, flood_max_per_device=s.flood_max_per_device)

    def _stop(signum, frame):
        log.info("received %s: finishing the current batch, then exiting", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    source.start()
    if alerts_mqtt is not None:
        alerts_mqtt.start(wait_s=5)
    log.info("cistern run: %s → %s (%s)", s.redacted()["mqtt_url"], s.influx_url, getattr(writer, "api", s.influx_api))
    try:
        pipeline.run()
    finally:
        source.close()
        # Alerts not delivered in a short while stay in the outbox and go out on the next start.
        dispatcher.drain(timeout_s=min(5.0, s.dispatch.drain_timeout_s))
        dispatcher.close()
        if alerts_mqtt is not None:
            alerts_mqtt.close()
        writer.close()
    log.info("stopped cleanly")
    return EXIT_OK


def _replay_progress(source, total_bytes: int):
    """A one-line progress display on a terminal: messages replayed and how far through the file."""
    state = {"n": 0, "last": 0.0}

    def on_batch(batch) -> None:
        import time

        state["n"] += 1
        now = time.monotonic()
        if now - state["last"] < 0.5:
            return
        state["last"] = now
        pct = 100.0 * source.bytes_read / total_bytes if total_bytes else 100.0
        print(f"\rreplaying: {pct:5.1f} % of the capture, line {source.line_no:,}", end="", file=sys.stderr,
              flush=True)

    return on_batch


def cmd_replay(args: argparse.Namespace) -> int:
    from ingest.pipeline import Pipeline
    from ingest.sources import CaptureSource

    s = load_settings(args)
    _setup_logging(s.log_level)
    capture = Path(args.capture)
    if not capture.is_file():
        raise UsageError(f"capture file {capture} not found")
    until = parse_time(args.until) if args.until else None
    registry = Registry.load(s.registry)
    layout = TopicLayout(s.mqtt_topic_prefix)
    # Replay writes to the database only when one is named explicitly: a replay must not surprise production.
    writer = make_writer(s) if "influx_url" in s.model_fields_set else None
    source = CaptureSource(capture)
    state_dir = s.state_dir
    progress = _replay_progress(source, capture.stat().st_size) if sys.stderr.isatty() else None
    # A replay is a fresh pass over history: its incidents live apart from the service's, under replay/.
    dispatcher = make_dispatcher(registry, s, state_dir / "replay", resume=False)
    pipeline = Pipeline(registry, layout, source, state_dir=state_dir, writer=writer,
                        detectors=make_detectors(registry, s), dispatcher=dispatcher, live=False,
                        batch_max_messages=s.batch_max_messages, health_interval_s=s.health_interval_s,
                        until_ns=until, checkpoint_interval_s=float("inf"), restore=False, on_batch=progress)
    left = 0
    try:
        pipeline.run()
        left = dispatcher.drain()
    finally:
        source.close()
        dispatcher.close()
        if writer is not None:
            writer.close()
    st = pipeline.stats
    if progress is not None:
        print(file=sys.stderr)
    print(f"replayed {st.received} messages: {st.readings} readings, {st.written} written, "
          f"{st.dead_lettered} dead-lettered, {st.alerts} alert events"
          + (f", {left} alert deliveries left undelivered (kept in the outbox)" if left else ""), file=sys.stderr)
    return EXIT_OK


def cmd_reingest(args: argparse.Namespace) -> int:
    from ingest.reingest import reingest

    s = load_settings(args)
    _setup_logging(s.log_level)
    registry = Registry.load(s.registry)
    writer = make_writer(s)
    try:
        done, left = reingest(s.state_dir, registry, TopicLayout(s.mqtt_topic_prefix), writer)
    finally:
        writer.close()
    print(f"re-ingested {done} quarantined messages; {left} still unknown to the registry", file=sys.stderr)
    return EXIT_OK


def cmd_settings(args: argparse.Namespace) -> int:
    """Print the settings reference (or the effective settings with --effective)."""
    if args.effective:
        import orjson

        print(orjson.dumps(load_settings(args).redacted(), option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    print("| environment variable | flag | default | meaning |\n|---|---|---|---|")
    from ingest.config import all_settings

    for name, f in all_settings().items():
        default = "" if f.default is None else f.default
        print(f"| `{env_name(name)}` | `{flag_name(name)}` | `{default}` | {f.description} |")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cistern", description="Water-utility telemetry ingester: MQTT → InfluxDB, "
                                                             "theft and tank-hygiene detectors, dispatch alerts.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="the service: subscribe, validate, store, detect, alert")
    add_setting_flags(run)
    run.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="the same pipeline fed from a capture file")
    rp.add_argument("capture", help="capture file (JSON lines of {topic, payload})")
    rp.add_argument("--until", default=None, help="stop at this event time (RFC 3339 or epoch seconds)")
    add_setting_flags(rp)
    rp.set_defaults(func=cmd_replay)

    ri = sub.add_parser("reingest", help="store quarantined messages whose devices the registry now knows")
    add_setting_flags(ri)
    ri.set_defaults(func=cmd_reingest)

    from ingest import evaluate
    from simulator import cli as sim_cli

    sp = sub.add_parser("simulate", help="generate a city's traffic with labelled incidents and decoys")
    sim_cli.add_arguments(sp)
    sp.set_defaults(func=sim_cli.main)

    ev = sub.add_parser("evaluate", help="precision, recall, F1 and delay of alerts against labels")
    evaluate.add_arguments(ev)
    ev.set_defaults(func=evaluate.main)

    from ingest import ack_cli

    ak = sub.add_parser("ack", help="record dispatch's acknowledgement of an alert (stops reminders)")
    ack_cli.add_arguments(ak)
    ak.set_defaults(func=ack_cli.main)

    from ingest import demo, report

    dm = sub.add_parser("demo", help="one command: broker, database, simulator, service, alerts, report")
    demo.add_arguments(dm)
    dm.set_defaults(func=demo.main)

    rp2 = sub.add_parser("report", help="static HTML report with pictures from alerts (and capture, labels)")
    report.add_arguments(rp2)
    rp2.set_defaults(func=report.main)

    st = sub.add_parser("settings", help="print the settings reference (or --effective values)")
    st.add_argument("--effective", action="store_true", help="print the effective settings, secrets masked")
    add_setting_flags(st)
    st.set_defaults(func=cmd_settings)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RegistryError, UsageError) as e:
        print(f"cistern: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionRefusedError as e:
        print(f"cistern: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (InfluxAuthError, InfluxConfigError) as e:
        # The database refused our credentials or names no such bucket/database: configuration, not a crash.
        print(f"cistern: InfluxDB: {e} (check CISTERN_INFLUX_URL, CISTERN_INFLUX_API, CISTERN_INFLUX_BUCKET and "
              "the credentials)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL
    except Exception as e:  # noqa: BLE001 - one line for the operator; the traceback only at DEBUG
        log.debug("unhandled error", exc_info=True)
        print(f"cistern: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())

"""The `cistern` command: run, replay, reingest, simulate, evaluate, ack, demo, report, settings.

The service's commands (run, replay, reingest, settings) are wired by ingest.app; the tools (simulate, evaluate, ack,
demo, report) are imported only when their command is the one given, so `cistern run` never loads them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import sys
from pathlib import Path

from devices.registry import RegistryError
from ingest import cistern_version
from ingest.config import (
    ConfigError,
    Settings,
    add_setting_flags,
    env_name,
    flag_name,
    load_settings,
    unknown_environment,
)
from ingest.dispatch.schema import SchemaError
from ingest.pipeline.checkpoint import CheckpointError
from ingest.sinks.influx import InfluxAuthError, InfluxConfigError

log = logging.getLogger("cistern")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# command → (module with add_arguments(parser) and main(args), one-line help); loaded on demand
TOOLS = {
    "simulate": ("ingest.tools.simulate", "generate a city's traffic with labelled incidents and decoys"),
    "evaluate": ("ingest.tools.evaluate", "precision, recall, F1 and delay of alerts against labels"),
    "accounts": ("ingest.tools.accounts", "broker accounts for every meter and pump room in the registry, in bulk"),
    "ack": ("ingest.tools.ack", "record dispatch's acknowledgement of an alert (its deadline to resolve counts)"),
    "cases": ("ingest.tools.cases", "the open cases with their deadlines and lights"),
    "demo": ("ingest.tools.demo", "one command: broker, database, simulator, service, alerts, report"),
    "report": ("ingest.tools.report", "static HTML report with pictures from alerts (and capture, labels)"),
}


class UsageError(Exception):
    pass


def start(args: argparse.Namespace) -> Settings:
    """The settings of a command that does work, with logging set up and a warning for each CISTERN_* environment
    variable that is no setting (it changes nothing)."""
    from ingest.app import setup_logging

    s = load_settings(args)
    setup_logging(s.log_level, s.timezone)
    for line in unknown_environment():
        log.warning("%s", line)
    return s


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
    from ingest.app import Service

    s = start(args)
    Service.build(s).run()
    return EXIT_OK


def _replay_progress(total_bytes: int):
    """A one-line progress display on a terminal: how far through the capture file."""
    import time

    state = {"last": 0.0, "source": None}

    def on_batch(batch) -> None:
        now = time.monotonic()
        if now - state["last"] < 0.5 or state["source"] is None:
            return
        state["last"] = now
        src = state["source"]
        pct = 100.0 * src.bytes_read / total_bytes if total_bytes else 100.0
        print(f"\rreplaying: {pct:5.1f} % of the capture, line {src.line_no:,}", end="", file=sys.stderr, flush=True)

    return on_batch, state


def cmd_replay(args: argparse.Namespace) -> int:
    from ingest.app import replay

    s = start(args)
    capture = Path(args.capture)
    if not capture.is_file():
        raise UsageError(f"capture file {capture} not found")
    until = parse_time(args.until) if args.until else None
    progress = None
    if sys.stderr.isatty():
        progress, _ = _replay_progress(capture.stat().st_size)
    result = replay(s, capture, until_ns=until, on_batch=progress, resume=args.resume)
    st = result.stats
    if progress is not None:
        print(file=sys.stderr)
    print(f"replayed {st.received} messages: {st.readings} readings, {st.written} written, "
          f"{st.dead_lettered} dead-lettered, {st.alerts} alert events"
          + (f", {result.undelivered} alert deliveries left undelivered (kept in the outbox)"
             if result.undelivered else "")
          + (f"; detector and dispatch state saved in {s.state_dir}" if args.resume else ""), file=sys.stderr)
    return EXIT_OK


def cmd_reingest(args: argparse.Namespace) -> int:
    from devices.topics import TopicLayout
    from ingest.app import load_registry, make_writer
    from ingest.tools.reingest import reingest

    s = start(args)
    registry = load_registry(s)
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
        default = f.get_default(call_default_factory=True)
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        default = "" if default is None else default
        print(f"| `{env_name(name)}` | `{flag_name(name)}` | `{default}` | {f.description} |")
    return EXIT_OK


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; a tool's own arguments are added only when `command` names it (or for --help)."""
    p = argparse.ArgumentParser(prog="cistern", description="Water-utility telemetry ingester: MQTT → InfluxDB, "
                                                             "theft and tank-hygiene detectors, dispatch alerts.")
    p.add_argument("--version", action="version", version=f"cistern {cistern_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="the service: subscribe, validate, store, detect, alert")
    add_setting_flags(run)
    run.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="the same pipeline fed from a capture file")
    rp.add_argument("capture", help="capture file (JSON lines of {topic, payload})")
    rp.add_argument("--until", default=None, help="stop at this event time (RFC 3339 or epoch seconds)")
    rp.add_argument("--resume", action="store_true",
                    help="continue from the service's saved detector and dispatch state in CISTERN_STATE_DIR and "
                         "save it at the end (a backlog processed as a continuation of the service); without it a "
                         "replay starts fresh and keeps its cases apart, under STATE_DIR/replay/")
    add_setting_flags(rp)
    rp.set_defaults(func=cmd_replay)

    ri = sub.add_parser("reingest", help="store quarantined messages whose devices the registry now knows")
    add_setting_flags(ri)
    ri.set_defaults(func=cmd_reingest)

    for name, (module, text) in TOOLS.items():
        tp = sub.add_parser(name, help=text)
        if command == name:
            tool = importlib.import_module(module)
            tool.add_arguments(tp)
            tp.set_defaults(func=tool.main)

    st = sub.add_parser("settings", help="print the settings reference (or --effective values)")
    st.add_argument("--effective", action="store_true", help="print the effective settings, secrets masked")
    add_setting_flags(st)
    st.set_defaults(func=cmd_settings)
    return p


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RegistryError, UsageError, SchemaError, CheckpointError) as e:
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

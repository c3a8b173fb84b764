"""`cistern simulate`: write a city's registry, capture and labels, and optionally publish the traffic."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import numpy as np

from simulator.city import DEFAULT_START, SimConfig

MIN_METERS = 150
MIN_DAYS = 14


def _start(v: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not an ISO date or date-time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder: registry/, capture.jsonl, labels.jsonl")
    parser.add_argument("--meters", type=int, default=2000, help=f"meters in the city, masters included "
                                                                  f"(default 2000, at least {MIN_METERS})")
    parser.add_argument("--days", type=int, default=60, help=f"days of traffic (default 60, at least {MIN_DAYS})")
    parser.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives identical files")
    parser.add_argument("--start", type=_start, default=DEFAULT_START,
                        help="first instant, ISO date/time, UTC unless an offset is given (default "
                             "2026-09-01T00:00:00Z); floored to the whole hour")
    parser.add_argument("--hourly-share", type=float, default=0.25,
                        help="share of household meters sending every hour; the rest upload once a day (0.25)")
    parser.add_argument("--prepaid-share", type=float, default=0.3, help="share of prepaid household meters (0.3)")
    parser.add_argument("--incident-scale", type=float, default=1.0,
                        help="multiply every incident and decoy rate (each kind still appears at least once)")
    parser.add_argument("--topic-prefix", default=None,
                        help="first topic level (env CISTERN_MQTT_TOPIC_PREFIX, default water)")
    parser.add_argument("--publish", action="store_true", help="also send the traffic to the MQTT broker (QoS 1)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="with --publish: simulated seconds per wall second (3600 = an hour a second; "
                             "0 = as fast as possible; default 1 = real time)")
    parser.add_argument("--mqtt-url", default=None,
                        help="broker, mqtt://[user:pass@]host:port (env CISTERN_MQTT_URL, default "
                             "mqtt://127.0.0.1:1883)")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """ValueError with the offending option when the arguments make no city."""
    if args.meters < MIN_METERS:
        raise ValueError(f"--meters {args.meters}: at least {MIN_METERS} are needed for every incident kind")
    if args.days < MIN_DAYS:
        raise ValueError(f"--days {args.days}: at least {MIN_DAYS} are needed for every incident kind")
    if not 0.0 <= args.hourly_share <= 1.0:
        raise ValueError(f"--hourly-share {args.hourly_share}: must lie in 0..1")
    if not 0.0 < args.prepaid_share <= 1.0:
        raise ValueError(f"--prepaid-share {args.prepaid_share}: must lie in (0, 1]")
    if not 0.0 < args.incident_scale <= 10.0:
        raise ValueError(f"--incident-scale {args.incident_scale}: must lie in (0, 10]")
    if args.speed < 0:
        raise ValueError(f"--speed {args.speed}: must be 0 (as fast as possible) or positive")
    start = args.start.replace(minute=0, second=0, microsecond=0)
    if not 2000 <= start.year <= 2090:
        raise ValueError(f"--start {args.start.isoformat()}: out of range")
    cfg = SimConfig(meters=args.meters, days=args.days, seed=args.seed, start=start,
                    hourly_share=args.hourly_share, prepaid_share=args.prepaid_share)
    s = args.incident_scale
    for name in ("blocking_rate", "reverse_rate", "bypass_rate", "vacancy_rate", "rollover_rate",
                 "replacement_rate", "battery_rate", "outage_cells_per_100_cell_days", "overdue_share",
                 "disinfected_share"):
        setattr(cfg, name, getattr(cfg, name) * s)
    return cfg


def main(args: argparse.Namespace) -> int:
    from simulator.publish import PublishError, parse_url, publish_capture
    from simulator.run import simulate
    from simulator.traffic import MASTER, ROOM, ROOM_EVENT

    try:
        cfg = config_from_args(args)
        prefix = (args.topic_prefix or os.environ.get("CISTERN_MQTT_TOPIC_PREFIX") or "water").strip("/")
        if not prefix or any(c in prefix for c in "+#"):
            raise ValueError(f"topic prefix {prefix!r} (--topic-prefix / CISTERN_MQTT_TOPIC_PREFIX) is not usable")
        url = args.mqtt_url or os.environ.get("CISTERN_MQTT_URL") or "mqtt://127.0.0.1:1883"
        if args.publish:
            parse_url(url)
    except ValueError as e:
        print(f"cistern simulate: {e}", file=sys.stderr)
        return 2
    try:
        result = simulate(cfg, args.out, prefix=prefix)
    except (ValueError, OSError) as e:
        print(f"cistern simulate: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        counts = ", ".join(f"{k} {n}" for k, n in result.label_counts().items())
        print(f"cistern simulate: {result.city.n_meters} meters, {len(result.city.building_ids)} buildings, "
              f"{len(result.city.cell_ids)} cells, {len(result.city.tank_ids)} tanks, {cfg.days} days → "
              f"{result.messages} messages in {args.out}/capture.jsonl "
              f"({sum(result.seconds.values()):.1f} s)\nlabels: {counts}", file=sys.stderr)
    if args.publish:
        tr = result.traffic
        device_class = np.where(tr.cls == MASTER, 1, np.where((tr.cls == ROOM) | (tr.cls == ROOM_EVENT), 2, 0))
        try:
            publish_capture(args.out / "capture.jsonl", tr.pub_ns, device_class, url, args.speed,
                            client_prefix=f"cistern-sim-{cfg.seed}", progress=not args.quiet)
        except PublishError as e:
            print(f"\ncistern simulate: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ncistern simulate: publishing interrupted", file=sys.stderr)
            return 1
    return 0

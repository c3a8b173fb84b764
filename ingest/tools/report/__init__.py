"""`cistern report`: a static HTML report with SVG charts: alerts on a timeline, one example of each incident kind
drawn from the captured data, and detection scores against the simulator's labels. No plotting library needed.
With `--period 2026-H1` (or a month, `2026-05`) it is the supervisors' report instead (supervision.py): tanks
disinfected on time, cases answered on time, escalations and the monthly ranking of units, from the dispatch state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from ingest.tools.report.data import Data, _meters_needed, pick_examples
from ingest.tools.report.page import Report

__all__ = ["add_arguments", "main", "write_report"]


def write_report(out: Path, *, alerts: list[dict], labels: list[dict] | None = None, capture: Path | None = None,
                 registry_dir: Path | None = None, scores: dict | None = None, facts: dict[str, str] | None = None,
                 timezone: str = "Asia/Shanghai") -> Path:
    """Write out/report.html and out/charts/*.svg; returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = None
    if capture is not None and registry_dir is not None:
        from devices.registry import Registry

        data = Data(registry_dir, capture, _meters_needed(pick_examples(alerts, labels), Registry.load(registry_dir)))
    if scores is None and labels is not None:
        from ingest.tools.evaluate import evaluate

        scores = evaluate(alerts, labels)
    facts = dict(facts or {})
    facts.setdefault("Alert events", f"{len(alerts):,}")
    return Report(out, alerts, labels, data, scores, facts, ZoneInfo(timezone)).write()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alerts", type=Path, default=None, help="alert events, JSON lines (CISTERN_ALERTS_FILE): "
                                                                  "the detection report")
    parser.add_argument("--period", default=None, help="the supervision report instead, for a half-year (2026-H1) "
                                                       "or a month (2026-05), from the dispatch state")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="with --period: the state folder holding dispatch.sqlite (default CISTERN_STATE_DIR)")
    parser.add_argument("--capture", type=Path, default=None, help="capture file the examples are drawn from")
    parser.add_argument("--registry", type=Path, default=None, help="registry folder (needed with --capture; with "
                                                                    "--period it counts the tanks, default "
                                                                    "CISTERN_REGISTRY)")
    parser.add_argument("--labels", type=Path, default=None, help="simulator labels: adds detection scores")
    parser.add_argument("--timezone", default="Asia/Shanghai", help="the utility's time zone for the axes")
    parser.add_argument("--out", required=True, type=Path, help="output folder: report.html and charts/")


def main(args: argparse.Namespace) -> int:
    from ingest.tools.evaluate import read_jsonl

    if args.period is not None:
        from ingest.tools.report.supervision_cli import main as supervision_main

        return supervision_main(args)
    if args.alerts is None:
        print("cistern report: give --alerts FILE (the detection report) or --period PERIOD (the supervision report)",
              file=sys.stderr)
        return 2
    for name in ("alerts", "capture", "labels"):
        p = getattr(args, name)
        if p is not None and not p.is_file():
            print(f"cistern report: --{name} {p}: file not found", file=sys.stderr)
            return 2
    if (args.capture is None) != (args.registry is None):
        print("cistern report: --capture and --registry go together", file=sys.stderr)
        return 2
    if args.registry is not None and not args.registry.is_dir():
        print(f"cistern report: --registry {args.registry}: folder not found", file=sys.stderr)
        return 2
    try:
        ZoneInfo(args.timezone)
    except Exception:  # noqa: BLE001 - any failure means the name is unusable
        print(f"cistern report: --timezone {args.timezone!r} is not an IANA time zone", file=sys.stderr)
        return 2
    try:
        alerts = read_jsonl(args.alerts)
        labels = read_jsonl(args.labels) if args.labels else None
    except (ValueError, OSError) as e:
        print(f"cistern report: {e}", file=sys.stderr)
        return 1
    path = write_report(args.out, alerts=alerts, labels=labels, capture=args.capture, registry_dir=args.registry,
                        timezone=args.timezone,
                        facts={"Alerts file": str(args.alerts)} | ({"Capture": str(args.capture)} if args.capture
                                                                   else {}))
    print(path.resolve())
    return 0

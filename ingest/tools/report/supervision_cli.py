"""`cistern report --period …`: reads the dispatch state (and the registry for the tanks) and writes the supervision
report's page and CSV files."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from devices.registry import Registry, RegistryError
from ingest.dispatch.store import DB_NAME, Store
from ingest.tools.report import supervision, supervision_page


def main(args: argparse.Namespace) -> int:
    try:
        zone = ZoneInfo(args.timezone)
    except Exception:  # noqa: BLE001 - any failure means the name is unusable
        print(f"cistern report: --timezone {args.timezone!r} is not an IANA time zone", file=sys.stderr)
        return 2
    try:
        period = supervision.parse_period(args.period, zone)
    except ValueError as e:
        print(f"cistern report: {e}", file=sys.stderr)
        return 2
    state = args.state_dir or Path(os.environ.get("CISTERN_STATE_DIR") or ".cistern")
    if not (state / DB_NAME).is_file():
        print(f"cistern report: no dispatch state in {state} (--state-dir or CISTERN_STATE_DIR)", file=sys.stderr)
        return 2
    registry = None
    folder = args.registry or (Path(os.environ["CISTERN_REGISTRY"]) if os.environ.get("CISTERN_REGISTRY") else None)
    if folder is not None:
        try:
            registry = Registry.load(folder)
        except RegistryError as e:
            print(f"cistern report: {e}", file=sys.stderr)
            return 2
    store = Store(state)
    try:
        incidents = store.incidents()
        # judged as of the newest event time the dispatcher saw (a replayed city), or now for a live service
        as_of = store.clock() or time.time_ns()
    finally:
        store.close()
    sup = supervision.compute(incidents, period, as_of, registry)
    facts = {"Dispatch state": str(state / DB_NAME)}
    if folder is not None:
        facts["Registry"] = str(folder)
    page = supervision_page.write(sup, args.out, facts)
    print(page.resolve())
    return 0

"""`cistern cases`: the open cases with their deadlines and lights, as the dispatcher's state folder holds them
(also while the service runs); filters as in the dispatch API, `--json` for scripts."""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from ingest.config import add_setting_flags, load_settings
from ingest.dispatch.cases import LIGHTS, STATES, select
from ingest.dispatch.store import DB_NAME, Store

MARK = {"green": "green ", "yellow": "YELLOW", "red": "RED   ", None: "-     "}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", help="only this alert kind")
    parser.add_argument("--district", help="only this district")
    parser.add_argument("--unit", help="only cases with this unit now")
    parser.add_argument("--light", choices=LIGHTS, help="only cases with this light")
    parser.add_argument("--state", choices=STATES, default="open", help="open (default), closed or all")
    parser.add_argument("--json", action="store_true", help="one JSON object per case, one a line")
    add_setting_flags(parser)


def main(args: argparse.Namespace) -> int:
    s = load_settings(args)
    if not (s.state_dir / DB_NAME).is_file():
        print(f"cistern cases: no dispatch state in {s.state_dir} (CISTERN_STATE_DIR / --state-dir): no case has "
              "been raised there", file=sys.stderr)
        return 2
    store = Store(s.state_dir)
    try:
        # Lights as of now, or as of the newest event time the dispatcher saw when that is later (a replayed city).
        now = max(time.time_ns(), store.clock() or 0)
        cases = select(store, s.dispatch, now, kind=args.kind, district=args.district, unit=args.unit,
                       light=args.light, state=args.state)
    finally:
        store.close()
    if args.json:
        for c in cases:
            sys.stdout.write(orjson.dumps(c).decode() + "\n")
        return 0
    lights = {k: sum(1 for c in cases if c["light"] == k) for k in LIGHTS}
    print(f"{len(cases)} {args.state} case(s) as of {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now / 1e9))}: "
          f"{lights['red']} red, {lights['yellow']} yellow, {lights['green']} green")
    for c in cases:
        ack = f"acknowledged by {c['acknowledged']['by']}" if c["acknowledged"] else "not acknowledged"
        if c["state"] == "closed":
            ack = f"closed {c['closed_at']} ({c['result'] or 'condition ended'})"
        print(f"{MARK[c['light']]}  {c['deadline'] or '-':20}  {c['alert_id']}  {c['kind']}  "
              f"{c['subject']['type']} {c['subject']['id']}  {c['district']}  level {c['level']}: {c['unit']}  "
              f"reminders {c['reminders']}  {ack}")
    return 0

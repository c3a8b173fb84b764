"""`cistern ack ALERT_ID [--by WHO] [--note TEXT]`: record dispatch's acknowledgement in the state folder (the case
runs on to its deadline to resolve, also while the service runs); `cistern ack --list` shows the open incidents."""

from __future__ import annotations

import argparse
import sys
import time

from devices.alerts import iso_utc
from ingest.config import add_setting_flags, load_settings
from ingest.dispatch.store import DB_NAME, Store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("alert_id", nargs="?", help="the alert_id of the incident, as in the alert event")
    parser.add_argument("--by", default="dispatch", help="who acknowledges (a person or a dispatch desk)")
    parser.add_argument("--note", default="", help="free text kept with the acknowledgement, e.g. a case number")
    parser.add_argument("--list", action="store_true", help="list open incidents and their acknowledgements")
    add_setting_flags(parser)


def main(args: argparse.Namespace) -> int:
    s = load_settings(args)
    if args.list and not (s.state_dir / DB_NAME).is_file():
        # nothing raised here yet: an empty list (scripts read stdout), and a word for the person on stderr
        print(f"cistern ack: no open cases in {s.state_dir} (no alert has been raised there yet)", file=sys.stderr)
        return 0
    if not (s.state_dir / DB_NAME).is_file():
        print(f"cistern ack: no dispatch state in {s.state_dir} (CISTERN_STATE_DIR / --state-dir): "
              "no alert has been raised there", file=sys.stderr)
        return 2
    store = Store(s.state_dir)
    try:
        if args.list:
            for inc in store.incidents(open_only=True):
                ack = f"acknowledged by {inc.ack_by} at {iso_utc(inc.ack_ns)}" if inc.ack_ns else "not acknowledged"
                print(f"{inc.alert_id}\t{inc.kind}\t{inc.subject_type} {inc.subject_id}\traised "
                      f"{iso_utc(inc.raised_ns)}\treminders {inc.reminders}"
                      f"{' escalated' if inc.escalated else ''}\t{ack}")
            return 0
        if not args.alert_id:
            print("cistern ack: give an ALERT_ID (or --list)", file=sys.stderr)
            return 2
        before = store.incident(args.alert_id)
        if before is None:
            print(f"cistern ack: no incident {args.alert_id!r} in {s.state_dir}; nothing recorded "
                  "(`cistern ack --list` shows the open ones)", file=sys.stderr)
            return 1
        store.record_ack(args.alert_id, args.by, args.note, time.time_ns(), "cli")
        state = "open" if before.open else "already cleared"
        if before.ack_ns is not None:
            print(f"{before.alert_id}: already acknowledged by {before.ack_by} at {iso_utc(before.ack_ns)}; "
                  f"this acknowledgement by {args.by} is recorded too")
        else:
            print(f"{before.alert_id} ({before.kind}, {before.subject_type} {before.subject_id}, {state}) "
                  f"acknowledged by {args.by}: reminders now count against its deadline to resolve")
        return 0
    finally:
        store.close()

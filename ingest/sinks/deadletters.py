"""Dead letters and quarantine: every refused message kept on disk with its reason, never dropped silently."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from devices.messages import INVALID, UNKNOWN_DEVICE, Reject

DEAD_LETTERS = "deadletters.jsonl"
QUARANTINE = "quarantine.jsonl"


def payload_text(payload: bytes) -> dict:
    """The raw payload as text when it is UTF-8, else base64 — so the record itself is always valid JSON."""
    try:
        return {"payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload_b64": base64.b64encode(payload).decode("ascii")}


def record_payload(rec: dict) -> bytes:
    if "payload_b64" in rec:
        return base64.b64decode(rec["payload_b64"])
    return rec["payload"].encode("utf-8", "surrogatepass")


class DeadLetters:
    """Appends JSON lines (time, topic, payload, reason) under the state folder and counts by reason category.

    Invalid messages go to deadletters.jsonl; valid messages of devices the registry does not know yet go to
    quarantine.jsonl, from where `cistern reingest` takes them once the registry knows the device.
    """

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.dead_path = state_dir / DEAD_LETTERS
        self.quarantine_path = state_dir / QUARANTINE
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def write(self, rejects: list[Reject]) -> None:
        if not rejects:
            return
        now = time.time()
        dead, quarantined = [], []
        for r in rejects:
            rec = {"time": now, "topic": r.topic, "reason": r.reason, "category": r.category}
            rec.update(payload_text(r.payload))
            (quarantined if r.category == UNKNOWN_DEVICE else dead).append(orjson.dumps(rec) + b"\n")
        with self._lock:
            for path, lines in ((self.dead_path, dead), (self.quarantine_path, quarantined)):
                if lines:
                    with path.open("ab") as fh:
                        fh.write(b"".join(lines))
                        fh.flush()
                        os.fsync(fh.fileno())
            self.counts[INVALID] += len(dead)
            self.counts[UNKNOWN_DEVICE] += len(quarantined)

    def write_lines(self, lines: list[tuple[bytes, str]]) -> None:
        """Line-protocol lines the database refused for good (e.g. a field-type conflict)."""
        self.write([Reject("influx:line", line, f"database refused the point: {reason}") for line, reason in lines])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

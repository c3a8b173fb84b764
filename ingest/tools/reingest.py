"""Re-ingest quarantined messages once the registry knows their devices."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from devices.messages import UNKNOWN_DEVICE, RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.decode import Decoder
from ingest.sinks.deadletters import QUARANTINE, DeadLetters, record_payload


def reingest(state_dir: Path, registry: Registry, layout: TopicLayout, writer, chunk: int = 5000) -> tuple[int, int]:
    """Decode every quarantined message again; store the ones now known, keep the rest quarantined.

    Returns (stored, still_unknown). Messages that now fail for another reason go to the dead letters.
    """
    from ingest.sinks.lineproto import LineEncoder

    path = state_dir / QUARANTINE
    if not path.exists():
        return 0, 0
    work = path.with_suffix(".reingest")
    os.replace(path, work)  # new quarantines during the run land in a fresh file
    records = [orjson.loads(line) for line in work.read_bytes().splitlines() if line.strip()]
    decoder = Decoder(registry, layout)
    encoder = LineEncoder(registry)
    dead = DeadLetters(state_dir)
    stored = 0
    for i in range(0, len(records), chunk):
        part = records[i:i + chunk]
        batch, rejects = decoder.decode([RawMessage(r["topic"], record_payload(r)) for r in part])
        body = encoder.encode(batch)
        if body:
            refused = writer.write(body)
            dead.write_lines(refused)
        dead.write(rejects)
        stored += len(part) - len(rejects) - len(refused if body else [])
    work.unlink()
    return stored, dead.counts[UNKNOWN_DEVICE]

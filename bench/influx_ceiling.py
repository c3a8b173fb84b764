"""InfluxDB's own ceiling on this machine: the same points `cistern run` stores, encoded beforehand (out of the timed
window) exactly as the service encodes them, posted on the service's write lanes with nothing else running.
Over a long drain no consumer of the broker stores faster than this, whatever its own cost. (The consumers' rates
are timed from the first point stored, so on a backlog of a few batches they can come out above it.)"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from statistics import median

from drains import Drain, Servers, cpu_s

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout

GROUP = 5000  # messages a batch of the service holds (CISTERN_BATCH_MAX_MESSAGES)
LANES = 2  # concurrent write requests (CISTERN_WRITE_LANES)


def encode_backlog(registry_dir: Path, messages: list[tuple[str, bytes]]) -> list[tuple[bytes, str]]:
    """The backlog as the service's write requests: batches of GROUP messages, each split into LANES bodies."""
    from ingest.pipeline.decode import Decoder
    from ingest.sinks.lineproto import LineEncoder

    reg = Registry.load(registry_dir)
    dec, enc = Decoder(reg, TopicLayout("water")), LineEncoder(reg)
    bodies = []
    for i in range(0, len(messages), GROUP):
        batch, rejects = dec.decode([RawMessage(t, p) for t, p in messages[i:i + GROUP]])
        assert not rejects, rejects[0].reason
        body, precision = enc.encode_precise(batch)
        lines = body.splitlines(keepends=True)
        cut = [len(lines) * k // LANES for k in range(LANES + 1)]
        bodies += [(b"".join(lines[a:b]), precision) for a, b in zip(cut[:-1], cut[1:], strict=True) if b > a]
    return bodies


def influx_alone(srv: Servers, bodies: list[tuple[bytes, str]], expected: int) -> Drain:
    """Post the bodies on LANES connections at once; the rate (readings/s) from the first request to the last
    answer, every one a 204 (stored), and InfluxDB's CPU over that time."""
    from ingest.sinks.influx import V1Writer

    db = srv.influx.new_database("alone")
    writers = [V1Writer(srv.influx.url, db) for _ in range(LANES)]
    srv.settle()
    pid = srv.influx._proc.pid  # type: ignore[union-attr]
    errors: list[BaseException] = []

    def post(lane: int) -> None:
        try:
            for body, precision in bodies[lane::LANES]:
                refused = writers[lane].write(body, precision)
                if refused:
                    raise RuntimeError(f"{len(refused)} points refused")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=post, args=(k,)) for k in range(LANES)]
    c0, t0 = cpu_s(pid), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1, c1 = time.perf_counter(), cpu_s(pid)
    for w in writers:
        w.close()
    if errors:
        raise RuntimeError(f"InfluxDB refused a write: {errors[0]}")
    stored = srv.readings(db)
    notes = [] if stored == expected else [f"stored {stored:,} of {expected:,}"]
    return Drain(expected / (t1 - t0), stored, t1 - t0, notes=notes, cpu_s={"influxd": c1 - c0})


def ceiling_line(alone: list[float], sub: list[float], naive: list[float], per: int) -> str:
    """InfluxDB alone against the broker's drain and the naive script, run by run (messages/s)."""
    vs_sub = median([a / s for a, s in zip(alone, sub, strict=True) if s])
    vs_naive = median([a / n for a, n in zip(alone, naive, strict=True) if n])
    return (f"InfluxDB alone (pre-encoded, {LANES} lanes, {os.cpu_count()} cores) {median(alone):,.0f} msg/s"
            f"{f' ({median(alone) * per:,.0f} readings/s)' if per > 1 else ''}: {vs_sub:.2f}x the broker's drain, "
            f"{vs_naive:.2f}x the naive script: the pace InfluxDB sets with the machine to itself")

"""The pipeline: source → decode → sink (durable) → ack → detectors → alerts. Live and replay share it."""

from __future__ import annotations

import logging
import random
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Protocol

from devices.alerts import AlertEvent
from devices.batch import Batch
from devices.messages import RawMessage, Reject
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.checkpoint import Checkpoint
from ingest.pipeline.clock import Clock
from ingest.pipeline.decode import Decoder
from ingest.pipeline.reload import RegistryWatch
from ingest.sinks.deadletters import DeadLetters
from ingest.sinks.influx import WriteUnavailable
from ingest.sinks.lineproto import LineEncoder
from ingest.sinks.spool import Spool, SpoolFull
from ingest.sources import Source

log = logging.getLogger("cistern.pipeline")


class Writer(Protocol):
    """ingest.sinks.influx's writers. One with `accepts_seconds` is also called as write(body, precision="s")
    for a batch whose timestamps are all whole seconds."""

    def write(self, body: bytes) -> list[tuple[bytes, str]]: ...
    def close(self) -> None: ...


class Detectors(Protocol):
    """What the pipeline needs of detectors.DetectorSet."""

    def update(self, batch: Batch) -> list[AlertEvent]: ...
    def tick(self, now_ns: int) -> list[AlertEvent]: ...
    def state(self) -> dict: ...
    def restore(self, blob: dict) -> dict: ...
    def with_registry(self, registry: Registry) -> Detectors: ...


class Dispatch(Protocol):
    """What the pipeline needs of ingest.dispatch.Dispatcher: incidents in, the dispatch events that went out
    (enriched, possibly more or fewer) back; reminders and escalations on tick."""

    def emit(self, events: list[AlertEvent]) -> list[AlertEvent]: ...
    def tick(self, now_ns: int) -> list[AlertEvent]: ...
    def use_registry(self, registry: Registry, now_ns: int) -> list[AlertEvent]: ...
    @property
    def counts(self) -> dict[str, int]: ...


@dataclass
class Stats:
    received: int = 0  # messages
    readings: int = 0  # decoded rows
    written: int = 0  # rows durable in the database
    dead_lettered: int = 0
    alerts: int = 0
    write_retries: int = 0
    spooled: int = 0  # batches that went to the disk spool
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


def backoff_delays(first_s: float = 0.5, max_s: float = 30.0) -> Iterator[float]:
    """Exponential back-off with full jitter."""
    d = first_s
    while True:
        yield random.uniform(d / 2, d)
        d = min(d * 2, max_s)


class Pipeline:
    """Drives one source to completion (replay) or until stopped (live)."""

    def __init__(self, registry: Registry, layout: TopicLayout, source: Source, *, state_dir: Path,
                 writer: Writer | None = None, detectors: Detectors | None = None,
                 dispatcher: Dispatch | None = None,
                 live: bool = True, batch_max_messages: int = 5000, batch_max_wait_s: float = 0.25,
                 health_interval_s: float = 30.0, tick_interval_s: float = 5.0,
                 checkpoint_interval_s: float = 60.0, until_ns: int | None = None,
                 on_batch: Callable[[Batch], None] | None = None,
                 on_alerts: Callable[[list[AlertEvent]], None] | None = None, restore: bool = True,
                 spool_max_bytes: int = 0, spool_retry_s: float = 5.0, flood_max_per_device: int = 0,
                 max_clock_skew_s: float = 300.0, write_lanes: int = 1, batch_max_bytes: int = 0, registry_watch: RegistryWatch | None = None):
        self.registry = registry
        self.decoder = Decoder(registry, layout)
        self.source = source
        self.writer = writer
        self.detectors = detectors
        self.dispatcher = dispatcher
        self.live = live
        self.state_dir = state_dir
        self.dead = DeadLetters(state_dir)
        self.batch_max_messages = batch_max_messages
        self.batch_max_wait_s = batch_max_wait_s
        self.health_interval_s = health_interval_s
        self.tick_interval_s = tick_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.until_ns = until_ns
        self.on_batch = on_batch
        self.on_alerts = on_alerts
        self.registry_watch = registry_watch
        self.stats = Stats()
        self.clock = Clock(live, max_clock_skew_s)
        self.stop_event = threading.Event()
        self._encoder = None
        if writer is not None:
            self._encoder = LineEncoder(registry)
        self.spool = None
        if spool_max_bytes > 0 and writer is not None:
            self.spool = Spool(state_dir / "spool", spool_max_bytes)
        self.spool_retry_s = spool_retry_s
        self.flood_max_per_device = flood_max_per_device
        self._retry_at = 0.0
        self._last_health = time.monotonic()
        self._last_tick = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._checkpoint = Checkpoint(state_dir)
        self._io_lock = threading.RLock()  # the database and spool: the writer thread's, or a caller's when idle
        self._stats_lock = threading.Lock()
        self._writes: ThreadPoolExecutor | None = None
        self.write_lanes = write_lanes
        self.batch_max_bytes = batch_max_bytes
        self._lanes: ThreadPoolExecutor | None = None
        self._in_flight: tuple[Future, Batch] | None = None
        if restore and detectors is not None:
            self.clock.watermark_ns = self._checkpoint.load(detectors)

    @property
    def watermark_ns(self) -> int | None:
        return self.clock.watermark_ns

    def checkpoint(self) -> None:
        if self.detectors is None or self.checkpoint_interval_s == float("inf"):
            return
        self._checkpoint.save(self.detectors, self.watermark_ns)
        self._last_checkpoint = time.monotonic()

    def use_registry(self, registry: Registry) -> None:
        """Switch to a reloaded registry between batches: decoding and tags follow it, detector state carries over
        by device id (new devices start fresh), the open cases of devices it no longer holds are cleared; then a
        checkpoint, so a restart resumes on the new registry."""
        self.registry = registry
        self.decoder = Decoder(registry, self.decoder.layout)
        if self._encoder is not None:
            self._encoder = LineEncoder(registry)
        if self.detectors is not None:
            self.detectors = self.detectors.with_registry(registry)
        self._settle_cases()
        self.checkpoint()

    def _settle_cases(self) -> None:
        """Clear the open cases of devices the registry no longer holds (at start, and after a reload)."""
        if self.dispatcher is not None:
            now = self.watermark_ns if self.watermark_ns is not None else time.time_ns()
            self._record(self.dispatcher.use_registry(self.registry, now))

    # ---- one step ----------------------------------------------------------------------------------------------
    def _encode(self, batch: Batch) -> list[tuple[bytes, str]] | None:
        """The batch as line-protocol bodies with their timestamp precision: one per write lane (split by device,
        so one device's points stay in one request, in order), or None when nothing is written (no database:
        replay without one)."""
        if self.writer is None or self._encoder is None:
            return None
        seconds = getattr(self.writer, "accepts_seconds", False)
        lanes = self.write_lanes if len(batch.meters) >= LANE_MIN_ROWS else 1
        return [self._encoder.encode_precise(part) if seconds else (self._encoder.encode(part), "ns")
                for part in _by_lane(batch, lanes)]

    def _write(self, body: bytes, precision: str) -> list[tuple[bytes, str]]:
        assert self.writer is not None
        return self.writer.write(body) if precision == "ns" else self.writer.write(body, precision=precision)  # type: ignore[call-arg]

    def _store(self, encoded: list[tuple[bytes, str]] | None) -> bool:
        """Store a batch's bodies in the database, or in the spool while the database is unreachable.

        Returns False only when asked to stop while neither was possible: the messages then stay unacked and the
        broker delivers them again after the restart.
        """
        if encoded is None:
            return True
        parts = [(body, precision) for body, precision in encoded if body]
        with self._io_lock:
            self.drain_spool()
            if self.spool is not None and len(self.spool):  # keep the database's view in arrival order
                return all([self._spool_or_wait(body, precision) for body, precision in parts])
            if len(parts) > 1:
                parts = self._write_lanes(parts)
            return all([self._store_one(body, precision) for body, precision in parts])

    def _write_lanes(self, parts: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:
        """The bodies written at once (InfluxDB parses each request on a core of its own); returns those the
        database could not take now."""
        if self._lanes is None:
            self._lanes = ThreadPoolExecutor(self.write_lanes - 1, "cistern-lane")
        others = [self._lanes.submit(self._write, body, precision) for body, precision in parts[1:]]
        left = []
        for (body, precision), outcome in zip(parts, [None, *others], strict=True):
            try:
                refused = self._write(body, precision) if outcome is None else outcome.result()
            except WriteUnavailable:
                left.append((body, precision))
                continue
            self._account(refused, body)
        return left

    def _store_one(self, body: bytes, precision: str) -> bool:
        delays = backoff_delays()
        while True:
            try:
                self._account(self._write(body, precision), body)
                return True
            except WriteUnavailable as e:
                self.stats.write_retries += 1
                if self.spool is not None:
                    log.warning("database unavailable (%s); spooling to disk", e)
                    self._retry_at = time.monotonic() + self.spool_retry_s
                    return self._spool_or_wait(body, precision)
                if self.stop_event.is_set() and self.live:
                    return False
                wait = max(getattr(e, "retry_after_s", 0) or 0, next(delays))
                log.warning("database unavailable (%s); retrying in %.1f s, messages stay unacked", e, wait)
                if self.stop_event.wait(wait) and self.live:
                    return False

    def _account(self, refused: list[tuple[bytes, str]], body: bytes) -> None:
        if refused:
            self.dead.write_lines(refused)
            self._count_dead(len(refused))
        self.stats.written += body.count(b"\n") + (not body.endswith(b"\n")) - len(refused)

    def _spool_or_wait(self, body: bytes, precision: str) -> bool:
        assert self.spool is not None
        delays = backoff_delays()
        while True:
            try:
                self.spool.append(body, precision)
                self.stats.spooled += 1
                return True
            except SpoolFull as e:
                # Back-pressure: the messages stay unacked in the broker until the spool drains.
                wait = next(delays)
                log.warning("%s; holding messages unacked, retrying in %.1f s", e, wait)
                if self.stop_event.wait(wait) and self.live:
                    return False
                self._retry_at = 0.0
                self.drain_spool()

    def _count_dead(self, n: int) -> None:
        with self._stats_lock:  # the writer thread counts refused points, the pipeline thread refused messages
            self.stats.dead_lettered += n

    def drain_spool(self) -> None:
        """Write spooled batches oldest first while the database answers."""
        if self.spool is None or not len(self.spool) or time.monotonic() < self._retry_at:
            return
        with self._io_lock:
            self._drain_spool()

    def _drain_spool(self) -> None:
        assert self.spool is not None
        while len(self.spool):
            oldest = self.spool.oldest()
            assert oldest is not None
            body, precision = oldest
            try:
                self._account(self._write(body, precision), body)
            except WriteUnavailable:
                self._retry_at = time.monotonic() + self.spool_retry_s
                return
            self.spool.pop_oldest()

    def _emit(self, events: list[AlertEvent]) -> None:
        """Detector events through dispatch (lifecycle, evidence, outbox) and into the database's alert record."""
        if not events:
            return
        if self.dispatcher is not None:
            events = self.dispatcher.emit(events)
        self._record(events)

    def _tick(self, now_ns: int) -> None:
        assert self.detectors is not None
        self._emit(self.detectors.tick(now_ns))
        if self.dispatcher is not None:
            self._record(self.dispatcher.tick(now_ns))

    def _record(self, events: list[AlertEvent]) -> None:
        if not events:
            return
        self.stats.alerts += len(events)
        if self.writer is not None and self._encoder is not None:
            try:
                self.writer.write(self._encoder.encode_alerts(events))
            except WriteUnavailable as e:  # the dispatch outbox has them; the database copy is a record
                log.warning("could not record %d alert events in the database: %s", len(events), e)
        for e in events:
            log.info("ALERT %s %s %s %s: %s", e.event, e.kind, e.subject_type, e.subject_id, e.summary)
        if self.on_alerts is not None:
            self.on_alerts(events)

    def _decode(self, messages: list[RawMessage]) -> tuple[int, Batch, list[Reject]]:
        """(messages taken, their batch, everything refused: the source's rejects, floods, invalid messages)."""
        rejects = self.source.take_rejects()
        to_decode = messages
        if self.flood_max_per_device and len(messages) > self.flood_max_per_device:
            to_decode, flood = _cap_per_topic(messages, self.flood_max_per_device)
            rejects += flood
        batch, more = self.decoder.decode(to_decode)
        return len(messages), batch, rejects + more

    def _prepare(self, n: int, batch: Batch, rejects: list[Reject]) -> tuple[Batch, list[tuple[bytes, str]] | None]:
        """Set the rejects aside durably (dead letters, quarantine) and encode: all before any ack."""
        if self.until_ns is not None and len(batch):
            batch = _until(batch, self.until_ns)
        self.dead.write(rejects)
        self.stats.received += n
        self.stats.readings += batch.readings
        self._count_dead(len(rejects))
        return batch, self._encode(batch)

    def _durable(self, batch: Batch) -> None:
        """After the batch is stored and acked: the clock, the detectors and dispatch. Detectors only ever see
        durable batches, so a checkpoint never holds readings the broker will deliver again."""
        self.stats.batches += 1
        self.clock.saw(batch.max_ts_ns())
        if self.on_batch is not None:
            self.on_batch(batch)
        if self.detectors is not None and len(batch):
            self._emit(self.detectors.update(batch))
            if not self.live and self.watermark_ns is not None:
                self._tick(self.watermark_ns)

    def process(self, messages: list[RawMessage]) -> bool:
        """Decode, store, ack, detect. Returns False when the batch could not be made durable (stopping)."""
        batch, body = self._prepare(*self._decode(messages))
        if not self._store(body):
            return False
        self.source.ack(messages)
        self._durable(batch)
        return True

    # ---- write-behind: batch n is stored on the writer thread while batch n+1 is decoded -------------------
    def _submit(self, messages: list[RawMessage], batch: Batch, body: list[tuple[bytes, str]] | None) -> None:
        def store_and_ack() -> bool:
            if not self._store(body):
                return False
            self.source.ack(messages)
            return True

        assert self._writes is not None
        self._in_flight = (self._writes.submit(store_and_ack), batch)

    def _await_write(self) -> bool:
        """Wait for the batch in flight to be stored and acked, then run what follows durability. False when it
        could not be stored (stopping): it stays unacked and unseen by the detectors."""
        if self._in_flight is None:
            return True
        future, batch = self._in_flight
        self._in_flight = None
        if not future.result():
            return False
        self._durable(batch)
        return True

    def _step(self, messages: list[RawMessage], decoded: tuple[int, Batch, list[Reject]] | None = None) -> bool:
        """One batch through the pipeline: synchronously without a database, else with its write behind.
        `decoded`: the batch decoded already (a replay's decode-ahead workers); messages are then not needed."""
        if self._writes is None and decoded is None:
            return self.process(messages)
        batch, body = self._prepare(*(decoded or self._decode(messages)))
        if self._writes is None:  # decoded ahead, nothing to write (a replay without a database)
            self._durable(batch)
            return True
        previous = self._in_flight
        self._in_flight = None
        if previous is not None and not previous[0].result():
            return False
        self._submit(messages, batch, body)
        if previous is not None:
            self._durable(previous[1])  # batch n-1's detectors run while batch n is being written
        return True

    def _live_tick(self, caught_up: bool) -> None:
        if self.detectors is None or time.monotonic() - self._last_tick < self.tick_interval_s:
            return
        self._last_tick = time.monotonic()
        now = self.clock.now(caught_up)
        if now is not None:
            self._tick(now)

    def _health(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_health < self.health_interval_s:
            return
        self._last_health = time.monotonic()
        s = self.stats
        lag_s = self.clock.lag_s()
        lag = "n/a" if lag_s is None else f"{lag_s:.0f}s"
        backlog = getattr(self.source, "backlog", 0)
        dispatch = ""
        if self.dispatcher is not None:
            c = self.dispatcher.counts
            dispatch = f" dispatch_delivered={c['delivered']} dispatch_pending={c['pending']}"
        spool = f"{len(self.spool)} batches/{self.spool.bytes / 1e6:.1f}MB" if self.spool is not None else "off"
        log.info("health: received=%d readings=%d written=%d dead_lettered=%d alerts=%d lag=%s backlog=%d "
                 "write_retries=%d spool=%s%s", s.received, s.readings, s.written, s.dead_lettered, s.alerts, lag,
                 backlog, s.write_retries, spool, dispatch)

    def run(self) -> None:
        """Until the source is exhausted (replay) or stop() is called (live)."""
        self._writes = ThreadPoolExecutor(1, "cistern-writer") if self.writer is not None else None
        try:
            self._settle_cases()
            while not self.stop_event.is_set():
                messages = self.source.poll(self.batch_max_messages, self.batch_max_wait_s)
                if messages or not self.live:
                    if not all(self._step(part) for part in _by_bytes(messages, self.batch_max_bytes)):
                        break
                if self.live:
                    if not messages:
                        if not self._await_write():
                            break
                        self.drain_spool()
                    self._live_tick(caught_up=len(messages) < self.batch_max_messages)
                if self.registry_watch is not None:
                    reloaded = self.registry_watch.poll(self.registry)
                    # The batch in flight was decoded against the old registry: its detectors run first.
                    if reloaded is not None and self._await_write():
                        self.use_registry(reloaded)
                if time.monotonic() - self._last_checkpoint > self.checkpoint_interval_s and self._await_write():
                    self.checkpoint()
                self._health()
                if self.source.exhausted:
                    break
            if self._await_write() and not self.live and self.detectors is not None:
                self._tick_to_end()
        finally:
            self._close()

    def run_decoded(self, chunks: Iterable[tuple[int, Batch, list[Reject]]]) -> None:
        """A replay whose decoding was done ahead (ingest.pipeline.ahead): every other step as run() takes it."""
        self._writes = ThreadPoolExecutor(1, "cistern-writer") if self.writer is not None else None
        try:
            self._settle_cases()
            for chunk in chunks:
                if self.stop_event.is_set() or not self._step([], chunk):
                    break
                if time.monotonic() - self._last_checkpoint > self.checkpoint_interval_s and self._await_write():
                    self.checkpoint()
                self._health()
            if self._await_write() and self.detectors is not None:
                self._tick_to_end()
        finally:
            self._close()

    def _tick_to_end(self) -> None:
        """A capture's end: the detectors' clock moves to its last instant (or --until)."""
        end = self.until_ns if self.until_ns is not None else self.watermark_ns
        if end is not None:
            self._tick(end)

    def _close(self) -> None:
        """The writers finish what they hold, then the state is saved and the health line written."""
        for pool in (self._writes, self._lanes):
            if pool is not None:
                pool.shutdown(wait=True)
        self.checkpoint()
        self._health(force=True)

    def stop(self) -> None:
        self.stop_event.set()


def _cap_per_topic(messages: list[RawMessage], cap: int) -> tuple[list[RawMessage], list[Reject]]:
    """Keep at most `cap` messages of one topic in a batch; the rest are dead-lettered (kept, with the reason).

    One flooding device must not starve the others: its excess costs almost nothing to set aside, so the ingester
    keeps pace with the broker and every other device's messages still flow.
    """
    counts = Counter(m.topic for m in messages)
    if max(counts.values()) <= cap:
        return messages, []
    seen: Counter[str] = Counter()
    keep, flood = [], []
    for m in messages:
        seen[m.topic] += 1
        if seen[m.topic] <= cap:
            keep.append(m)
        else:
            flood.append(Reject(m.topic, m.payload, f"flood: more than {cap} messages from one topic in one batch "
                                                    f"({counts[m.topic]} of {len(messages)})"))
    return keep, flood


LANE_MIN_ROWS = 2000  # a smaller batch is written as one request: splitting it would save nothing


def _by_bytes(messages: list[RawMessage], max_bytes: int) -> list[list[RawMessage]]:
    """The polled messages in runs of at most `max_bytes` of payload (at least one message each; 0: no limit).
    Daily uploads are a hundred times a single reading: a batch of them is cut so memory and the size of a write
    follow the readings, not the message count."""
    if not max_bytes or not messages:
        return [messages]
    ends = list(accumulate(len(m.payload) for m in messages))
    if ends[-1] <= max_bytes:
        return [messages]
    out, start = [], 0
    while start < len(messages):
        base = ends[start - 1] if start else 0
        stop = max(bisect_right(ends, base + max_bytes, start), start + 1)
        out.append(messages[start:stop])
        start = stop
    return out


def _by_lane(batch: Batch, lanes: int) -> list[Batch]:
    """The batch split by meter index into `lanes` parts (pump rooms and events in the first)."""
    if lanes <= 1:
        return [batch]
    lane = batch.meters.meter % lanes
    return [Batch(meters=batch.meters.take(lane == k), tanks=batch.tanks, rooms=batch.rooms, pumps=batch.pumps,
                  events=batch.events) if k == 0 else Batch(meters=batch.meters.take(lane == k))
            for k in range(lanes)]


def _until(batch: Batch, until_ns: int) -> Batch:
    return Batch(
        meters=batch.meters.take(batch.meters.ts_ns <= until_ns),
        tanks=batch.tanks.take(batch.tanks.ts_ns <= until_ns),
        rooms=batch.rooms.take(batch.rooms.ts_ns <= until_ns),
        pumps=batch.pumps.take(batch.pumps.ts_ns <= until_ns),
        events=[e for e in batch.events if e.ts_ns <= until_ns],
    )

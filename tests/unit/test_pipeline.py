"""The pipeline acks a message only once its readings are durable: in the database, or in the disk spool."""

from __future__ import annotations

import orjson
import pytest

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline import Pipeline
from ingest.sinks.influx import WriteUnavailable
from tests.helpers import write_registry

T0 = 1_795_334_400


class ListSource:
    """A source over a fixed list of messages, recording what was acked."""

    def __init__(self, messages, chunk=10):
        self.messages = list(messages)
        self.chunk = chunk
        self.acked: list[RawMessage] = []
        self.pos = 0

    def poll(self, max_messages, timeout_s=0.0):
        n = min(max_messages, self.chunk)
        out = self.messages[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def ack(self, messages):
        self.acked += messages

    def take_rejects(self):
        return []

    @property
    def exhausted(self):
        return self.pos >= len(self.messages)

    def close(self):
        pass


class FlakyWriter:
    """Refuses the first `down` writes as unavailable, then stores lines in order."""

    def __init__(self, down=0):
        self.down = down
        self.lines: list[bytes] = []
        self.calls = 0

    def write(self, body):
        self.calls += 1
        if self.calls <= self.down:
            raise WriteUnavailable("connection refused")
        self.lines += [x for x in body.split(b"\n") if x]
        return []

    def close(self):
        pass


def messages(n):
    return [RawMessage("water/d01/meter/M000001/reading",
                       orjson.dumps({"meter_id": "M000001", "ts": T0 + 60 * i, "total_m3": 1 + i / 100}),
                       token=i) for i in range(n)]


@pytest.fixture
def registry(tmp_path):
    return Registry.load(write_registry(tmp_path / "registry"))


def make(registry, tmp_path, source, writer, **kw):
    return Pipeline(registry, TopicLayout("water"), source, state_dir=tmp_path / "state", writer=writer,
                    live=True, batch_max_messages=10, batch_max_wait_s=0.01, **kw)


def test_acks_follow_writes(registry, tmp_path):
    src, w = ListSource(messages(30)), FlakyWriter()
    p = make(registry, tmp_path, src, w)
    for _ in range(3):
        p.process(src.poll(10))
    assert [m.token for m in src.acked] == list(range(30))
    assert len(w.lines) == 30 and p.stats.written == 30


def test_database_down_without_spool_leaves_messages_unacked_when_stopping(registry, tmp_path):
    src, w = ListSource(messages(10)), FlakyWriter(down=10**6)
    p = make(registry, tmp_path, src, w)
    p.stop()
    assert p.process(src.poll(10)) is False
    assert src.acked == [] and w.lines == []


def test_database_down_spools_then_drains_in_order_without_loss(registry, tmp_path):
    src, w = ListSource(messages(50)), FlakyWriter(down=3)
    p = make(registry, tmp_path, src, w, spool_max_bytes=10_000_000, spool_retry_s=0.0)
    for _ in range(3):  # database down: each batch goes to the spool, and is acked
        assert p.process(src.poll(10))
    assert len(src.acked) == 30 and w.lines == [] and len(p.spool) == 3
    for _ in range(2):  # database back: the spool drains first, then new batches follow in order
        assert p.process(src.poll(10))
    assert len(p.spool) == 0 and len(src.acked) == 50
    stamps = [int(line.rsplit(b" ", 1)[1]) for line in w.lines]
    assert stamps == [(T0 + 60 * i) * 10**9 for i in range(50)]


def test_spool_survives_a_restart(registry, tmp_path):
    src, w = ListSource(messages(20)), FlakyWriter(down=10**6)
    p = make(registry, tmp_path, src, w, spool_max_bytes=10_000_000, spool_retry_s=3600)
    p.process(src.poll(10))
    p.process(src.poll(10))
    assert len(src.acked) == 20 and len(p.spool) == 2
    w2 = FlakyWriter()
    p2 = make(registry, tmp_path, ListSource([]), w2, spool_max_bytes=10_000_000)
    p2.drain_spool()
    assert len(w2.lines) == 20 and len(p2.spool) == 0


def test_full_spool_holds_messages_unacked(registry, tmp_path):
    src, w = ListSource(messages(20)), FlakyWriter(down=10**6)
    p = make(registry, tmp_path, src, w, spool_max_bytes=1200, spool_retry_s=3600)
    assert p.process(src.poll(10))  # fits
    p.stop()
    assert p.process(src.poll(10)) is False  # does not fit: not acked
    assert len(src.acked) == 10


def test_a_flooding_device_cannot_starve_the_others(registry, tmp_path):
    flood = [RawMessage("water/d01/meter/M000001/reading",
                        orjson.dumps({"meter_id": "M000001", "ts": T0 + i, "total_m3": 1.0}), token=("f", i))
             for i in range(3000)]
    quiet = [RawMessage("water/d01/meter/M000003/reading",
                        orjson.dumps({"meter_id": "M000003", "ts": T0 + 3600 * i, "total_m3": 2.0 + i}),
                        token=("q", i)) for i in range(5)]
    mixed = flood[:1500] + quiet + flood[1500:]
    src, w = ListSource(mixed, chunk=len(mixed)), FlakyWriter()
    p = Pipeline(registry, TopicLayout("water"), src, state_dir=tmp_path / "state", writer=w, live=True,
                 batch_max_messages=len(mixed), flood_max_per_device=500)
    assert p.process(src.poll(len(mixed)))
    assert sum(b"meter_id=M000003" in line for line in w.lines) == 5
    assert sum(b"meter_id=M000001" in line for line in w.lines) == 500
    dead = (tmp_path / "state" / "deadletters.jsonl").read_bytes().splitlines()
    assert len(dead) == 2500 and b"flood" in dead[0]
    assert len(src.acked) == len(mixed)  # set aside durably, so acked: nothing is redelivered in a loop


def test_a_device_clock_in_the_future_does_not_move_the_live_clock(registry, tmp_path):
    import time

    future = RawMessage("water/d01/meter/M000001/reading",
                        orjson.dumps({"meter_id": "M000001", "ts": time.time() + 30 * 86400, "total_m3": 1.0}))
    src, w = ListSource([future]), FlakyWriter()
    p = make(registry, tmp_path, src, w)
    assert p.process(src.poll(10))
    assert len(w.lines) == 1  # the reading is kept
    assert p.watermark_ns <= time.time_ns() + 301 * 10**9


class SecondsWriter(FlakyWriter):
    """Takes bodies in seconds too, as the InfluxDB writers do; keeps (line, precision)."""

    accepts_seconds = True

    def write(self, body, precision="ns"):
        before = len(self.lines)
        super().write(body)
        self.lines[before:] = [(line, precision) for line in self.lines[before:]]
        return []


def test_a_spooled_batch_keeps_its_precision_across_a_restart(registry, tmp_path):
    src, w = ListSource(messages(10)), SecondsWriter(down=10**6)
    p = make(registry, tmp_path, src, w, spool_max_bytes=10_000_000, spool_retry_s=3600)
    assert p.process(src.poll(10)) and len(p.spool) == 1
    w2 = SecondsWriter()
    p2 = make(registry, tmp_path, ListSource([]), w2, spool_max_bytes=10_000_000)
    p2.drain_spool()
    assert [(int(line.rsplit(b" ", 1)[1]), precision) for line, precision in w2.lines] == [
        (T0 + 60 * i, "s") for i in range(10)]


def test_a_poll_of_large_messages_is_written_in_parts_of_at_most_batch_max_bytes_and_acked_in_order(registry,
                                                                                                 tmp_path):
    same_size = [RawMessage("water/d01/meter/M000001/reading",
                            orjson.dumps({"meter_id": "M000001", "ts": T0 + 60 * i, "total_m3": 100 + i}), token=i)
                 for i in range(30)]
    src, w = ListSource(same_size, chunk=30), FlakyWriter()
    p = Pipeline(registry, TopicLayout("water"), src, state_dir=tmp_path / "state", writer=w, live=True,
                 batch_max_messages=30, batch_max_wait_s=0.01, batch_max_bytes=7 * len(same_size[0].payload))
    p.run()  # the write of each part overlaps decoding the next
    assert w.calls == 5  # 30 messages, at most 7 a write
    assert [m.token for m in src.acked] == list(range(30))
    assert len(w.lines) == 30 and p.stats.written == 30 and p.stats.batches == 5

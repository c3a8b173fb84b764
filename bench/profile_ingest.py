"""Where a message's microseconds go in `cistern run`: each stage of the service's path timed on its own, in this
process, with the real components and servers (MQTT receive and ack, decode, line protocol, the HTTP write and
InfluxDB's own CPU for it, detectors). Stages that overlap in the service are added up here."""

from __future__ import annotations

import os
import time
from pathlib import Path

from drains import Servers
from traffic import batch_messages, single_messages

from devices.messages import RawMessage
from devices.registry import Registry
from devices.topics import TopicLayout

GROUP = 5000


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class _Stage:
    """Wall and CPU time of a block (CPU: this process, and optionally a server's)."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid

    def __enter__(self) -> _Stage:
        self.t, self.c = time.perf_counter(), time.process_time()
        self.sc = _cpu_s(self.server_pid) if self.server_pid else 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t
        self.cpu = time.process_time() - self.c
        self.server_cpu = (_cpu_s(self.server_pid) - self.sc) if self.server_pid else 0.0


def _receive(srv: Servers, source_kind: str, msgs: list[tuple[str, bytes]], tag: str):
    """Drain a backlog through the MQTT source, acking as it goes."""
    from ingest.sources.mqtt import MqttEndpoint, open_mqtt_source

    def source():
        s = open_mqtt_source(source_kind, MqttEndpoint.parse(srv.mq.url()), f"profile-{tag}",
                             TopicLayout("water").subscriptions(), protocol="5")
        s.start(wait_s=10)
        return s

    source().close()
    srv.publisher().publish(msgs)
    mq_pid = srv.mq._proc.pid  # type: ignore[union-attr]
    got: list[RawMessage] = []
    with _Stage(mq_pid) as rx:  # a count-only subscriber that acks each batch as it takes it
        s = source()
        while len(got) < len(msgs):
            batch = s.poll(GROUP, 1.0)
            s.ack(batch)
            got += batch
        s.close()
    return got, rx


def profile_kind(srv: Servers, reg: Registry, kind: str, msgs: list[tuple[str, bytes]], source_kind: str) -> None:
    from detectors import DetectorSet
    from ingest.pipeline.decode import Decoder
    from ingest.sinks.influx import V1Writer
    from ingest.sinks.lineproto import LineEncoder

    n = len(msgs)
    got, rx = _receive(srv, source_kind, msgs, f"{kind}-{source_kind}-{os.getpid()}")
    groups = [got[i:i + GROUP] for i in range(0, n, GROUP)]
    dec, enc = Decoder(reg, TopicLayout("water")), LineEncoder(reg)
    with _Stage() as st_dec:
        batches = [dec.decode(g)[0] for g in groups]
    with _Stage() as st_enc:
        bodies = [enc.encode_precise(b) for b in batches]  # as the service does: whole seconds in seconds
    writer = V1Writer(srv.influx.url, srv.influx.new_database(f"profile_{kind}"))
    with _Stage(srv.influx._proc.pid) as st_http:  # type: ignore[union-attr]
        for body, precision in bodies:
            writer.write(body, precision)
    writer.close()
    ds = DetectorSet(reg)
    with _Stage() as st_det:
        for b in batches:
            ds.update(b)
    readings = sum(len(b.meters) for b in batches)
    us = 1e6 / n
    print(f"  {kind}: {n:,} messages, {readings:,} readings; µs per message (wall / this process's CPU)")
    rows = [(f"MQTT receive and ack ({source_kind}, connect included)", rx), ("decode (orjson, columns, checks)", st_dec),
            ("line protocol", st_enc), ("HTTP write to InfluxDB (client side)", st_http),
            ("detectors (update)", st_det)]
    for label, st in rows:
        extra = ""
        if st is rx:
            extra = f"   Mosquitto CPU {st.server_cpu * us:6.2f}"
        if st is st_http:
            extra = f"   InfluxDB CPU {st.server_cpu * us:6.2f}"
        print(f"    {label:<52}{st.wall * us:7.2f} / {st.cpu * us:6.2f}{extra}")
    total = sum(st.cpu for _, st in rows)
    print(f"    {'cistern CPU, all stages':<52}{'':>7}   {total * us:6.2f}  "
          f"(= {n / total:,.0f} msg/s on one core if nothing else ran)", flush=True)


def part_profile(args, registry_dir: Path, tmp: Path) -> None:
    from ingest.app import tune_gc
    from ingest.sources.mqtt import SOURCE_KINDS

    reg = Registry.load(registry_dir)
    tune_gc()  # as `cistern run` does once it is built
    srv = Servers()
    print("\nprofile: each stage on its own, the real components, this process (one write request at a time)")
    try:
        for source_kind in SOURCE_KINDS:
            profile_kind(srv, reg, "single", single_messages(args.meters, args.single), source_kind)
            profile_kind(srv, reg, "batch", batch_messages(args.meters, args.batch), source_kind)
    finally:
        srv.stop()

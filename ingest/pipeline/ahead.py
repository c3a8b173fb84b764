"""Decode ahead for `cistern replay`: worker processes turn a capture's lines into batches (the JSON parse and
decode, most of a replay's work) while the pipeline stores, detects and dispatches the batches before them, in
order. The batches are the ones the pipeline would decode itself, so a replay raises the same alerts."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devices.batch import Batch
from devices.messages import Reject
from devices.registry import Registry
from devices.topics import TopicLayout
from ingest.pipeline.decode import Decoder
from ingest.sources.capture import CaptureLines, CaptureSource

Decoded = tuple[int, Batch, list[Reject]]  # messages taken, their batch, everything refused

# A worker's decoder, line reader and open capture, made once per process.
_worker: dict[str, Any] = {}


def _start(registry: Registry, prefix: str, capture: str, flood_max_per_device: int, batch_max_bytes: int,
           handover: str) -> None:
    _worker.update(decoder=Decoder(registry, TopicLayout(prefix)), lines=CaptureLines(Path(capture).name),
                   file=open(capture, "rb"), flood=flood_max_per_device, max_bytes=batch_max_bytes,  # noqa: SIM115
                   handover=handover)
    # As the service does (ingest.app.tune_gc): decoding allocates a dict or two per message.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _decode(first: int, offset: int, size: int) -> str:
    """The chunk of lines at [offset, offset + size) of the capture as the pipeline would decode it: the same cut
    by payload bytes, the same flood cap, the broken lines' rejects with the first part. The worker reads the
    lines itself and leaves its result in a file: a pipe of a few hundred kilobytes each way would stall on the
    pipeline's GIL (its threads get it every few milliseconds)."""
    from ingest.pipeline.loop import _by_bytes, _cap_per_topic

    fh = _worker["file"]
    fh.seek(offset)
    lines = fh.read(size).splitlines(keepends=True)
    reader: CaptureLines = _worker["lines"]
    out = []
    for messages in _by_bytes(reader.messages(lines, first), _worker["max_bytes"]):
        rejects, reader.rejects = reader.rejects, []
        to_decode = messages
        if _worker["flood"] and len(messages) > _worker["flood"]:
            to_decode, flood = _cap_per_topic(messages, _worker["flood"])
            rejects += flood
        batch, more = _worker["decoder"].decode(to_decode)
        out.append((len(messages), batch, rejects + more))
    fd, path = tempfile.mkstemp(prefix="chunk-", dir=_worker["handover"])
    with os.fdopen(fd, "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def workers_for(capture_bytes: int, setting: int) -> int:
    """Worker processes for a capture: the setting, or when it is -1 (auto) the processors (at least 2) for a
    capture over 16 MB, none below (starting a worker costs more than it saves). With as many workers as
    processors, one worker's wait for the pipeline never leaves a processor idle."""
    if setting >= 0:
        return setting
    if capture_bytes < 16 << 20:
        return 0
    return max(2, os.cpu_count() or 1)


class DecodeAhead:
    """Finds the capture's chunks of `chunk_lines` lines and has `workers` processes decode them, at most
    `window` chunks ahead of the pipeline (bounded memory); yields (messages, batch, rejects) in the capture's
    order."""

    def __init__(self, source: CaptureSource, registry: Registry, layout: TopicLayout, *, workers: int,
                 chunk_lines: int, flood_max_per_device: int, batch_max_bytes: int, window: int = 0):
        self.source = source
        self.chunk_lines = chunk_lines
        self.window = window or 2 * workers + 1
        shm = Path("/dev/shm")
        self._handover = tempfile.TemporaryDirectory(prefix="cistern-replay-",
                                                     dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)
        # fork: the workers start at once with the registry and modules already loaded; spawn where there is none.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._pool = ctx.Pool(workers, _start, (registry, layout.prefix, str(source.path), flood_max_per_device,
                                                batch_max_bytes, self._handover.name))

    def __iter__(self) -> Iterator[Decoded]:
        pending: deque = deque()
        offset = 0
        while True:
            while len(pending) < self.window and not self.source.exhausted:
                first, lines = self.source.read_lines(self.chunk_lines)
                size = sum(map(len, lines))
                if lines:
                    pending.append(self._pool.apply_async(_decode, (first, offset, size)))
                offset += size
            if not pending:
                return
            path = Path(pending.popleft().get())
            try:
                parts = pickle.loads(path.read_bytes())
            finally:
                path.unlink()
            yield from parts

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()
        self._handover.cleanup()

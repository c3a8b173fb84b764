"""On-disk write spool: line-protocol batches kept in order while the database is unreachable, drained later."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("cistern.spool")

WARN_AT = (0.5, 0.8, 0.95)


class SpoolFull(Exception):
    pass


SUFFIX = {"ns": ".lp", "s": ".slp"}  # a segment's timestamp precision is in its name
PRECISION = {v: k for k, v in SUFFIX.items()}


class Spool:
    """A folder of numbered segment files, one batch each, written with fsync before the broker is acked.

    Re-writing a segment is harmless (InfluxDB points are idempotent by series + timestamp), so a crash between
    writing a segment to the database and deleting it duplicates nothing.
    """

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob("*.tmp"):
            tmp.unlink()  # a segment whose write never finished was never acked: the broker still has it
        self._segments = sorted((p for p in folder.iterdir() if p.suffix in PRECISION), key=lambda p: p.stem)
        self.bytes = sum(p.stat().st_size for p in self._segments)
        self._next = int(self._segments[-1].stem) + 1 if self._segments else 1
        self._warned = 0.0
        if self._segments:
            log.warning("write spool holds %d batches (%.1f MB) from before the restart; draining when the "
                        "database answers", len(self._segments), self.bytes / 1e6)

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def fill(self) -> float:
        return self.bytes / self.max_bytes if self.max_bytes else 1.0

    def append(self, body: bytes, precision: str = "ns") -> None:
        if self.bytes + len(body) > self.max_bytes:
            raise SpoolFull(f"write spool full ({self.bytes / 1e6:.1f} of {self.max_bytes / 1e6:.1f} MB)")
        path = self.folder / f"{self._next:012d}{SUFFIX[precision]}"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._fsync_dir()
        self._next += 1
        self._segments.append(path)
        self.bytes += len(body)
        for level in WARN_AT:
            if self.fill >= level > self._warned:
                self._warned = level
                log.warning("write spool %.0f%% full (%d batches, %.1f MB); the database is still unreachable",
                            100 * self.fill, len(self._segments), self.bytes / 1e6)

    def oldest(self) -> tuple[bytes, str] | None:
        """The oldest batch and its timestamp precision ("ns" or "s")."""
        if not self._segments:
            return None
        path = self._segments[0]
        return path.read_bytes(), PRECISION[path.suffix]

    def pop_oldest(self) -> None:
        path = self._segments.pop(0)
        self.bytes -= path.stat().st_size
        path.unlink()
        if not self._segments:
            self._warned = 0.0
            log.info("write spool drained")

    def _fsync_dir(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""The alerts file (CISTERN_ALERTS_FILE): JSON lines appended in event order, fsynced once per delivery round."""

from __future__ import annotations

import os
from pathlib import Path

from ingest.dispatch.outputs import Sent
from ingest.dispatch.store import OutboxRow


class FileOutput:
    name = "file"
    batched = True
    ordered = True

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("ab")

    def send(self, row: OutboxRow) -> Sent:
        try:
            self._fh.write(row.body + b"\n")
        except OSError as e:
            return Sent(False, f"cannot append to {self.path}: {e.strerror}", receiver_down=True)
        return Sent(True)

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

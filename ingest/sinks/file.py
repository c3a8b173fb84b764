"""Line protocol appended to a file: the writer interface of the InfluxDB sinks, for running with no database
(the demo's fallback). Nothing is refused; points are counted per measurement."""

from __future__ import annotations

from pathlib import Path


class LineProtocolFile:
    """Stores the line protocol in a file."""

    api = "file"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")
        self.counts: dict[str, int] = {}

    def write(self, body: bytes) -> list[tuple[bytes, str]]:
        if not body.strip():
            return []
        if not body.endswith(b"\n"):
            body += b"\n"
        self._fh.write(body)
        for m in ("meter_reading", "tank", "pump_room", "pump", "device_event", "alert"):
            # a line starts with its measurement; every other line begins after a newline
            n = body.count(b"\n" + m.encode() + b",") + body.startswith(m.encode() + b",")
            if n:
                self.counts[m] = self.counts.get(m, 0) + n
        return []

    def close(self) -> None:
        self._fh.close()

    def describe(self) -> str:
        return f"line-protocol file {self.path} (embedded fallback: no InfluxDB binary)"



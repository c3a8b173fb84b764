"""A capture file as a source: one MQTT message a line, `{"topic": …, "payload": {…} | "raw text"}`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from devices.messages import RawMessage, Reject


class CaptureSource:
    """Replays a capture file in publish order; a line that is not a capture record is a reject."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = self.path.open("rb")
        self._lines = self._read()
        self._rejects: list[Reject] = []
        self._done = False
        self.line_no = 0
        self.bytes_read = 0

    def _read(self) -> Iterator[RawMessage]:
        for raw in self._fh:
            self.line_no += 1
            self.bytes_read += len(raw)
            line = raw.strip()
            if not line:
                continue
            try:
                obj = orjson.loads(line)
                topic = obj["topic"]
                payload = obj["payload"]
                if not isinstance(topic, str):
                    raise TypeError("topic is not a string")
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                self._rejects.append(Reject(f"capture:{self.path.name}:{self.line_no}", line,
                                            f"capture line {self.line_no} is not a capture record: {e}"))
                continue
            if isinstance(payload, str):
                data = payload.encode("utf-8", "surrogatepass")
            else:
                data = orjson.dumps(payload)
            yield RawMessage(topic, data)

    def poll(self, max_messages: int, timeout_s: float = 0.0) -> list[RawMessage]:
        out: list[RawMessage] = []
        for msg in self._lines:
            out.append(msg)
            if len(out) >= max_messages:
                return out
        self._done = True
        return out

    def ack(self, messages: list[RawMessage]) -> None:
        pass

    def take_rejects(self) -> list[Reject]:
        r, self._rejects = self._rejects, []
        return r

    @property
    def exhausted(self) -> bool:
        return self._done

    def close(self) -> None:
        self._fh.close()



"""A capture file as a source: one MQTT message a line, `{"topic": …, "payload": {…} | "raw text"}`."""

from __future__ import annotations

import re
from itertools import islice, repeat
from pathlib import Path

import orjson

from devices.messages import RawMessage, Reject

# The line layout Cistern's own captures have: the payload object's text can be taken as it stands, and parsed
# once for decode. Any other layout (other key order, spaces, escapes in the topic, a string payload) is read whole.
_PLAIN_LINE = re.compile(rb'\{"topic":"([^"\\\x00-\x1f]*)","payload":\{')


class CaptureLines:
    """Turns runs of capture lines into messages: in the reading process, or in a replay's decode workers."""

    def __init__(self, name: str):
        self.name = name  # the file's name, in the rejects of lines that are not capture records
        self.rejects: list[Reject] = []
        self._topics: dict[bytes, str] = {}

    def messages(self, lines: list[bytes], first: int) -> list[RawMessage]:
        """The messages of a run of lines (the first of them numbered first + 1), read in bulk; lines in another
        layout one at a time; a line that is not a capture record becomes a reject."""
        plain = list(map(_PLAIN_LINE.match, lines))
        # A plain line ends with "}" and its line break: no strip (a copy of every line) is needed.
        texts = [line[m.end() - 1:-2] if m is not None and line[-2:] == b"}\n" else None
                 for line, m in zip(lines, plain, strict=True)]
        try:
            objs = [orjson.loads(t) if t is not None else None for t in texts]
        except orjson.JSONDecodeError:
            objs = [_loads_or_none(t) for t in texts]
        topics = [self._topic(m.group(1)) if type(o) is dict else None  # type: ignore[union-attr]
                  for m, o in zip(plain, objs, strict=True)]
        if None not in topics:  # the usual run: every line plain
            return list(map(RawMessage, topics, texts, repeat(None), repeat(0), objs))
        out = []
        for k, topic in enumerate(topics):
            if topic is not None:
                out.append(RawMessage(topic, texts[k], parsed=objs[k]))  # type: ignore[arg-type]
                continue
            line = lines[k].strip()
            if line:
                msg = self._line(first + k + 1, line)
                if msg is not None:
                    out.append(msg)
        return out

    def _topic(self, raw: bytes) -> str | None:
        topic = self._topics.get(raw)
        if topic is None:
            try:
                topic = self._topics[raw] = raw.decode()
            except UnicodeDecodeError:
                return None  # read whole, and refused with the parser's reason
        return topic

    def _line(self, line_no: int, line: bytes) -> RawMessage | None:
        try:
            obj = orjson.loads(line)
            topic = obj["topic"]
            payload = obj["payload"]
            if not isinstance(topic, str):
                raise TypeError("topic is not a string")
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            self.rejects.append(Reject(f"capture:{self.name}:{line_no}", line,
                                        f"capture line {line_no} is not a capture record: {e}"))
            return None
        if isinstance(payload, str):
            return RawMessage(topic, payload.encode("utf-8", "surrogatepass"))
        return RawMessage(topic, orjson.dumps(payload))


class CaptureSource:
    """Replays a capture file in publish order; a line that is not a capture record is a reject."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = self.path.open("rb")
        self._lines = CaptureLines(self.path.name)
        self._done = False
        self.line_no = 0
        self.bytes_read = 0

    def read_lines(self, n: int) -> tuple[int, list[bytes]]:
        """The next `n` lines (fewer at the end) and the number of the line before them."""
        first = self.line_no
        lines = list(islice(self._fh, n))
        self.line_no += len(lines)
        self.bytes_read += sum(map(len, lines))
        if not lines:
            self._done = True
        return first, lines

    def poll(self, max_messages: int, timeout_s: float = 0.0) -> list[RawMessage]:
        """The messages of the next `max_messages` lines (fewer where lines are broken or empty), so a replay's
        batches are the same whether it decodes here or in workers (ingest.pipeline.ahead)."""
        first, lines = self.read_lines(max_messages)
        return self._lines.messages(lines, first)

    def ack(self, messages: list[RawMessage]) -> None:
        pass

    def take_rejects(self) -> list[Reject]:
        r, self._lines.rejects = self._lines.rejects, []
        return r

    @property
    def exhausted(self) -> bool:
        return self._done

    def close(self) -> None:
        self._fh.close()


def _loads_or_none(text: bytes | None) -> object:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None

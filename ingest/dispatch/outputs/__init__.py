"""Where dispatch events go, each fed from the one outbox: the alerts file, a signed webhook, MQTT topics.

An output takes one outbox row at a time and says whether it was delivered; a `batched` output (the file) is also
told to `flush()` after a round, and its rows are marked delivered only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ingest.dispatch.store import OutboxRow


@dataclass
class Sent:
    ok: bool
    error: str = ""
    receiver_down: bool = False  # unreachable: pause the whole output instead of trying every row
    retry_after_s: float = 0.0


class Output(Protocol):
    name: str  # the outbox's sink name
    batched: bool
    ordered: bool  # rows strictly in outbox order (one stream), not per incident

    def send(self, row: OutboxRow) -> Sent: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...

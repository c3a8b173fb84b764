"""Raw messages as a source hands them over, and the rejects that go to dead letters or quarantine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INVALID = "invalid"  # never valid: dead letter
UNKNOWN_DEVICE = "unknown_device"  # valid but the registry does not know the device yet: quarantine


@dataclass(slots=True)
class RawMessage:
    topic: str
    payload: bytes
    token: Any = None  # the source's handle for acknowledging this message
    received_ns: int = 0
    parsed: Any = None  # the payload's JSON object when the source has already parsed it (a capture file)


@dataclass(slots=True)
class Reject:
    topic: str
    payload: bytes
    reason: str
    category: str = INVALID

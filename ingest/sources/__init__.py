"""Sources of raw messages: the MQTT broker (live, acked only after durability) and a capture file (replay).

A source hands over `RawMessage`s and `Reject`s (devices.messages); it knows nothing of decoding, storage,
detectors or dispatch.
"""

from __future__ import annotations

from typing import Protocol

from devices.messages import RawMessage, Reject


class Source(Protocol):
    def poll(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        """Up to max_messages, waiting at most timeout_s for the first one and for the batch to fill."""

    def ack(self, messages: list[RawMessage]) -> None:
        """The messages' readings are durable: the source may forget them."""

    def take_rejects(self) -> list[Reject]:
        """Input the source itself could not turn into messages (e.g. a broken capture line)."""

    @property
    def exhausted(self) -> bool:
        """True when no more messages will ever come (end of a capture file)."""

    def close(self) -> None: ...



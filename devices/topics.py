"""MQTT topic layout (docs/FORMATS.md): build and parse, with a configurable first level."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Channel(StrEnum):
    METER_READING = "meter/reading"
    METER_EVENT = "meter/event"
    PUMPROOM_TELEMETRY = "pumproom/telemetry"
    PUMPROOM_EVENT = "pumproom/event"


_BY_PARTS = {
    ("meter", "reading"): Channel.METER_READING,
    ("meter", "event"): Channel.METER_EVENT,
    ("pumproom", "telemetry"): Channel.PUMPROOM_TELEMETRY,
    ("pumproom", "event"): Channel.PUMPROOM_EVENT,
}


@dataclass(frozen=True, slots=True)
class Topic:
    district: str
    channel: Channel
    device_id: str


class TopicError(ValueError):
    pass


_WILDCARDS = ("+", "#")


class TopicLayout:
    """`{prefix}/{district}/meter/{meter_id}/reading` and friends."""

    def __init__(self, prefix: str = "water"):
        if not prefix or any(c in prefix for c in "+#") or prefix.startswith("$"):
            raise ValueError(f"topic prefix {prefix!r} must be non-empty and contain no wildcards")
        self.prefix = prefix.strip("/")
        self._depth = self.prefix.count("/") + 1

    # what the ingester subscribes to
    def subscriptions(self) -> list[str]:
        p = self.prefix
        return [f"{p}/+/meter/+/reading", f"{p}/+/meter/+/event",
                f"{p}/+/pumproom/+/telemetry", f"{p}/+/pumproom/+/event"]

    def meter_reading(self, district: str, meter_id: str) -> str:
        return f"{self.prefix}/{district}/meter/{meter_id}/reading"

    def meter_event(self, district: str, meter_id: str) -> str:
        return f"{self.prefix}/{district}/meter/{meter_id}/event"

    def pumproom_telemetry(self, district: str, room_id: str) -> str:
        return f"{self.prefix}/{district}/pumproom/{room_id}/telemetry"

    def pumproom_event(self, district: str, room_id: str) -> str:
        return f"{self.prefix}/{district}/pumproom/{room_id}/event"

    def alerts(self, kind: str) -> str:
        return f"{self.prefix}/alerts/{kind}"

    def alert_ack(self) -> str:
        return f"{self.prefix}/alerts/ack"

    def build(self, topic: Topic) -> str:
        kind, leaf = topic.channel.value.split("/")
        return f"{self.prefix}/{topic.district}/{kind}/{topic.device_id}/{leaf}"

    def parse(self, topic: str) -> Topic:
        parts = topic.split("/")
        d = self._depth
        if len(parts) != d + 4 or "/".join(parts[:d]) != self.prefix:
            raise TopicError(f"topic {topic!r} is not {self.prefix}/<district>/<meter|pumproom>/<id>/<leaf>")
        district, kind, device_id, leaf = parts[d:]
        channel = _BY_PARTS.get((kind, leaf))
        if channel is None or not district or not device_id:
            raise TopicError(f"topic {topic!r} is not a known device channel")
        if any(c in district or c in device_id for c in _WILDCARDS):
            # no device is named "+": a topic holding a wildcard is a forged or broken message, never a new device
            raise TopicError(f"topic {topic!r} holds an MQTT wildcard (+ or #) in its district or device id")
        return Topic(district, channel, device_id)

"""The JSON body of an alert event (the alerts file, the webhook, the MQTT alert topics)."""

from __future__ import annotations

import orjson

from devices.alerts import AlertEvent

CONTENT_TYPE = "application/json"


def render(event: AlertEvent) -> bytes:
    return orjson.dumps(event.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)

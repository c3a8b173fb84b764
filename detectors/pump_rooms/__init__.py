"""Pump rooms beyond the six-monthly clean: the tanks' water against GB 5749-2022 (`water_quality`), their sensors
(`sensor_fault`) and the door (`pump_room_intrusion`). See README.md beside this file."""

from .intrusion import IntrusionDetector
from .quality import WaterQualityDetector

__all__ = ["IntrusionDetector", "WaterQualityDetector"]

"""Bypass: a building's explicit water balance, day by day; a household is named only when its own metered use fell
and the building's unmetered use rose by as much, over the same days (README.md)."""

from .detector import BypassDetector
from .params import BypassParams

__all__ = ["BypassDetector", "BypassParams"]

"""Test support for detectors (no I/O): the generic `check_detector` every registered detector passes, and a small
hand-built town with injectable incidents and look-alikes, fed the way the pipeline feeds the detectors."""

from .checks import CHECKS, busy_town, check_detector
from .town import DAY, HOUR, T0, Town, run

__all__ = ["CHECKS", "DAY", "HOUR", "T0", "Town", "busy_town", "check_detector", "run"]

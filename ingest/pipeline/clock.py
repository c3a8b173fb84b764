"""Event time: the watermark is the newest reading seen; live, the wall clock moves it on once the backlog is
drained, so that silence is noticed even when nothing arrives."""

from __future__ import annotations

import time

from devices.time import NS


class Clock:
    def __init__(self, live: bool, max_clock_skew_s: float = 300.0, watermark_ns: int | None = None):
        self.live = live
        self.max_clock_skew_ns = int(max_clock_skew_s * NS)
        self.watermark_ns = watermark_ns

    def saw(self, top_ns: int | None) -> None:
        """A batch's newest reading; live, one device with its clock in the future must not move everyone's
        clock (and make them look silent)."""
        if top_ns is None:
            return
        if self.live:
            top_ns = min(top_ns, time.time_ns() + self.max_clock_skew_ns)
        if self.watermark_ns is None or top_ns > self.watermark_ns:
            self.watermark_ns = top_ns

    def now(self, caught_up: bool) -> int | None:
        """The time to tick the detectors at: the newest reading while a backlog drains, the wall clock once
        caught up (never behind the watermark)."""
        now = time.time_ns() if caught_up and self.live else self.watermark_ns
        if now is not None and self.watermark_ns is not None:
            now = max(now, self.watermark_ns)
        return now

    def lag_s(self) -> float | None:
        if self.watermark_ns is None or not self.live:
            return None
        return max(0.0, (time.time_ns() - self.watermark_ns) / NS)

"""Pump-room telemetry of one batch grouped by device (tank or room) and sorted by time, with the vectorized
sequence tools the pump-room detectors share: run lengths, latches and forward fills that carry across batches.
Masks and values may be one column (rows,) or several side by side (rows, k): one pass serves every parameter."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from devices.batch import NS

from ..base import first_rows, row_median

_BIG = np.int64(1) << 40  # group offset: keeps an accumulate from running across devices


def _col(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A per-row array shaped to broadcast against `like` ((rows,) or (rows, k))."""
    return a[:, None] if like.ndim == 2 and a.ndim == 1 else a


def _at(values: np.ndarray, j: np.ndarray) -> np.ndarray:
    """values[j] row-wise: per column when both are (rows, k)."""
    j = np.maximum(j, 0)
    return np.take_along_axis(values, j, axis=0) if values.ndim == 2 else values[j]


class Rows:
    """Rows of one device table sorted by (device, ts). Rows not newer than the device's previous row (a duplicate
    delivery, or late data) are dropped: `order` indexes the kept rows of the original table."""

    def __init__(self, device: np.ndarray, ts_ns: np.ndarray, last_ts: np.ndarray):
        dev = device.astype(np.int64)
        if dev.size and int(dev.max()) < 65536 and int(dev.min()) >= 0:
            o = np.argsort(dev.astype(np.uint16), kind="stable")
            d, t = dev[o], ts_ns[o]
            if np.any((t[1:] < t[:-1]) & (d[1:] == d[:-1])):
                o = np.lexsort((ts_ns, dev))
                d, t = dev[o], ts_ns[o]
        else:
            o = np.lexsort((ts_ns, dev))
            d, t = dev[o], ts_ns[o]
        keep = t > last_ts[d]
        keep[1:] &= (t[1:] != t[:-1]) | (d[1:] != d[:-1])
        if not keep.all():
            o, d, t = o[keep], d[keep], t[keep]
        self.order, self.dev, self.ts = o, d, t
        self.n = n = d.size
        self.first = first = first_rows(d)
        self.starts = np.flatnonzero(first)
        self.ends = np.append(self.starts[1:], n) - 1 if n else self.starts
        self.devices = d[self.starts]
        self.counts = self.ends - self.starts + 1
        self.last_before = last_ts[self.devices]  # each device's last row before this batch (0: never heard)

    def subset(self, sel: np.ndarray) -> Rows:
        """The rows of the devices `sel` picks (per device, in `devices` order), no sorting again."""
        keep = sel[self.gid]
        out = Rows.__new__(Rows)
        out.order, out.dev, out.ts = self.order[keep], self.dev[keep], self.ts[keep]
        out.n = int(out.dev.size)
        out.first = self.first[keep]
        out.starts = np.flatnonzero(out.first)
        out.counts = self.counts[sel]
        out.ends = out.starts + out.counts - 1
        out.devices = self.devices[sel]
        out.last_before = self.last_before[sel]
        return out

    @cached_property
    def gid(self) -> np.ndarray:
        """Each row's group (device) number in this batch."""
        return np.repeat(np.arange(self.starts.size), self.counts)

    @cached_property
    def idx(self) -> np.ndarray:
        return np.arange(self.n)

    @cached_property
    def _off(self) -> np.ndarray:
        return self.gid * _BIG

    @cached_property
    def _lead(self) -> np.ndarray:
        """Rows so far of the device in this batch."""
        return self.idx - self.starts[self.gid] + 1

    def take(self, column: np.ndarray) -> np.ndarray:
        """A column of the original table in this order."""
        return column[self.order]

    def last_true(self, mask: np.ndarray) -> np.ndarray:
        """Row of the last row at or before each row (same device) where `mask` holds; -1 where none."""
        off = _col(self._off, mask)
        key = off + np.where(mask, _col(self.idx, mask) + 1, 0)
        return np.maximum.accumulate(key, axis=0) - off - 1

    def prev(self, values: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """Each row's previous value of the same device; the carried value (per device) on a device's first row."""
        p = np.empty_like(values)
        if self.n:
            p[1:] = values[:-1]
            p[self.starts] = carry[self.devices]
        return p

    def ffill(self, mask: np.ndarray, values: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """The value at the last row where `mask` held (same device), the carried value before any."""
        j = self.last_true(mask)
        v = _at(values, j) if values.ndim == j.ndim else values[np.maximum(j, 0)]
        return np.where(j >= 0, v, carry[self.dev])

    def runs(self, flag: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """Length of the run of consecutive flagged rows ending at each row (0 where not flagged); a run at a
        device's first rows continues the carried one."""
        j = self.last_true(~flag)
        lead = _col(self._lead, flag) + carry[self.dev].astype(np.int64)
        return np.where(flag, np.where(j >= 0, _col(self.idx, flag) - j, lead), 0)

    def run_start(self, flag: np.ndarray, carry_start: np.ndarray, carry_run: np.ndarray) -> np.ndarray:
        """Time of the first row of the flagged run each row is in (meaningful where flagged)."""
        j = self.last_true(~flag)
        first_ts = _col(self.ts[self.starts[self.gid]], flag)
        carried = np.where(carry_run[self.dev] > 0, carry_start[self.dev], first_ts)
        return np.where(j >= 0, self.ts[np.minimum(j + 1, self.n - 1)], carried)

    def latch(self, on: np.ndarray, off: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """A switch per device: on at rows where `on`, off where `off` (never both), else as before."""
        j = self.last_true(on | off)
        return np.where(j >= 0, _at(on, j), carry[self.dev].astype(bool))

    def counter(self, flag: np.ndarray, carry: np.ndarray) -> np.ndarray:
        """A running count of flagged rows per device, continuing the carried count."""
        cs = np.cumsum(flag, dtype=np.int64)
        base = cs[self.starts] - flag[self.starts]
        return carry[self.dev].astype(np.int64) + cs - base[self.gid]

    def gaps(self, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each device's last gaps between readings (seconds, oldest first, NaN for none), before this batch and
        after it, in `devices` order; `ring` holds them from earlier batches (0 for none)."""
        width = ring.shape[1]
        gap = np.empty(self.n, dtype=np.float64)
        gap[1:] = (self.ts[1:] - self.ts[:-1]) / NS
        gap[self.starts] = np.where(self.last_before > 0, (self.ts[self.starts] - self.last_before) / NS, np.nan)
        old = ring[self.devices].astype(np.float64)
        old[old <= 0] = np.nan
        r = np.arange(width)
        c = np.minimum(self.counts, width)[:, None]
        pos = np.maximum(self.ends[:, None] - (width - 1 - r), 0)
        new = np.where(r < width - c, np.take_along_axis(old, np.minimum(r + c, width - 1), axis=1), gap[pos])
        return old, new

    @staticmethod
    def interval(old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Each device's reporting interval (seconds) for this batch: the median of its last gaps kept from earlier
        batches (those of this batch when it has none yet), so a lost message or an extra one changes little; NaN
        while no gap is known."""
        return np.where(np.isnan(old).all(axis=1), row_median(new, lower=True), row_median(old, lower=True))


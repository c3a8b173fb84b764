"""The registry while the service runs: reloaded on SIGHUP, or when its files have changed and then stayed the same
for one check interval (a file being copied in is not read half-written). A reload that fails to load, or that
would drop more devices than an operator plausibly meant, leaves the running registry in place and says why."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from devices.registry import REGISTRY_FILES, Registry, RegistryError

log = logging.getLogger("cistern.registry")

_KINDS = (("meters", "meters"), ("buildings", "buildings"), ("rooms", "pump rooms"), ("tanks", "tanks"))


def _stamp(folder: Path) -> tuple:
    """What tells a changed file: inode, size and modification time of each registry file."""
    out = []
    for name in REGISTRY_FILES:
        try:
            st = os.stat(folder / name)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _ids(reg: Registry) -> dict[str, set[str]]:
    return {label: set(getattr(reg, attr).ids.tolist()) for attr, label in _KINDS}


def describe_change(old: Registry, new: Registry) -> str:
    """'meters 1200 (+3 -1), buildings 60, ...': counts now, with what came and went by id."""
    a, b = _ids(old), _ids(new)
    return ", ".join(f"{k} {len(b[k])}" + (f" (+{len(b[k] - a[k])} -{len(a[k] - b[k])})" if a[k] != b[k] else "")
                     for k in b)


def removed_share(old: Registry, new: Registry) -> tuple[float, str]:
    """The largest share of one kind of device that `new` no longer holds, and which kind."""
    a, b = _ids(old), _ids(new)
    return max(((len(a[k] - b[k]) / len(a[k]), k) for k in a if a[k]), default=(0.0, ""))


class RegistryWatch:
    """Polled by the pipeline between batches; `request()` (the SIGHUP handler) asks for a reload at once."""

    def __init__(self, folder: Path, check_interval_s: float, max_removed_share: float):
        self.folder = Path(folder)
        self.check_interval_s = check_interval_s
        self.max_removed_share = max_removed_share
        self._loaded = _stamp(self.folder)
        self._seen = self._loaded
        self._next_check = time.monotonic() + check_interval_s
        self._requested = False

    def request(self) -> None:
        self._requested = True  # only a flag: called from a signal handler

    def poll(self, current: Registry) -> Registry | None:
        """A new registry to switch to, or None (nothing changed, not settled yet, or refused: logged)."""
        requested = self._requested
        if not requested:
            if self.check_interval_s <= 0 or time.monotonic() < self._next_check:
                return None
            self._next_check = time.monotonic() + self.check_interval_s
            stamp, seen = _stamp(self.folder), self._seen
            self._seen = stamp
            if stamp == self._loaded or stamp != seen:
                return None  # unchanged, or changed since the last look: wait until it stays the same
        self._requested = False
        stamp = _stamp(self.folder)
        self._loaded = self._seen = stamp
        why = "SIGHUP" if requested else "its files changed"
        try:
            new = Registry.load(self.folder)
        except RegistryError as e:
            log.error("registry not reloaded (%s), the running one stays in use: %s", why, e)
            return None
        share, kind = removed_share(current, new)
        if share > self.max_removed_share and not requested:
            log.error("registry not reloaded (%s): it would remove %.0f %% of the %s (more than "
                      "CISTERN_REGISTRY_RELOAD_MAX_REMOVED_SHARE %.0f %%); if that is meant, send SIGHUP "
                      "(systemctl reload cistern)", why, 100 * share, kind, 100 * self.max_removed_share)
            return None
        log.info("registry reloaded (%s): %s", why, describe_change(current, new))
        return new

"""Detector state on disk: one `checkpoint.npz` under CISTERN_STATE_DIR, written atomically (temp file, fsync,
rename), holding every detector's arrays by name and the device ids they are indexed by. The file carries its
format version: an older one is migrated on load, a newer one is refused (docs/UPGRADING.md)."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from ingest import cistern_version

log = logging.getLogger("cistern.pipeline")

FILE_NAME = "checkpoint.npz"
FORMAT = "cistern.checkpoint"
# 1: the first release (meta without a version, a registry "fingerprint" of device counts).
# 2: state matched to the registry by device id alone; the format and the writing Cistern named in the file.
VERSION = 2


class Stateful(Protocol):
    def state(self) -> dict[str, np.ndarray]: ...
    def restore(self, blob: dict[str, np.ndarray]) -> Any: ...


class CheckpointError(Exception):
    """A checkpoint this Cistern must not use or overwrite (written by a newer one); the operator decides."""


def _v1_to_v2(meta: dict[str, Any]) -> None:
    # The fingerprint threw state away whenever device counts changed; the state carries its device ids, by which
    # DetectorSet.restore maps it onto any registry.
    meta.pop("registry_fingerprint", None)


# version n -> the step that makes its meta version n + 1 (arrays are named in meta, so steps may rename them)
MIGRATIONS: dict[int, Callable[[dict[str, Any]], None]] = {1: _v1_to_v2}


class Checkpoint:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / FILE_NAME

    def load(self, detectors: Stateful) -> int | None:
        """Restore the detectors; returns the saved watermark (None when there was nothing to resume).

        An unreadable file is moved aside (never overwritten) and the detectors start fresh; a file of a newer
        format raises CheckpointError."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = orjson.loads(bytes(z["__meta__"]))
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
        except (OSError, ValueError, KeyError, orjson.JSONDecodeError) as e:
            aside = self.path.with_name(f"{FILE_NAME}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            log.error("checkpoint %s unreadable (%s): kept as %s; detectors start fresh", self.path, e, aside.name)
            return None
        found = migrate(meta, self.path)
        changed = detectors.restore(_unflatten(meta["detectors"], arrays))
        log.info("resumed detector state from %s%s", self.path,
                 f" (migrated from format version {found} to {VERSION})" if found != VERSION else "")
        for axis, (kept, new, gone) in (changed or {}).items():
            log.info("registry changed since the checkpoint: %d %ss carried over by id, %d new (fresh), %d no longer "
                     "registered (forgotten)", kept, axis, new, gone)
        return meta.get("watermark_ns")

    def save(self, detectors: Stateful, watermark_ns: int | None) -> None:
        arrays: dict[str, np.ndarray] = {}
        tree = _flatten(detectors.state(), arrays)
        meta = {"format": FORMAT, "version": VERSION, "saved_by": f"cistern {cistern_version()}",
                "watermark_ns": watermark_ns, "detectors": tree, "saved_at": time.time()}
        arrays["__meta__"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
        tmp = self.path.with_suffix(".tmp.npz")
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class StateLock:
    """One process at a time carries a state folder forward (`cistern run`, `cistern replay --resume`): two would
    overwrite each other's checkpoint. The lock is the OS's (flock), so it goes with a process that dies."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "lock"
        self._fh: Any = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise CheckpointError(f"state folder {self.path.parent} (CISTERN_STATE_DIR) is in use by another Cistern "
                                  f"(pid {holder}); stop it first, or give this one its own folder") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None


def migrate(meta: dict[str, Any], path: Path) -> int:
    """Bring a checkpoint's meta to VERSION in place; returns the version it had."""
    found = int(meta.get("version", 1))
    if found > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer Cistern ({meta.get('saved_by', '?')}, checkpoint format {found}; this "
            f"Cistern {cistern_version()} reads formats up to {VERSION}). Run that Cistern again, or move the file "
            f"away to start the detectors fresh (docs/UPGRADING.md)")
    for v in range(found, VERSION):
        MIGRATIONS[v](meta)
    meta["version"] = VERSION
    return found


def _flatten(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Detector state → JSON tree with numpy arrays moved out into `arrays` (saved with np.savez)."""
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        if obj.dtype == object:
            return {"__json__": obj.tolist()}
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _flatten(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_flatten(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unflatten(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if "__array__" in tree and len(tree) == 1:
            return arrays[tree["__array__"]]
        if "__json__" in tree and len(tree) == 1:
            return np.array(tree["__json__"], dtype=object)
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree

"""Detector state on disk: one `checkpoint.npz` under CISTERN_STATE_DIR, written atomically (temp file, fsync,
rename), holding every detector's arrays by name and the device ids they are indexed by."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from devices.registry import Registry

log = logging.getLogger("cistern.pipeline")

FILE_NAME = "checkpoint.npz"


class Stateful(Protocol):
    def state(self) -> dict[str, np.ndarray]: ...
    def restore(self, blob: dict[str, np.ndarray]) -> None: ...


class Checkpoint:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / FILE_NAME

    def load(self, detectors: Stateful, registry: Registry) -> int | None:
        """Restore the detectors; returns the saved watermark (None when there was nothing to resume)."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = orjson.loads(bytes(z["__meta__"]))
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
        except (OSError, ValueError, KeyError) as e:
            log.warning("checkpoint %s unreadable (%s); starting detectors fresh", self.path, e)
            return None
        if meta.get("registry_fingerprint") != _fingerprint(registry):
            log.warning("registry changed since the checkpoint; starting detectors fresh")
            return None
        detectors.restore(_unflatten(meta["detectors"], arrays))
        log.info("resumed detector state from %s", self.path)
        return meta.get("watermark_ns")

    def save(self, detectors: Stateful, registry: Registry, watermark_ns: int | None) -> None:
        arrays: dict[str, np.ndarray] = {}
        tree = _flatten(detectors.state(), arrays)
        meta = {"watermark_ns": watermark_ns, "detectors": tree, "registry_fingerprint": _fingerprint(registry),
                "saved_at": time.time()}
        arrays["__meta__"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
        tmp = self.path.with_suffix(".tmp.npz")
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def _fingerprint(r: Registry) -> list[int]:
    return [len(r.meters), len(r.buildings), len(r.rooms), len(r.tanks)]


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

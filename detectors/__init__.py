"""Vectorized, stateful detectors over columnar batches; no I/O.

    ds = DetectorSet(registry, params={"signal": {...}}, timezone="Asia/Shanghai")
    events = ds.update(batch) + ds.tick(now_ns)
    blob = ds.state()      # dict of numpy arrays (np.savez-able, no pickles)
    ds.restore(blob)

Each detector is a module (or a package with its README) registered in DETECTORS; `detectors.testing` holds the
generic checks every registered detector passes (`check_detector`) and the small test town they run on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import ValidationError

from devices.alerts import AlertEvent
from devices.batch import Batch
from devices.registry import Registry

from .base import Board, Detector, LocalCalendar, MeterView, Params, first_rows
from .bypass import BypassDetector
from .disinfection import DisinfectionDetector
from .pump_rooms import IntrusionDetector, WaterQualityDetector
from .reverse_flow import ReverseFlowDetector
from .signal import SignalDetector

# The explicit registry: detector name -> class. Parameters are keyed by these names.
DETECTORS: dict[str, type[Detector]] = {
    SignalDetector.name: SignalDetector,
    ReverseFlowDetector.name: ReverseFlowDetector,
    # bypass: the building's water balance; a household's drop matched by a rise of unmetered use (detectors/bypass/)
    BypassDetector.name: BypassDetector,
    DisinfectionDetector.name: DisinfectionDetector,
    # pump rooms: the door first, so a water-quality incident raised in the same batch (a replay's batch spans
    # hours) finds the room's intrusion on the board and names it; the intrusion names the water-quality incident
    # while its door is still open
    IntrusionDetector.name: IntrusionDetector,
    WaterQualityDetector.name: WaterQualityDetector,
}

__all__ = ["DETECTORS", "Board", "Detector", "DetectorSet", "LocalCalendar", "MeterView", "Params"]

_ID_AXES = ("meter", "cell", "building", "tank", "room")


def _ids(registry: Registry, axis: str) -> np.ndarray:
    src = {"meter": registry.meters.ids, "cell": registry.cell_ids, "building": registry.buildings.ids,
           "tank": registry.tanks.ids, "room": registry.rooms.ids}[axis]
    return np.asarray(src, dtype=str)


class DetectorSet:
    """All registered detectors (or the named subset), fed together: one sorted view per batch."""

    def __init__(self, registry: Registry, params: dict[str, dict] | None = None, timezone: str = "Asia/Shanghai",
                 only: Iterable[str] | None = None, tick_every_s: float = 3600):
        """`tick_every_s`: a batch whose readings span more event time than this (a replay chunk) is fed in
        slices, in row order (= publish order), with a clock tick after each, so that a silence shorter than a
        chunk is still seen while it lasts. 0 feeds every batch whole."""
        params = dict(params or {})
        asked = list(only) if only is not None else list(DETECTORS)
        unknown = sorted((set(params) | set(asked)) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown detector {unknown[0]!r}; known: {', '.join(DETECTORS)}")
        self.registry = registry
        self.params = params
        self.tick_every_s = tick_every_s
        self.calendar = LocalCalendar(timezone)
        self.board = Board(registry)
        self.detectors: dict[str, Detector] = {}
        # in the registry's order whatever the order asked: a detector reads the board as those before it left it
        for n in [n for n in DETECTORS if n in asked]:
            try:
                self.detectors[n] = DETECTORS[n](registry, params.get(n), self.calendar)
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                where = ".".join(str(x) for x in err["loc"])
                raise ValueError(f"detector {n!r}: setting {where!r}: {err['msg']}") from None
            self.detectors[n].board = self.board
        self.watermark = 0
        if tick_every_s < 0:
            raise ValueError("tick_every_s must be 0 or positive")
        self.tick_every_ns = int(tick_every_s * 1e9)

    def update(self, batch: Batch) -> list[AlertEvent]:
        """Fold a batch in; returns the events of any clock ticks taken inside it (see tick_every_s)."""
        top = batch.max_ts_ns()
        slices = self._slices(batch)
        view = MeterView(batch.meters)
        out: list[AlertEvent] = []
        for d in self.detectors.values():
            if slices is None or not d.ticks_inside_batches:
                said = d.update(batch, view)
            else:
                run, bounds = slices
                said = d.update_sliced(batch, view, run[bounds[1:] - 1], bounds)
            self._heard(said, out)
        if top is not None:
            self.watermark = max(self.watermark, top)
        return out

    def _slices(self, batch: Batch) -> tuple[np.ndarray, np.ndarray] | None:
        m = batch.meters
        if not self.tick_every_ns or len(m) < 2:
            return None
        run = np.maximum.accumulate(np.maximum(m.ts_ns, self.watermark))
        te = self.tick_every_ns
        s0, s1 = int(run[0]) // te, int(run[-1]) // te
        if s1 - s0 <= len(run):
            # run only climbs: a slice starts at the first row reaching each whole step in between
            at = np.searchsorted(run, np.arange(s0 + 1, s1 + 1, dtype=np.int64) * te, side="left")
            cuts = at[first_rows(at)]  # a jump over several steps cuts once
        else:
            step = run // te
            cuts = np.flatnonzero(step[1:] != step[:-1]) + 1
        # Rows in publish order make the watermark climb through the batch; rows shuffled by someone upstream make
        # it reach the top within the first few rows, and then slices would tick on times the batch has not
        # covered yet. Late data (a cell's backlog after an outage) leaves the climb flat for a while, which is
        # fine: what tells shuffling apart is how early the climb gets near the top.
        near_top = np.searchsorted(run, run[0] + 0.9 * (run[-1] - run[0]))
        steady = near_top >= 0.1 * len(run)
        if cuts.size == 0 or not steady:
            return None
        return run, np.concatenate(([0], cuts, [len(run)]))

    def with_registry(self, registry: Registry) -> DetectorSet:
        """The same detectors on another registry (a reload), their state carried over by device id: devices the
        new registry adds start fresh, those it no longer holds are forgotten."""
        moved = DetectorSet(registry, self.params, self.calendar.name, list(self.detectors), self.tick_every_s)
        moved.restore(self.state())
        return moved

    def tick(self, now_ns: int) -> list[AlertEvent]:
        now = max(int(now_ns), self.watermark)
        self.watermark = now
        out: list[AlertEvent] = []
        for d in self.detectors.values():
            self._heard(d.tick(now), out)
        return out

    def _heard(self, said: Sequence[AlertEvent] | None, out: list[AlertEvent]) -> None:
        if said:
            self.board.note(said)
            out += said

    def state(self) -> dict[str, np.ndarray]:
        """Every detector's arrays as `name.field`, plus the device ids they are indexed by."""
        blob: dict[str, np.ndarray] = {"_watermark": np.array([self.watermark], dtype=np.int64),
                                       "_timezone": np.array(self.calendar.name)}
        for axis in _ID_AXES:
            blob[f"_ids.{axis}"] = _ids(self.registry, axis)
        for n, d in self.detectors.items():
            for k, v in d.state().items():
                blob[f"{n}.{k}"] = v
        for kind, v in self.board.state().items():
            blob[f"_board.{kind}"] = v
        return blob

    def restore(self, blob: dict[str, np.ndarray]) -> dict[str, tuple[int, int, int]]:
        """Resume from state(); devices are matched by id, so a registry that grew, shrank or was reordered is fine.
        Returns, per axis whose devices changed: (devices whose state carried over, new devices starting fresh,
        saved devices the registry no longer holds)."""
        remap: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        changed: dict[str, tuple[int, int, int]] = {}
        for axis in _ID_AXES:
            key = f"_ids.{axis}"
            if key not in blob:
                continue
            old = np.asarray(blob[key], dtype=str)
            new = _ids(self.registry, axis)
            if old.shape == new.shape and np.array_equal(old, new):
                continue
            pos = {s: i for i, s in enumerate(old.tolist())}
            pairs = [(i, pos[s]) for i, s in enumerate(new.tolist()) if s in pos]
            new_rows = np.array([a for a, _ in pairs], dtype=np.int64)
            old_rows = np.array([b for _, b in pairs], dtype=np.int64)
            remap[axis] = (new_rows, old_rows)
            changed[axis] = (len(pairs), len(new) - len(pairs), len(old) - len(pairs))
        for n, d in self.detectors.items():
            prefix = f"{n}."
            d.restore({k[len(prefix):]: v for k, v in blob.items() if k.startswith(prefix)}, remap or None)
        self.board.restore({k.removeprefix("_board."): v for k, v in blob.items() if k.startswith("_board.")},
                           remap or None)
        if "_watermark" in blob:
            self.watermark = int(np.asarray(blob["_watermark"])[0])
        return changed

    def state_bytes(self) -> dict[str, int]:
        return {n: d.state_bytes() for n, d in self.detectors.items()}

"""The pipeline: source → decode → sink (durable) → ack → detectors → dispatch, on an event-time clock, with
detector checkpoints. `cistern run`, `cistern replay` and the demo drive the same `Pipeline`."""

from ingest.pipeline.loop import Pipeline, Stats

__all__ = ["Pipeline", "Stats"]

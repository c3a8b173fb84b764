"""Vectorized, stateful detectors over columnar batches; no I/O."""

"""Cistern's shared vocabulary: registry, payload schemas, topic layout, columnar batches, alert events."""

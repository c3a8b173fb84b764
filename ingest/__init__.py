"""Cistern ingest: sources, decode, sinks, pipeline, alert outputs and the command line."""

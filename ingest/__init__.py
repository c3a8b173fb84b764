"""Cistern's service: sources → pipeline (decode, clock, checkpoints) → sinks, and dispatch of alerts; app.py wires
them (the one composition root), cli.py is the `cistern` command, config.py the settings; tools/ are the commands
around the service (demo, report, evaluate, reingest, ack, the servers they start), never imported by it."""

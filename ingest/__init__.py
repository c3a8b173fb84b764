"""Cistern's service: sources → pipeline (decode, clock, checkpoints) → sinks, and dispatch of alerts; app.py wires
them (the one composition root), cli.py is the `cistern` command, config.py the settings; tools/ are the commands
around the service (demo, report, evaluate, reingest, ack, the servers they start), never imported by it."""

from importlib.metadata import PackageNotFoundError, version


def cistern_version() -> str:
    """The installed distribution's version (pyproject.toml), as `cistern --version` prints it."""
    try:
        return version("cistern")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"

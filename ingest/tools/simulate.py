"""`cistern simulate`: the simulator's command (kept here so that the service never imports the simulator)."""

from simulator.cli import add_arguments, main

__all__ = ["add_arguments", "main"]

"""The ``callback-ari`` command line; ``main`` is the console script's entry point."""

from callback_ari.cli.app import main

__all__ = ["main"]

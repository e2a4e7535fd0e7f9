"""Command-line entry points."""

from bastion.cli.main import main

__all__ = ["main"]

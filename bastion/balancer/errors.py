"""The balancer's exceptions, kept out of the modules that may be compiled (see setup.py)."""

from __future__ import annotations


class Overloaded(Exception):
    """A server's connection or request limit is reached and its wait queue is full."""

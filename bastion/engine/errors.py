"""The engine's own exceptions, kept out of the modules that may be compiled.

Exceptions must stay ordinary Python classes (mypyc cannot make a native subclass of a
built-in exception), so they live here and the compiled modules import them.
"""

from __future__ import annotations


class ClientDisconnected(ConnectionError):
    """The client went away before the request body was complete."""


class ResponseAlreadyStarted(RuntimeError):
    """A second response head was attempted for the same request."""

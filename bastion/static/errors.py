"""The static file server's exception, kept out of the modules that may be compiled."""

from __future__ import annotations


class Refused(Exception):
    """The path names nothing we may serve; ``status`` is 403 or 404."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

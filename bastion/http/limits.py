"""Bounds on what one request may make the server hold in memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request size limits enforced while parsing.

    The defaults follow what large deployments settle on: nginx allows an 8 KiB request line
    and header line, Node.js 16 KiB of headers in total; we allow a little more room for the
    cookie-heavy requests of real browsers while still refusing abuse early.
    """

    max_request_line: int = 8190
    max_header_count: int = 100
    max_header_bytes: int = 65536
    max_body_bytes: int = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_count", "max_header_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")

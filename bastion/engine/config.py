"""Every knob of the engine, validated once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bastion.http.limits import Limits


def default_threads() -> int:
    """Blocking handlers mostly wait on I/O, so a few threads per core pay off; cap the count."""
    return min(32, (os.cpu_count() or 1) * 4)


@dataclass(slots=True)
class ServerConfig:
    """Limits, deadlines and sizes for one server; the CLI and the Python API both fill this.

    Deadlines are in seconds. ``header_timeout`` bounds the whole request head from its first
    byte (or from the connection's start), never reset by trickled bytes: that is what stops
    slowloris. ``body_timeout`` bounds silence while a body is being received,
    ``keepalive_timeout`` an idle connection between requests, ``write_timeout`` a client that
    stops reading our response.
    """

    limits: Limits = field(default_factory=Limits)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    write_timeout: float = 30.0
    graceful_timeout: float = 30.0
    max_connections: int = 10_000
    max_pipelined: int = 32
    threads: int = field(default_factory=default_threads)
    queue_size: int = 256
    backlog: int = 2048
    server_header: bool = True
    server_name: str = "bastion"

    def __post_init__(self) -> None:
        for name in (
            "header_timeout",
            "body_timeout",
            "keepalive_timeout",
            "write_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.graceful_timeout < 0:
            raise ValueError("graceful_timeout must not be negative")
        for name in ("max_connections", "max_pipelined", "threads", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.queue_size < 0:
            raise ValueError("queue_size must not be negative")

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: fine enough that none fires much late."""
        shortest = min(
            self.header_timeout, self.body_timeout, self.keepalive_timeout, self.write_timeout
        )
        return max(0.05, min(1.0, shortest / 4))

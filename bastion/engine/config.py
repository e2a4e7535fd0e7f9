"""Every knob of the engine, validated once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bastion.http.limits import Limits


def default_threads() -> int:
    """Blocking handlers mostly wait on I/O, so a few threads per core pay off; cap the count."""
    return min(32, (os.cpu_count() or 1) * 4)


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(slots=True)
class ServerConfig:
    """Limits, deadlines and sizes for one server; the CLI and the Python API both fill this.

    Deadlines are in seconds. ``header_timeout`` bounds the whole request head from its first
    byte (or from the connection's start), never reset by trickled bytes: that is what stops
    slowloris; it also bounds a TLS handshake. ``body_timeout`` bounds silence while a body is
    being received, ``keepalive_timeout`` an idle connection between requests,
    ``write_timeout`` a client that stops reading our response.

    ``proxy_headers`` trusts ``Forwarded``/``X-Forwarded-*`` from peers in
    ``forwarded_allow_ips`` (addresses or CIDR networks, ``unix`` for Unix-socket peers, ``*``
    for any).

    ``access_log``, ``access_log_format`` and ``access_log_file`` are settings for whoever
    builds the server's observers (``bastion run`` and its workers, with
    ``bastion.observe.accesslog.access_log_observers``): the engine only calls the request
    observers it is given (``Server(observers=...)``) and never reads them. The format is a
    name (``common``, ``combined``, ``json``, ``http.server``) or an Apache-style format
    string, checked where it is built; the file is a path, ``-`` for standard output, or None
    for the ``bastion.access`` logger.
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
    proxy_headers: bool = False
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    access_log: bool = False
    access_log_format: str = "common"
    access_log_file: str | None = None

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
        # Imported here: that module reads this one, and the check is start-up only.
        from bastion.engine.proxy import TrustedPeers

        self.forwarded_allow_ips = tuple(self.forwarded_allow_ips)
        try:
            TrustedPeers(self.forwarded_allow_ips)
        except ValueError as exc:
            raise ValueError(f"forwarded_allow_ips: {exc}") from None

    @property
    def blocking_read_timeout(self) -> float:
        """How long a blocking handler's read of the body waits for the client, at most.

        The connection itself enforces ``body_timeout`` (a 408, then close) and wakes a
        waiting reader with that error; the reader's own deadline is only a backstop, a
        little later, so that a stalled upload is answered 408 and not by the handler.
        """
        return self.body_timeout + self.sweep_interval + 1.0

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: fine enough that none fires much late."""
        shortest = min(
            self.header_timeout, self.body_timeout, self.keepalive_timeout, self.write_timeout
        )
        return max(0.05, min(1.0, shortest / 4))


@dataclass(slots=True)
class WorkerConfig:
    """How the supervisor runs worker processes (``bastion run``; the Python API serves in-process).

    ``max_requests`` recycles a worker after that many requests plus up to
    ``max_requests_jitter`` more (so workers do not all restart at once); 0 never recycles.
    ``worker_timeout`` is how long a worker may miss its heartbeat (its event loop is blocked,
    or it hangs while starting) before it is killed and replaced. ``reuse_port`` gives each
    worker its own ``SO_REUSEPORT`` socket per TCP address where the kernel balances those
    (Linux); elsewhere, and for Unix or inherited sockets, workers share one socket.
    """

    workers: int = 1
    max_requests: int = 0
    max_requests_jitter: int = 0
    worker_timeout: float = 30.0
    graceful_timeout: float = 30.0
    reuse_port: bool = True
    reload: bool = False
    reload_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers!r}")
        if self.max_requests < 0 or self.max_requests_jitter < 0:
            raise ValueError("max_requests and max_requests_jitter must not be negative")
        if self.worker_timeout <= 0:
            raise ValueError(f"worker_timeout must be positive, got {self.worker_timeout!r}")
        if self.graceful_timeout < 0:
            raise ValueError("graceful_timeout must not be negative")
        if self.reload and self.workers != 1:
            raise ValueError("reload runs one worker: it cannot be combined with workers > 1")

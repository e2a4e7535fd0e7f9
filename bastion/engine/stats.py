"""Counters and hooks the engine keeps, for metrics and logs to read without slowing it down.

The hot path only increments integers and checks whether any observer is registered; clocks
are read per request only when an observer needs a latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

RequestObserver = Callable[["Exchange", float], None]


class Stats:
    __slots__ = (
        "requests",
        "responses_by_status",
        "connections_opened",
        "connections_closed",
        "keepalive_reused",
        "errors_by_kind",
        "request_observers",
        "untimed_observers",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.responses_by_status: dict[int, int] = {}
        self.connections_opened = 0
        self.connections_closed = 0
        # Requests that arrived on a connection that had already carried one.
        self.keepalive_reused = 0
        self.errors_by_kind: dict[str, int] = {}
        # Called with the finished exchange and its duration in seconds.
        self.request_observers: list[RequestObserver] = []
        # Called with the finished exchange and 0.0: observers that never read the duration
        # (most access log formats), for whom no clock is read.
        self.untimed_observers: list[RequestObserver] = []

    def attach(self, observer: RequestObserver) -> None:
        """Call ``observer`` for every finished request.

        An observer object may say ``timed = False`` (it never reads the duration: then no
        clock is read for it), and name its per-request method ``record``: a method of a
        compiled class is called for less than the instance itself.
        """
        call = getattr(observer, "record", observer)
        if getattr(observer, "timed", True):
            self.request_observers.append(call)
        else:
            self.untimed_observers.append(call)

    @property
    def connections_active(self) -> int:
        return self.connections_opened - self.connections_closed

    def count_response(self, status: int) -> None:
        counts = self.responses_by_status
        counts[status] = counts.get(status, 0) + 1

    def count_error(self, kind: str) -> None:
        """Kinds: ``protocol-<status>``, ``timeout-<what>``, ``handler``, ``response``, ...."""
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

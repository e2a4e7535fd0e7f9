"""Request metrics as plain numbers, recorded on a worker's hot path.

:class:`RequestMetrics` is an engine request observer: for each finished request it adds to a
few integers in dicts keyed by method, status and route. Nothing here formats, exports or
locks; a snapshot of the numbers is taken once a second, off the hot path, and shipped to the
process that exposes them (see :mod:`bastion.observe.telemetry`).

Every label is bounded, so a scanner trying 100,000 paths cannot make 100,000 series: the
route is the application's route *template* (``/users/{id}``), never the raw path; methods
outside RFC 9110's set are counted as ``OTHER``; and past ``max_series`` distinct label sets a
request is counted under the route ``__overflow__``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

# Upper bounds (seconds) of the request duration histogram; one more bucket holds the rest.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OVERFLOW = "__overflow__"
DEFAULT_MAX_SERIES = 2000
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)

# (method, status, route) -> [requests, request body bytes, response body bytes]
RequestKey = tuple[str, int, str]
# (method, route) -> one count per bucket (the last one for "+Inf"), then the sum of durations
DurationKey = tuple[str, str]


class RequestMetrics:
    """Counts finished requests; call it as an engine request observer."""

    __slots__ = ("requests", "durations", "completed", "max_series")

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.requests: dict[RequestKey, list[int]] = {}
        self.durations: dict[DurationKey, list[float]] = {}
        self.completed = 0
        self.max_series = max_series

    def __call__(self, exchange: Exchange, duration: float) -> None:
        self.completed += 1
        method = exchange.head.method
        if method not in KNOWN_METHODS:
            method = "OTHER"
        route = exchange.route or ""
        key = (method, exchange.status, route)
        counts = self.requests.get(key)
        if counts is None:
            counts = self._new_counts(key)
        counts[0] += 1
        body = exchange._body
        if body is not None:
            counts[1] += body.received
        counts[2] += exchange.bytes_sent
        histogram = self.durations.get((method, route))
        if histogram is None:
            histogram = self._new_histogram(method, route)
        histogram[bisect_left(DURATION_BUCKETS, duration)] += 1
        histogram[-1] += duration

    def _new_counts(self, key: RequestKey) -> list[int]:
        if len(self.requests) >= self.max_series:
            overflow = (key[0], key[1], OVERFLOW)
            counts = self.requests.get(overflow)
            if counts is None:
                counts = self.requests[overflow] = [0, 0, 0]
            return counts
        counts = self.requests[key] = [0, 0, 0]
        return counts

    def _new_histogram(self, method: str, route: str) -> list[float]:
        if len(self.durations) >= self.max_series:
            route = OVERFLOW
            histogram = self.durations.get((method, route))
            if histogram is not None:
                return histogram
        histogram = self.durations[(method, route)] = [0.0] * (len(DURATION_BUCKETS) + 2)
        return histogram

    def snapshot(self) -> dict[str, Any]:
        """The cumulative numbers so far, as plain data (tuples, lists, numbers, strings)."""
        return {
            "requests": [(*key, *counts) for key, counts in self.requests.items()],
            "durations": [(*key, *buckets) for key, buckets in self.durations.items()],
        }

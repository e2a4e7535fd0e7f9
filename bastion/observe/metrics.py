"""Request metrics as plain numbers, recorded on a worker's hot path.

:class:`RequestMetrics` is an engine request observer: for each finished request it adds to a
few integers in a row keyed by method, status and route. Nothing here formats, exports or
locks; a snapshot of the numbers is taken once a second, off the hot path, and shipped to the
process that exposes them (see :mod:`bastion.observe.telemetry`).

Every label is bounded, so a scanner trying 100,000 paths cannot make 100,000 series: the
route is the application's route *template* (``/users/{id}``), never the raw path; methods
outside RFC 9110's set are counted as ``OTHER``; and past ``max_series`` distinct label sets a
request is counted under the route ``__overflow__``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

from bastion.engine.exchange import Exchange

# Upper bounds (seconds) of the request duration histogram; one more bucket holds the rest.
# Not Final: mypyc leaves a final tuple of floats unset at import.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OVERFLOW: Final = "__overflow__"
DEFAULT_MAX_SERIES: Final = 2000
KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
# The literal bucket indexes in bucket_index assume these.
assert DURATION_BUCKETS[:3] == (0.001, 0.0025, 0.005)

RequestKey = tuple[str, int, str]


def bucket_index(seconds: float) -> int:
    """The bucket of :data:`DURATION_BUCKETS` a duration falls in (the last one: "+Inf")."""
    # Most durations land in the first buckets: comparing costs less than calling bisect.
    if seconds <= 0.005:
        return 0 if seconds <= 0.001 else 1 if seconds <= 0.0025 else 2
    return bisect_left(DURATION_BUCKETS, seconds)


class Row:
    """What the requests with one set of labels added up to: counts and byte totals as
    integers (a counter that turned into a float would be exported as one), seconds as a
    float, and one count per duration bucket, the last for "+Inf"."""

    __slots__ = ("requests", "received", "sent", "seconds", "buckets")

    def __init__(self) -> None:
        self.requests = 0
        self.received = 0
        self.sent = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)


class RequestMetrics:
    """Counts finished requests; register :meth:`record` (or the object) as an engine request
    observer."""

    __slots__ = ("requests", "max_series", "_rows")

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.requests: dict[RequestKey, Row] = {}
        # The same rows, keyed by the labels as a request carries them (any method, no route
        # as None): one lookup per request, with no label cleaned up on the way. Bounded, so
        # keys that are not cached take the slower path, never more memory.
        self._rows: dict[tuple[str, int, str | None], Row] = {}
        self.max_series = max_series

    @property
    def completed(self) -> int:
        """Requests recorded so far (summed when asked: no counter of its own to bump)."""
        return sum(row.requests for row in self.requests.values())

    def record(self, exchange: Exchange, duration: float) -> None:
        key = (exchange.head.method, exchange.status, exchange.route)
        row = self._rows.get(key)
        if row is None:
            row = self._row_for(key)
        row.requests += 1
        body = exchange._body
        if body is not None:
            row.received += body.received
        row.sent += exchange.bytes_sent
        row.seconds += duration
        row.buckets[bucket_index(duration)] += 1

    def __call__(self, exchange: Exchange, duration: float) -> None:
        # Register the bound record method instead: calling through this costs a call more.
        self.record(exchange, duration)

    def _row_for(self, raw: tuple[str, int, str | None]) -> Row:
        method, status, route = raw
        if method not in KNOWN_METHODS:
            method = "OTHER"
        key = (method, status, route or "")
        requests = self.requests
        row = requests.get(key)
        if row is None:
            if len(requests) >= self.max_series:
                key = (method, status, OVERFLOW)
                row = requests.get(key)
            if row is None:
                row = requests[key] = Row()
        if len(self._rows) < 2 * self.max_series + 64:
            self._rows[raw] = row
        return row

    def snapshot(self) -> dict[str, Any]:
        """The cumulative numbers so far, as plain data (tuples, lists, numbers, strings):
        counts by method, status and route; durations by method and route."""
        durations: dict[tuple[str, str], list[Any]] = {}
        for (method, _, route), row in self.requests.items():
            histogram = durations.get((method, route))
            if histogram is None:
                durations[(method, route)] = [*row.buckets, row.seconds]
            else:
                for index, count in enumerate(row.buckets):
                    histogram[index] += count
                histogram[-1] += row.seconds
        return {
            "requests": [
                (*key, row.requests, row.received, row.sent) for key, row in self.requests.items()
            ],
            "durations": [(*key, *histogram) for key, histogram in durations.items()],
        }

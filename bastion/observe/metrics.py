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

# (method, status, route) -> [requests, request body bytes, response body bytes, seconds,
# then one count per duration bucket, the last one for "+Inf"]: one lookup per request.
RequestKey = tuple[str, int, str]
_SECONDS = 3
_FIRST_BUCKET = 4
_ROW = _FIRST_BUCKET + len(DURATION_BUCKETS) + 1
# The literal indexes in RequestMetrics.record assume these.
assert _FIRST_BUCKET == 4 and DURATION_BUCKETS[:3] == (0.001, 0.0025, 0.005)


class RequestMetrics:
    """Counts finished requests; register :meth:`record` (or the object) as an engine request
    observer."""

    __slots__ = ("requests", "max_series", "_rows")

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.requests: dict[RequestKey, list[float]] = {}
        # The same rows, keyed by the labels as a request carries them (any method, no route
        # as None): one lookup per request, with no label cleaned up on the way. Bounded, so
        # keys that are not cached take the slower path, never more memory.
        self._rows: dict[tuple[str, int, str | None], list[float]] = {}
        self.max_series = max_series

    @property
    def completed(self) -> int:
        """Requests recorded so far (summed when asked: no counter of its own to bump)."""
        return int(sum(row[0] for row in self.requests.values()))

    def record(self, exchange: Exchange, duration: float) -> None:
        key = (exchange.head.method, exchange.status, exchange.route)
        row = self._rows.get(key)
        if row is None:
            row = self._row_for(key)
        row[0] += 1
        body = exchange._body
        if body is not None:
            row[1] += body.received
        row[2] += exchange.bytes_sent
        row[3] += duration
        # Most requests land in the first buckets: comparing costs less than calling bisect.
        if duration <= 0.005:
            row[4 if duration <= 0.001 else 5 if duration <= 0.0025 else 6] += 1
        else:
            row[_FIRST_BUCKET + bisect_left(DURATION_BUCKETS, duration)] += 1

    # An instance called directly (rather than its bound method) costs a slower call.
    __call__ = record

    def _row_for(self, raw: tuple[str, int, str | None]) -> list[float]:
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
                row = requests[key] = [0] * _ROW
        if len(self._rows) < 2 * self.max_series + 64:
            self._rows[raw] = row
        return row

    def snapshot(self) -> dict[str, Any]:
        """The cumulative numbers so far, as plain data (tuples, lists, numbers, strings):
        counts by method, status and route; durations by method and route."""
        durations: dict[tuple[str, str], list[float]] = {}
        for (method, _, route), row in self.requests.items():
            histogram = durations.get((method, route))
            if histogram is None:
                durations[(method, route)] = [*row[_FIRST_BUCKET:], row[_SECONDS]]
            else:
                for index, count in enumerate(row[_FIRST_BUCKET:]):
                    histogram[index] += count
                histogram[-1] += row[_SECONDS]
        return {
            "requests": [(*key, *row[:_SECONDS]) for key, row in self.requests.items()],
            "durations": [(*key, *histogram) for key, histogram in durations.items()],
        }

"""Per-upstream counters, kept in plain numbers by each worker for the metrics to read."""

from __future__ import annotations

from bisect import bisect_left

# The same bounds as the server's request duration histogram, so the two compare directly.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The literal bucket indexes in UpstreamStats.record assume these.
assert LATENCY_BUCKETS[:3] == (0.001, 0.0025, 0.005)


class UpstreamStats:
    """What one worker has seen of one upstream server on one route."""

    __slots__ = (
        "requests",
        "failures",
        "responses_5xx",
        "retries",
        "budget_exhausted",
        "overloaded",
        "ejections",
        "healthy",
        "latency_sum",
        "latency_buckets",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.responses_5xx = 0
        self.retries = 0
        self.budget_exhausted = 0
        self.overloaded = 0
        self.ejections = 0
        self.healthy = True
        self.latency_sum = 0.0
        # One count per bucket of LATENCY_BUCKETS, and a last one for "+Inf".
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def record(self, latency_s: float, ok: bool, status: int) -> None:
        """One attempt ended: ``ok`` is False for a failed connection, a timeout or a 5xx."""
        self.requests += 1
        if not ok:
            self.failures += 1
        if status >= 500:
            self.responses_5xx += 1
        self.latency_sum += latency_s
        # Most attempts land in the first buckets: comparing costs less than calling bisect.
        if latency_s <= 0.005:
            index = 0 if latency_s <= 0.001 else 1 if latency_s <= 0.0025 else 2
        else:
            index = bisect_left(LATENCY_BUCKETS, latency_s)
        self.latency_buckets[index] += 1

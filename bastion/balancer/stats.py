"""Per-upstream counters, kept in plain numbers by each worker for the metrics to read."""

from __future__ import annotations

from bastion.observe.metrics import DURATION_BUCKETS, bucket_index

# The same bounds as the server's request duration histogram, so the two compare directly.
LATENCY_BUCKETS = DURATION_BUCKETS


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
        self.latency_buckets[bucket_index(latency_s)] += 1

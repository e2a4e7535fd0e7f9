"""Per-upstream counters: what one ended attempt adds."""

from __future__ import annotations

from bisect import bisect_left

import pytest

from bastion.balancer.stats import LATENCY_BUCKETS, UpstreamStats


@pytest.mark.parametrize(
    "latency", [0.0, 0.0009, 0.001, 0.0011, 0.0025, 0.003, 0.005, 0.0051, 0.3, 10.0, 12.0]
)
def test_each_latency_lands_in_the_bucket_bisect_would_choose(latency: float) -> None:
    stats = UpstreamStats()
    stats.record(latency, True, 200)
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    expected[bisect_left(LATENCY_BUCKETS, latency)] = 1
    assert stats.latency_buckets == expected
    assert stats.latency_sum == latency


def test_failures_and_server_errors_are_counted_apart() -> None:
    stats = UpstreamStats()
    stats.record(0.01, True, 200)
    stats.record(0.01, False, 503)
    stats.record(0.01, False, 0)  # a connection that failed: no status
    assert (stats.requests, stats.failures, stats.responses_5xx) == (3, 2, 1)

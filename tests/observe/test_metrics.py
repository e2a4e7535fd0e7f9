"""Request metrics recorded per request: labels, buckets and bounds, from fake exchanges."""

from __future__ import annotations

from bisect import bisect_left
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.observe.metrics import DURATION_BUCKETS, OVERFLOW, RequestMetrics


def exchange(
    method: str = "GET",
    status: int = 200,
    route: str | None = "/items/{id}",
    sent: int = 10,
    received: int | None = None,
) -> Any:
    body = None if received is None else SimpleNamespace(received=received)
    return SimpleNamespace(
        head=SimpleNamespace(method=method), status=status, route=route, bytes_sent=sent, _body=body
    )


def rows(metrics: RequestMetrics) -> dict[tuple[str, int, str], tuple[float, ...]]:
    return {(m, s, r): tuple(rest) for m, s, r, *rest in metrics.snapshot()["requests"]}


def test_requests_are_counted_by_method_status_and_route() -> None:
    metrics = RequestMetrics()
    for _ in range(3):
        metrics.record(exchange(), 0.0002)
    metrics.record(exchange(method="POST", status=201, received=100, sent=0), 0.002)
    metrics(exchange(route=None, status=404, sent=9), 0.0001)  # the object itself observes too
    assert rows(metrics) == {
        ("GET", 200, "/items/{id}"): (3, 0, 30),
        ("POST", 201, "/items/{id}"): (1, 100, 0),
        ("GET", 404, ""): (1, 0, 9),
    }
    assert metrics.completed == 5


def test_methods_outside_rfc_9110_share_one_row() -> None:
    metrics = RequestMetrics()
    for method in ("PROPFIND", "PURGE", "PROPFIND", "MKCOL"):
        metrics.record(exchange(method=method), 0.0)
    assert rows(metrics) == {("OTHER", 200, "/items/{id}"): (4, 0, 40)}


@pytest.mark.parametrize(
    "duration",
    [0.0, 0.0009, 0.001, 0.0011, 0.0025, 0.003, 0.005, 0.0051, 0.01, 0.3, 10.0, 12.0],
)
def test_each_duration_lands_in_the_bucket_bisect_would_choose(duration: float) -> None:
    metrics = RequestMetrics()
    metrics.record(exchange(), duration)
    (histogram,) = metrics.snapshot()["durations"]
    buckets, seconds = histogram[2:-1], histogram[-1]
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    expected[bisect_left(DURATION_BUCKETS, duration)] = 1
    assert list(buckets) == expected
    assert seconds == duration


def test_label_sets_beyond_the_cap_lose_their_route() -> None:
    metrics = RequestMetrics(max_series=2)
    for index in range(50):
        metrics.record(exchange(route=f"/r{index}"), 0.0)
        metrics.record(exchange(route=f"/r{index}", method="DELETE"), 0.0)
    counted = rows(metrics)
    assert len(counted) == 4
    assert counted[("GET", 200, OVERFLOW)][0] + counted[("DELETE", 200, OVERFLOW)][0] == 98
    assert metrics.completed == 100
    # The rows remembered for the labels as requests carry them are bounded too.
    assert len(metrics._rows) <= 2 * metrics.max_series + 64

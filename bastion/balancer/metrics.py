"""The balancer's per-upstream figures as ``prometheus_client`` metric families.

Each worker registers a :class:`UpstreamCollector` with the default registry; the worker's
telemetry ships the application's metrics to the supervisor like any other, where counters
and histograms are summed over workers (those that exited included, so nothing goes
backwards) and gauges are shown per worker (``worker`` label), since each worker has its own
view of outstanding requests, ejections and connections. Nothing here runs per request: the
proxy adds to plain numbers (:class:`~bastion.balancer.stats.UpstreamStats`), and this reads
them when a snapshot is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bastion.balancer.stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from bastion.balancer.proxy import RouteRuntime

_LABELS = ["route", "upstream"]
_COUNTERS = (
    ("requests", "Attempts sent to the upstream (retries included)."),
    ("failures", "Attempts that failed: no connection, a timeout, a broken response or a 5xx."),
    ("responses_5xx", "Responses with a 5xx status from the upstream."),
    ("retries", "Attempts retried on another server after failing on this one."),
    ("budget_exhausted", "Retries refused because the route's retry budget was spent."),
    ("overloaded", "Requests refused at once (503): the upstream's limits were reached."),
    ("ejections", "Times outlier detection took the upstream out of the pool."),
)


class UpstreamCollector:
    """Collects every route's upstream figures in this worker."""

    def __init__(self, routes: Iterable[RouteRuntime]) -> None:
        self.routes = list(routes)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counters = {
            name: CounterMetricFamily(f"bastion_upstream_{name}", doc, labels=_LABELS)
            for name, doc in _COUNTERS
        }
        latency = HistogramMetricFamily(
            "bastion_upstream_latency_seconds",
            "Time from sending a request upstream to the end of its response (per attempt).",
            labels=_LABELS,
        )
        gauges = {
            "outstanding": GaugeMetricFamily(
                "bastion_upstream_outstanding",
                "Requests in flight to the upstream in this worker.",
                labels=_LABELS,
            ),
            "weight": GaugeMetricFamily(
                "bastion_upstream_weight",
                "The upstream's configured weight (0: drained, it takes no new requests).",
                labels=_LABELS,
            ),
            "healthy": GaugeMetricFamily(
                "bastion_upstream_healthy",
                "1 while the upstream passes its active health checks (or has none).",
                labels=_LABELS,
            ),
            "ejected": GaugeMetricFamily(
                "bastion_upstream_ejected",
                "1 while outlier detection keeps the upstream out of this worker's pool.",
                labels=_LABELS,
            ),
            "ewma": GaugeMetricFamily(
                "bastion_upstream_latency_ewma_seconds",
                "The peak-EWMA latency this worker's strategies see for the upstream.",
                labels=_LABELS,
            ),
            "connections": GaugeMetricFamily(
                "bastion_upstream_connections",
                "Open connections to the upstream in this worker, by state.",
                labels=[*_LABELS, "state"],
            ),
        }
        for runtime in self.routes:
            now = runtime.snapshot.clock()
            decay = runtime.strategy.decay_s
            for key, stats in runtime.stats.items():
                labels = [runtime.name, key]
                for name, _ in _COUNTERS:
                    counters[name].add_metric(labels, getattr(stats, name))
                cumulative = accumulate(stats.latency_buckets)
                bounds = (*LATENCY_BUCKETS, float("inf"))
                buckets = [
                    (_bound(bound), float(count))
                    for bound, count in zip(bounds, cumulative, strict=True)
                ]
                latency.add_metric(labels, buckets, stats.latency_sum)
                server = runtime.snapshot.get(key)
                if server is None:
                    continue
                state = server.state
                gauges["outstanding"].add_metric(labels, state.outstanding)
                gauges["weight"].add_metric(labels, server.weight)
                gauges["healthy"].add_metric(labels, 1.0 if state.healthy else 0.0)
                gauges["ejected"].add_metric(labels, 1.0 if state.ejected else 0.0)
                gauges["ewma"].add_metric(labels, state.latency(now, decay))
                pool = runtime.pools[key]
                gauges["connections"].add_metric([*labels, "idle"], len(pool.idle))
                gauges["connections"].add_metric([*labels, "busy"], pool.busy)
        yield from counters.values()
        yield latency
        yield from gauges.values()


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)

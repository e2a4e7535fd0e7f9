"""How long a /metrics scrape takes to render, as workers come and go.

Builds the snapshots 8 workers would ship after serving 50 routes (about 1,000 series with
methods and statuses), then times the exposition (``prometheus_client.generate_latest`` over
Bastion's collector) before and after 1,000 worker recycles. Prints milliseconds per scrape.

    python bench/scrape.py [--workers 8] [--routes 50] [--recycles 1000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest

from bastion.observe.aggregate import Aggregator, MetricsCollector
from bastion.observe.metrics import DURATION_BUCKETS

STATUSES = (200, 201, 304, 404, 500)


def snapshot(pid: int, slot: int, routes: int, scale: int) -> dict[str, object]:
    rng = random.Random(pid)
    requests = []
    durations = []
    for index in range(routes):
        route = f"/api/v1/resource{index}/{{id}}"
        for method in ("GET", "POST"):
            for status in STATUSES[: 2 + index % 4]:
                requests.append((method, status, route, scale * rng.randint(1, 50), 10, 200))
            buckets = [float(scale * rng.randint(0, 9)) for _ in range(len(DURATION_BUCKETS) + 1)]
            durations.append((method, route, *buckets, 0.01 * sum(buckets)))
    return {
        "v": 1,
        "pid": pid,
        "slot": slot,
        "requests": requests,
        "durations": durations,
        "engine": {
            "requests": scale * 100,
            "connections_opened": scale,
            "errors": {"protocol-400": 1},
        },
        "pool": {"threads": 8, "busy": 1, "queued": 0},
        "process": {"cpu_seconds": 1.0},
        "loop_lag": 0.001,
        "checks": {},
        "app": [],
    }


def time_scrape(aggregator: Aggregator, rounds: int = 50) -> tuple[float, int]:
    registry = CollectorRegistry()
    registry.register(MetricsCollector(aggregator))
    output = generate_latest(registry)
    started = time.perf_counter()
    for _ in range(rounds):
        generate_latest(registry)
    return (time.perf_counter() - started) / rounds * 1000, output.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--recycles", type=int, default=1000)
    args = parser.parse_args()
    aggregator = Aggregator()
    pid = 1000
    for slot in range(args.workers):
        pid += 1
        aggregator.worker_started(pid, slot, 1)
        aggregator.update(snapshot(pid, slot, args.routes, 1))
    fresh, lines = time_scrape(aggregator)
    for recycle in range(args.recycles):
        slot = recycle % args.workers
        old = next(p for p, w in aggregator.workers.items() if w.slot == slot)
        aggregator.worker_exited(old, "max-requests")
        pid += 1
        aggregator.worker_started(pid, slot, 1)
        aggregator.update(snapshot(pid, slot, args.routes, 1))
    recycled, _ = time_scrape(aggregator)
    print(f"{args.workers} workers x {args.routes} routes: {lines} lines of exposition")
    print(
        f"scrape: {fresh:.1f} ms fresh, {recycled:.1f} ms after {args.recycles} recycles "
        f"({recycled / fresh:.2f}x)"
    )


if __name__ == "__main__":
    main()

"""Shared pieces of the balancer tests: a hand-driven clock, a chi-square check, a simulator."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

from bastion.balancer import Server, Strategy


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chi_square_fits(counts: Mapping[str, int], weights: Mapping[str, float]) -> bool:
    """Do ``counts`` fit proportions ``weights`` at the 0.1% level?

    The tests use fixed seeds, so each outcome is the same on every run; the level only
    says how far from the weights a correct strategy could plausibly land.
    """
    total = sum(counts.values())
    weight_sum = sum(weights.values())
    statistic = 0.0
    for key, weight in weights.items():
        expected = total * weight / weight_sum
        statistic += (counts.get(key, 0) - expected) ** 2 / expected
    return statistic <= chi_square_critical(len(weights) - 1)


def chi_square_critical(df: int, z: float = 3.090) -> float:
    """The upper 0.1% point of chi-square with ``df`` degrees of freedom (Wilson-Hilferty)."""
    term = 2.0 / (9.0 * df)
    return df * (1.0 - term + z * math.sqrt(term)) ** 3


def simulate(
    strategy: Strategy,
    clock: FakeClock,
    latency_s: Mapping[str, float],
    *,
    requests: int,
    interval_s: float,
) -> Counter[str]:
    """Send ``requests`` at a steady rate; each holds its server for that server's latency."""
    picks: Counter[str] = Counter()
    in_flight: list[tuple[float, int, Server]] = []
    start = clock.now
    for number in range(requests):
        now = start + number * interval_s
        while in_flight and in_flight[0][0] <= now:
            done, _, server = heapq.heappop(in_flight)
            clock.now = done
            strategy.on_finish(server, latency_s[server.key], True)
        clock.now = now
        server = strategy.pick()
        assert server is not None
        strategy.on_start(server)
        picks[server.key] += 1
        heapq.heappush(in_flight, (now + latency_s[server.key], number, server))
    return picks


def picks(
    strategy: Strategy, count: int, *, keyed: bool = False, exclude: Collection[Server] = ()
) -> list[str]:
    """The keys of ``count`` picks (with distinct request keys when ``keyed``)."""
    out = []
    for number in range(count):
        server = strategy.pick(key=b"k%d" % number if keyed else None, exclude=exclude)
        assert server is not None
        out.append(server.key)
    return out


def tally(strategy: Strategy, count: int, *, keyed: bool = False) -> Counter[str]:
    """How many of ``count`` picks each server got."""
    return Counter(picks(strategy, count, keyed=keyed))


def assignment(strategy: Strategy, keys: Iterable[bytes]) -> dict[bytes, str]:
    """Which server each key goes to."""
    out = {}
    for key in keys:
        server = strategy.pick(key)
        assert server is not None
        out[key] = server.key
    return out

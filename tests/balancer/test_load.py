"""Least connections, power of two choices and peak EWMA."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest

from bastion.balancer import LeastConnections, PeakEwma, PoolSnapshot, PowerOfTwo, Server
from tests.balancer.support import FakeClock, chi_square_fits, picks, simulate, tally

SLOW = {"a": 0.010, "b": 0.010, "c": 0.100}


def test_least_connections_keeps_open_connections_in_proportion_to_weight() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0}
    strategy = LeastConnections(PoolSnapshot.of(weights), rng=random.Random(2))
    rng = random.Random(4)
    open_until: list[tuple[float, int, Server]] = []
    picks: Counter[str] = Counter()
    for number in range(30_000):
        now = number * 0.001
        while open_until and open_until[0][0] <= now:
            strategy.on_disconnect(heapq.heappop(open_until)[2])
        server = strategy.pick()
        assert server is not None
        strategy.on_connect(server)
        picks[server.key] += 1
        # About 60 connections open at once, of random lengths.
        heapq.heappush(open_until, (now + rng.expovariate(1 / 0.060), number, server))
    assert chi_square_fits(picks, weights)


def test_least_connections_prefers_the_emptiest() -> None:
    pool = PoolSnapshot.of(["a", "b", "c"])
    strategy = LeastConnections(pool, rng=random.Random(1))
    for server, count in zip(pool.servers, (3, 1, 2), strict=True):
        server.state.active_connections = count
    assert strategy.pick() is pool.servers[1]
    assert strategy.pick(exclude=[pool.servers[1]]) is pool.servers[2]


@pytest.mark.parametrize("cls", [PowerOfTwo, PeakEwma])
def test_idle_pool_is_shared_by_weight(cls: type[PowerOfTwo]) -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 1.5}
    strategy = cls(PoolSnapshot.of(weights), rng=random.Random(8))
    assert chi_square_fits(tally(strategy, 30_000), weights)


def test_p2c_prefers_the_server_with_fewer_outstanding() -> None:
    pool = PoolSnapshot.of(["a", "b"])
    strategy = PowerOfTwo(pool, rng=random.Random(1))
    strategy.on_start(pool.servers[0])
    # With two servers both are always drawn, so the choice is the comparison itself.
    assert set(picks(strategy, 20)) == {"b"}


@pytest.mark.parametrize(("cls", "most"), [(PowerOfTwo, 0.15), (PeakEwma, 0.02)])
def test_slow_server_gets_far_fewer_requests(cls: type[PowerOfTwo], most: float) -> None:
    clock = FakeClock()
    strategy = cls(PoolSnapshot.of(list(SLOW), clock=clock), rng=random.Random(11))
    picks = simulate(strategy, clock, SLOW, requests=6000, interval_s=0.002)
    # Round robin would send it a third.
    assert picks["c"] < most * 6000
    assert picks["a"] + picks["b"] + picks["c"] == 6000


def _serve(strategy: PeakEwma, server: Server, latency_s: float) -> None:
    strategy.on_start(server)
    strategy.on_finish(server, latency_s, True)


@pytest.mark.parametrize(("decay_s", "tried_within"), [(10.0, True), (1e9, False)])
def test_ewma_decay_lets_an_idle_slow_server_be_tried_again(
    decay_s: float, tried_within: bool
) -> None:
    clock = FakeClock()
    pool = PoolSnapshot.of(["slow", "fast"], clock=clock)
    slow, fast = pool.servers
    strategy = PeakEwma(pool, rng=random.Random(1), decay_s=decay_s)
    _serve(strategy, slow, 1.0)
    _serve(strategy, fast, 0.010)
    tried = False
    for _ in range(120):
        clock.now += 1.0
        chosen = strategy.pick()
        if chosen is slow:
            tried = True
            break
        assert chosen is fast
        _serve(strategy, fast, 0.010)
    # 1 s decays below the fast server's 10 ms after about 10 * ln(100) = 46 s; an EWMA that
    # never decays (Traefik's) starves the slow server for good.
    assert tried is tried_within


def _pair() -> tuple[PeakEwma, Server, Server]:
    pool = PoolSnapshot.of(["a", "b"], clock=FakeClock())
    return PeakEwma(pool, rng=random.Random(1)), pool.servers[0], pool.servers[1]


def test_a_server_with_no_data_gets_one_probe_at_a_time() -> None:
    strategy, new, old = _pair()
    _serve(strategy, old, 0.050)
    assert strategy.pick() is new
    strategy.on_start(new)
    assert strategy.pick() is old
    strategy.on_finish(new, 0.010, True)
    assert strategy.pick() is new


def test_a_fast_failure_does_not_look_fast() -> None:
    strategy, a, b = _pair()
    _serve(strategy, b, 0.050)
    strategy.on_start(a)
    strategy.on_finish(a, 0.001, False)
    assert strategy.pick() is b

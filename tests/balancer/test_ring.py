"""Ring hash and consistent hashing with bounded loads."""

from __future__ import annotations

import heapq
import random

import pytest

from bastion.balancer import BoundedLoads, PoolSnapshot, RingHash, Server
from tests.balancer.support import assignment, chi_square_fits, tally

HOSTS = [f"10.0.0.{n}:8000" for n in range(1, 21)]
KEYS = [b"client-%d" % n for n in range(20_000)]
# Small rings keep the tests fast; the spread at the default size is measured in bench/.
POINTS = 512


def test_same_key_same_server_across_builds() -> None:
    first = assignment(RingHash(PoolSnapshot.of(HOSTS), points_per_server=POINTS), KEYS)
    second = assignment(RingHash(PoolSnapshot.of(HOSTS), points_per_server=POINTS), KEYS)
    assert first == second


def test_removing_a_server_moves_only_its_keys() -> None:
    before = assignment(RingHash(PoolSnapshot.of(HOSTS), points_per_server=POINTS), KEYS)
    gone = HOSTS[7]
    after = assignment(
        RingHash(PoolSnapshot.of(HOSTS[:7] + HOSTS[8:]), points_per_server=POINTS), KEYS
    )
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved and all(before[key] == gone for key in moved)
    assert len(moved) == sum(1 for key in KEYS if before[key] == gone)


def test_adding_a_server_moves_keys_only_to_it() -> None:
    before = assignment(RingHash(PoolSnapshot.of(HOSTS), points_per_server=POINTS), KEYS)
    after = assignment(
        RingHash(PoolSnapshot.of([*HOSTS, "10.0.0.99:8000"]), points_per_server=POINTS), KEYS
    )
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved and all(after[key] == "10.0.0.99:8000" for key in moved)
    # About 1/21 of the keys; each host's share is within a few percent of that here.
    assert len(moved) < 1.3 * len(KEYS) / 21


def test_a_server_that_is_down_loses_the_same_keys_as_if_removed() -> None:
    pool = PoolSnapshot.of(HOSTS)
    strategy = RingHash(pool, points_per_server=POINTS)
    removed = assignment(RingHash(PoolSnapshot.of(HOSTS[1:]), points_per_server=POINTS), KEYS)
    pool.set_healthy(pool.servers[0], False)
    assert assignment(strategy, KEYS) == removed


def test_shares_follow_weights() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 4.0}
    strategy = RingHash(PoolSnapshot.of(weights), points_per_server=4096)
    shares = {server.key: share for server, share in strategy.shares().items()}
    assert sum(shares.values()) == pytest.approx(1.0)
    for key, weight in weights.items():
        assert shares[key] == pytest.approx(weight / 7.0, rel=0.1)
    assert chi_square_fits(tally(strategy, 30_000, keyed=True), shares)


def test_exclude_walks_to_the_next_server() -> None:
    pool = PoolSnapshot.of(HOSTS)
    strategy = RingHash(pool, points_per_server=POINTS)
    first = strategy.pick(b"user-42")
    assert first is not None
    second = strategy.pick(b"user-42", exclude=[first])
    assert second is not None and second != first
    assert strategy.pick(b"user-42", exclude=[first]) is second
    assert strategy.pick(b"user-42", exclude=pool.servers) is None


def test_bounded_loads_never_exceed_the_cap_under_skewed_keys() -> None:
    pool = PoolSnapshot.of(HOSTS)
    strategy = BoundedLoads(pool, points_per_server=POINTS, balance_factor=1.25)
    rng = random.Random(9)
    # A Zipf-like mix: a handful of keys carry most of the traffic.
    hot = [b"hot-%d" % n for n in range(5)]
    in_flight: list[tuple[int, int, Server]] = []
    placed_off_home = 0
    for number in range(20_000):
        while in_flight and in_flight[0][0] <= number:
            strategy.on_finish(heapq.heappop(in_flight)[2], 0.01, True)
        key = rng.choice(hot) if rng.random() < 0.7 else b"cold-%d" % rng.randrange(10**6)
        server = strategy.pick(key)
        assert server is not None
        if server is not RingHash.pick(strategy, key):
            placed_off_home += 1
        strategy.on_start(server)
        total = sum(s.outstanding for s in pool.servers)
        assert server.outstanding <= -(-1.25 * total // len(HOSTS))
        heapq.heappush(in_flight, (number + rng.randrange(100, 300), number, server))
    # Hot keys overflow their home server; most cold keys stay put.
    assert 0 < placed_off_home < 20_000 * 0.7


def test_bounded_loads_with_no_load_is_plain_ring_hash() -> None:
    pool = PoolSnapshot.of(HOSTS)
    plain = assignment(RingHash(pool, points_per_server=POINTS), KEYS)
    assert assignment(BoundedLoads(pool, points_per_server=POINTS), KEYS) == plain

"""Smooth weighted round robin and weighted random."""

from __future__ import annotations

import random

from bastion.balancer import PoolSnapshot, Random, RoundRobin
from tests.balancer.support import chi_square_fits, picks, tally


def test_smooth_round_robin_interleaves_like_nginx() -> None:
    strategy = RoundRobin(PoolSnapshot.of({"a": 5, "b": 1, "c": 1}))
    assert "".join(picks(strategy, 14)) == "aabacaa" * 2


def test_round_robin_gives_each_server_exactly_its_weight_per_cycle() -> None:
    weights = {"a": 3, "b": 2, "c": 1, "d": 4}
    strategy = RoundRobin(PoolSnapshot.of(weights))
    assert dict(tally(strategy, 10 * 100)) == {key: w * 100 for key, w in weights.items()}


def test_round_robin_skips_excluded_and_ejected() -> None:
    pool = PoolSnapshot.of({"a": 1, "b": 1, "c": 1, "d": 1})
    strategy = RoundRobin(pool)
    pool.eject(pool.servers[3])
    excluded = [pool.servers[0]]
    assert set(picks(strategy, 30, exclude=excluded)) == {"b", "c"}


def test_round_robin_over_a_large_pool_visits_everyone_evenly() -> None:
    keys = [f"10.0.0.{index}:80" for index in range(100)]
    pool = PoolSnapshot.of(keys, panic_threshold=0)
    strategy = RoundRobin(pool)
    assert sorted(picks(strategy, 100)) == sorted(keys)
    # Most of the pool down: the picks still land on the survivors only, evenly.
    for server in pool.servers[:90]:
        pool.eject(server)
    survivors = tally(strategy, 1000)
    assert set(survivors) == set(keys[90:])
    assert all(98 <= count <= 102 for count in survivors.values()), survivors


def test_round_robin_with_fractional_weights_still_follows_them() -> None:
    strategy = RoundRobin(PoolSnapshot.of({"a": 1.5, "b": 0.5}))
    assert dict(tally(strategy, 400)) == {"a": 300, "b": 100}


def test_random_follows_weights() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 0.5}
    strategy = Random(PoolSnapshot.of(weights), rng=random.Random(3))
    assert chi_square_fits(tally(strategy, 30_000), weights)


def test_random_follows_weights_among_healthy_servers() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 1.0}
    pool = PoolSnapshot.of(weights)
    pool.set_healthy(pool.servers[3], False)
    strategy = Random(pool, rng=random.Random(5))
    picks = tally(strategy, 30_000)
    assert "d" not in picks
    assert chi_square_fits(picks, {k: w for k, w in weights.items() if k != "d"})


def test_a_wrong_distribution_fails_the_check() -> None:
    # The check must be able to fail: weighted picks do not fit equal weights.
    strategy = Random(PoolSnapshot.of({"a": 1.0, "b": 1.2}), rng=random.Random(3))
    assert not chi_square_fits(tally(strategy, 30_000), {"a": 1.0, "b": 1.0})

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

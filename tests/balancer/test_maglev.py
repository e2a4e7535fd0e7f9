"""Maglev: even shares, weights, and little movement when a server leaves."""

from __future__ import annotations

import pytest

from bastion.balancer import Maglev, PoolSnapshot
from tests.balancer.support import assignment, chi_square_fits, tally

HOSTS = [f"10.0.0.{n}:8000" for n in range(1, 51)]
KEYS = [b"client-%d" % n for n in range(20_000)]


def test_table_size_must_be_prime() -> None:
    with pytest.raises(ValueError):
        Maglev(PoolSnapshot.of(HOSTS), table_size=65536)


def test_shares_differ_by_at_most_one_slot() -> None:
    strategy = Maglev(PoolSnapshot.of(HOSTS))
    slots = [round(share * 65537) for share in strategy.shares().values()]
    assert max(slots) - min(slots) <= 1


def test_weights_shape_the_table_and_the_keys() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 1.0}
    strategy = Maglev(PoolSnapshot.of(weights))
    shares = {server.key: share for server, share in strategy.shares().items()}
    for key, weight in weights.items():
        assert shares[key] == pytest.approx(weight / 8.0, rel=0.01)
    assert chi_square_fits(tally(strategy, 30_000, keyed=True), shares)


def test_same_key_same_server_across_builds() -> None:
    assert assignment(Maglev(PoolSnapshot.of(HOSTS)), KEYS) == assignment(
        Maglev(PoolSnapshot.of(HOSTS)), KEYS
    )


def test_removing_a_server_moves_little_besides_its_keys() -> None:
    before = assignment(Maglev(PoolSnapshot.of(HOSTS)), KEYS)
    gone = HOSTS[10]
    after = assignment(Maglev(PoolSnapshot.of(HOSTS[:10] + HOSTS[11:])), KEYS)
    own = sum(1 for key in KEYS if before[key] == gone)
    moved = sum(1 for key in KEYS if before[key] != after[key])
    assert all(after[key] != gone for key in KEYS)
    # Maglev trades a little stability for evenness: some keys of other servers move too,
    # a few percent in the paper's measurements at this size.
    assert own <= moved < 1.5 * len(KEYS) / len(HOSTS)


def test_keys_of_a_server_that_is_down_spread_over_the_others() -> None:
    pool = PoolSnapshot.of(HOSTS)
    strategy = Maglev(pool)
    before = assignment(strategy, KEYS)
    down = pool.servers[0]
    pool.eject(down)
    after = assignment(strategy, KEYS)
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved and all(before[key] == down.key for key in moved)
    assert len({after[key] for key in moved}) > len(HOSTS) // 2


def test_exclude_and_nothing_left() -> None:
    pool = PoolSnapshot.of(HOSTS[:3])
    strategy = Maglev(pool)
    first = strategy.pick(b"k")
    assert first is not None
    second = strategy.pick(b"k", exclude=[first])
    assert second is not None and second != first
    assert strategy.pick(b"k", exclude=pool.servers) is None

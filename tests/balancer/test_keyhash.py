"""Key hashing: pinned values, because a change would move every key on an upgrade."""

from __future__ import annotations

from collections import Counter

from bastion.balancer.keyhash import hash64, pair, points, rehash


def test_values_are_pinned() -> None:
    assert hash64(b"203.0.113.7") == 12676204356281172361
    assert points("10.0.0.1:8000", 3) == [
        4640600972628292601,
        2880055838052408151,
        6920202174474729626,
    ]
    assert pair("10.0.0.1:8000") == (13607672829535693415, 6142757635506902722)


def test_points_extend_without_changing_the_first_ones() -> None:
    # A server whose weight grows keeps its old points, so only the new ones take keys.
    assert points("a", 20)[:13] == points("a", 13)


def test_rehash_attempts_scatter() -> None:
    value = hash64(b"user-1")
    attempts = [rehash(value, n) % 64 for n in range(1, 6401)]
    counts = Counter(attempts)
    assert len(counts) == 64
    assert max(counts.values()) < 2 * 6400 / 64

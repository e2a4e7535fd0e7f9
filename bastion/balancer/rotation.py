"""Strategies that ignore load: smooth weighted round robin and weighted random."""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from typing import ClassVar, Final

from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.strategy import Strategy


class RoundRobin(Strategy):
    """Smooth weighted round robin, nginx's algorithm.

    Use it when servers are alike and requests cost about the same: it is deterministic,
    spreads a heavy server's turns out (weights 5, 1, 1 give a a b a c a a, never five a in
    a row) and needs no feedback. It ignores latency and load, so a slow server still gets
    its full share.

    Each pick adds every candidate's weight to its running score, takes the highest score
    and takes the candidates' total back off the winner's. With whole-number weights the
    whole period of that sequence is worked out once per pool, and a pick steps along it, so
    its cost does not grow with the pool; fractional weights, slow start and a pool with
    many servers out fall back to the scan.
    """

    name = "round-robin"
    tunables: ClassVar[dict[str, type]] = {}

    def __init__(self, pool: PoolSnapshot, *, rng: random.Random | None = None) -> None:
        super().__init__(pool, rng=rng)
        self._scores = [0.0] * len(pool.active)
        # The whole rotation, worked out once: a pick is then a step along it, whatever the
        # pool's size, instead of a pass over every server.
        self._rotation = _rotation(pool.active)
        self._cursor = 0

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        pool = self.pool
        warming = pool.warming()
        rotation = self._rotation
        if rotation and not warming:
            active = pool.active
            panic = pool.panic
            size = len(rotation)
            cursor = self._cursor
            # A server that may not take the request loses its turn to the next in the
            # rotation; after a few such turns, the scan below decides instead.
            for _ in range(min(size, _SKIPS)):
                server = active[rotation[cursor]]
                cursor = cursor + 1 if cursor + 1 < size else 0
                state = server.state
                if (panic or (state.healthy and not state.ejected)) and not (
                    exclude and server in exclude
                ):
                    self._cursor = cursor
                    return server
            self._cursor = cursor
        now = pool.clock() if warming else 0.0
        panic = pool.panic
        scores = self._scores
        total = 0.0
        best = -1
        best_score = 0.0
        # The health test is spelled out rather than calling pool.usable(): this loop runs
        # over the whole pool on every pick.
        for index, server in enumerate(pool.active):
            state = server.state
            if not panic and (state.ejected or not state.healthy):
                continue
            if exclude and server in exclude:
                continue
            weight = pool.weight_of(server, now) if warming else server.weight
            score = scores[index] + weight
            scores[index] = score
            total += weight
            if best < 0 or score > best_score:
                best, best_score = index, score
        if best < 0:
            return None
        scores[best] -= total
        return pool.active[best]


_SKIPS: Final = 8
# Beyond this many steps (servers x rotation length), the rotation is not worked out and
# every pick scans the pool instead.
_MAX_ROTATION_WORK: Final = 1_000_000


def _rotation(servers: tuple[Server, ...]) -> list[int] | None:
    """One period of smooth weighted round robin over ``servers``, as indices; None when the
    weights are not whole numbers or the period would be too long to work out."""
    weights = [server.weight for server in servers]
    if not weights or any(weight != int(weight) for weight in weights):
        return None
    whole = [int(weight) for weight in weights]
    divisor = 0
    for weight in whole:
        divisor = math.gcd(divisor, weight)
    if divisor == 0:
        return None
    whole = [weight // divisor for weight in whole]
    total = sum(whole)
    if total * len(whole) > _MAX_ROTATION_WORK:
        return None
    scores = [0] * len(whole)
    rotation = []
    for _ in range(total):
        best = -1
        for index, weight in enumerate(whole):
            if not weight:
                continue
            scores[index] += weight
            if best < 0 or scores[index] > scores[best]:
                best = index
        scores[best] -= total
        rotation.append(best)
    return rotation


class Random(Strategy):
    """Weighted random choice.

    Use it with many balancer workers or processes that cannot share a rotation, or as the
    baseline: over many requests it matches the weights, with no state at all. Like round
    robin it does not react to slow or loaded servers.
    """

    name = "random"

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        return self.pool.draw(self.rng, exclude)

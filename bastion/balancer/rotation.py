"""Strategies that ignore load: smooth weighted round robin and weighted random."""

from __future__ import annotations

import random
from collections.abc import Collection

from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.strategy import Strategy


class RoundRobin(Strategy):
    """Smooth weighted round robin, nginx's algorithm.

    Use it when servers are alike and requests cost about the same: it is deterministic,
    spreads a heavy server's turns out (weights 5, 1, 1 give a a b a c a a, never five a in
    a row) and needs no feedback. It ignores latency and load, so a slow server still gets
    its full share.

    Each pick adds every candidate's weight to its running score, takes the highest score
    and takes the candidates' total back off the winner's.
    """

    name = "round-robin"

    def __init__(self, pool: PoolSnapshot, *, rng: random.Random | None = None) -> None:
        super().__init__(pool, rng=rng)
        self._scores = [0.0] * len(pool.active)

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        pool = self.pool
        warming = pool.warming()
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


class Random(Strategy):
    """Weighted random choice.

    Use it with many balancer workers or processes that cannot share a rotation, or as the
    baseline: over many requests it matches the weights, with no state at all. Like round
    robin it does not react to slow or loaded servers.
    """

    name = "random"

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        return self.pool.draw(self.rng, exclude)

"""Strategies that follow load: least connections, power of two choices and peak EWMA."""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection
from typing import ClassVar

from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.strategy import Strategy


class LeastConnections(Strategy):
    """Weighted least connections: the fewest active connections per unit of weight.

    Use it for long-lived connections (WebSocket, streaming, tunnels), where the number open
    is the load, as HAProxy's ``leastconn``. It reads ``active_connections``, which the proxy
    keeps with :meth:`on_connect` / :meth:`on_disconnect`. It scans the whole pool on every
    pick and sends a burst to whichever server looks emptiest, so for short requests prefer
    :class:`PowerOfTwo`.
    """

    name = "least-connections"

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        pool = self.pool
        active = pool.active
        if not active:
            return None
        warming = pool.warming()
        now = pool.clock() if warming else 0.0
        panic = pool.panic
        # Starting the scan at a random place breaks ties at random rather than always in
        # favour of the first server in the list.
        start = self.rng.randrange(len(active))
        best: Server | None = None
        best_score = 0.0
        for server in itertools.chain(active[start:], active[:start]):
            state = server.state
            if not panic and (state.ejected or not state.healthy):
                continue
            if exclude and server in exclude:
                continue
            weight = pool.weight_of(server, now) if warming else server.weight
            score = (state.active_connections + 1) / (weight or 1e-9)
            if best is None or score < best_score:
                best, best_score = server, score
        return best


class PowerOfTwo(Strategy):
    """Power of two choices: draw two servers (in proportion to weight), keep the less loaded.

    The default for request/response traffic: it costs two draws whatever the pool size,
    avoids the herd behaviour of a full least-loaded scan (every worker piling on the same
    emptiest server), and still steers away from a server whose requests pile up because it
    is slow. Load is outstanding requests per unit of weight, kept by :meth:`on_start` /
    :meth:`on_finish`.
    """

    name = "p2c"

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        pool = self.pool
        first = pool.draw(self.rng, exclude)
        if first is None:
            return None
        second = pool.draw(self.rng, exclude, besides=first)
        if second is None:
            return first
        now = pool.clock()
        # Ties go to the first draw, so an idle pool is still shared in proportion to weight.
        return second if self.cost(second, now) < self.cost(first, now) else first

    def cost(self, server: Server, now: float) -> float:
        return server.state.outstanding / max(self.pool.weight_of(server, now), 1e-9)


class PeakEwma(PowerOfTwo):
    """Power of two choices on cost = peak-EWMA latency * (outstanding + 1) / weight.

    Use it when servers differ in speed or slow down under load (shared hosts, garbage
    collection, noisy neighbours): it reacts to latency at once (a slower answer replaces the
    estimate) and forgets it smoothly. The estimate decays toward zero with the time since
    the server's last response, so a server that was slow and then got no traffic is tried
    again after a while instead of being starved forever (Traefik's bug, traefik#12306).

    A server with no response yet costs 0 while idle, so a new server gets a probe at once,
    and ``unknown_latency_s`` per outstanding request while its first answers are pending,
    so it is not flooded before anything is known about it.
    """

    name = "peak-ewma"
    tunables: ClassVar[dict[str, type]] = {**Strategy.tunables, "unknown_latency_s": float}

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        rng: random.Random | None = None,
        decay_s: float = 10.0,
        failure_latency_s: float = 1.0,
        unknown_latency_s: float = 1.0,
    ) -> None:
        super().__init__(pool, rng=rng, decay_s=decay_s, failure_latency_s=failure_latency_s)
        self.unknown_latency_s = unknown_latency_s

    def cost(self, server: Server, now: float) -> float:
        state = server.state
        weight = max(self.pool.weight_of(server, now), 1e-9)
        if not state.observed:
            return self.unknown_latency_s * state.outstanding / weight
        return state.latency(now, self.decay_s) * (state.outstanding + 1) / weight

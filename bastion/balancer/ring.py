"""Consistent hashing on a ring (Ketama), plain and with bounded loads."""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from collections.abc import Collection

from bastion.balancer.keyhash import MASK64, hash64, points
from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.strategy import Strategy

# At 100 equal hosts this is about 5,200 points each. A host's share of the hash space then
# has a relative standard deviation of about 1/sqrt(5,200) = 1.4%, and the busiest of 100 sits
# some 2.5 deviations above the mean: about 3.5%, inside the 5% aim with room for 10-host
# pools (larger shares) and 500-host ones (more draws at the tail). Envoy's minimum of 1,024
# gives 10 points a host and a deviation near 31%. Cost: 12 bytes a point (6 MiB per
# worker) and about a second to build, once per reconfiguration.
DEFAULT_RING_SIZE = 1 << 19


class RingHash(Strategy):
    """Ketama-style consistent hashing: the same key goes to the same server.

    Use it for affinity (caches, sessions, sharded state): removing or adding one server
    moves only the keys it owns, about 1/N of them. Each server owns points on a 64-bit ring
    in proportion to its weight; a key goes to the first point at or after its hash, and
    past servers that are down or excluded to the next one round the ring, which is where
    those keys would go if the server were removed. Slow start does not apply: moving keys
    in and out as a weight ramps would defeat the affinity. Without a key it picks at random.
    """

    name = "ring-hash"

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        ring_size: int = DEFAULT_RING_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(pool, rng=rng)
        if ring_size < 1:
            raise ValueError("ring_size must be >= 1")
        self.ring_size = ring_size
        active = pool.active
        shift = max(1, len(active).bit_length())
        packed: list[int] = []
        for index, server in enumerate(active):
            count = max(1, round(ring_size * server.weight / pool.total_weight))
            packed.extend((point << shift) | index for point in points(server.key, count))
        # One sort of (point, owner) packed into single integers is several times faster
        # than sorting tuples or sorting indices by key.
        packed.sort()
        low = (1 << shift) - 1
        self._points = array("Q", [value >> shift for value in packed])
        self._owners: list[Server] = [active[value & low] for value in packed]

    def __len__(self) -> int:
        return len(self._points)

    def _start(self, key: bytes | None) -> int:
        value = hash64(key) if key is not None else self.rng.getrandbits(64)
        index = bisect_left(self._points, value)
        return 0 if index == len(self._points) else index

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        owners = self._owners
        if not owners:
            return None
        index = self._start(key)
        server = owners[index]
        pool = self.pool
        if pool.usable(server) and server not in exclude:
            return server
        return self._walk(index, exclude)

    def _walk(self, index: int, exclude: Collection[Server]) -> Server | None:
        pool = self.pool
        owners = self._owners
        size = len(owners)
        total = len(pool.active)
        seen = {owners[index].key}
        for step in range(1, size):
            if len(seen) >= total:
                break
            server = owners[(index + step) % size]
            if server.key in seen:
                continue
            if pool.usable(server) and server not in exclude:
                return server
            seen.add(server.key)
        return None

    def shares(self) -> dict[Server, float]:
        """The share of the hash space each server owns: where uniform keys converge."""
        owned: dict[Server, int] = dict.fromkeys(self.pool.active, 0)
        pts = self._points
        if not pts:
            return {}
        previous = pts[-1] - (MASK64 + 1)
        for point, owner in zip(pts, self._owners, strict=True):
            owned[owner] += point - previous
            previous = point
        return {server: arc / (MASK64 + 1) for server, arc in owned.items()}


class BoundedLoads(RingHash):
    """Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016).

    Use it where ring hash's affinity is wanted but a few hot keys must not overload their
    server: no server takes a request that would put it above ``balance_factor`` * the
    average load (outstanding requests, scaled by weight, rounded up to a whole request); a
    key whose server is full walks round the ring to the next server under the bound.
    ``balance_factor`` trades affinity for evenness: 1.25 (the default) keeps most keys at
    home while holding the busiest server within 25% of the mean.
    """

    name = "bounded-load"

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        balance_factor: float = 1.25,
        ring_size: int = DEFAULT_RING_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        if not balance_factor >= 1.0:
            raise ValueError("balance_factor must be >= 1")
        super().__init__(pool, ring_size=ring_size, rng=rng)
        self.balance_factor = balance_factor

    def capacity(self, server: Server, total_load: int, total_weight: float) -> int:
        """The most requests ``server`` may hold once the new one is placed."""
        share = server.weight / total_weight if total_weight > 0 else 0.0
        return math.ceil(self.balance_factor * (total_load + 1) * share - 1e-9)

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        owners = self._owners
        if not owners:
            return None
        pool = self.pool
        total_load = 0
        total_weight = 0.0
        eligible = 0
        for server in pool.active:
            if pool.usable(server):
                total_load += server.state.outstanding
                total_weight += server.weight
                if server not in exclude:
                    eligible += 1
        if eligible == 0:
            return None
        index = self._start(key)
        size = len(owners)
        seen: set[str] = set()
        fallback: Server | None = None
        fallback_fill = math.inf
        for step in range(size):
            server = owners[(index + step) % size]
            if server.key in seen:
                continue
            seen.add(server.key)
            if not pool.usable(server) or server in exclude:
                continue
            cap = self.capacity(server, total_load, total_weight)
            load = server.state.outstanding
            if load < cap:
                return server
            # Only reachable when exclusions hold part of the load: then the least full
            # of the others is the fairest answer.
            fill = (load + 1) / max(cap, 1)
            if fill < fallback_fill:
                fallback, fallback_fill = server, fill
            eligible -= 1
            if eligible == 0:
                break
        return fallback

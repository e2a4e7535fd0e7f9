"""Consistent hashing on a ring (Ketama), plain and with bounded loads."""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from collections.abc import Collection
from typing import ClassVar, Final

from bastion.balancer.keyhash import MASK64, hash64, points
from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.strategy import Strategy

# Points for a server of the highest weight; lighter servers get proportionally fewer. A
# server's share of the hash space then has a relative standard deviation of about
# 1/sqrt(8,192) = 1.1%, and the busiest of 100 equal hosts sits some 2.5 deviations above
# the mean: about 3% expected, and still under 5% for an unlucky draw four deviations out.
# Envoy's minimum ring of 1,024 entries gives 10 points a host at 100 hosts and a deviation
# near 31%. The count is per server, not a total split among servers, so adding or
# removing a server leaves every other server's points where they were and moves only the
# keys it owns (a total ring size would give every other server a few points more or less,
# and move about as many keys again). Cost: 8 bytes a point (6.5 MiB per worker at 100
# hosts) and about 0.4 s to build at 100 hosts, once per reconfiguration; large pools that
# reconfigure often are better served by Maglev.
DEFAULT_POINTS: Final = 8192

# Envoy's cap: past it every server's points are scaled down together.
MAX_RING_SIZE: Final = 1 << 23


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
    tunables: ClassVar[dict[str, type]] = {"points_per_server": int, "max_ring_size": int}

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        points_per_server: int = DEFAULT_POINTS,
        max_ring_size: int = MAX_RING_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(pool, rng=rng)
        if points_per_server < 1 or max_ring_size < 1:
            raise ValueError("points_per_server and max_ring_size must be >= 1")
        active = pool.active
        counts = _point_counts(active, points_per_server, max_ring_size)
        # Each point's low bits are replaced by its owner's index: one sort of plain
        # integers orders points and owners together (much faster than sorting pairs), and
        # the ring is a single array of 8-byte entries. The bits given up (9 at 500 hosts)
        # do not matter for a 64-bit hash.
        shift = max(1, (len(active) - 1).bit_length())
        packed: list[int] = []
        for index, (server, count) in enumerate(zip(active, counts, strict=True)):
            packed.extend(
                ((point >> shift) << shift) | index for point in points(server.key, count)
            )
        packed.sort()
        self._mask = (1 << shift) - 1
        self._points = array("Q", packed)

    def __len__(self) -> int:
        return len(self._points)

    def _start(self, key: bytes | None) -> int:
        return self._index(hash64(key) if key is not None else self.rng.getrandbits(64))

    def _index(self, value: int) -> int:
        index = bisect_left(self._points, value)
        return 0 if index == len(self._points) else index

    def home(self, value: int) -> Server | None:
        """The server owning the 64-bit hash ``value``, whatever its health."""
        return self.owner(self._index(value)) if self._points else None

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        if not self._points:
            return None
        index = self._start(key)
        server = self.owner(index)
        pool = self.pool
        if pool.usable(server) and server not in exclude:
            return server
        return self._walk(index, exclude)

    def owner(self, index: int) -> Server:
        """The server owning the ``index``-th point of the ring."""
        return self.pool.active[self._points[index] & self._mask]

    def _walk(self, index: int, exclude: Collection[Server]) -> Server | None:
        pool = self.pool
        size = len(self._points)
        total = len(pool.active)
        seen = {self.owner(index).key}
        for step in range(1, size):
            if len(seen) >= total:
                break
            server = self.owner((index + step) % size)
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
        active = self.pool.active
        for point in pts:
            owned[active[point & self._mask]] += point - previous
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
    tunables: ClassVar[dict[str, type]] = {"balance_factor": float, **RingHash.tunables}

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        balance_factor: float = 1.25,
        points_per_server: int = DEFAULT_POINTS,
        max_ring_size: int = MAX_RING_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        if not balance_factor >= 1.0:
            raise ValueError("balance_factor must be >= 1")
        super().__init__(
            pool, points_per_server=points_per_server, max_ring_size=max_ring_size, rng=rng
        )
        self.balance_factor = balance_factor

    def capacity(self, server: Server, total_load: int, total_weight: float) -> int:
        """The most requests ``server`` may hold once the new one is placed."""
        share = server.weight / total_weight if total_weight > 0 else 0.0
        return math.ceil(self.balance_factor * (total_load + 1) * share - 1e-9)

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        if not self._points:
            return None
        pool = self.pool
        total_load = 0
        total_weight = 0.0
        eligible = 0
        panic = pool.panic
        for server in pool.active:
            state = server.state
            if panic or (state.healthy and not state.ejected):
                total_load += state.outstanding
                total_weight += server.weight
                if not exclude or server not in exclude:
                    eligible += 1
        if eligible == 0:
            return None
        index = self._start(key)
        size = len(self._points)
        seen: set[str] = set()
        fallback: Server | None = None
        fallback_fill = math.inf
        for step in range(size):
            server = self.owner((index + step) % size)
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


def _point_counts(servers: tuple[Server, ...], per_server: int, limit: int) -> list[int]:
    if not servers:
        return []
    top = max(server.weight for server in servers)
    counts = [max(1, round(per_server * server.weight / top)) for server in servers]
    total = sum(counts)
    if total > limit:
        counts = [max(1, count * limit // total) for count in counts]
    return counts

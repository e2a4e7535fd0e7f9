"""Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table instead of a ring."""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import ClassVar, Final

from bastion.balancer.keyhash import hash64, pair, rehash
from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.strategy import Strategy

# A prime, so every skip is coprime with it and each server's preference list is a
# permutation of all slots; 65,537 is the paper's and Envoy's default, 655 slots a host at 100
# hosts, so shares differ by at most one slot (0.15%).
DEFAULT_TABLE_SIZE: Final = 65537

# Fallback lookups for a key whose slot belongs to a server that is down or excluded.
_ATTEMPTS: Final = 16


class Maglev(Strategy):
    """Maglev consistent hashing: a fixed table of slots, each owned by one server.

    Use it instead of ring hash when the spread matters more than the last bit of stability:
    shares are even to within one slot, a lookup is one index instead of a binary search,
    and the table is small (65,537 entries). Removing a server moves its keys plus a little
    more than ring hash does. Weights are honoured by letting a server with half the weight
    claim a slot every other round while the table fills. A key whose server is down or
    excluded is rehashed into the table again, so those keys spread over all the others.
    Slow start does not apply (see :class:`RingHash`). Without a key it picks at random.
    """

    name = "maglev"
    tunables: ClassVar[dict[str, type]] = {"table_size": int}

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        table_size: int = DEFAULT_TABLE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(pool, rng=rng)
        if table_size < 2 or any(table_size % d == 0 for d in range(2, int(table_size**0.5) + 1)):
            raise ValueError("table_size must be a prime")
        self.table_size = table_size
        self._table: list[Server] = _fill(pool.active, table_size)

    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        table = self._table
        if not table:
            return None
        value = hash64(key) if key is not None else self.rng.getrandbits(64)
        pool = self.pool
        size = self.table_size
        server = table[value % size]
        if pool.usable(server) and server not in exclude:
            return server
        for attempt in range(1, _ATTEMPTS + 1):
            server = table[rehash(value, attempt) % size]
            if pool.usable(server) and server not in exclude:
                return server
        # Only when nearly every server is out: a stable choice among the rest.
        rest = pool.candidates(exclude)
        return rest[value % len(rest)] if rest else None

    def home(self, value: int) -> Server | None:
        """The server owning the 64-bit hash ``value``, whatever its health."""
        return self._table[value % self.table_size] if self._table else None

    def shares(self) -> dict[Server, float]:
        """The share of slots, hence of uniform keys, each server owns."""
        counts: dict[Server, int] = dict.fromkeys(self.pool.active, 0)
        for server in self._table:
            counts[server] += 1
        return {server: count / self.table_size for server, count in counts.items()}


def _fill(servers: tuple[Server, ...], size: int) -> list[Server]:
    """The paper's population loop, with each server's turns thinned by its relative weight."""
    if not servers:
        return []
    top = max(server.weight for server in servers)
    relative = [server.weight / top for server in servers]
    offsets = []
    skips = []
    for server in servers:
        first, second = pair(server.key)
        offsets.append(first % size)
        skips.append(second % (size - 1) + 1)
    following = [0] * len(servers)
    claimed = [0] * len(servers)
    owner = [-1] * size
    filled = 0
    turn = 0
    while True:
        turn += 1
        for index, share in enumerate(relative):
            if claimed[index] >= turn * share:
                continue
            offset, skip, step = offsets[index], skips[index], following[index]
            slot = (offset + step * skip) % size
            while owner[slot] >= 0:
                step += 1
                slot = (offset + step * skip) % size
            owner[slot] = index
            following[index] = step + 1
            claimed[index] += 1
            filled += 1
            if filled == size:
                return [servers[index] for index in owner]

"""Load-balancing strategies: pure, socket-free choosers of an upstream server.

The proxy builds a :class:`PoolSnapshot` per configuration, a strategy from it (``build``),
and for every attempt calls ``pick``, then ``on_start`` and ``on_finish`` (and
``on_connect`` / ``on_disconnect`` for upstream connections). See docs/balancing.md.
"""

from __future__ import annotations

from typing import Any

from bastion.balancer.keyhash import hash64
from bastion.balancer.load import LeastConnections, PeakEwma, PowerOfTwo
from bastion.balancer.maglev import Maglev
from bastion.balancer.pool import PoolSnapshot, Server, ServerState
from bastion.balancer.ring import BoundedLoads, RingHash
from bastion.balancer.rotation import Random, RoundRobin
from bastion.balancer.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        Random,
        LeastConnections,
        PowerOfTwo,
        PeakEwma,
        RingHash,
        Maglev,
        BoundedLoads,
    )
}


def build(name: str, pool: PoolSnapshot, **options: Any) -> Strategy:
    """The strategy called ``name`` (a key of :data:`STRATEGIES`) over ``pool``."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown strategy {name!r} (known: {known})") from None
    return cls(pool, **options)


__all__ = [
    "STRATEGIES",
    "BoundedLoads",
    "LeastConnections",
    "Maglev",
    "PeakEwma",
    "PoolSnapshot",
    "PowerOfTwo",
    "Random",
    "RingHash",
    "RoundRobin",
    "Server",
    "ServerState",
    "Strategy",
    "build",
    "hash64",
]

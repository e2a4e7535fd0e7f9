"""Load balancing: the reverse proxy (:class:`Balancer`) and its strategies.

``Balancer(BalancerConfig(...))`` is an engine handler: serve it with ``bastion balance``,
``bastion.engine.run``, or mount it in an App (``app.mount("/api", balancer)``). The
strategies are pure, socket-free choosers of an upstream server: the proxy builds a
:class:`PoolSnapshot` per configuration, a strategy from it (``build``), and for every attempt
calls ``pick``, then ``on_start`` and ``on_finish`` (and ``on_connect`` / ``on_disconnect``
for upstream connections). See docs/balancing.md and docs/proxying.md.
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


# After the strategies: the proxy and its configuration import them from this package.
from bastion.balancer.config import BalancerConfig, Route, Upstream, single_route  # noqa: E402
from bastion.balancer.proxy import Balancer  # noqa: E402

__all__ = [
    "STRATEGIES",
    "Balancer",
    "BalancerConfig",
    "Route",
    "Upstream",
    "single_route",
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

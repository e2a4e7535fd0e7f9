"""What every strategy offers the proxy: pick a server, and hear how each request went."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import ClassVar

from bastion._compiled import mypyc_attr
from bastion.balancer.pool import PoolSnapshot, Server


# Compiled, yet open to strategies written in Python (STRATEGIES takes them too).
@mypyc_attr(allow_interpreted_subclasses=True)
class Strategy(ABC):
    """Chooses a server from one :class:`PoolSnapshot`; build a new one per snapshot.

    The proxy calls :meth:`pick` for each attempt (with the servers already tried in
    ``exclude`` on a retry), :meth:`on_start` when the request is sent and :meth:`on_finish`
    when it ends, and :meth:`on_connect` / :meth:`on_disconnect` as upstream connections are
    put to use and released. The counters live on the servers' states, so hooks called on
    the strategy of a newer snapshot still land on the right server.

    ``decay_s`` is the time constant of the latency EWMA; ``failure_latency_s`` is the
    latency a failed request counts as at least, so a server that fails fast never looks
    fast.
    """

    name: ClassVar[str]
    # The keyword arguments a configuration file may set (``strategy_options``) and their
    # types, in the constructor's order. Declared rather than read from the signature: a
    # compiled class does not show its constructor's true signature to ``inspect``.
    tunables: ClassVar[dict[str, type]] = {"decay_s": float, "failure_latency_s": float}

    def __init__(
        self,
        pool: PoolSnapshot,
        *,
        rng: random.Random | None = None,
        decay_s: float = 10.0,
        failure_latency_s: float = 1.0,
    ) -> None:
        if decay_s <= 0:
            raise ValueError("decay_s must be > 0")
        self.pool = pool
        self.rng = rng if rng is not None else random.Random()
        self.decay_s = decay_s
        self.failure_latency_s = failure_latency_s

    @abstractmethod
    def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        """The server for this request, or None when no server may take it.

        ``key`` is what hashing strategies hash (a client address, a header, a cookie, the
        path); the others ignore it. ``exclude`` holds servers this request already tried.
        """

    def on_start(self, server: Server) -> None:
        server.state.outstanding += 1

    def on_finish(self, server: Server, latency_s: float, ok: bool) -> None:
        state = server.state
        if state.outstanding > 0:
            state.outstanding -= 1
        if not ok:
            latency_s = max(latency_s, self.failure_latency_s)
        state.observe(latency_s, self.pool.clock(), self.decay_s)

    def on_connect(self, server: Server) -> None:
        server.state.active_connections += 1

    def on_disconnect(self, server: Server) -> None:
        if server.state.active_connections > 0:
            server.state.active_connections -= 1

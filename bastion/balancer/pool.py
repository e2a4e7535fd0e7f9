"""The servers a strategy chooses from: live per-worker counters and the pool snapshot.

A :class:`PoolSnapshot` is built once per (re)configuration and never changes its members or
weights, so a reconfiguration swaps one snapshot for another instead of locking. What does
change between requests (in-flight counts, latency, health) lives in each server's
:class:`ServerState`, which a reconfiguration hands from the old server record to the new one.
Passive signals are per worker: every worker process keeps its own states, as Envoy does.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]


class ServerState:
    """Live counters for one server in one worker; the proxy and the strategies update them."""

    __slots__ = (
        "outstanding",
        "active_connections",
        "ewma_s",
        "ewma_at",
        "observed",
        "healthy",
        "ejected",
        "warm_since",
    )

    def __init__(self) -> None:
        self.outstanding = 0
        self.active_connections = 0
        self.ewma_s = 0.0
        self.ewma_at = 0.0
        self.observed = False
        self.healthy = True
        self.ejected = False
        # None means full weight: slow start only applies to servers added or recovered later.
        self.warm_since: float | None = None

    def latency(self, now: float, decay_s: float) -> float:
        """The peak EWMA latency, decayed toward zero by the time since the last observation.

        The decay is what lets a server that was slow once be tried again after a quiet
        spell; without it a balancer never sends it a request and never learns it recovered.
        """
        if now <= self.ewma_at:
            return self.ewma_s
        return self.ewma_s * math.exp((self.ewma_at - now) / decay_s)

    def observe(self, latency_s: float, now: float, decay_s: float) -> None:
        """Fold one response time into the peak EWMA."""
        if not self.observed or latency_s >= self.ewma_s:
            # A peak is taken at once: a server that turns slow must lose traffic now, not
            # after a time constant's worth of slow answers.
            self.ewma_s = latency_s
        else:
            # Weighted by elapsed time rather than by count, so a busy server's estimate
            # does not move faster than an idle one's.
            weight = math.exp(min(0.0, self.ewma_at - now) / decay_s)
            self.ewma_s = self.ewma_s * weight + latency_s * (1.0 - weight)
        self.ewma_at = now
        self.observed = True


@dataclass(frozen=True, slots=True)
class Server:
    """One upstream: its key (an address such as ``10.0.0.2:8000``), weight and live state.

    Equality and hashing go by key, so a server excluded for a retry stays excluded even if a
    reconfiguration replaced its record in between. A weight of 0 keeps the server in the
    pool (its in-flight requests finish) but sends it nothing new.
    """

    key: str
    weight: float = field(default=1.0, compare=False)
    state: ServerState = field(default_factory=ServerState, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a server needs a non-empty key")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"server {self.key}: weight must be a finite number >= 0")

    @property
    def outstanding(self) -> int:
        return self.state.outstanding

    @property
    def healthy(self) -> bool:
        return self.state.healthy

    @property
    def ejected(self) -> bool:
        return self.state.ejected


class PoolSnapshot:
    """An immutable set of servers with the health rules every strategy shares.

    ``panic_threshold``: when fewer than this share of the servers with weight are healthy
    and not ejected, every one of them is used again (Envoy's panic mode), because sending
    all traffic to a few survivors usually takes them down too; 0 turns panic mode off.
    ``slow_start_s``: a server added by :meth:`reconfigure` or back from unhealthy or ejected
    ramps its weight linearly from ``slow_start_floor`` * weight to its full weight over this
    window, so a cold cache or JIT is not handed a full share at once.

    Change health through :meth:`set_healthy`, :meth:`eject` and :meth:`restore` rather than
    on the state directly: they keep the healthy count that makes the panic check O(1).
    """

    def __init__(
        self,
        servers: Iterable[Server],
        *,
        panic_threshold: float = 0.5,
        slow_start_s: float = 0.0,
        slow_start_floor: float = 0.1,
        clock: Clock = time.monotonic,
    ) -> None:
        self.servers: tuple[Server, ...] = tuple(servers)
        keys = [server.key for server in self.servers]
        if len(set(keys)) != len(keys):
            raise ValueError("server keys must be unique within a pool")
        if not 0.0 <= panic_threshold <= 1.0:
            raise ValueError("panic_threshold must be between 0 and 1")
        if slow_start_s < 0 or not 0.0 <= slow_start_floor <= 1.0:
            raise ValueError("slow_start_s must be >= 0 and slow_start_floor between 0 and 1")
        self.panic_threshold = panic_threshold
        self.slow_start_s = slow_start_s
        self.slow_start_floor = slow_start_floor
        self.clock = clock
        self._by_key = {server.key: server for server in self.servers}
        # Servers with weight 0 take no new requests, so they count neither for picking
        # nor for the panic threshold.
        self.active: tuple[Server, ...] = tuple(s for s in self.servers if s.weight > 0)
        self.total_weight = math.fsum(s.weight for s in self.active)
        self._cumulative = list(_accumulate(s.weight for s in self.active))
        self._usable_count = sum(1 for s in self.active if _up(s.state))
        self.panic = False
        self._update_panic()
        self._warm_until = 0.0
        if slow_start_s > 0:
            for server in self.active:
                if server.state.warm_since is not None:
                    self._warm(server.state.warm_since)

    @classmethod
    def of(
        cls,
        servers: Mapping[str, float] | Iterable[str],
        *,
        panic_threshold: float = 0.5,
        slow_start_s: float = 0.0,
        slow_start_floor: float = 0.1,
        clock: Clock = time.monotonic,
    ) -> PoolSnapshot:
        """A first snapshot from ``{key: weight}`` or plain keys (weight 1), all at full weight."""
        weights = servers if isinstance(servers, Mapping) else dict.fromkeys(servers, 1.0)
        return cls(
            (Server(key, float(weight)) for key, weight in weights.items()),
            panic_threshold=panic_threshold,
            slow_start_s=slow_start_s,
            slow_start_floor=slow_start_floor,
            clock=clock,
        )

    def reconfigure(
        self,
        servers: Mapping[str, float] | Iterable[str],
        *,
        panic_threshold: float | None = None,
        slow_start_s: float | None = None,
    ) -> PoolSnapshot:
        """The next snapshot: kept keys keep their live state, new keys start slow start.

        ``panic_threshold`` and ``slow_start_s`` replace this snapshot's when given.
        """
        weights = servers if isinstance(servers, Mapping) else dict.fromkeys(servers, 1.0)
        if slow_start_s is None:
            slow_start_s = self.slow_start_s
        now = self.clock()
        records = []
        for key, weight in weights.items():
            old = self._by_key.get(key)
            if old is None:
                record = Server(key, float(weight))
                if slow_start_s > 0:
                    record.state.warm_since = now
            else:
                record = Server(key, float(weight), old.state)
            records.append(record)
        return PoolSnapshot(
            records,
            panic_threshold=self.panic_threshold if panic_threshold is None else panic_threshold,
            slow_start_s=slow_start_s,
            slow_start_floor=self.slow_start_floor,
            clock=self.clock,
        )

    def __len__(self) -> int:
        return len(self.servers)

    def get(self, key: str) -> Server | None:
        return self._by_key.get(key)

    # Health -----------------------------------------------------------------------------

    def set_healthy(self, server: Server, healthy: bool) -> None:
        """The active health check's verdict for ``server``."""
        self._change(server, healthy=healthy, ejected=server.state.ejected)

    def eject(self, server: Server) -> None:
        """Passive outlier detection took ``server`` out until :meth:`restore`."""
        self._change(server, healthy=server.state.healthy, ejected=True)

    def restore(self, server: Server) -> None:
        self._change(server, healthy=server.state.healthy, ejected=False)

    def _change(self, server: Server, *, healthy: bool, ejected: bool) -> None:
        state = server.state
        was_up = _up(state)
        state.healthy = healthy
        state.ejected = ejected
        is_up = _up(state)
        # The record may come from an older snapshot (a request that started before a
        # reconfiguration); what matters is whether its state is one this snapshot counts.
        current = self._by_key.get(server.key)
        if was_up == is_up or current is None or current.state is not state:
            return
        if current.weight <= 0:
            return
        self._usable_count += 1 if is_up else -1
        self._update_panic()
        if is_up and self.slow_start_s > 0:
            state.warm_since = self.clock()
            self._warm(state.warm_since)

    def _update_panic(self) -> None:
        self.panic = self._usable_count < self.panic_threshold * len(self.active)

    def usable(self, server: Server) -> bool:
        """May ``server`` take a new request (ignoring a retry's exclusions)?"""
        return server.weight > 0 and (self.panic or _up(server.state))

    # Weights ----------------------------------------------------------------------------

    def _warm(self, since: float) -> None:
        self._warm_until = max(self._warm_until, since + self.slow_start_s)

    def warming(self) -> bool:
        """Is any server still in its slow-start window? Callers then use :meth:`weight_of`."""
        if self._warm_until == 0.0:
            return False
        if self.clock() < self._warm_until:
            return True
        self._warm_until = 0.0
        return False

    def weight_of(self, server: Server, now: float) -> float:
        """The server's weight at ``now``, scaled down while it is in slow start."""
        since = server.state.warm_since
        if since is None or self.slow_start_s <= 0:
            return server.weight
        elapsed = now - since
        if elapsed >= self.slow_start_s:
            server.state.warm_since = None
            return server.weight
        ramp = max(0.0, elapsed) / self.slow_start_s
        return server.weight * (self.slow_start_floor + (1.0 - self.slow_start_floor) * ramp)

    # Choosing ---------------------------------------------------------------------------

    def candidates(self, exclude: Collection[Server] = ()) -> list[Server]:
        """Every server that may take this request."""
        return [s for s in self.active if self.usable(s) and s not in exclude]

    def draw(
        self,
        rng: random.Random,
        exclude: Collection[Server] = (),
        besides: Server | None = None,
    ) -> Server | None:
        """A random usable server, in proportion to weight, not excluded and not ``besides``."""
        if not self.active:
            return None
        if not self.warming():
            # Rejection sampling keeps a draw O(log n) while most servers are usable; the
            # accepted draws are still in proportion to weight among the usable ones.
            for _ in range(8):
                index = bisect.bisect_right(self._cumulative, rng.random() * self.total_weight)
                server = self.active[min(index, len(self.active) - 1)]
                if server is not besides and self.usable(server) and server not in exclude:
                    return server
        pool = [s for s in self.candidates(exclude) if s is not besides]
        if not pool:
            return None
        now = self.clock()
        weights = [self.weight_of(s, now) for s in pool]
        if math.fsum(weights) <= 0:
            # Slow start with a floor of 0 can leave every candidate at weight 0 for an
            # instant; an even choice beats refusing the request.
            return rng.choice(pool)
        return rng.choices(pool, weights)[0]


def _up(state: ServerState) -> bool:
    return state.healthy and not state.ejected


def _accumulate(weights: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for weight in weights:
        total += weight
        yield total

"""The supervisor's copy of the balancer configuration: the one every worker follows.

``bastion balance`` gives its supervisor a :class:`BalancerControl` job. Whatever changes the
configuration while the server runs — a reloaded file, the admin API, service discovery —
calls :meth:`BalancerControl.apply` (or :meth:`set_upstreams`), which broadcasts it to every
worker (``Balancer.reconfigure`` there: no request or connection dropped) and hands it to the
active health checks. A worker that starts later is sent the current configuration before
its first request, so a restarted worker never serves an older one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bastion.balancer.admin import BalancerAPI, WorkerSnapshots
from bastion.balancer.config import CONFIG_MESSAGE, BalancerConfig, Upstream, config_to_data

logger = logging.getLogger("bastion.error")

Message = dict[str, Any]


def config_message(config: BalancerConfig) -> Message:
    return {"kind": CONFIG_MESSAGE, "config": config_to_data(config)}


class BalancerControl:
    """Holds the current :class:`BalancerConfig` and tells the workers when it changes.

    ``on_change`` callbacks (the active health checks, say) hear every new configuration
    too, after the workers were told.
    """

    def __init__(
        self,
        config: BalancerConfig,
        *,
        verdicts: Callable[[], Mapping[tuple[str, str], bool]] | None = None,
    ) -> None:
        """``verdicts``: the active health checks' ``(route, key) → healthy``, for the admin API."""
        self.config = config
        self.on_change: list[Callable[[BalancerConfig], None]] = []
        self.verdicts = verdicts or dict
        # (route, key) → the weight a drained server had; only while its weight is 0.
        self.drained: dict[tuple[str, str], float] = {}
        self._broadcast: Callable[[Message], None] | None = None

    async def run(self, broadcast: Callable[[Message], None]) -> None:
        self._broadcast = broadcast
        await asyncio.get_running_loop().create_future()  # until cancelled

    def state(self) -> list[Message]:
        return [config_message(self.config)]

    def apply(self, config: BalancerConfig) -> None:
        """Make ``config`` the one every worker follows (it is already checked: built)."""
        self.config = config
        zero = {(r.name, u.key) for r in config.routes for u in r.upstreams if u.weight == 0}
        self.drained = {key: weight for key, weight in self.drained.items() if key in zero}
        if self._broadcast is not None:
            self._broadcast(config_message(config))
        for callback in self.on_change:
            try:
                callback(config)
            except Exception:
                logger.exception("a balancer configuration listener failed")

    def route(self, name: str) -> Any:
        for route in self.config.routes:
            if route.name == name:
                return route
        raise KeyError(name)

    def set_upstreams(self, route_name: str, upstreams: Iterable[Upstream]) -> None:
        """Replace one route's servers; ``KeyError`` for an unknown route, ``ValueError``
        for a set the route cannot take (empty, duplicates, every weight 0)."""
        route = self.route(route_name)
        updated = dataclasses.replace(route, upstreams=tuple(upstreams))
        routes = tuple(updated if r.name == route_name else r for r in self.config.routes)
        self.apply(dataclasses.replace(self.config, routes=routes))

    def admin_routes(self, workers: Callable[[], WorkerSnapshots]) -> list[Any]:
        """``/api/balancer`` on the admin listener (:mod:`bastion.balancer.admin`)."""
        return BalancerAPI(self, workers).routes()

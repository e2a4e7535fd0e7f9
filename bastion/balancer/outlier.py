"""Passive outlier detection: servers that keep failing real requests are taken out a while.

Active checks probe a health path every few seconds; real traffic notices a dead or broken
server on the next request. After ``consecutive_failures`` failed attempts in a row (a failed
connection, a timeout, a 5xx), a server is ejected for ``base_ejection`` times the number of
times it has been ejected (capped at ``max_ejection``), so a server that keeps failing stays
out longer each time; a server that behaves for ``max_ejection`` after coming back starts
from one again. Never more than ``max_ejected_share`` of the pool is ejected at once, and the
pool's panic mode still uses every server when too few are left. Per worker, as all passive
signals are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from bastion.balancer.config import OutlierDetection
from bastion.balancer.pool import PoolSnapshot, Server
from bastion.balancer.stats import UpstreamStats

logger = logging.getLogger("bastion.error")


class OutlierDetector:
    def __init__(
        self,
        snapshot: PoolSnapshot,
        config: OutlierDetection,
        stats: Mapping[str, UpstreamStats],
    ) -> None:
        self.snapshot = snapshot
        self.config = config
        self.stats = stats
        self._failures: dict[str, int] = {}
        self._times: dict[str, int] = {}
        self._restored_at: dict[str, float] = {}
        self._ejected = 0

    def observe(self, server: Server, ok: bool, loop: asyncio.AbstractEventLoop) -> None:
        key = server.key
        if ok:
            if key in self._failures:
                del self._failures[key]
            return
        threshold = self.config.consecutive_failures
        if not threshold:
            return
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        if count >= threshold and not server.state.ejected:
            self._eject(server, loop)

    def _eject(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        config = self.config
        size = len(self.snapshot.servers)
        if self._ejected + 1 > config.max_ejected_share * size:
            return
        key = server.key
        now = loop.time()
        if now - self._restored_at.get(key, now) >= config.max_ejection:
            self._times[key] = 0
        times = self._times[key] = self._times.get(key, 0) + 1
        duration = min(config.base_ejection * times, config.max_ejection)
        self.snapshot.eject(server)
        self._ejected += 1
        self._failures.pop(key, None)
        self.stats[key].ejections += 1
        logger.warning(
            "upstream %s ejected for %.0f s after %d failures in a row",
            key,
            duration,
            config.consecutive_failures,
        )
        loop.call_later(duration, self._restore, server, loop)

    def _restore(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        if server.state.ejected:
            self.snapshot.restore(server)
            self._ejected -= 1
            self._restored_at[server.key] = loop.time()
            logger.info("upstream %s back in the pool after ejection", server.key)

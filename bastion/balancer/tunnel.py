"""A WebSocket (or any switched protocol) tunnelled between a client and an upstream.

Once the upstream has accepted the upgrade (its 101 passed back to the client), the balancer
stops reading HTTP on either side and copies bytes both ways, with the same backpressure as a
proxied body: when one side stops reading, the other side is no longer read. A half-close is
passed on (the client's FIN becomes the upstream's, and back), and silence in both directions
for ``idle_timeout`` closes both connections, as nginx's proxy_read_timeout does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.balancer.connections import UpstreamConnection
    from bastion.engine.connection import HTTPConnection


class Tunnel:
    """Copies bytes between ``client`` (an engine connection) and ``upstream``."""

    __slots__ = ("client", "upstream", "idle_timeout", "loop", "_activity", "_seen", "_timer")

    def __init__(
        self,
        client: HTTPConnection,
        upstream: UpstreamConnection,
        idle_timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.idle_timeout = idle_timeout
        self.loop = loop
        self._activity = 0
        self._seen = 0
        self._timer: asyncio.TimerHandle | None = loop.call_later(idle_timeout, self._check_idle)

    # the client's side (bastion.engine.tunnel.TunnelPeer) ----------------------------------

    def data_received(self, data: bytes) -> None:
        self._activity += 1
        upstream = self.upstream
        upstream.write(data)
        if upstream.write_paused:
            self.client.pause_reading()
            upstream.when_writable(self.client.resume_reading)

    def eof_received(self) -> None:
        self.upstream.write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self.upstream.close()

    # the upstream's side --------------------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        self._activity += 1
        client = self.client
        client.write(data)
        if client.write_paused:
            self.upstream.pause_reading()
            client.when_writable(self.upstream.resume_reading)

    def upstream_eof(self) -> None:
        self.client.write_eof()

    def upstream_lost(self) -> None:
        self._stop()
        self.client.close()

    # silence ----------------------------------------------------------------------------------

    def _check_idle(self) -> None:
        self._timer = None
        if self._activity != self._seen:
            self._seen = self._activity
            self._timer = self.loop.call_later(self.idle_timeout, self._check_idle)
            return
        self.upstream.close()
        self.client.close()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

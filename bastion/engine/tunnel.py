"""After a protocol switch (101): the connection's bytes belong to someone else.

A handler that answers an upgrade with ``Exchange.switch_protocols`` gives the connection to a
:class:`TunnelPeer`: from then on every byte the client sends goes to the peer, and the peer
writes through the connection (``write``, ``pause_reading``/``resume_reading`` for
backpressure, ``close``). The engine still owns the socket: its write timeout, its count of
open connections and its graceful shutdown (which waits for a tunnel until the graceful
timeout, then closes it) apply as before.

A peer with deadlines of its own (a WebSocket's pings, its closing handshake) may define
``check_deadlines(now)``, called by the server's periodic sweep, so it needs no timer; and
one that can end politely may define ``going_away()``, called (repeatedly) while the server
drains, to start its own close (a WebSocket's 1001).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class TunnelPeer(Protocol):
    """What receives a switched connection's bytes (the balancer's WebSocket tunnel, say)."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> None:
        """The client closed its sending side; the connection stays open for writing."""

    def connection_lost(self, exc: Exception | None) -> None: ...


class TunnelFeed:
    """Stands in for the request parser once the protocol switched: bytes go to the peer.

    ``in_request`` is true so that neither the keep-alive clock nor a graceful shutdown takes
    the connection for an idle one.
    """

    in_request = True
    reading_head = False

    __slots__ = ("peer", "check_deadlines", "going_away")

    def __init__(self, peer: TunnelPeer) -> None:
        self.peer = peer
        # The peer's optional hooks, looked up once (the sweep calls them every interval).
        self.check_deadlines: Callable[[float], None] = getattr(
            peer, "check_deadlines", _no_deadlines
        )
        self.going_away: Callable[[], None] = getattr(peer, "going_away", _stay)

    def feed(self, data: bytes) -> None:
        self.peer.data_received(data)


def _no_deadlines(now: float) -> None:
    return None


def _stay() -> None:
    return None

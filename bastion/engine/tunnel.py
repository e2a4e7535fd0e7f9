"""After a protocol switch (101): the connection's bytes belong to someone else.

A handler that answers an upgrade with ``Exchange.switch_protocols`` gives the connection to a
:class:`TunnelPeer`: from then on every byte the client sends goes to the peer, and the peer
writes through the connection (``write``, ``pause_reading``/``resume_reading`` for
backpressure, ``close``). The engine still owns the socket: its write timeout, its count of
open connections and its graceful shutdown (which waits for a tunnel until the graceful
timeout, then closes it) apply as before.
"""

from __future__ import annotations

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

    def __init__(self, peer: TunnelPeer) -> None:
        self.peer = peer

    def feed(self, data: bytes) -> None:
        self.peer.data_received(data)

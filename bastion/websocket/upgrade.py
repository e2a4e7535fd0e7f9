"""Accepting a checked handshake: the 101 goes out and the connection becomes a WebSocket.

The engine's connection is handed over with ``Exchange.switch_protocols``, the same way the
balancer's tunnel takes one over: same socket, same loop, same write timeout and drain.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.engine.exchange import Exchange
from bastion.websocket.config import WebSocketConfig
from bastion.websocket.connection import WebSocketConnection, new_protocol
from bastion.websocket.handshake import Handshake, HandshakeRefused, response_head
from bastion.websocket.stats import websocket_stats

_TEXT = [("content-type", "text/plain; charset=utf-8")]


def accept(
    exchange: Exchange,
    handshake: Handshake,
    config: WebSocketConfig,
    *,
    subprotocol: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> WebSocketConnection:
    """Answer ``handshake`` with 101 and return the open WebSocket.

    Raises ``ValueError`` for a subprotocol the client did not offer or a malformed header,
    and ``ClientDisconnected`` if the client is already gone.
    """
    conn = exchange.conn
    head = response_head(
        handshake, subprotocol=subprotocol, headers=headers, server_lines=conn.state.server_lines
    )
    protocol = new_protocol(config, handshake.extensions)
    websocket = WebSocketConnection(
        conn, protocol, config, websocket_stats(conn.state), subprotocol
    )
    exchange.switch_protocols(head, websocket)
    return websocket


def refuse(exchange: Exchange, refused: HandshakeRefused) -> None:
    """Answer a handshake that failed its checks with the HTTP response it calls for."""
    body = f"{refused.status} {refused.detail}\n".encode()
    exchange.respond(refused.status, [*_TEXT, *refused.headers], body)

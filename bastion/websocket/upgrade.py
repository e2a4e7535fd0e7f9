"""Accepting a checked handshake: the 101 goes out and the connection becomes a WebSocket.

The engine's connection is handed over with ``Exchange.switch_protocols``, the same way the
balancer's tunnel takes one over: same socket, same loop, same write timeout and drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

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


async def cancel_abandoned(handlers: Mapping[asyncio.Task[Any], Exchange]) -> None:
    """At a server's shutdown, cancel the WebSocket handlers it leaves behind.

    The server has closed every WebSocket by then (1001, then the graceful timeout), so a
    handler still running is not listening to its connection. ``handlers`` maps each running
    handler's task to its handshake's exchange; only the tasks on the running loop whose
    connection is closed are cancelled, since one application may be served by other
    servers, on this loop or another, that are still running.
    """
    loop = asyncio.get_running_loop()
    stale = [
        task
        for task, exchange in handlers.items()
        if task.get_loop() is loop and exchange.conn.closed
    ]
    if stale:
        for task in stale:
            task.cancel()
        await asyncio.wait(stale, timeout=1.0)

"""WebSocket (RFC 6455, with RFC 7692 compression) on Bastion's engine.

The engine parses the opening handshake like any request; :func:`check_handshake` decides
whether it is one we can accept (or which HTTP answer it gets instead), and :func:`accept`
sends the 101 and turns the engine's connection into a :class:`WebSocketConnection` on the
same loop. Framing is the ``websockets`` library's sans-IO protocol. The adapters build on
this: the ASGI ``websocket`` scope (``bastion.asgi``) and ``App.websocket`` routes
(``bastion.app``). See docs/websocket.md.
"""

from bastion.websocket.config import WebSocketConfig
from bastion.websocket.connection import Message, WebSocketClosed, WebSocketConnection
from bastion.websocket.handshake import Handshake, HandshakeRefused, asks_websocket, check_handshake
from bastion.websocket.stats import WebSocketStats, websocket_stats
from bastion.websocket.upgrade import accept, cancel_abandoned, refuse

__all__ = [
    "Handshake",
    "HandshakeRefused",
    "Message",
    "WebSocketClosed",
    "WebSocketConfig",
    "WebSocketConnection",
    "WebSocketStats",
    "accept",
    "cancel_abandoned",
    "asks_websocket",
    "check_handshake",
    "refuse",
    "websocket_stats",
]

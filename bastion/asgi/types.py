"""The shapes of ASGI 3: an application is ``await app(scope, receive, send)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSION = "3.0"
# 2.4: send() on a closed connection raises an OSError subclass (ClientDisconnected).
HTTP_SPEC_VERSION = "2.4"
LIFESPAN_SPEC_VERSION = "2.0"
# 2.3: a reason in websocket.close; 2.4: send() on a closed WebSocket raises an OSError.
WEBSOCKET_SPEC_VERSION = "2.4"

__all__ = [
    "ASGIApp",
    "ASGI_VERSION",
    "HTTP_SPEC_VERSION",
    "LIFESPAN_SPEC_VERSION",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "WEBSOCKET_SPEC_VERSION",
]

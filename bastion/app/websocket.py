"""What an ``App.websocket`` route receives: the handshake's request, then the open WebSocket.

::

    @app.websocket("/ws/{room}")
    async def room(ws: WebSocket) -> None:
        async for message in ws:           # str for text, bytes for binary
            await ws.send(message)

The handshake is accepted by the first ``receive``, ``send`` or iteration, or explicitly with
``await ws.accept(subprotocol=..., headers=...)``; before that, ``await ws.reject(status)`` (or
``close()``) refuses it with an HTTP response. The connection is the engine's own, handed over
on the same loop: no second server, no thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from bastion.app.request import _RequestBase
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange
from bastion.websocket import (
    Handshake,
    Message,
    WebSocketClosed,
    WebSocketConfig,
    WebSocketConnection,
    accept,
)

_TEXT = [("content-type", "text/plain; charset=utf-8")]


class WebSocket(_RequestBase):
    """One WebSocket of an ``App`` route; the request's path, query and headers as on
    :class:`~bastion.app.Request`, plus ``receive``, ``send``, ``close`` and ``async for``."""

    __slots__ = ("_handshake", "_subprotocols", "_config", "_connection", "_refused")

    def __init__(
        self,
        exchange: Exchange,
        path_params: dict[str, Any],
        handshake: Handshake,
        config: WebSocketConfig,
    ) -> None:
        super().__init__(exchange, path_params)
        # Dropped once accepted: an idle WebSocket keeps only what it still needs.
        self._handshake: Handshake | None = handshake
        self._subprotocols = handshake.subprotocols
        self._config = config
        self._connection: WebSocketConnection | None = None
        self._refused = False

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return self._subprotocols

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol accepted, if any."""
        connection = self._connection
        return connection.subprotocol if connection is not None else None

    @property
    def accepted(self) -> bool:
        return self._connection is not None

    @property
    def close_code(self) -> int | None:
        """How the WebSocket closed (1006: no close frame), or None while it is open."""
        connection = self._connection
        if connection is None or not connection.ended:
            return None
        return connection.close_code

    @property
    def close_reason(self) -> str:
        connection = self._connection
        return connection.close_reason if connection is not None else ""

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer the handshake with 101: the connection is a WebSocket from now on.

        ``subprotocol`` must be one of :attr:`subprotocols`; ``headers`` are added to the 101.
        """
        if self._connection is not None:
            raise RuntimeError("the WebSocket is already accepted")
        if self._refused:
            raise RuntimeError("the WebSocket handshake was already refused")
        handshake = self._handshake
        assert handshake is not None  # only accepting drops it
        self._connection = accept(
            self.exchange, handshake, self._config, subprotocol=subprotocol, headers=headers
        )
        self._handshake = None

    async def reject(
        self, status: int = 403, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Refuse the handshake with an HTTP response (403 by default)."""
        if self._connection is not None:
            raise RuntimeError("the WebSocket is already accepted: close() it instead")
        if not 200 <= status <= 599:
            raise ValueError(f"a refusal needs a final status, not {status!r}")
        self._refused = True
        exchange = self.exchange
        if exchange.finished:
            raise ClientDisconnected("client disconnected before the handshake was answered")
        if not body:
            body = b"%d Refused\n" % status
            headers = [*_TEXT, *headers]
        exchange.respond(status, headers, body)

    async def _open(self) -> WebSocketConnection:
        connection = self._connection
        if connection is None:
            await self.accept()
            connection = self._connection
            assert connection is not None
        return connection

    async def receive(self) -> Message:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`~bastion.websocket.WebSocketClosed` (with ``code`` and ``reason``)
        once the WebSocket is closed.
        """
        connection = self._connection or await self._open()
        message = await connection.receive()
        if message is None:
            raise WebSocketClosed(connection.close_code or 1006, connection.close_reason)
        return message

    async def send(self, message: Message) -> None:
        """Send ``str`` as text, ``bytes`` as binary; waits while the client is slow."""
        connection = self._connection or await self._open()
        await connection.send(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket with ``code`` and ``reason``; before the handshake was
        accepted, refuse it with 403 instead."""
        connection = self._connection
        if connection is None:
            if not self._refused:
                await self.reject(403)
            return
        connection.close(code, reason)

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> Message:
        connection = self._connection or await self._open()
        message = await connection.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    def task_done(self, task: asyncio.Task[None]) -> None:
        """The handler's task ended: settle the handshake, or close the WebSocket."""
        self.finish(asyncio.CancelledError() if task.cancelled() else task.exception())

    def finish(self, error: BaseException | None) -> None:
        """The endpoint returned (or raised): close what it left open."""
        exchange = self.exchange
        connection = self._connection
        if connection is not None:
            connection.handler_ended(error, exchange.head.target)
            return
        if exchange.finished:
            return
        if error is None:
            # Returned without accepting: a refusal, like closing before the accept.
            exchange.respond(403, _TEXT, b"403 Refused\n")
            return
        exchange.fail(error)

    def __repr__(self) -> str:
        return f"<WebSocket {self.path}>"

"""The ASGI ``websocket`` scope: one application call per WebSocket, on the engine's loop.

The handshake was checked before the application is called (a bad key or version never
reaches it). The application's first ``receive()`` is ``websocket.connect``; it then answers
with one of:

* ``websocket.accept`` (a subprotocol the client offered, extra headers): the 101 goes out and
  the connection becomes a :class:`~bastion.websocket.WebSocketConnection`;
* ``websocket.close``: 403, as the spec asks for a close before the accept;
* ``websocket.http.response.start`` and ``.body`` (the Websocket Denial Response extension,
  offered in ``scope["extensions"]``): that HTTP response instead.

Once open, ``websocket.receive`` carries ``text`` or ``bytes``, and ``websocket.disconnect``
the close code and reason (1006 when the connection ended without a close frame).
``send()`` on a closed WebSocket raises :class:`~bastion.websocket.WebSocketClosed`, an
``OSError`` (spec 2.4). An application that returns while the WebSocket is open closes it with
1000; one that raises, with 1011 (and a log line); one that returns or raises before answering
the handshake gets a 500.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from bastion.asgi.types import Message
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange
from bastion.websocket import (
    Handshake,
    WebSocketConfig,
    WebSocketConnection,
    accept,
)

# Where the handshake stands.
_CONNECTING = 0  # the application has not answered the handshake
_RESPONDING = 1  # it is answering with an HTTP response (denial)
_OPEN = 2  # accepted: the connection is a WebSocket
_DONE = 3  # refused, denied, or the client left before an answer

_FORBIDDEN = b"403 Forbidden\n"
_TEXT = [("content-type", "text/plain; charset=utf-8")]
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection"))


class WebSocketCycle:
    """One WebSocket's ``receive`` and ``send``, from handshake to close."""

    __slots__ = (
        "exchange",
        "scope",
        "handshake",
        "config",
        "state",
        "websocket",
        "connected",
        "task",
        "_denial_status",
        "_denial_headers",
        "_denial_started",
    )

    def __init__(
        self,
        exchange: Exchange,
        scope: dict[str, Any],
        handshake: Handshake,
        config: WebSocketConfig,
    ) -> None:
        self.exchange = exchange
        self.scope = scope
        self.handshake = handshake
        self.config = config
        self.state = _CONNECTING
        self.websocket: WebSocketConnection | None = None
        self.connected = False
        self.task: asyncio.Task[Any] | None = None
        self._denial_status = 0
        self._denial_headers: list[tuple[str, str]] = []
        self._denial_started = False

    # receive ----------------------------------------------------------------------------------

    async def receive(self) -> Message:
        websocket = self.websocket
        if websocket is not None:
            message = await websocket.receive()
            if message is None:
                return {
                    "type": "websocket.disconnect",
                    "code": websocket.close_code,
                    "reason": websocket.close_reason,
                }
            if message.__class__ is str:
                return {"type": "websocket.receive", "text": message}
            return {"type": "websocket.receive", "bytes": message}
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        exchange = self.exchange
        if self.state == _CONNECTING and not exchange.client_gone:
            # Asked again before answering the handshake: the next thing to happen is the
            # client giving up.
            await exchange.wait_client_gone()
        return {"type": "websocket.disconnect", "code": 1006, "reason": ""}

    # send -------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        websocket = self.websocket
        if websocket is not None:
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is None:
                    data = message.get("text")
                    if data is None:
                        self._violation("'websocket.send' with neither 'bytes' nor 'text'")
                await websocket.send(data)
            elif kind == "websocket.close":
                try:
                    websocket.close(message.get("code") or 1000, message.get("reason") or "")
                except ValueError as error:
                    self._violation(str(error))
            else:
                self._violation(f"unexpected message type {kind!r} on an open WebSocket")
            return
        state = self.state
        if state == _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self.state = _DONE
                self._respond(403, _TEXT, _FORBIDDEN)
            elif kind == "websocket.http.response.start":
                status = message.get("status")
                if status.__class__ is not int or not 100 <= status <= 999 or status == 101:
                    self._violation(f"invalid status {status!r} in {kind!r}")
                self._denial_status = status  # type: ignore[assignment]
                # Framing is the server's: a response of one body gets its Content-Length
                # from that body, a streamed one is chunked.
                self._denial_headers = [
                    (name, value)
                    for name, value in _headers(message.get("headers", ()))
                    if name.lower() not in _FRAMING
                ]
                self.state = _RESPONDING
            else:
                self._violation(f"unexpected message type {kind!r} before the handshake")
        elif state == _RESPONDING:
            if kind != "websocket.http.response.body":
                self._violation(f"unexpected message type {kind!r} in a denial response")
            await self._deny(message.get("body", b""), bool(message.get("more_body", False)))
        else:
            raise ClientDisconnected("the WebSocket handshake was refused or abandoned")

    def _accept(self, message: Message) -> None:
        exchange = self.exchange
        if exchange.finished:
            self.state = _DONE
            raise ClientDisconnected("client disconnected before the handshake was answered")
        try:
            extra = _headers(message.get("headers", ()))
            self.websocket = accept(
                exchange,
                self.handshake,
                self.config,
                subprotocol=message.get("subprotocol"),
                headers=extra,
            )
        except ValueError as error:
            self._violation(str(error))
        self.state = _OPEN

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        exchange = self.exchange
        if exchange.finished:
            raise ClientDisconnected("client disconnected before the handshake was answered")
        exchange.respond(status, headers, body)

    async def _deny(self, body: bytes, more: bool) -> None:
        exchange = self.exchange
        if exchange.finished:
            self.state = _DONE
            raise ClientDisconnected("client disconnected before the handshake was answered")
        if not self._denial_started:
            if not more:
                self.state = _DONE
                exchange.respond(self._denial_status, self._denial_headers, body)
                return
            self._denial_started = True
            exchange.start(self._denial_status, self._denial_headers)
        exchange.write(body)
        if not more:
            self.state = _DONE
            exchange.end()
        elif exchange.conn.write_paused:
            await exchange.drain()

    def _violation(self, what: str) -> NoReturn:
        raise RuntimeError(f"ASGI protocol error: {what}")

    # the end ----------------------------------------------------------------------------------

    def finish(self, error: BaseException | None) -> None:
        """The application call ended: settle the handshake or close the WebSocket."""
        exchange = self.exchange
        exchange.state = None
        websocket = self.websocket
        if websocket is not None:
            websocket.handler_ended(error, exchange.head.target)
            return
        if exchange.finished:
            return
        if exchange.client_gone:
            exchange.fail(ClientDisconnected("client disconnected"))
            return
        if self.state == _RESPONDING and self._denial_started:
            exchange.abort("ASGI application did not complete its denial response")
            return
        if error is None:
            error = RuntimeError("ASGI application returned without answering the handshake")
        exchange.fail(error)


def _headers(raw: Any) -> list[tuple[str, str]]:
    try:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    except AttributeError:
        raise TypeError("ASGI header names and values must be byte strings") from None

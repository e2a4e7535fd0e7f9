"""One accepted WebSocket: the engine connection's peer after the 101, and the application's
``receive``/``send``/``close``.

Framing, masking, control frames and the close handshake are the ``websockets`` library's
sans-IO ``ServerProtocol`` (its masking is in C); this module is the I/O around it, on the
connection's own event loop: bytes from the engine go in, frames come out and are assembled
into messages, and what the protocol wants sent goes out through the engine's connection, so
its write timeout, backpressure and count of open connections hold as for HTTP.

Bounded everywhere: a frame and a message have a maximum size (1009 past it, checked before
a payload is buffered or inflated); at most ``receive_queue`` messages wait for the
application, after which the socket is no longer read; text is checked as UTF-8 as fragments
arrive (1007 at the first bad byte, RFC 6455 §8.1); and every wait has a deadline, checked by
the engine's periodic sweep rather than a timer per connection: the pong after a ping, the
peer's answer to our close frame, a peer that stopped reading.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ProtocolError as FrameError
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from bastion.engine.errors import ClientDisconnected
from bastion.websocket.config import WebSocketConfig
from bastion.websocket.stats import WebSocketStats

if TYPE_CHECKING:
    from websockets.extensions.base import Extension

    from bastion.engine.connection import HTTPConnection

logger = logging.getLogger("bastion.error")

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_CLOSE = Opcode.CLOSE
_PONG = Opcode.PONG
_OPEN = State.OPEN
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

# No close frame was received (RFC 6455 §7.1.5): the connection just ended.
ABNORMAL_CLOSURE = 1006
GOING_AWAY = 1001

Message = str | bytes


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The protocol object's logger: it logs every closed connection at INFO, which is not
    news on a server; its warnings and errors still reach ``bastion.error``."""

    def info(self, *args: Any, **kwargs: Any) -> None:
        return None

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.INFO and self.logger.isEnabledFor(level)


_PROTOCOL_LOGGER = _Quiet(logging.getLogger("bastion.error"), {})


class WebSocketClosed(ClientDisconnected):
    """The WebSocket is closed: nothing more can be sent. An ``OSError``, as ASGI asks."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


# How a handler may end without it being an error worth a log line: its client left.
_QUIET_ENDINGS = (ClientDisconnected, asyncio.CancelledError)


class _ServerProtocol(ServerProtocol):
    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is _CLOSE and self.current_size is not None:
            # RFC 6455 §5.4 lets control frames come between the fragments of a message, a
            # close included: the unfinished message is dropped and the close answered as
            # usual. The library would fail the connection with 1002 instead.
            self.current_size = None
        super().recv_frame(frame)


def new_protocol(config: WebSocketConfig, extensions: list[Extension]) -> ServerProtocol:
    """A sans-IO protocol object past its handshake (which the engine's head already did)."""
    protocol = _ServerProtocol(
        state=_OPEN,
        max_size=(config.max_message_size, config.max_frame_size),
        logger=_PROTOCOL_LOGGER,
    )
    protocol.extensions = list(extensions)
    return protocol


class WebSocketConnection:
    """An open WebSocket on an engine connection (a :class:`~bastion.engine.tunnel.TunnelPeer`).

    ``receive()`` returns the next message (``str`` for text, ``bytes`` for binary) or None
    once the WebSocket is closed; :attr:`close_code` and :attr:`close_reason` then say how.
    ``send()`` waits while the client is slower than we write. ``close()`` starts the closing
    handshake. All of it runs on the loop that owns the connection.
    """

    __slots__ = (
        "conn",
        "protocol",
        "config",
        "stats",
        "subprotocol",
        "close_code",
        "close_reason",
        "ended",
        "_messages",
        "_waiter",
        "_paused",
        "_fragments",
        "_fragment_size",
        "_decoder",
        "_close_deadline",
        "_next_ping",
        "_pong_deadline",
        "_ping_payload",
    )

    def __init__(
        self,
        conn: HTTPConnection,
        protocol: ServerProtocol,
        config: WebSocketConfig,
        stats: WebSocketStats,
        subprotocol: str | None = None,
    ) -> None:
        self.conn = conn
        self.protocol = protocol
        self.config = config
        self.stats = stats
        self.subprotocol = subprotocol
        self.close_code: int | None = None
        self.close_reason = ""
        # True once no message will come any more: the peer closed, we failed the
        # connection, or the socket is gone.
        self.ended = False
        # A list, not a deque: it is short (bounded by receive_queue), and an empty deque
        # costs 600 bytes more, on every idle WebSocket.
        self._messages: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        # The pieces of a fragmented message so far (bytes, or for text the decoded str),
        # and for text, its incremental decoder.
        self._fragments: list[Any] | None = None
        self._fragment_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._close_deadline = 0.0
        now = conn.state.now
        self._next_ping = now + config.ping_interval if config.ping_interval else 0.0
        self._pong_deadline = 0.0
        self._ping_payload = b""
        stats.opened += 1

    # the engine's side (TunnelPeer) -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        if events:
            # A server-side protocol past its handshake yields frames only.
            self._frames(events)  # type: ignore[arg-type]
        self._send_pending()

    def eof_received(self) -> None:
        # A FIN without a close frame (1006), or the end of a closing handshake we started.
        self.protocol.receive_eof()
        self._send_pending()
        self._end()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
        self.stats.count_close(self.close_code)
        self._close_deadline = 0.0

    def check_deadlines(self, now: float) -> None:
        """Called by the engine's sweep: the closing handshake, pings and pongs."""
        close_deadline = self._close_deadline
        if close_deadline:
            if now >= close_deadline:
                # The peer never answered our close frame: its connection goes without one.
                self._close_deadline = 0.0
                self.conn.abort()
            return
        if self.protocol.state is not _OPEN:
            return
        pong_deadline = self._pong_deadline
        if self._paused:
            # We are not reading (the application is behind): a pong may well be waiting
            # unread, so its absence proves nothing. The wait starts again on resuming.
            return
        if pong_deadline and now >= pong_deadline:
            self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        if self._next_ping and now >= self._next_ping:
            config = self.config
            self._next_ping = now + config.ping_interval  # type: ignore[operator]
            if not pong_deadline:
                self._ping_payload = os.urandom(4)
                self.protocol.send_ping(self._ping_payload)
                self._send_pending()
                if config.ping_timeout is not None:
                    self._pong_deadline = now + config.ping_timeout

    def going_away(self) -> None:
        """The server is stopping: close with 1001 and let the peer finish the handshake."""
        if self.protocol.state is _OPEN and not self.conn.closed:
            self.close(GOING_AWAY, "server shutting down")

    # frames in, messages out --------------------------------------------------------------

    def _frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            opcode = frame.opcode
            # Frame.parse (and the deflate extension) produce bytes; the wider type is for
            # frames built to be sent.
            data: bytes = frame.data  # type: ignore[assignment]
            if opcode is _TEXT:
                if frame.fin:
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError as error:
                        self._bad_text(error)
                        return
                    self._deliver(text, len(data))
                    continue
                self._decoder = _Utf8Decoder()
                self._fragments = []
                self._fragment_size = 0
                if not self._add_fragment(data, False):
                    return
            elif opcode is _BINARY:
                if frame.fin:
                    self._deliver(bytes(data), len(data))
                    continue
                self._decoder = None
                self._fragments = [data]
                self._fragment_size = len(data)
            elif opcode is _CONT:
                if not self._add_fragment(data, frame.fin):
                    return
                if frame.fin:
                    self._finish_fragments()
            elif opcode is _CLOSE:
                close = self.protocol.close_rcvd
                if self.close_code is None and close is not None:
                    self.close_code, self.close_reason = close.code, close.reason
                self._end()
            elif opcode is _PONG and data == self._ping_payload:
                self._pong_deadline = 0.0

    def _add_fragment(self, data: bytes, final: bool) -> bool:
        """Keep one fragment; text is decoded as it comes, so bad UTF-8 fails at once (RFC
        6455 §8.1) rather than after the whole message. False if the connection failed."""
        fragments = self._fragments
        assert fragments is not None  # the protocol refuses a continuation without a start
        self._fragment_size += len(data)
        decoder = self._decoder
        if decoder is None:
            fragments.append(data)
            return True
        try:
            fragments.append(decoder.decode(data, final))
        except UnicodeDecodeError as error:
            self._bad_text(error)
            return False
        return True

    def _finish_fragments(self) -> None:
        fragments = self._fragments
        assert fragments is not None
        self._fragments = None
        if self._decoder is not None:
            self._decoder = None
            self._deliver("".join(fragments), self._fragment_size)
        else:
            self._deliver(b"".join(fragments), self._fragment_size)

    def _deliver(self, message: Message, size: int) -> None:
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += size
        messages = self._messages
        messages.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(messages) >= self.config.receive_queue and not self._paused:
            # The application is behind: let the kernel's buffers, then the client, wait.
            self._paused = True
            self.conn.pause_reading()

    def _bad_text(self, error: UnicodeDecodeError) -> None:
        self._fragments = None
        self._decoder = None
        self._fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at position {error.start}")

    def _fail(self, code: int, reason: str) -> None:
        self.protocol.fail(code, reason)
        self._send_pending()
        self._end()

    def _end(self) -> None:
        """No message will come any more: wake a waiting receive()."""
        if self.ended:
            return
        self.ended = True
        if self.close_code is None:
            self.close_code = self._code_from_protocol()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._paused:
            self._resume()

    def _code_from_protocol(self) -> int:
        protocol = self.protocol
        close: Close | None = protocol.close_rcvd or protocol.close_sent
        if close is None:
            return ABNORMAL_CLOSURE
        if protocol.close_rcvd is None and self.close_reason == "":
            self.close_reason = close.reason
        return close.code

    def _send_pending(self) -> None:
        """Write what the protocol produced; its end-of-stream mark closes the connection."""
        conn = self.conn
        for data in self.protocol.data_to_send():
            if data:
                conn.write(data)
            else:
                # RFC 6455 §7.1.1: once the closing handshake is done (or the connection
                # failed), the server closes the TCP connection first.
                self._close_deadline = 0.0
                conn.close()
                self._end()

    # the application's side -------------------------------------------------------------------

    async def receive(self) -> Message | None:
        """The next message, or None once the WebSocket is closed."""
        messages = self._messages
        while not messages:
            if self.ended:
                return None
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = self.conn.loop.create_future()
            await waiter
        message = messages.pop(0)
        if self._paused and len(messages) <= self.config.receive_queue // 2:
            self._resume()
        return message

    def _resume(self) -> None:
        self._paused = False
        self.conn.resume_reading()
        if self._pong_deadline and self.config.ping_timeout is not None:
            self._pong_deadline = self.conn.state.now + self.config.ping_timeout

    async def send(self, message: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message; waits while the client is slow.

        Raises :class:`WebSocketClosed` once the WebSocket is closing or closed.
        """
        protocol = self.protocol
        if protocol.state is not _OPEN or self.conn.closed:
            raise self._closed_error()
        stats = self.stats
        if isinstance(message, str):
            data = message.encode("utf-8")
            protocol.send_text(data)
        else:
            data = message
            protocol.send_binary(data)
        stats.messages_out += 1
        stats.bytes_out += len(data)
        self._send_pending()
        conn = self.conn
        if conn.write_paused:
            try:
                await conn.drain()
            except ClientDisconnected:
                raise self._closed_error() from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the peer has ``close_timeout`` to answer.

        Does nothing once the WebSocket is closing or closed. Raises ``ValueError`` for a code
        that may not be sent (RFC 6455 §7.4) or a reason longer than 123 bytes of UTF-8.
        """
        protocol = self.protocol
        if protocol.state is not _OPEN or self.conn.closed:
            return
        try:
            protocol.send_close(code, reason)
        except FrameError as error:
            raise ValueError(f"cannot close with code {code!r}: {error}") from None
        self._close_deadline = self.conn.state.now + self.config.close_timeout
        self._send_pending()

    def handler_ended(self, error: BaseException | None, target: bytes) -> None:
        """The application's handler for this WebSocket returned (or raised, ``error``):
        close with 1000, or with 1011 and a log line if it failed. A closed WebSocket or a
        cancellation is how a handler is expected to end, not a failure."""
        if error is not None and not isinstance(error, _QUIET_ENDINGS):
            logger.error("WebSocket handler raised on %s", target.decode("latin-1"), exc_info=error)
            self.close(CloseCode.INTERNAL_ERROR, "")
        else:
            self.close(1000, "")

    def _closed_error(self) -> WebSocketClosed:
        code = self.close_code
        if code is None:
            code = self._code_from_protocol()
        return WebSocketClosed(code, self.close_reason)

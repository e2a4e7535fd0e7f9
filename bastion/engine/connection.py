"""One ``asyncio.Protocol`` per client connection: parse, dispatch in order, write, time out.

Requests on a connection are handled one at a time, in order; pipelined requests wait in a
bounded queue (reading pauses when it is full). Writes are held until the end of the event
loop's turn (``bastion.engine.outbox``) and coalesced into one ``write``: 16 pipelined
requests answered at once leave in one send, and the responses to every connection served in
one turn leave back to back. Deadlines are plain numbers compared by the server's periodic sweep: no
timer is created per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Protocol

from bastion._compiled import awaiting
from bastion.engine.body import BodyStream
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange
from bastion.engine.outbox import HOLD_BYTES, Outbox
from bastion.engine.tunnel import TunnelFeed, TunnelPeer
from bastion.http import ProtocolError, RequestHead, RequestParser, error_response
from bastion.http.errors import RequestTimeout

if TYPE_CHECKING:
    from bastion.engine.state import ServerState

logger = logging.getLogger("bastion.error")

# What the read-side deadline currently guards.
_WAIT_NONE: Final = 0
_WAIT_HEAD: Final = 1
_WAIT_BODY: Final = 2
_WAIT_IDLE: Final = 3


# Functions called per request from other modules, held as constants: compiled code looks an
# imported name up in the module's dictionary on every use, a Final one not.
_CLOCK: Final = perf_counter


class _Feed(Protocol):
    """Where received bytes go: the request parser, or what stands in for it after an error
    or a protocol switch."""

    @property
    def in_request(self) -> bool: ...

    @property
    def reading_head(self) -> bool: ...

    def feed(self, data: bytes) -> None: ...


class HTTPConnection(asyncio.Protocol):
    __slots__ = (
        "state",
        "loop",
        "stats",
        "transport",
        "parser",
        "client",
        "server_address",
        "scheme",
        "current",
        "queue",
        "_receiving",
        "_out",
        "_outbox",
        "_handle",
        "_held",
        "_shut",
        "_pumping",
        "_close_after_flush",
        "write_paused",
        "_reading_paused",
        "_pause_reasons",
        "_writable_callbacks",
        "closing",
        "closed",
        "wait_kind",
        "deadline",
        "write_deadline",
        "write_timeout",
        "_pending_error",
        "eof",
        "reused",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = state.loop
        self.stats = state.stats
        self.transport: asyncio.Transport | None = None
        self.parser: _Feed = RequestParser(self, state.config.limits)
        self.client: tuple[str, int] | None = None
        self.server_address: tuple[str, int] | None = None
        self.scheme = "http"
        self.current: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self._receiving: Exchange | None = None
        self._out: list[bytes] | None = None
        self._outbox: Outbox = state.outbox
        # Bound once: looked up through the state and the handler, it cost two lookups a request.
        self._handle: Callable[[Exchange], None] = state.handler.handle
        self._held = 0  # bytes in _out
        self._shut = False  # the transport was told to close or abort
        self._pumping = False
        self._close_after_flush = False
        self.write_paused = False
        self._reading_paused = False
        self._pause_reasons = 0
        self._writable_callbacks: list[Callable[[], None]] = []
        self.closing = False
        self.closed = False
        self.wait_kind = _WAIT_HEAD
        self.deadline = 0.0
        self.write_deadline = 0.0
        self.write_timeout = state.config.write_timeout
        self._pending_error: ProtocolError | None = None
        self.eof = False
        self.reused = False

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        self.stats.connections_opened += 1
        state.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client = _address(peer)
        self.server_address = _address(transport.get_extra_info("sockname"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.deadline = state.now + state.header_timeout
        if len(state.connections) > state.config.max_connections:
            self.stats.count_error("connection-limit")
            logger.warning("connection limit (%d) reached", state.config.max_connections)
            self._refuse(503, "too many connections")
        # A connection accepted while the server drains (it was already in the accept queue
        # when listening stopped) is served, with "connection: close": refusing it would fail
        # a request that a reload promises not to fail.

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closing = True
        self.stats.connections_closed += 1
        self.state.connections.discard(self)
        disconnected = ClientDisconnected("client disconnected")
        for exchange in (self.current, *self.queue):
            if exchange is not None and exchange._body is not None:
                exchange._body.abort(disconnected)
        self.queue.clear()
        self._receiving = None
        self._release_writers()
        if self.current is not None:
            self._client_gone(self.current)
        parser = self.parser
        if isinstance(parser, TunnelFeed):
            parser.peer.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.wait_kind == _WAIT_IDLE:
            self.wait_kind = _WAIT_HEAD
            self.deadline = self.state.now + self.state.header_timeout
        parser = self.parser
        try:
            if isinstance(parser, RequestParser):
                # Called as what it is, compiled code calls the parser directly, not by name.
                parser.feed(data)
            else:
                parser.feed(data)
        except ProtocolError as error:
            self._protocol_error(error)
        finally:
            if self._close_after_flush:
                self.release_writes()

    def eof_received(self) -> bool | None:
        parser = self.parser
        if isinstance(parser, TunnelFeed):
            parser.peer.eof_received()
            return True
        # A half-closed client may still read our responses to requests it already sent, but
        # a request it has not finished sending will never come.
        self.eof = True
        self.wait_kind = _WAIT_NONE
        self.parser = _DeadParser()
        receiving = self._receiving
        if receiving is not None:
            self._receiving = None
            cut = ClientDisconnected("client closed mid-request")
            if receiving is self.current:
                # Whatever the application would answer, it would answer a request that was
                # never sent whole; it is told the client is gone, and its answer is dropped.
                receiving.refuse(cut)
                return True
            if self.queue and self.queue[-1] is receiving:
                self.queue.pop()  # never started: the answers before it still go out
            receiving.body.abort(cut)
        current = self.current
        if current is None and not self.queue:
            self._close()
        elif current is not None:
            # Nothing more will come: an application waiting for the client (a long poll, an
            # event stream) is told it is gone; what it still sends is written all the same.
            self._client_gone(current)
        return True

    def _client_gone(self, exchange: Exchange) -> None:
        exchange.notify_client_gone()
        handler_lost = getattr(self.state.handler, "connection_lost", None)
        if handler_lost is not None:
            handler_lost(exchange)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.state.now + self.write_timeout

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        self._release_writers()

    def _release_writers(self) -> None:
        callbacks, self._writable_callbacks = self._writable_callbacks, []
        for callback in callbacks:
            callback()

    # sink for the parser --------------------------------------------------------------------

    def on_request(self, head: RequestHead) -> None:
        if self.closing:
            # The last response said "connection: close" while the rest of this read was
            # still being parsed: later requests in it get no answer.
            self.parser = _DeadParser()
            return
        stats = self.stats
        stats.requests += 1
        if self.reused:
            stats.keepalive_reused += 1
        else:
            self.reused = True
        exchange = Exchange(self, head)
        self._receiving = exchange
        if head.has_body:
            # Made here, on the loop thread that feeds it, before any handler (perhaps on a
            # pool thread) can ask for it.
            exchange._body = self.new_body_stream(exchange)
            self.wait_kind = _WAIT_BODY
            self.deadline = self.state.now + self.state.body_timeout
        else:
            self.wait_kind = _WAIT_NONE
        if self.current is None and not self.queue:
            # The common case, one request at a time: no queue round trip.
            self.current = exchange
            self._dispatch(exchange)
            return
        self.queue.append(exchange)
        if self.current is None:
            self._pump()
        elif len(self.queue) >= self.state.max_pipelined:
            self._pause_reading(1)

    def on_body(self, data: bytes) -> None:
        exchange = self._receiving
        if exchange is None or exchange.finished:
            return  # the rest of a body the handler chose not to read
        self.deadline = self.state.now + self.state.body_timeout
        if exchange._body.feed(data):  # type: ignore[union-attr]
            self._pause_reading(2)

    def on_request_end(self) -> None:
        exchange = self._receiving
        self._receiving = None
        if exchange is not None and exchange._body is not None:
            exchange._body.finish()
        if self.current is None and not self.queue:
            # The parser is between requests and nothing is in flight: keep-alive idle.
            self.wait_kind = _WAIT_IDLE
            self.deadline = self.state.now + self.state.keepalive_timeout
        elif self.wait_kind == _WAIT_BODY:
            self.wait_kind = _WAIT_NONE

    # dispatch ---------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start queued requests one after another; a loop, not recursion, for pipelines."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self.current is None and self.queue and not self.closing:
                exchange = self.current = self.queue.popleft()
                if len(self.queue) < self.state.max_pipelined:
                    self._resume_reading(1)
                self._dispatch(exchange)
        finally:
            self._pumping = False

    def _dispatch(self, exchange: Exchange) -> None:
        if self.stats.request_observers:
            # Not loop.time(): uvloop's has millisecond resolution, and most requests take
            # less than a millisecond.
            exchange.start_time = _CLOCK()
        try:
            self._handle(exchange)
        except Exception as error:
            exchange.fail(error)

    def exchange_done(self, exchange: Exchange, abort: bool = False) -> None:
        """Called by the exchange once its response is complete (or abandoned)."""
        stats = self.stats
        counts = stats.responses_by_status
        status = exchange.status
        counts[status] = counts.get(status, 0) + 1
        observers = stats.request_observers
        if observers:
            duration = _CLOCK() - exchange.start_time
            for observe in observers:
                observe(exchange, duration)
        untimed = stats.untimed_observers
        if untimed:
            for observe in untimed:
                observe(exchange, 0.0)
        if exchange is not self.current:
            return
        self.current = None
        if abort or not exchange.keep_alive or self.closing:
            # The client was told this is the last response (or the response broke): nothing
            # may follow it, not even the answer to a later request that turned out bad.
            self._close()
            return
        receiving = exchange is self._receiving
        if receiving and exchange._body is not None:
            # The handler answered without reading the whole (small) body: skip the rest.
            exchange._body.abort(ClientDisconnected("response already sent"))
        if self.queue:
            self._pump()
        elif self._pending_error is not None:
            self._answer_pending_error()
        elif self.state.draining or self.eof:
            self._close()
        elif not receiving:
            # (While the request is still being received, its end starts the idle clock.)
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        """Start the keep-alive clock once nothing is in flight and no request has begun."""
        if self.current is None and not self.queue and self.wait_kind == _WAIT_NONE:
            if self.parser.in_request:
                if self.parser.reading_head:
                    self.wait_kind = _WAIT_HEAD
                    self.deadline = self.state.now + self.state.header_timeout
            else:
                self.wait_kind = _WAIT_IDLE
                self.deadline = self.state.now + self.state.keepalive_timeout

    # writing ------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        out = self._out
        if out is None:
            if self.closed or self._shut:
                return
            if len(data) > HOLD_BYTES:
                self.transport.write(data)  # type: ignore[union-attr]
                return
            self._out = [data]
            self._held = len(data)
            self._outbox.hold(self)
        else:
            out.append(data)
            self._held += len(data)
            if self._held > HOLD_BYTES:
                self._flush_batch(out)

    def hold_writes(self) -> bool:
        """Collect writes until :meth:`release_writes`, so that the pieces of a response made
        outside this connection's own reads (a proxy relaying an upstream's) leave in one send.
        Returns False when writes are already being collected (nothing to release then)."""
        if self._out is not None or self.closed:
            return False
        self._out = []
        self._held = 0
        return True

    def release_writes(self) -> None:
        out = self._out
        self._out = None
        if out:
            self._flush_batch(out)
        if self._close_after_flush:
            self._close()

    def _send_held(self) -> None:
        """Whoever waits for room in the transport (a stream pacing itself) must have what it
        wrote counted there first, or it would run a write ahead of the backpressure."""
        out = self._out
        if out:
            self._flush_batch(out)

    def _flush_batch(self, out: list[bytes]) -> None:
        # (A transport closed or aborted may refuse writes before connection_lost arrives.)
        if not self.closed and not self._shut:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])  # type: ignore[union-attr]
        out.clear()
        self._held = 0

    def server_lines(self) -> bytes:
        return self.state.server_lines

    async def drain(self) -> None:
        if self.closed:
            raise ClientDisconnected("client disconnected")
        self._send_held()
        if not self.write_paused:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        self._writable_callbacks.append(wake)
        await awaiting(waiter)
        if self.closed:
            raise ClientDisconnected("client disconnected")

    def when_writable(self, callback: Callable[[], None]) -> None:
        self._send_held()
        if self.write_paused and not self.closed:
            self._writable_callbacks.append(callback)
        else:
            callback()

    def new_body_stream(self, exchange: Exchange) -> BodyStream:
        return BodyStream(self.loop, lambda: self._resume_reading(2), exchange.send_continue)

    def switch_protocols(self, head: bytes, peer: TunnelPeer) -> None:
        """Send ``head`` (a 101 response) and give every later byte to ``peer``.

        A handler should switch from a task, after the read that brought its request: bytes
        in that read after the request are parsed as HTTP before anyone can switch.
        """
        self.write(head)
        self.parser = TunnelFeed(peer)
        self.wait_kind = _WAIT_NONE
        if self.queue or self._pending_error is not None:
            # Requests (or bad bytes) read after the switching one: the client sent them
            # before our 101, so they were the new protocol's, lost to it as HTTP.
            self._early_data()

    # flow control and closing -----------------------------------------------------------------

    def pause_reading(self) -> None:
        """For a tunnel's peer: stop reading the client until :meth:`resume_reading`."""
        self._pause_reading(4)

    def resume_reading(self) -> None:
        self._resume_reading(4)

    def close(self) -> None:
        """Close once what was written has been sent."""
        self._close()

    def write_eof(self) -> None:
        """For a tunnel's peer: the other side is done sending; so is this one."""
        if not self.closed and self.transport is not None and self.transport.can_write_eof():
            self._send_held()
            self.transport.write_eof()

    def _pause_reading(self, reason: int) -> None:
        self._pause_reasons |= reason
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _resume_reading(self, reason: int) -> None:
        self._pause_reasons &= ~reason
        if self._reading_paused and not self._pause_reasons and not self.closing:
            self._reading_paused = False
            if self.wait_kind == _WAIT_BODY:
                self.deadline = self.state.now + self.state.body_timeout
            self.transport.resume_reading()  # type: ignore[union-attr]

    def _protocol_error(self, error: ProtocolError) -> None:
        if isinstance(self.parser, TunnelFeed):
            self._early_data()
            return
        self.stats.count_error(f"protocol-{error.status}")
        client = self.client[0] if self.client else "-"
        logger.info("refused request from %s: %d %s", client, error.status, error.detail)
        self._refuse_stream(error)

    def _refuse_stream(self, error: ProtocolError) -> None:
        """Stop reading requests and answer ``error`` for the one that broke, in its turn.

        The broken request is the one being received: a head that never parsed, or a
        request whose body failed. Requests before it were complete and are answered first,
        in order; the error is the answer to the broken request alone, and the connection
        closes after it. A broken request the handler already has is refused through its
        exchange, so the application's answer can never be sent for it.
        """
        self.parser = _DeadParser()
        self.wait_kind = _WAIT_NONE
        if self.closing or self._pending_error is not None:
            # The last response already said "connection: close" (or an error is queued):
            # what follows on the wire, say the unread rest of a body, gets no answer.
            return
        broken = self._receiving
        self._receiving = None
        if broken is not None:
            if broken is self.current:
                broken.refuse(error)
                return
            if broken.finished:
                # Answered before its body turned out bad; that answer cannot be taken back,
                # and no second one may follow it.
                self._close()
                return
            if self.queue and self.queue[-1] is broken:
                self.queue.pop()  # never started: the error is its answer
        self._pending_error = error
        if self.current is None and not self.queue:
            self._answer_pending_error()

    def _answer_pending_error(self) -> None:
        error = self._pending_error
        assert error is not None
        self.stats.count_response(error.status)
        self.write(error_response(error.status, error.detail, date_line=self.state.date_line))
        self._close()

    def _early_data(self) -> None:
        """Bytes came after a request that switched protocols, before the switch: the client
        sent them without waiting for our 101 (RFC 6455 §4.1 forbids it). They were read as
        HTTP, so they are lost to the new protocol; the connection cannot go on."""
        self.stats.count_error("switched-early-data")
        self.abort()

    def _refuse(self, status: int, detail: str) -> None:
        self.closing = True
        self.stats.count_response(status)
        self.transport.write(  # type: ignore[union-attr]
            error_response(status, detail, date_line=self.state.date_line).replace(
                b"\r\n\r\n", b"\r\nretry-after: 1\r\n\r\n", 1
            )
        )
        self._close()

    def _close(self) -> None:
        self.closing = True
        if self._out is not None:
            self._close_after_flush = True
            return
        if not self.closed and self.transport is not None:
            self._shut = True
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self._shut = True
            self.transport.abort()

    def check_deadlines(self, now: float) -> None:
        """Called by the server's sweep; closes a connection whose current wait has expired."""
        if self.write_deadline and now >= self.write_deadline:
            self.stats.count_error("timeout-write")
            logger.info("closing connection: client stopped reading for %.0fs", self.write_timeout)
            self.abort()
            return
        parser = self.parser
        if isinstance(parser, TunnelFeed):
            # A switched connection's waits are its peer's (whatever the request that switched
            # it left in wait_kind: a handler that switches at once does so before its
            # request's end is parsed).
            if not self.closing:
                parser.check_deadlines(now)
            return
        kind = self.wait_kind
        if kind == _WAIT_NONE or now < self.deadline or self.closing:
            return
        if kind == _WAIT_IDLE or (kind == _WAIT_HEAD and not self.parser.in_request):
            self._close()  # idle keep-alive, or a connection that never sent a byte
        elif self._reading_paused and kind == _WAIT_BODY:
            return  # we stopped reading; the client is not the slow one
        elif self.current is None or kind == _WAIT_BODY:
            what = "head" if kind == _WAIT_HEAD else "body"
            self.stats.count_error(f"timeout-{what}")
            self._timeout(RequestTimeout(f"request {what} not received in time"))

    def _timeout(self, error: RequestTimeout) -> None:
        logger.info("%s from %s", error.detail, self.client[0] if self.client else "-")
        self._refuse_stream(error)

    def close_if_idle(self) -> None:
        """Graceful shutdown: close now unless a request is being handled; a switched
        connection's peer is asked to end on its own terms (a WebSocket sends 1001)."""
        parser = self.parser
        if isinstance(parser, TunnelFeed):
            parser.going_away()
        elif self.current is None and not self.queue and not parser.in_request:
            self._close()


class _DeadParser:
    """Stands in after a protocol error: the stream's framing is lost, so nothing is parsed."""

    in_request = False
    reading_head = False

    def feed(self, data: bytes) -> None:
        return None


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None

"""Connections to one upstream server: the protocol object per socket, and the bounded pool.

Each :class:`UpstreamConnection` is an ``asyncio.Protocol`` that writes requests and feeds
what it reads to ``bastion.http``'s :class:`~bastion.http.ResponseParser`; the parser's events
go to whichever request currently owns the connection (its *sink*). An idle connection keeps
reading, so an upstream that closes it (its keep-alive timeout) is noticed at once, and any
byte it sends unasked is a desynchronised upstream: the parser refuses it and the connection
is dropped before a request can be sent on it.

A :class:`ConnectionPool` holds one server's connections for one worker: idle ones to reuse
(the most recently used first, so surplus ones age out), a cap on how many are open, and a
bounded queue of requests waiting for one. Past the queue, a request is refused at once with
:class:`Overloaded`, which the proxy answers with a 503: circuit breaking instead of a queue
that grows without end.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Protocol

from bastion._compiled import awaiting
from bastion.balancer.config import ConnectionLimits, Upstream
from bastion.balancer.errors import Overloaded
from bastion.balancer.tunnel import Tunnel
from bastion.engine.outbox import HOLD_BYTES, Outbox
from bastion.http import ResponseHead, ResponseParser
from bastion.http.errors import BadGateway
from bastion.http.limits import Limits

logger = logging.getLogger("bastion.error")


class ResponseSink(Protocol):
    """What a request that owns a connection hears from it."""

    def on_response(self, head: ResponseHead) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_response_end(self) -> None: ...

    def upstream_failed(self, error: BaseException) -> None:
        """The connection broke or the upstream answered badly; it is closed already."""

    def read_started(self) -> None:
        """Bytes arrived; what they complete is reported next, then :meth:`read_done`."""

    def read_done(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One socket to an upstream server, reused for one request after another."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(self, pool.parser_limits)
        self.sink: ResponseSink | None = None
        self.closed = False
        self.idle_since = 0.0
        self.requests = 0
        # Bumped by every read: a timer compares it with what it saw last time instead of
        # reading the clock on every chunk.
        self.reads = 0
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writable: list[Callable[[], None]] = []
        # Set once the upstream switched protocols: bytes then go straight to the client.
        self.tunnel: Tunnel | None = None
        # A request sent in this turn of the loop, written when the turn's writes are
        # released (bastion.engine.outbox), or before anything written after it.
        self._unsent: bytes | None = None

    # asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_upstream(data)
            return
        sink = self.sink
        if sink is None:
            try:
                self.parser.feed(data)
            except BadGateway as error:
                self.fail(error)
            return
        sink.read_started()
        try:
            switched = self.parser.feed(data)
        except BadGateway as error:
            self.fail(error)
        else:
            tunnel = self.tunnel
            if switched is not None and tunnel is not None and switched < len(data):
                tunnel.from_upstream(data[switched:])
        finally:
            sink.read_done()

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            self.tunnel.upstream_eof()
            return True
        try:
            self.parser.feed_eof()
        except BadGateway as error:
            self.fail(error)
        else:
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        self._wake_drain()
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
            return
        sink = self.sink
        if sink is not None:
            self.sink = None
            if exc is None:
                # A FIN arrives through eof_received first; a close with no error is ours.
                exc = ConnectionResetError("the upstream connection closed")
            sink.upstream_failed(exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()
        callbacks, self._writable = self._writable, []
        for callback in callbacks:
            callback()

    def when_writable(self, callback: Callable[[], None]) -> None:
        if self.write_paused and not self.closed:
            self._writable.append(callback)
        else:
            callback()

    # bastion.http.ResponseSink ------------------------------------------------------------

    def on_informational(self, head: ResponseHead) -> None:
        # 100 Continue is the engine's to send the client; 103 hints are not passed on.
        pass

    def on_response(self, head: ResponseHead) -> None:
        if self.sink is not None:
            self.sink.on_response(head)

    def on_body(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.on_body(data)

    def on_response_end(self) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_response_end()

    # used by the proxy ---------------------------------------------------------------------

    def send(
        self,
        sink: ResponseSink,
        method: str,
        head: bytes,
        *,
        upgrade: bool = False,
        outbox: Outbox | None = None,
    ) -> None:
        """Make ``sink`` the owner and send a request head (its body follows with write).

        With ``outbox``, the head is written when the loop's turn releases its writes, with
        the other requests and responses of the turn, so that an upstream on this machine
        is woken once for many of them.
        """
        self.sink = sink
        self.requests += 1
        self.parser.expect(method, upgrade=upgrade)
        if outbox is None or upgrade or len(head) > HOLD_BYTES:
            self.transport.write(head)  # type: ignore[union-attr]
        else:
            self._unsent = head
            outbox.later(self.send_unsent)

    def send_unsent(self) -> None:
        """Write the request held for the end of the turn, if it is still unsent."""
        head = self._unsent
        if head is not None:
            self._unsent = None
            if not self.closed:
                self.transport.write(head)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.send_unsent()
            self.transport.write(data)  # type: ignore[union-attr]

    def write_eof(self) -> None:
        if not self.closed and self.transport.can_write_eof():  # type: ignore[union-attr]
            self.send_unsent()
            self.transport.write_eof()  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Wait while the upstream reads the request body slower than it is sent."""
        self.send_unsent()
        while self.write_paused and not self.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
            await awaiting(waiter)
        if self.closed:
            raise ConnectionResetError("the upstream connection closed")

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    @property
    def reusable(self) -> bool:
        return not self.closed and self.parser.reusable

    def fail(self, error: BaseException) -> None:
        """Drop the connection and tell its owner why."""
        sink = self.sink
        self.sink = None
        self.abort()
        if sink is not None:
            sink.upstream_failed(error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            self.transport.close()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Close at once, dropping anything unsent: the connection's framing is in doubt."""
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            self.transport.abort()  # type: ignore[union-attr]


class ConnectionPool:
    """One upstream server's connections in this worker, bounded by ``limits``."""

    def __init__(
        self,
        upstream: Upstream,
        limits: ConnectionLimits,
        connect_timeout: float,
        *,
        parser_limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str | None = None,
        on_open: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.parser_limits = parser_limits or Limits()
        self.ssl_context = ssl_context
        # Sent (SNI) and checked against the certificate: the upstream's host unless the
        # route names another.
        self.server_name = server_name or upstream.host
        self.on_open = on_open
        self.on_close = on_close
        self.idle: list[UpstreamConnection] = []
        self.open = 0
        self.connecting = 0
        self.opened_total = 0
        self.waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self._members: set[UpstreamConnection] = set()
        self.closed = False
        # Its server left the configuration: requests already bound to it finish on it, and
        # then its connections close.
        self.retired = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def take_idle(self) -> UpstreamConnection | None:
        """A kept-alive connection ready for a request, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable:
                return conn
            conn.close()
        return None

    def _has_room(self) -> bool:
        cap = self.limits.max_connections
        return not cap or self.open + self.connecting < cap

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused: idle, newly opened, or waited for.

        Raises :class:`Overloaded` when the pool is full and so is its wait queue, and
        ``OSError``/``TimeoutError`` when a new connection cannot be opened in time.
        """
        conn = self.take_idle()
        if conn is not None:
            return conn, True
        while not self._has_room():
            if len(self.waiters) >= self.limits.max_pending:
                raise Overloaded(f"{self.upstream.key}: connection limit reached")
            waiter: asyncio.Future[UpstreamConnection | None] = (
                asyncio.get_running_loop().create_future()
            )
            self.waiters.append(waiter)
            try:
                handed = await awaiting(waiter)
            except BaseException:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result())  # type: ignore[arg-type]
                raise
            if handed is not None:
                return handed, True
        return await self._connect(), False

    async def _connect(self) -> UpstreamConnection:
        upstream = self.upstream
        loop = self.loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            connecting = asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self),
                    upstream.host,
                    upstream.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_name if self.ssl_context is not None else None,
                ),
                self.connect_timeout,
            )
            _, conn = await awaiting(connecting)
        finally:
            self.connecting -= 1
        if self.closed:
            conn.close()
            raise ConnectionResetError("the pool was closed")
        self.open += 1
        self.opened_total += 1
        self._members.add(conn)
        if self.on_open is not None:
            self.on_open()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """A request is done with ``conn``: keep it for the next one, or close it."""
        conn.sink = None
        if not conn.reusable or self.closed:
            conn.close()
            return
        # A slow client pauses its request's upstream reads, and the read that pauses them can
        # be the one that ends the response: the request is then done and resumes nothing (once
        # its client drains, the connection may be carrying another request). Left paused, it
        # would never read the next response, nor notice the upstream closing it while idle.
        conn.resume_reading()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self.retired or len(self.idle) >= self.limits.max_idle:
            conn.close()
            return
        # The pool's own loop: asyncio.get_running_loop() makes a system call on 3.11.
        conn.idle_since = self.loop.time() if self.loop is not None else 0.0
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """``conn`` closed: forget it, and let a waiting request open a new one."""
        if conn not in self._members:
            return
        self._members.discard(conn)
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if self.on_close is not None:
            self.on_close()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than ``idle_timeout``, oldest first."""
        limit = now - self.limits.idle_timeout
        idle = self.idle
        while idle and idle[0].idle_since <= limit:
            idle.pop(0).close()

    def retire(self) -> None:
        """No new request will come: close what is idle now and the rest once the requests
        already bound to this server (sent, connecting or waiting for a connection) are
        done; none of those fails for it."""
        self.retired = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()

    def close(self) -> None:
        self.closed = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("the balancer is shutting down"))
        self.waiters.clear()

    @property
    def busy(self) -> int:
        return self.open - len(self.idle)

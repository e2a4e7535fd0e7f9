"""One request and its response: what a handler adapter talks to.

All methods run on the loop thread, except those named ``*_threadsafe`` and the
:class:`ThreadWriter`, which exist for blocking handlers on the pool.

Framing is decided here, once, for every kind of handler: ``Content-Length`` when the size is
known, chunked when it is not and the client speaks HTTP/1.1, and end-of-connection for an
HTTP/1.0 client. A response that turns out shorter or longer than it promised cannot be
repaired, so the connection is closed rather than letting the client guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, NoReturn

from bastion._compiled import awaiting
from bastion.engine.body import BodyStream
from bastion.engine.errors import ClientDisconnected, ResponseAlreadyStarted
from bastion.engine.sendfile import send_file as _send_file
from bastion.engine.tunnel import TunnelPeer
from bastion.http import (
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    STATUS_LINES,
    RequestHead,
    encode_chunk,
    encode_headers,
    error_response,
    parse_content_length,
    status_allows_body,
    status_line,
)
from bastion.http.errors import ProtocolError

if TYPE_CHECKING:
    from bastion.engine.connection import HTTPConnection

logger = logging.getLogger("bastion.error")

Headers = Iterable[tuple[str, str]]

# Small responses need no copy of the body into a joined buffer beyond this size.
_JOIN_LIMIT: Final = 64 * 1024
_DISCARD_LIMIT: Final = 64 * 1024

# Pre-encoded Content-Length lines for small bodies: formatting one per request adds up.
_LENGTH_LINES: Final = [b"content-length: %d\r\n" % size for size in range(1024)]

_FRAMING_NONE: Final = 0
_FRAMING_LENGTH: Final = 1
_FRAMING_CHUNKED: Final = 2
_FRAMING_CLOSE: Final = 3


class Exchange:
    """A request head, its body stream, and the response being written for it."""

    # No __slots__: most fields keep their class-level default for the whole request, and
    # not assigning them per request is measurably cheaper on the hot path.
    _body: BodyStream | None = None
    started = False
    finished = False
    status = 0
    _framing = _FRAMING_NONE
    _remaining = 0
    continue_sent = False
    bytes_sent = 0
    start_time = 0.0
    # False when the application wrote its own Server and Date fields (http.server handlers do).
    add_server_lines = True
    # The application's own reason phrase, when it set one that is not the standard phrase.
    reason: str | None = None
    # The route template the application matched (``/users/{id}``), for metrics: a bounded
    # label, unlike the path. Set by the handler adapter when it knows one.
    route: str | None = None
    # A free slot for the handler adapter (e.g. the ASGI cycle) to hang its state on.
    state: Any = None
    # What a trusted proxy reported (bastion.engine.proxy); None for a direct client.
    forwarded_client: tuple[str, int] | None = None
    forwarded_scheme: str | None = None
    # Why the request was taken from the application: it turned out bad (its body's framing,
    # a deadline) and the server answered for it, or its client is gone and nobody will be
    # answered. Either way the application's own answer must never follow.
    refused: BaseException | None = None
    _gone_waiter: asyncio.Future[None] | None = None

    def __init__(self, conn: HTTPConnection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.keep_alive = head.keep_alive

    # request side ---------------------------------------------------------------------------

    @property
    def client(self) -> tuple[str, int] | None:
        """The client's address: the connection's peer, or whom a trusted proxy named."""
        forwarded = self.forwarded_client
        return self.conn.client if forwarded is None else forwarded

    @property
    def peer(self) -> tuple[str, int] | None:
        """The address of the connection's other end (the proxy, behind one)."""
        return self.conn.client

    @property
    def server(self) -> tuple[str, int] | None:
        return self.conn.server_address

    @property
    def scheme(self) -> str:
        return self.forwarded_scheme or self.conn.scheme

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.conn.loop

    @property
    def body(self) -> BodyStream:
        """The request body stream (an empty, finished one when the request has none)."""
        body = self._body
        if body is None:
            body = self._body = self.conn.new_body_stream(self)
            if not self.head.has_body:
                body.finish()
        return body

    @property
    def client_gone(self) -> bool:
        """True once the client can no longer take part in this request.

        That is when the connection is closed, or when the client closed its sending side
        after its request was complete (a FIN). A half-closed client may still be reading, so
        what the application sends is still written; this only tells it that nobody will ask
        for anything more, which is what a long poll or an event stream needs to know.
        """
        conn = self.conn
        return conn.closed or (conn.eof and self.body_complete) or self.refused is not None

    async def wait_client_gone(self) -> None:
        """Return once :attr:`client_gone` is true (at once if it already is)."""
        if self.client_gone:
            return
        waiter = self._gone_waiter
        if waiter is None:
            waiter = self._gone_waiter = self.conn.loop.create_future()
        await awaiting(asyncio.shield(waiter))

    def notify_client_gone(self) -> None:
        """Called by the connection: wake whoever waits in :meth:`wait_client_gone`."""
        waiter = self._gone_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def body_complete(self) -> bool:
        if not self.head.has_body:
            return True
        body = self._body
        return body is not None and body.done

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue``: the handler is about to read the body."""
        if self.head.expect_continue and not self.continue_sent and not self.started:
            self.continue_sent = True
            self.conn.write(CONTINUE_RESPONSE)

    # response side --------------------------------------------------------------------------

    def _decide_keep_alive(self) -> bool:
        conn = self.conn
        if not self.keep_alive or conn.closing or conn.state.draining:
            return False
        if not self.head.has_body or (self._body is not None and self._body.done):
            return True
        # The rest of an unread body must be read past before the next request; do that only
        # when it is small and the client was not waiting for our 100 Continue.
        head = self.head
        if head.expect_continue and not self.continue_sent:
            return False
        if head.chunked or head.content_length is None:
            return False
        received = self._body.received if self._body is not None else 0
        return head.content_length - received <= _DISCARD_LIMIT

    def _connection_header(self) -> bytes:
        """The end of the head: a Connection line where the client's default is not ours."""
        if not self.keep_alive:
            return b"connection: close\r\n\r\n"
        if self.head.version == "1.0":
            return b"connection: keep-alive\r\n\r\n"
        return b"\r\n"

    def respond(
        self, status: int, headers: Headers, body: bytes = b"", reason: str | None = None
    ) -> None:
        """Send a whole response at once: the fast path, one write for head and body."""
        if self.started:
            self._already_started()
        self.respond_encoded(status, encode_headers(headers), body, reason=reason)

    def respond_encoded(
        self,
        status: int,
        header_block: bytes,
        body: bytes = b"",
        length: int | None = None,
        reason: str | None = None,
    ) -> None:
        """:meth:`respond` with the fields already checked and encoded (none of them framing).

        ``length`` is the Content-Length to announce when it is not ``len(body)``: a proxy
        answering HEAD passes on the length its upstream announced.
        """
        if self.started:
            self._already_started()
        self.started = True
        self.status = status
        conn = self.conn
        keep_alive = self.keep_alive
        if keep_alive and (self.head.has_body or conn.closing or conn.state.draining):
            keep_alive = self.keep_alive = self._decide_keep_alive()
        if status >= 200 and status != 204 and status != 304:
            size = len(body) if length is None else length
            length_line = _LENGTH_LINES[size] if size < 1024 else b"content-length: %d\r\n" % size
            if self.head.method == "HEAD":
                body = b""
        else:
            length_line = b""
            body = b""
        if reason is None:
            reason = self.reason
        line = STATUS_LINES.get(status) if reason is None else None
        if line is None:
            line = status_line(status, reason)
        server_lines = conn.state.server_lines if self.add_server_lines else b""
        end = b"\r\n" if keep_alive and self.head.version == "1.1" else self._connection_header()
        # One tuple literal per branch: joining (*head, body) built two tuples a response.
        if len(body) <= _JOIN_LIMIT:
            conn.write(b"".join((line, header_block, server_lines, length_line, end, body)))
        else:
            conn.write(b"".join((line, header_block, server_lines, length_line, end)))
            conn.write(body)
        self.bytes_sent = len(body)
        self.finished = True
        conn.exchange_done(self)

    def start(
        self,
        status: int,
        headers: Headers,
        content_length: int | None = None,
        *,
        close_delimited: bool = False,
        reason: str | None = None,
    ) -> None:
        """Send the response head; the body follows with :meth:`write` and :meth:`end`.

        A ``content-length`` among ``headers`` counts as ``content_length``; a
        ``transfer-encoding`` from the application is dropped, since framing is ours to choose.
        ``close_delimited`` asks for the HTTP/1.0 way when the length is unknown: the body ends
        when the connection does (for handlers written against servers that did just that).
        """
        if self.started:
            self._already_started()
        headers, content_length, wants_close = _split_framing(headers, content_length)
        header_block = encode_headers(headers)
        if wants_close:
            self.keep_alive = False
        self.start_encoded(
            status, header_block, content_length, close_delimited=close_delimited, reason=reason
        )

    def start_encoded(
        self,
        status: int,
        header_block: bytes,
        content_length: int | None = None,
        *,
        close_delimited: bool = False,
        reason: str | None = None,
    ) -> None:
        """:meth:`start` with the fields already checked and encoded (``name: value\r\n``
        each), and none of them framing: for a proxy passing on what its upstream's parser
        accepted, which would otherwise be decoded only to be checked and encoded again."""
        if self.started:
            self._already_started()
        self.started = True
        self.status = status
        self.keep_alive = self._decide_keep_alive()
        if not status_allows_body(status):
            framing, length_line = _FRAMING_NONE, b""
        elif content_length is not None:
            framing, length_line = _FRAMING_LENGTH, b"content-length: %d\r\n" % content_length
            self._remaining = content_length
        elif self.head.version == "1.1" and not close_delimited:
            framing, length_line = _FRAMING_CHUNKED, b"transfer-encoding: chunked\r\n"
        else:
            framing, length_line = _FRAMING_CLOSE, b""
            self.keep_alive = False
        if self.head.method == "HEAD":
            framing = _FRAMING_NONE
        self._framing = framing
        self.conn.write(
            b"".join(
                (
                    status_line(status, reason if reason is not None else self.reason),
                    header_block,
                    self.conn.state.server_lines if self.add_server_lines else b"",
                    length_line,
                    self._connection_header(),
                )
            )
        )

    def write(self, data: bytes) -> None:
        """Send part of the body; raises if the response would exceed its Content-Length."""
        if not self.started or self.finished:
            raise RuntimeError("write() outside of a started response")
        if not data:
            return
        framing = self._framing
        self.bytes_sent += len(data)
        if framing == _FRAMING_CHUNKED:
            self.conn.write(encode_chunk(data))
        elif framing == _FRAMING_LENGTH:
            if len(data) > self._remaining:
                self.abort("response body longer than its Content-Length")
                raise ValueError("response body longer than its Content-Length")
            self._remaining -= len(data)
            self.conn.write(data)
        elif framing == _FRAMING_CLOSE:
            self.conn.write(data)

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of the open file ``fd`` from ``offset`` as part of the body.

        Zero-copy (``os.sendfile``) on plain TCP, blocks read off the loop otherwise; waits
        while the client is slow, like :meth:`drain`. Counts against the Content-Length like
        :meth:`write`. Raises ``ClientDisconnected`` or ``bastion.engine.sendfile.FileTruncated``;
        either way the response is broken and the caller should :meth:`abort` it.
        """
        if not self.started or self.finished:
            raise RuntimeError("send_file() outside of a started response")
        framing = self._framing
        if count <= 0 or framing == _FRAMING_NONE:
            return
        if framing == _FRAMING_LENGTH:
            if count > self._remaining:
                self.abort("response body longer than its Content-Length")
                raise ValueError("response body longer than its Content-Length")
            self._remaining -= count
        self.bytes_sent += count
        if framing == _FRAMING_CHUNKED:
            self.conn.write(b"%x\r\n" % count)
        await awaiting(_send_file(self.conn, fd, offset, count))
        if framing == _FRAMING_CHUNKED:
            self.conn.write(b"\r\n")

    def end(self) -> None:
        """Finish the response; closes the connection if fewer bytes came than promised."""
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        if self._framing == _FRAMING_CHUNKED:
            self.conn.write(LAST_CHUNK)
        elif self._framing == _FRAMING_LENGTH and self._remaining:
            self.abort(f"response ended {self._remaining} bytes short of its Content-Length")
            return
        elif self._framing == _FRAMING_CLOSE:
            self.keep_alive = False
        self._complete()

    def switch_protocols(self, head: bytes, peer: TunnelPeer) -> None:
        """Answer an upgrade with ``head`` (a complete 101 response head) and hand the
        connection to ``peer`` (see :mod:`bastion.engine.tunnel`): the request is done, and
        the connection carries the new protocol until either side closes it."""
        if self.started:
            self._already_started()
        if not self.head.upgrade:
            raise RuntimeError("switch_protocols() for a request that did not ask to upgrade")
        self.started = True
        self.status = 101
        # Kept "alive" so that ending the exchange does not close what is now a tunnel.
        self.keep_alive = True
        self.conn.switch_protocols(head, peer)
        self.bytes_sent = 0
        self._complete()

    def _already_started(self) -> NoReturn:
        if self.finished:
            # The server ended this request for the application (refused, or its client is
            # gone): to the application, the client is gone.
            raise ClientDisconnected(f"request ended by the server: {self.refused}")
        raise ResponseAlreadyStarted("response already started")

    def refuse(self, error: ProtocolError | ClientDisconnected) -> None:
        """The request turned out bad (or cut short) after the handler got it.

        The body stream fails with ``error``, so a handler reading it learns why. If nothing
        was sent yet, a protocol error becomes this request's one answer; a request cut short
        gets none. Anything the application sends later is dropped (it sees a gone client). A
        response that has started cannot be taken back, so the connection is closed under it.
        Either way the connection ends: the next request's position on the wire is unknown.
        """
        if self.head.has_body:
            self.body.abort(error)
        if self.finished:
            return
        if self.started or not isinstance(error, ProtocolError):
            self._drop(error)
            return
        self.refused = error
        self.started = True
        self.keep_alive = False
        self.status = error.status
        conn = self.conn
        conn.write(error_response(error.status, error.detail, date_line=conn.state.date_line))
        self.notify_client_gone()
        self._complete()

    def _drop(self, why: BaseException) -> None:
        """End the request with no (further) answer, and the connection with it: a missing
        or partial answer would otherwise be taken for the next request's."""
        self.refused = why
        self.started = True
        self.keep_alive = False
        self.finished = True
        self.notify_client_gone()
        self.conn.exchange_done(self, abort=True)

    def _complete(self) -> None:
        self.finished = True
        self.conn.exchange_done(self)

    def fail(self, error: BaseException) -> None:
        """A handler raised: answer 500 if nothing was sent yet, else cut the connection."""
        if self.finished:
            return
        if isinstance(error, ClientDisconnected) or self.conn.closed:
            self._drop(error)
            return
        logger.error(
            "handler error on %s %s",
            self.head.method,
            self.head.target.decode("latin-1"),
            exc_info=(type(error), error, error.__traceback__),
        )
        self.conn.stats.count_error("handler")
        if not self.started:
            self.keep_alive = False
            self.respond(
                500,
                [("content-type", "text/plain; charset=utf-8")],
                b"500 Internal Server Error\n",
            )
        else:
            self.abort("handler failed after the response started")

    def abort(self, why: str) -> None:
        """Close the connection mid-response: the only honest signal once framing is broken."""
        if self.finished:
            return
        logger.error(
            "closing connection: %s (%s %s)",
            why,
            self.head.method,
            self.head.target.decode("latin-1"),
        )
        self.conn.stats.count_error("response")
        self.keep_alive = False
        self.finished = True
        self.conn.exchange_done(self, abort=True)

    async def drain(self) -> None:
        """Wait while the client is slower than we write (the transport asked us to pause)."""
        await self.conn.drain()

    @property
    def disconnected(self) -> bool:
        return self.conn.closed

    # from a worker thread -------------------------------------------------------------------

    def call_threadsafe(self, fn: Any, *args: Any) -> None:
        self.conn.loop.call_soon_threadsafe(fn, *args)

    def respond_threadsafe(
        self, status: int, headers: Headers, body: bytes = b"", reason: str | None = None
    ) -> None:
        self.conn.loop.call_soon_threadsafe(
            self._respond_or_fail, status, list(headers), body, reason
        )

    def start_threadsafe(
        self,
        status: int,
        headers: Headers,
        content_length: int | None = None,
        *,
        close_delimited: bool = False,
        reason: str | None = None,
    ) -> None:
        """:meth:`start` from a worker thread; a refused head (bad header) becomes a 500."""
        self.conn.loop.call_soon_threadsafe(
            self._start_or_fail, status, list(headers), content_length, close_delimited, reason
        )

    def end_threadsafe(self) -> None:
        self.conn.loop.call_soon_threadsafe(self.end)

    def _start_or_fail(
        self,
        status: int,
        headers: Headers,
        length: int | None,
        close_delimited: bool,
        reason: str | None,
    ) -> None:
        try:
            self.start(status, headers, length, close_delimited=close_delimited, reason=reason)
        except Exception as exc:
            self.fail(exc)

    def _respond_or_fail(
        self, status: int, headers: Headers, body: bytes, reason: str | None
    ) -> None:
        try:
            self.respond(status, headers, body, reason)
        except Exception as exc:
            self.fail(exc)


def _split_framing(
    headers: Headers, content_length: int | None
) -> tuple[list[tuple[str, str]], int | None, bool]:
    """Take framing headers out of an application's list; framing is the server's job."""
    kept = []
    wants_close = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-length":
            declared = parse_content_length(str(value).encode("latin-1"))
            if content_length is not None and declared != content_length:
                raise ValueError("conflicting Content-Length values")
            content_length = declared
        elif lowered == "transfer-encoding":
            continue
        elif lowered == "connection":
            if "close" in str(value).lower():
                wants_close = True
            continue
        else:
            kept.append((name, value))
    return kept, content_length, wants_close


class ThreadWriter:
    """Writes a response body from a worker thread with backpressure.

    Each chunk is handed to the loop; the thread waits while more than ``limit`` bytes are on
    their way or sitting in a paused transport, so a slow client slows the handler instead of
    filling memory. A client that stops reading for ``write_timeout`` ends the wait.
    """

    def __init__(self, exchange: Exchange, limit: int = 256 * 1024) -> None:
        self._ex = exchange
        self._limit = limit
        self._in_flight = 0
        self._cond = threading.Condition()
        self._timeout = exchange.conn.write_timeout

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._in_flight > self._limit and not self._cond.wait_for(
                lambda: self._in_flight <= self._limit or self._ex.disconnected,
                self._timeout,
            ):
                raise TimeoutError("client stopped reading the response")
            if self._ex.disconnected or self._ex.finished:
                raise ClientDisconnected("client disconnected")
            self._in_flight += len(data)
        self._ex.call_threadsafe(self._write_on_loop, data)

    def _write_on_loop(self, data: bytes) -> None:
        # On failure the exchange has logged and closed; the thread sees that on its next write.
        with contextlib.suppress(Exception):
            self._ex.write(data)
        if self._ex.conn.write_paused:
            self._ex.conn.when_writable(lambda: self._ack(len(data)))
        else:
            self._ack(len(data))

    def _ack(self, size: int) -> None:
        with self._cond:
            self._in_flight -= size
            self._cond.notify_all()


__all__ = ["Exchange", "ProtocolError", "ResponseAlreadyStarted", "ThreadWriter"]

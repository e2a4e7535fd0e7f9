"""ASGI 3 applications (Starlette, FastAPI, Quart, ...) as a Bastion handler.

Each request is one call of the application, run on the event loop with no thread hop:
``receive()`` streams the request body from the engine's bounded body stream, ``send()`` writes
through the exchange. The response head is held back until the first body message, so the
usual response (a start and one body) leaves in a single write through
:meth:`Exchange.respond` - the same fast path native handlers use - and an error that happens
before any body can still be answered with a clean 500.

What a misbehaving application gets:

* it raises before any body was sent: 500 (the connection then closes);
* it raises once the body has started: the connection is closed, since the response cannot be
  completed honestly;
* it sends messages out of order (a body before the start, a second start, anything after the
  final body): the error is logged and raised into the application, and the response is
  replaced by a 500 or cut off as above;
* it returns without completing its response: likewise;
* its body disagrees with its ``Content-Length``: the engine closes the connection and logs it;
* ``send()`` once the client has gone raises :class:`ClientDisconnected` (an ``OSError``, as
  ASGI spec 2.4 asks), which is not logged as an error.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Iterable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, NoReturn

from bastion._compiled import awaiting, mypyc_attr
from bastion.asgi.lifespan import Lifespan, LifespanMode
from bastion.asgi.types import (
    ASGI_VERSION,
    HTTP_SPEC_VERSION,
    WEBSOCKET_SPEC_VERSION,
    ASGIApp,
    Message,
)
from bastion.asgi.websocket import WebSocketCycle
from bastion.engine.eager import run_eagerly
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange
from bastion.http import ProtocolError, parse_content_length
from bastion.http.response import encode_header
from bastion.websocket import (
    HandshakeRefused,
    WebSocketConfig,
    asks_websocket,
    cancel_abandoned,
    check_handshake,
    refuse,
)

if TYPE_CHECKING:
    from bastion.engine.state import ServerState

logger = logging.getLogger("bastion.error")

# Python 3.12+ runs eager tasks with asyncio.current_task() set, which anyio, asyncio.timeout()
# and friends need; before that, an eager first step has no current task, so third-party
# applications get a task per request unless the caller says the application does not care.
DEFAULT_EAGER: Final = sys.version_info >= (3, 12)

_ASGI: Final = {"version": ASGI_VERSION, "spec_version": HTTP_SPEC_VERSION}
_ASGI_WEBSOCKET: Final = {"version": ASGI_VERSION, "spec_version": WEBSOCKET_SPEC_VERSION}

# Where a response stands.
_IDLE: Final = 0  # nothing sent by the application yet
_HEAD: Final = 1  # http.response.start received and held back
_BODY: Final = 2  # head written, body streaming
_DONE: Final = 3  # final body sent
_FAILED: Final = 4  # the application broke the protocol; answered with a 500 or a closed connection

# Where the request body stands.
_NO_BODY: Final = 0  # no body: the one http.request message has not been received yet
_READING: Final = 1  # body being streamed
_READ: Final = 2  # the last http.request message was received

# Flags from the response headers.
_CLOSE: Final = 1
_OWN_SERVER: Final = 2
_OWN_DATE: Final = 4
_OWN_LINES: Final = _OWN_SERVER | _OWN_DATE
# The server's own lines an application may write instead, by lower-case name.
_OWN_FLAGS: Final = {b"server": _OWN_SERVER, b"date": _OWN_DATE}
# Checked field lines by their byte pair: bounded in number and in the length of each.
_field_lines: Final[dict[tuple[bytes, bytes], bytes]] = {}
_FIELD_LINES_LIMIT: Final = 4096
_FIELD_LINE_MAX: Final = 1024

# Used per request, held as constants: compiled code looks an imported name up in the
# module's dictionary on every use, a Final one not.
_COROUTINE: Final = CoroutineType
_RUN_EAGERLY: Final = run_eagerly

# Errors a body read raises when the request will never complete.
_GONE: Final = (ClientDisconnected, ProtocolError)


@mypyc_attr(allow_interpreted_subclasses=True)
class ASGIHandler:
    """Serve an ASGI 3 application: ``Server(ASGIHandler(app))`` or ``bastion run module:app``.

    ``root_path`` is where a proxy mounts the application (it strips that prefix before
    forwarding): as in other ASGI servers it is given to the application as ``root_path`` and
    prepended to ``path`` and ``raw_path``. ``lifespan`` is ``"auto"`` (run the lifespan
    protocol when the application supports it), ``"on"`` (it must) or ``"off"``.

    ``eager`` runs each request's first step inline, before any task exists, which saves a
    task and a loop iteration per request; it defaults to on for Python 3.12+ (where eager tasks
    are real tasks) and off before, where it is only safe for applications that never need
    ``asyncio.current_task()`` (plain ASGI callables, not anyio-based frameworks).

    ``websocket`` sets the limits and deadlines of WebSocket connections (the ``websocket``
    scope, see :mod:`bastion.asgi.websocket`).
    """

    def __init__(
        self,
        app: ASGIApp,
        root_path: str = "",
        lifespan: LifespanMode = "auto",
        *,
        eager: bool | None = None,
        websocket: WebSocketConfig | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"an ASGI application must be callable, not {type(app).__name__}")
        if root_path and not root_path.startswith("/"):
            raise ValueError(f"root_path must start with '/', got {root_path!r}")
        self.app = app
        self.root_path = root_path.rstrip("/")
        self._raw_root = self.root_path.encode("utf-8")
        self.lifespan = Lifespan(app, lifespan)
        self.eager = DEFAULT_EAGER if eager is None else eager
        self.websocket = websocket or WebSocketConfig()
        self._graceful_timeout = 30.0
        self._state = self.lifespan.state
        # Requests whose application call is still running (suspended at least once).
        self._tasks: set[asyncio.Task[Any]] = set()
        # WebSocket calls still running, and their handshakes' exchanges.
        self._websocket_tasks: dict[asyncio.Task[Any], Exchange] = {}

    # the engine's side ------------------------------------------------------------------------

    async def startup(self, state: ServerState) -> None:
        self._graceful_timeout = state.config.graceful_timeout
        await awaiting(self.lifespan.startup())
        self._state = self.lifespan.state

    async def shutdown(self) -> None:
        await awaiting(cancel_abandoned(self._websocket_tasks))
        # Requests the engine has let go of may still be running (background work after the
        # response, or an application ignoring a disconnect): give them the graceful timeout.
        tasks = self._tasks
        if tasks:
            await awaiting(asyncio.wait(set(tasks), timeout=self._graceful_timeout))
            for task in list(tasks):
                task.cancel()
            if tasks:
                await awaiting(asyncio.wait(set(tasks), timeout=1.0))
        await awaiting(self.lifespan.shutdown(self._graceful_timeout))

    def handle(self, exchange: Exchange) -> None:
        head = exchange.head
        if head.upgrade and asks_websocket(head):
            self._websocket(exchange)
            return
        conn = exchange.conn
        # (An absolute-form target's path and query are its URL's: the head splits them.)
        path = head.path
        raw_path = head.raw_path
        root = self.root_path
        if root:
            path = root + path
            raw_path = self._raw_root + raw_path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": head.version,
            "method": head.method,
            "scheme": exchange.scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": head.query_string,
            "root_path": root,
            "headers": [(name.lower(), value) for name, value in head.headers],
            "client": exchange.client,
            "server": conn.server_address,
            "state": self._state.copy(),
        }
        cycle = _Cycle(exchange, scope)
        exchange.state = cycle
        call = self.app(scope, cycle.receive, cycle.send)
        # The type test first: asyncio.iscoroutine is a Python function call per request.
        if type(call) is not _COROUTINE and not asyncio.iscoroutine(call):
            call = _await(call)
        task = _RUN_EAGERLY(exchange.loop, call, self._finish, cycle, self.eager)
        if task is not None:
            self._tasks.add(task)
            cycle.task = task

    def _websocket(self, exchange: Exchange) -> None:
        head = exchange.head
        try:
            handshake = check_handshake(head, self.websocket.compression)
        except HandshakeRefused as refused:
            refuse(exchange, refused)
            return
        path = head.path
        raw_path = head.raw_path
        root = self.root_path
        if root:
            path = root + path
            raw_path = self._raw_root + raw_path
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": _ASGI_WEBSOCKET,
            "http_version": "1.1",
            "scheme": "wss" if exchange.scheme == "https" else "ws",
            "path": path,
            "raw_path": raw_path,
            "query_string": head.query_string,
            "root_path": root,
            "headers": [(name.lower(), value) for name, value in head.headers],
            "client": exchange.client,
            "server": exchange.server,
            "subprotocols": handshake.subprotocols,
            "state": self._state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        cycle = WebSocketCycle(exchange, scope, handshake, self.websocket)
        exchange.state = cycle
        call = self.app(scope, cycle.receive, cycle.send)
        # The type test first: asyncio.iscoroutine is a Python function call per request.
        if type(call) is not _COROUTINE and not asyncio.iscoroutine(call):
            call = _await(call)
        # Always a task, never eager: an application that accepts in its first step would
        # switch the connection while the read that brought the handshake is still being
        # parsed as HTTP.
        task = run_eagerly(exchange.loop, call, self._websocket_done, cycle, eager=False)
        assert task is not None
        self._websocket_tasks[task] = exchange
        cycle.task = task

    def _websocket_done(
        self, cycle: WebSocketCycle, result: Any, error: BaseException | None
    ) -> None:
        task = cycle.task
        if task is not None:
            self._websocket_tasks.pop(task, None)
            cycle.task = None
        cycle.finish(error)

    def connection_lost(self, exchange: Exchange) -> None:
        cycle = exchange.state
        if isinstance(cycle, _Cycle):
            cycle.lost()

    def _finish(self, cycle: _Cycle, result: Any, error: BaseException | None) -> None:
        """The application call ended: make sure its request got a complete answer."""
        task = cycle.task
        if task is not None:
            self._tasks.discard(task)
            cycle.task = None
        cycle.lost()  # nothing is listening for a disconnect any more
        exchange = cycle.exchange
        exchange.state = None  # no reference cycle: both go when the connection moves on
        state = cycle.state
        if state >= _DONE:
            # Work after the response (background tasks) may still fail; a broken response
            # was logged when it broke.
            if (
                state == _DONE
                and error is not None
                and error is not cycle.raised
                and not isinstance(error, asyncio.CancelledError)
            ):
                logger.error(
                    "ASGI application raised after sending its response (%s %s)",
                    exchange.head.method,
                    exchange.head.target.decode("latin-1"),
                    exc_info=error,
                )
            return
        if exchange.finished or exchange.client_gone:
            if not exchange.finished:
                # The client left first (an application that heard http.disconnect may well
                # return without answering); fail() settles the books without logging.
                exchange.fail(ClientDisconnected("client disconnected"))
            return
        if error is None:
            what = "sending a response" if state == _IDLE else "completing its response"
            error = RuntimeError(f"ASGI application returned without {what}")
        exchange.fail(error)


class _Cycle:
    """One request/response: the application's ``receive`` and ``send``."""

    __slots__ = (
        "exchange",
        "scope",
        "state",
        "status",
        "headers",
        "reading",
        "waiter",
        "gone",
        "raised",
        "trailers",
        "task",
    )

    def __init__(self, exchange: Exchange, scope: dict[str, Any]) -> None:
        self.exchange = exchange
        self.scope = scope
        self.state = _IDLE
        self.status = 0
        self.headers: Iterable[Any] = ()
        self.reading = _READING if exchange.head.has_body else _NO_BODY
        self.waiter: asyncio.Future[None] | None = None
        self.gone = False
        self.raised: BaseException | None = None
        self.trailers = False
        self.task: asyncio.Task[Any] | None = None

    # receive ----------------------------------------------------------------------------------

    async def receive(self) -> Message:
        exchange = self.exchange
        if self.state >= _DONE or exchange.finished or exchange.conn.closed:
            return {"type": "http.disconnect"}
        reading = self.reading
        # The request comes first from a client that only half-closed (it sent its request,
        # then FIN): it may still be waiting for the answer.
        if reading == _NO_BODY:
            self.reading = _READ
            return {"type": "http.request", "body": b"", "more_body": False}
        if reading == _READING:
            return await self._read_body()
        if self.gone or exchange.client_gone:
            return {"type": "http.disconnect"}
        # The whole request was received: the next thing to happen is the end of the response
        # or the client going away.
        waiter = self.waiter
        if waiter is None or waiter.done():
            waiter = self.waiter = exchange.loop.create_future()
        await awaiting(waiter)
        return {"type": "http.disconnect"}

    async def _read_body(self) -> Message:
        body = self.exchange.body
        try:
            chunk = await body.read()
        except _GONE:
            self.reading = _READ
            return {"type": "http.disconnect"}
        if not chunk:
            self.reading = _READ
            return {"type": "http.request", "body": b"", "more_body": False}
        if not body.done:
            return {"type": "http.request", "body": chunk, "more_body": True}
        # The body has all arrived (it may be buffered in pieces): hand the rest over now, so
        # the application learns it is complete without another round trip.
        parts = [chunk]
        try:
            while more := await body.read():
                parts.append(more)
        except _GONE:
            # Cut short (the client went away): deliver what came; the next receive() reports
            # the disconnect.
            return {"type": "http.request", "body": b"".join(parts), "more_body": True}
        self.reading = _READ
        return {
            "type": "http.request",
            "body": chunk if len(parts) == 1 else b"".join(parts),
            "more_body": False,
        }

    def lost(self) -> None:
        """The client went away, or the request is over: wake a pending receive()."""
        self.gone = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # send -------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        exchange = self.exchange
        kind = message["type"]
        state = self.state
        if state >= _DONE or exchange.finished or exchange.conn.closed:
            self._send_after_end(kind)
            return
        if kind == "http.response.body":
            if state == _HEAD:
                body = message.get("body", b"")
                if message.get("more_body", False):
                    self._start_stream()
                    await self._write(body)
                else:
                    self._respond(body)
                return
            if state == _BODY:
                await self._write(message.get("body", b""))
                if not message.get("more_body", False):
                    self.state = _DONE
                    exchange.end()
                    self.lost()
                return
            self._violation("'http.response.body' before 'http.response.start'")
        elif kind == "http.response.start":
            if state == _IDLE:
                status = message["status"]
                if type(status) is not int or not 200 <= status <= 999:
                    self._violation(f"invalid status {status!r} in 'http.response.start'")
                self.status = status
                self.headers = message.get("headers", ())
                self.trailers = bool(message.get("trailers", False))
                self.state = _HEAD
                return
            self._violation("a second 'http.response.start'")
        else:
            self._violation(f"unexpected message type {kind!r}")

    def _respond(self, body: bytes) -> None:
        """Start and the only body at once: one write, or the engine's checks on a mismatch."""
        exchange = self.exchange
        block, length, flags = _response_fields(self.headers)
        if flags:
            block = _apply_flags(exchange, block, flags)
        route = self.scope.get("route")
        if route is not None:
            # Starlette and FastAPI leave the matched route in the scope: its template is a
            # bounded metrics label, where the path is not.
            exchange.route = getattr(route, "path", None)
        if length is None or length == len(body):
            exchange.respond_encoded(self.status, block, body)
        else:
            # A HEAD answer announces the GET body's length without sending it; otherwise the
            # engine finds the mismatch, logs it and closes the connection.
            exchange.start_encoded(self.status, block, length)
            try:
                exchange.write(body)
            except ValueError as error:
                self._broken(error)
                raise
            exchange.end()
        self.state = _DONE
        self.lost()

    def _start_stream(self) -> None:
        exchange = self.exchange
        block, length, flags = _response_fields(self.headers)
        if flags:
            block = _apply_flags(exchange, block, flags)
        route = self.scope.get("route")
        if route is not None:
            # Starlette and FastAPI leave the matched route in the scope: its template is a
            # bounded metrics label, where the path is not.
            exchange.route = getattr(route, "path", None)
        exchange.start_encoded(self.status, block, length)
        self.state = _BODY

    async def _write(self, body: bytes) -> None:
        exchange = self.exchange
        if body:
            try:
                exchange.write(body)
            except ValueError as error:  # longer than its Content-Length: logged and closed
                self._broken(error)
                raise
        conn = exchange.conn
        if conn.write_paused:
            await exchange.drain()
        elif conn.closed:
            raise ClientDisconnected("client disconnected")

    def _send_after_end(self, kind: str) -> None:
        state = self.state
        if state == _DONE:
            if kind == "http.response.trailers" and self.trailers:
                return  # trailers are not sent; the flag was accepted and is ignored
            exchange = self.exchange
            error = RuntimeError(
                f"ASGI protocol error: {kind!r} sent after the response was complete"
            )
            logger.error(
                "%s (%s %s)",
                error,
                exchange.head.method,
                exchange.head.target.decode("latin-1"),
            )
            self.raised = error
            raise error
        if state == _FAILED:
            error = RuntimeError(f"ASGI protocol error: {kind!r} sent after the response failed")
            self.raised = error
            raise error
        raise ClientDisconnected("client disconnected")

    def _broken(self, error: BaseException) -> None:
        """The engine refused what was sent (and has logged it and closed the connection)."""
        self.state = _FAILED
        self.raised = error
        self.lost()

    def _violation(self, what: str) -> NoReturn:
        """Log, end the response (500 or a closed connection), and raise into the app."""
        error = RuntimeError(f"ASGI protocol error: {what}")
        self.state = _FAILED
        self.raised = error
        self.exchange.fail(error)
        self.lost()
        raise error


def _response_fields(raw: Iterable[Any]) -> tuple[bytes, int | None, int]:
    """ASGI's byte pairs as the encoded field block, minus framing, which is the server's job.

    Returns the block, the declared ``Content-Length`` (or None) and flags: ``_CLOSE`` when
    the application asked for ``Connection: close``, ``_OWN_SERVER`` and ``_OWN_DATE`` when
    it wrote its own ``Server`` or ``Date``. Only names as long as one of those are
    lowercased. Each line is checked once and remembered by its byte pair (applications send
    the same few fields with every response), so most fields cost a lookup, not a decoding, a
    check and an encoding.
    """
    lines = []
    length: int | None = None
    flags = 0
    cache = _field_lines
    for name, value in raw:
        if type(name) is not bytes or type(value) is not bytes:
            name, value = _byte_string(name), _byte_string(value)
        size = len(name)
        if size == 14 or size == 17 or size == 10:
            lowered = name.lower()
            if lowered == b"content-length":
                declared = parse_content_length(value)
                if length is not None and declared != length:
                    raise ValueError("conflicting Content-Length values")
                length = declared
                continue
            if lowered == b"transfer-encoding":
                continue
            if lowered == b"connection":
                if b"close" in value.lower():
                    flags |= _CLOSE
                continue
        elif size == 4 or size == 6:
            flags |= _OWN_FLAGS.get(name.lower(), 0)
        key = (name, value)
        line = cache.get(key)
        if line is None:
            line = encode_header(name.decode("latin-1"), value.decode("latin-1"))
            if len(cache) < _FIELD_LINES_LIMIT and size + len(value) <= _FIELD_LINE_MAX:
                cache[key] = line
        lines.append(line)
    return b"".join(lines), length, flags


def _byte_string(value: Any) -> bytes:
    """A header name or value given as another bytes-like object, as bytes."""
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bytes):
        return value
    raise TypeError("ASGI response header names and values must be byte strings")


def _apply_flags(exchange: Exchange, block: bytes, flags: int) -> bytes:
    """The block, with the server's own Date or Server line where the application left one
    out; the connection set to close if it asked."""
    if flags & _CLOSE:
        exchange.keep_alive = False
    if flags & _OWN_LINES:
        # The application's Server/Date win; the server adds only the one it left out.
        exchange.add_server_lines = False
        for line in exchange.conn.state.server_lines.split(b"\r\n"):
            name = line.partition(b": ")[0]
            if name and not flags & _OWN_FLAGS.get(name, 0):
                block += line + b"\r\n"
    return block


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaiting(awaitable)


__all__ = ["ASGIHandler", "DEFAULT_EAGER"]

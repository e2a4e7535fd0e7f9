"""Run ``http.server`` handler classes, unchanged, as Bastion handlers.

The engine has already read and checked the request; on a pool thread, a handler instance is
given what ``BaseHTTPRequestHandler.parse_request`` would have set (``command``, ``path``,
``request_version``, ``headers``, ``close_connection`` …), an ``rfile`` holding exactly the
body and a ``wfile`` whose output is parsed back into a response. Its ``do_<METHOD>`` runs as
it would under the standard library. The loop owns the socket, so the handler is given a
stand-in for it: its own ``setup()`` and ``finish()`` run around each request, and the
server's own ``verify_request()`` is asked before each; ``handle()`` is Bastion's (one request,
already parsed).
"""

from __future__ import annotations

import email.utils
import http.client
import http.server
import logging
import re
import socketserver
import time
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from bastion.compat.headers import build_message
from bastion.compat.streams import RequestBodyReader, ResponseWriter
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange

if TYPE_CHECKING:
    from bastion.engine.state import ServerState

logger = logging.getLogger("bastion.error")

_TEXT = [("content-type", "text/plain; charset=utf-8")]
_UNSAFE = re.compile(r"[\x00\r\n]")
_BUSY = b"503 Service Unavailable: all workers are busy\n"


class ServerInfo:
    """What a handler may read from ``self.server`` when run by ``bastion run``."""

    def __init__(self, handler_class: type, address: tuple[str, int] = ("", 0)) -> None:
        self.RequestHandlerClass = handler_class
        self.set_address(address)

    def set_address(self, address: tuple[str, int]) -> None:
        self.server_address = address
        self.server_name = address[0]
        self.server_port = address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("exception while handling request from %s", client_address)


class _RequestContext:
    """Handed to the handler's constructor in place of a socket (``self.request`` and
    ``self.connection``): what ``setup()`` and handler code ask of a socket works, on the
    request's body and response instead; socket options and timeouts are the engine's, so
    ``setsockopt`` changes nothing and ``settimeout`` bounds each wait for the body."""

    __slots__ = ("exchange", "rfile", "wfile", "adapter")

    def __init__(self, exchange: Exchange, adapter: HandlerClassAdapter) -> None:
        self.exchange = exchange
        self.adapter = adapter
        self.rfile = RequestBodyReader(exchange, adapter.read_timeout)
        self.wfile = ResponseWriter(exchange)
        self.rfile.writer = self.wfile

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: Any) -> Any:
        return self.wfile if "w" in mode else self.rfile

    def sendall(self, data: bytes) -> None:
        self.wfile.write(data)

    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None:
            self.rfile.timeout = timeout
        self.rfile.tunnel_timeout = timeout

    def gettimeout(self) -> float | None:
        return self.rfile.tunnel_timeout

    def setsockopt(self, *args: Any) -> None:
        pass

    def getpeername(self) -> Any:
        return self.exchange.client

    def getsockname(self) -> Any:
        return self.exchange.server


_bridges: dict[type, type] = {}


def _bridge(cls: type[http.server.BaseHTTPRequestHandler]) -> type:
    """A subclass whose setup/handle/finish serve one parsed request instead of a socket.

    The user's ``__init__`` (and ``SimpleHTTPRequestHandler``'s ``directory``) still run, as
    does everything ``handle_one_request`` would call after parsing.
    """
    bridge = _bridges.get(cls)
    if bridge is None:
        namespace: dict[str, Any] = {
            "setup": _setup if cls.setup is _STANDARD_SETUP else _own_setup(cls.setup),
            "send_header": _send_header,
            "handle": _handle,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        }
        # The standard library formats the time afresh for every Date header and log line
        # (several microseconds each); the same text, made once a second, is identical.
        # Only the standard library's own methods are replaced, never a user's override.
        base = http.server.BaseHTTPRequestHandler
        if cls.date_time_string is base.date_time_string:
            namespace["date_time_string"] = _cached_date_time_string
        if cls.log_date_time_string is base.log_date_time_string:
            namespace["log_date_time_string"] = _cached_log_date_time_string
        bridge = type(cls.__name__, (cls,), namespace)
        _bridges[cls] = bridge
    return bridge


_date_cache: tuple[int, str] = (0, "")
_log_date_cache: tuple[int, str] = (0, "")


def _cached_date_time_string(self: Any, timestamp: float | None = None) -> str:
    global _date_cache
    if timestamp is not None:
        return http.server.BaseHTTPRequestHandler.date_time_string(self, timestamp)
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return cached[1]


def _cached_log_date_time_string(self: Any) -> str:
    global _log_date_cache
    now = int(time.time())
    cached = _log_date_cache
    if cached[0] != now:
        text = http.server.BaseHTTPRequestHandler.log_date_time_string(self)
        cached = _log_date_cache = (now, text)
    return cached[1]


def handler_factory(handler_class: Any) -> Any:
    """Accept what ``HTTPServer`` accepts: a handler class or a ``functools.partial`` of one."""
    if isinstance(handler_class, partial):
        bridged = handler_factory(handler_class.func)
        return partial(bridged, *handler_class.args, **handler_class.keywords)
    if isinstance(handler_class, type) and issubclass(
        handler_class, http.server.BaseHTTPRequestHandler
    ):
        cgi = getattr(http.server, "CGIHTTPRequestHandler", None)
        if cgi is not None and issubclass(handler_class, cgi):
            raise TypeError(
                "CGIHTTPRequestHandler is not supported: CGI gives the request's socket to a "
                "child process, and in Bastion the event loop owns every socket"
            )
        return _bridge(handler_class)
    raise TypeError(
        f"{handler_class!r} is not an http.server.BaseHTTPRequestHandler subclass "
        "(or a functools.partial of one)"
    )


_STANDARD_SETUP = socketserver.StreamRequestHandler.setup


def _setup(self: Any) -> None:
    context: _RequestContext = self.request
    self.context = self.connection = context
    self.rfile = context.rfile
    self.wfile = context.wfile


def _own_setup(setup: Any) -> Any:
    """A handler's own ``setup()`` runs on the socket stand-in; the files it ends up with are
    the request's, whatever the standard ``setup()`` under it made of the stand-in."""

    def bridged_setup(self: Any) -> None:
        _setup(self)
        setup(self)
        self.connection = self.context
        self.rfile = self.context.rfile
        self.wfile = self.context.wfile

    return bridged_setup


def _send_header(self: Any, keyword: str, value: str) -> None:
    # The standard library writes whatever it is given; a CR or LF in either part would let
    # request data inject headers (response splitting), so it is refused here.
    if _UNSAFE.search(str(keyword)) or _UNSAFE.search(str(value)):
        raise ValueError(f"invalid character in header {keyword!r}")
    super(type(self), self).send_header(keyword, value)


def _handle(self: Any) -> None:
    """On a pool thread: what ``handle_one_request`` does once the request is parsed."""
    context: _RequestContext = self.context
    exchange = context.exchange
    writer = context.wfile
    head = exchange.head
    target = head.target.decode("latin-1")
    version = f"HTTP/{head.version}"
    self.command = head.method
    self.request_version = version
    self.requestline = f"{head.method} {target} {version}"
    self.raw_requestline = self.requestline.encode("latin-1") + b"\r\n"
    # The standard library's guard against open redirects (gh-87389).
    self.path = "/" + target.lstrip("/") if target.startswith("//") else target
    message_class = getattr(self, "MessageClass", http.client.HTTPMessage)
    self.headers = build_message(head.headers, message_class)
    protocol = self.protocol_version
    close = not (head.version == "1.1" and protocol >= "HTTP/1.1")
    connection = (self.headers.get("Connection") or "").lower()
    if connection == "close":
        close = True
    elif connection == "keep-alive" and protocol >= "HTTP/1.1":
        close = False
    self.close_connection = close
    try:
        if head.expect_continue and protocol >= "HTTP/1.1" and not self.handle_expect_100():
            writer.finish(close_connection=True)
            return
        method = getattr(self, "do_" + head.method, None)
        if method is None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({head.method!r})")
        else:
            method()
    except TimeoutError as exc:
        self.log_error("Request timed out: %r", exc)
        writer.fail(exc)
        return
    except Exception as exc:
        context.adapter.report_error(self.client_address)
        writer.fail(exc)
        return
    writer.finish(close_connection=self.close_connection)


class HandlerClassAdapter:
    """A Bastion handler running a ``BaseHTTPRequestHandler`` subclass per request."""

    def __init__(self, handler_class: Any, server: Any) -> None:
        self.factory = handler_factory(handler_class)
        self.server = server
        # A handler class has no routes; its name is the one bounded label it offers metrics.
        named = handler_class.func if isinstance(handler_class, partial) else handler_class
        self.route = getattr(named, "__qualname__", None)
        self._state: ServerState | None = None
        self.read_timeout = 30.0
        # The server's own handle_error is called only when the user overrode it; the default
        # would just print what the engine already logs.
        own = getattr(type(server), "handle_error", None)
        self._custom_error_hook = own is not None and own not in _DEFAULT_ERROR_HOOKS
        verify = getattr(type(server), "verify_request", None)
        self._verifies = verify is not None and verify not in _DEFAULT_VERIFIERS

    async def startup(self, state: ServerState) -> None:
        self._state = state
        self.read_timeout = state.config.blocking_read_timeout
        if isinstance(self.server, ServerInfo) and state.sockets:
            address = state.sockets[0].getsockname()
            if isinstance(address, tuple):
                self.server.set_address((str(address[0]), int(address[1])))

    def handle(self, exchange: Exchange) -> None:
        state = self._state
        assert state is not None, "startup() was not run"
        exchange.route = self.route
        if not state.pool.try_submit(partial(self._serve, exchange), _ignore):
            state.stats.count_error("pool-full")
            exchange.respond(503, [*_TEXT, ("retry-after", "1")], _BUSY)

    def _serve(self, exchange: Exchange) -> None:
        context = _RequestContext(exchange, self)
        if self._verifies and not self._verified(context, exchange):
            return
        try:
            self.factory(context, exchange.client or ("", 0), self.server)
        except Exception as exc:
            # The handler's constructor itself failed (before or after our handle()).
            self.report_error(exchange.client)
            context.wfile.fail(exc)

    def _verified(self, context: _RequestContext, exchange: Exchange) -> bool:
        """The server's own ``verify_request``, asked for every request (the engine, not the
        server, accepts connections); False ends the connection without an answer, as
        ``socketserver`` closes a connection it refuses."""
        try:
            allowed = self.server.verify_request(context, exchange.client)
        except Exception as exc:
            self.report_error(exchange.client)
            context.wfile.fail(exc)
            return False
        if not allowed:
            exchange.call_threadsafe(
                exchange.refuse, ClientDisconnected("refused by verify_request")
            )
        return bool(allowed)

    def report_error(self, client_address: Any) -> None:
        if self._custom_error_hook:
            self.server.handle_error(None, client_address)


def _ignore(result: object, error: BaseException | None) -> None:
    if error is not None:
        logger.error("compat handler job failed", exc_info=error)


_DEFAULT_ERROR_HOOKS: tuple[Any, ...] = (ServerInfo.handle_error,)
# Set by bastion.compat.servers for its HTTPServer's own, which allows everything.
_DEFAULT_VERIFIERS: list[Any] = []

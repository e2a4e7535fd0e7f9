"""The native ``App``: routes to ``async def`` handlers on the loop and ``def`` ones on the pool."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from bastion.app.request import Request, SyncRequest
from bastion.app.response import JSONResponse, Response, StreamingResponse
from bastion.app.routing import Router, compile_path
from bastion.app.websocket import WebSocket
from bastion.engine.eager import run_eagerly
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange, ThreadWriter
from bastion.engine.handler import Handler, run_shutdown, run_startup
from bastion.websocket import (
    HandshakeRefused,
    WebSocketConfig,
    asks_websocket,
    cancel_abandoned,
    check_handshake,
    refuse,
)

if TYPE_CHECKING:
    from bastion.engine.server import ServerState

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_TEXT = [("content-type", "text/plain; charset=utf-8")]
_NOT_FOUND = b"404 Not Found\n"
_METHOD_NOT_ALLOWED = b"405 Method Not Allowed\n"
_BUSY = b"503 Service Unavailable: all workers are busy\n"
_UPGRADE_REQUIRED = [*_TEXT, ("upgrade", "websocket"), ("connection", "Upgrade")]
_WEBSOCKET_ONLY = b"426 Upgrade Required: this resource speaks WebSocket only\n"
_STREAMED = object()


class App:
    """A set of routes; pass it to ``bastion run module:app`` or :func:`bastion.engine.run`.

    ``async def`` handlers run on the event loop and must not block; plain ``def`` handlers run
    on the bounded thread pool and may. A handler returns a :class:`Response`,
    :class:`StreamingResponse`, ``bytes``/``str`` (200) or a ``dict``/``list`` (JSON).

    ``websocket`` sets the limits and deadlines of the App's WebSocket routes
    (:meth:`websocket`).
    """

    def __init__(self, *, websocket: WebSocketConfig | None = None) -> None:
        self.router = Router()
        self.websocket_router = Router()
        self.websocket_config = websocket or WebSocketConfig()
        # Limits given here win over the command line's (bastion run --ws-*).
        self.websocket_configured = websocket is not None
        # (check, name, timeout) for readiness; run by the server's monitoring, not here.
        self.health_checks: list[tuple[Callable[[], Any], str, float]] = []
        self._mounts: list[tuple[str, Handler]] = []
        # WebSocket handlers still running, and their handshakes' exchanges: held here (the
        # loop keeps only weak references to tasks), and cancelled at shutdown once their
        # connections are gone.
        self._websocket_tasks: dict[asyncio.Task[None], Exchange] = {}

    def health_check(
        self, fn: Callable[[], Any] | None = None, *, name: str | None = None, timeout: float = 5.0
    ) -> Any:
        """Register a readiness check: ``@app.health_check`` or ``@app.health_check(timeout=2)``.

        A check is a plain or ``async`` function without arguments; it passes by returning
        ``None`` or ``True`` and fails by returning ``False`` or raising. While one fails,
        ``/readyz`` on the admin listener answers 503 and names it.
        """

        def register(check: Callable[[], Any]) -> Callable[[], Any]:
            self.health_checks.append((check, name or check.__name__, timeout))
            return check

        return register(fn) if fn is not None else register

    # registering routes -----------------------------------------------------------------------

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[Endpoint], Endpoint]:
        compile_path(path)  # a malformed path fails here, at the decorator line

        def register(endpoint: Endpoint) -> Endpoint:
            is_async = inspect.iscoroutinefunction(endpoint)
            self.router.add(path, list(methods), _Endpoint(endpoint, is_async))
            return endpoint

        return register

    def get(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["GET"])

    def post(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["POST"])

    def put(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["PUT"])

    def patch(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["PATCH"])

    def delete(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["DELETE"])

    def options(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self.route(path, ["OPTIONS"])

    def websocket(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """Route WebSocket handshakes for ``path`` to an ``async def handler(ws)``.

        The handler gets a :class:`~bastion.app.WebSocket`; the path may hold parameters as
        for HTTP routes (``ws.path_params``). A plain GET for the path, without the upgrade,
        is answered 426 unless an HTTP route takes it.
        """
        compile_path(path)

        def register(endpoint: Endpoint) -> Endpoint:
            if not inspect.iscoroutinefunction(endpoint):
                raise TypeError(f"a WebSocket handler must be 'async def': {endpoint!r}")
            self.websocket_router.add(path, ["GET"], endpoint)
            return endpoint

        return register

    def mount(self, prefix: str, handler: Handler) -> None:
        """Hand requests under ``prefix`` that no route of this App matches to ``handler``:
        any engine handler, such as a ``bastion.balancer.Balancer`` or a static file handler.

        The path is passed on unchanged. Routes are matched first, so an App can answer a
        few paths itself and proxy the rest; mounts are tried longest prefix first, and the
        handler's ``startup``/``shutdown`` run with the App's.
        """
        if not prefix.startswith("/"):
            raise ValueError(f"a mount prefix must start with '/', not {prefix!r}")
        self._mounts.append((prefix.rstrip("/"), handler))
        self._mounts.sort(key=lambda mount: -len(mount[0]))

    async def startup(self, state: ServerState) -> None:
        for _, handler in self._mounts:
            await run_startup(handler, state)

    async def shutdown(self) -> None:
        await cancel_abandoned(self._websocket_tasks)
        for _, handler in self._mounts:
            await run_shutdown(handler)

    def connection_lost(self, exchange: Exchange) -> None:
        for _, handler in self._mounts:
            lost = getattr(handler, "connection_lost", None)
            if lost is not None:
                lost(exchange)

    def _mounted(self, path: str) -> Handler | None:
        for prefix, handler in self._mounts:
            if path == prefix or path.startswith(prefix + "/") or not prefix:
                return handler
        return None

    # the engine's side ------------------------------------------------------------------------

    def handle(self, exchange: Exchange) -> None:
        head = exchange.head
        if head.upgrade and self._websocket(exchange):
            return
        found = self.router.match(head.path)
        if found is None:
            mounted = self._mounted(head.path) if self._mounts else None
            if mounted is not None:
                mounted.handle(exchange)
                return
            if self.websocket_router.match(head.path) is not None:
                exchange.respond(426, _UPGRADE_REQUIRED, _WEBSOCKET_ONLY)
                return
            exchange.respond(404, _TEXT, _NOT_FOUND)
            return
        route, params = found
        exchange.route = route.path
        endpoint = route.endpoints.get(head.method)
        if endpoint is None and head.method == "HEAD":
            endpoint = route.endpoints.get("GET")
        if endpoint is None:
            if not self.router.implements(head.method):
                exchange.respond(501, _TEXT, b"501 Not Implemented\n")  # RFC 9110 §15.6.2
                return
            allow = ("allow", ", ".join(route.allowed()))
            exchange.respond(405, [*_TEXT, allow], _METHOD_NOT_ALLOWED)
            return
        if endpoint.is_async:
            run_eagerly(
                exchange.loop, endpoint.fn(Request(exchange, params)), self._finish, exchange
            )
        else:
            request = SyncRequest(exchange, params)
            self._submit(
                exchange,
                partial(self._call_blocking, endpoint.fn, request, exchange),
                partial(self._finish, exchange),
            )

    def _websocket(self, exchange: Exchange) -> bool:
        """Take a WebSocket handshake for a WebSocket route; False if it is not one."""
        head = exchange.head
        if not asks_websocket(head):
            return False
        found = self.websocket_router.match(head.path)
        if found is None:
            return False  # perhaps for a mount (a balancer tunnels it)
        route, params = found
        exchange.route = route.path
        config = self.websocket_config
        try:
            handshake = check_handshake(head, config.compression)
        except HandshakeRefused as refused:
            refuse(exchange, refused)
            return True
        websocket = WebSocket(exchange, params, handshake, config)
        # A task from the start, not run eagerly: a handler that accepts in its first step
        # would switch the connection while the read that brought the handshake is still
        # being parsed as HTTP; and the handler lives as long as the WebSocket, where an
        # eager start would put a wrapper between the task and it for every message.
        task = exchange.loop.create_task(route.endpoints["GET"](websocket))
        self._websocket_tasks[task] = exchange
        task.add_done_callback(partial(self._websocket_done, websocket))
        return True

    def _websocket_done(self, websocket: WebSocket, task: asyncio.Task[None]) -> None:
        self._websocket_tasks.pop(task, None)
        websocket.task_done(task)

    def _submit(
        self,
        exchange: Exchange,
        job: Callable[[], Any],
        done: Callable[[Any, BaseException | None], None],
    ) -> None:
        # The exchange's own server: one App may be served by several servers at once.
        state = exchange.conn.state
        if not state.pool.try_submit(job, done):
            state.stats.count_error("pool-full")
            exchange.respond(503, [*_TEXT, ("retry-after", "1")], _BUSY)

    def _finish(self, exchange: Exchange, result: Any, error: BaseException | None) -> None:
        if error is not None:
            exchange.fail(error)
            return
        if result is _STREAMED:
            return
        try:
            if result.__class__ is Response or isinstance(result, Response):
                exchange.respond(result.status, result.headers, result.body)
            elif isinstance(result, StreamingResponse):
                self._start_stream(exchange, result)
            else:
                response = _coerce(result)
                exchange.respond(response.status, response.headers, response.body)
        except Exception as exc:
            exchange.fail(exc)

    def _start_stream(self, exchange: Exchange, response: StreamingResponse) -> None:
        content = response.content
        if isinstance(content, AsyncIterable):
            run_eagerly(
                exchange.loop, _stream_async(exchange, response, content), _fail_on_error, exchange
            )
        else:
            self._submit(
                exchange,
                partial(_stream_blocking, exchange, response, content),
                partial(_fail_on_error, exchange),
            )

    @staticmethod
    def _call_blocking(fn: Callable[..., Any], request: SyncRequest, exchange: Exchange) -> Any:
        result = fn(request)
        if isinstance(result, StreamingResponse) and not isinstance(result.content, AsyncIterable):
            _stream_blocking(exchange, result, result.content)
            return _STREAMED
        return result


class _Endpoint:
    __slots__ = ("fn", "is_async")

    def __init__(self, fn: Callable[..., Any], is_async: bool) -> None:
        self.fn = fn
        self.is_async = is_async


def _fail_on_error(exchange: Exchange, result: Any, error: BaseException | None) -> None:
    if error is not None:
        exchange.fail(error)


def _coerce(result: Any) -> Response:
    if isinstance(result, (bytes, str)):
        return Response(result)
    if isinstance(result, (dict, list)):
        return JSONResponse(result)
    if result is None:
        return Response(b"", status=204)
    raise TypeError(f"a handler returned {type(result).__name__}, not a Response")


def _as_bytes(chunk: bytes | str) -> bytes:
    return chunk.encode("utf-8") if isinstance(chunk, str) else chunk


async def _stream_async(
    exchange: Exchange, response: StreamingResponse, content: AsyncIterable[bytes | str]
) -> None:
    exchange.start(response.status, response.headers, response.content_length)
    try:
        async for chunk in content:
            exchange.write(_as_bytes(chunk))
            await exchange.drain()
    except GeneratorExit:
        raise  # the task itself is being destroyed: nothing may be awaited any more
    except BaseException:
        # A client that left (or a cancellation) ends the stream now, not when the generator
        # is collected; one that failed inside its own step has already finished.
        close = getattr(content, "aclose", None)
        if close is not None and not getattr(content, "ag_running", False):
            await close()
        raise
    exchange.end()


def _stream_blocking(
    exchange: Exchange, response: StreamingResponse, content: Iterable[bytes | str]
) -> None:
    """Runs on a pool thread: produce each piece here, hand it to the loop to send."""
    writer = ThreadWriter(exchange)
    exchange.start_threadsafe(response.status, response.headers, response.content_length)
    try:
        for chunk in content:
            if exchange.finished:
                raise ClientDisconnected("response abandoned")
            writer.write(_as_bytes(chunk))
    finally:
        close = getattr(content, "close", None)
        if close is not None:
            close()
    exchange.end_threadsafe()

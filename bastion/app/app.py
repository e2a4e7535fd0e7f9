"""The native ``App``: routes to ``async def`` handlers on the loop and ``def`` ones on the pool."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from bastion.app.dispatch import Dispatcher
from bastion.app.dispatch import Endpoint as _Endpoint
from bastion.app.routing import Router, compile_path
from bastion.app.websocket import WebSocket
from bastion.engine.exchange import Exchange
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
    from bastion.engine.state import ServerState

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class App:
    """A set of routes; pass it to ``bastion run module:app`` or :func:`bastion.engine.run`.

    ``async def`` handlers run on the event loop and must not block; plain ``def`` handlers run
    on the bounded thread pool and may. A handler returns a :class:`Response`,
    :class:`StreamingResponse`, ``bytes``/``str`` (200) or a ``dict``/``list`` (JSON).

    ``websocket`` sets the limits and deadlines of the App's WebSocket routes
    (:meth:`websocket`).
    """

    def __init__(self, *, websocket: WebSocketConfig | None = None) -> None:
        # What is done with each request, compiled (bastion/app/dispatch.py); it holds the
        # routers and the mounts.
        dispatcher = self._dispatcher = Dispatcher(self)
        cls = type(self)
        if cls._finish is not App._finish:
            dispatcher.override_finish(self._finish)
        if cls.handle is App.handle:
            # The engine calls handle once per request: the dispatcher's, with no frame of
            # this class in between. A subclass's own handle is called as it is.
            self.handle = dispatcher.handle  # type: ignore[method-assign]
        self.websocket_config = websocket or WebSocketConfig()
        # Limits given here win over the command line's (bastion run --ws-*).
        self.websocket_configured = websocket is not None
        # (check, name, timeout) for readiness; run by the server's monitoring, not here.
        self.health_checks: list[tuple[Callable[[], Any], str, float]] = []
        self._mounts = dispatcher.mounts
        # WebSocket handlers still running, and their handshakes' exchanges: held here (the
        # loop keeps only weak references to tasks), and cancelled at shutdown once their
        # connections are gone.
        self._websocket_tasks: dict[asyncio.Task[None], Exchange] = {}

    # The routers are the dispatcher's, which matches requests against them; replacing one
    # replaces it there.

    @property
    def router(self) -> Router:
        return self._dispatcher.router

    @router.setter
    def router(self, router: Router) -> None:
        self._dispatcher.router = router

    @property
    def websocket_router(self) -> Router:
        return self._dispatcher.websocket_router

    @websocket_router.setter
    def websocket_router(self, router: Router) -> None:
        self._dispatcher.websocket_router = router

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

    # the engine's side ------------------------------------------------------------------------

    def handle(self, exchange: Exchange) -> None:
        # What the engine calls for each request, unless __init__ gave this App the
        # dispatcher's own handle (see there). A subclass's handle can call this one.
        self._dispatcher.handle(exchange)

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

    def _finish(self, exchange: Exchange, result: Any, error: BaseException | None) -> None:
        # Answers a request with what its endpoint returned, or with its error. The dispatcher
        # does it without this frame unless a subclass overrides it (see __init__).
        self._dispatcher.finish(exchange, result, error)

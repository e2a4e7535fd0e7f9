"""The native App's per-request work, compiled with the rest of the request path.

``App``, ``Request`` and ``Response`` stay Python classes, since applications extend them and
give them attributes of their own (see ``bastion/_compiled.py``); what an ``App`` does for each
request does not need to live in them, and lives here: the route match, the endpoint for the
method (a HEAD served by a GET route), the 404, 405, 426 and 501 answers, mounts, building the
``Request`` and running an ``async def`` endpoint eagerly, or submitting a ``def`` one to the
pool with a ``SyncRequest``, and turning what the endpoint returned into the response.

An ``App`` keeps one :class:`Dispatcher`, and unless a subclass overrides ``handle`` it gives
the engine the dispatcher's bound ``handle`` as its own, so the engine's call per request
lands here without a Python frame in between.

:meth:`Dispatcher.run` is :func:`bastion.engine.eager.run_eagerly`'s eager path for one
request, with the same semantics on each Python version: before 3.12 the first step runs
inline, in a copy of the context, with no current task (through the server's
``FirstSteps``, ``bastion/engine/steps.py``); from 3.12 it runs in an eager task, as
``asyncio.eager_task_factory`` makes one. What follows a first step that suspends (the
hand-over to a Task), the WebSocket handshake and streamed bodies stay in Python modules.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import AsyncIterable, Callable, Coroutine
from functools import partial
from typing import Any, Final

from bastion.app.request import Request, SyncRequest
from bastion.app.response import JSONResponse, Response, StreamingResponse
from bastion.app.routing import Route, Router
from bastion.app.streams import STREAMED, fail_on_error, stream_async, stream_blocking
from bastion.engine.eager import (
    RAISED,
    SUSPENDED,
    continue_as_task,
    report,
    run_eagerly,
)
from bastion.engine.exchange import Exchange
from bastion.engine.handler import Handler

# What an App calls when a request's endpoint has ended: (exchange, result, error).
Finish = Callable[[Exchange, Any, BaseException | None], None]

_TEXT: Final = [("content-type", "text/plain; charset=utf-8")]
_NOT_FOUND: Final = b"404 Not Found\n"
_METHOD_NOT_ALLOWED: Final = b"405 Method Not Allowed\n"
_NOT_IMPLEMENTED: Final = b"501 Not Implemented\n"
_BUSY: Final = b"503 Service Unavailable: all workers are busy\n"
_UPGRADE_REQUIRED: Final = [*_TEXT, ("upgrade", "websocket"), ("connection", "Upgrade")]
_WEBSOCKET_ONLY: Final = b"426 Upgrade Required: this resource speaks WebSocket only\n"
_STREAMED: Final = STREAMED
# Names used on every request, held here rather than looked up in the module's dictionary.
_REQUEST: Final = Request
_SYNC_REQUEST: Final = SyncRequest
_PARTIAL: Final = partial
_RESPONSE: Final = Response
_COPY_CONTEXT: Final = contextvars.copy_context
# Python 3.12+ runs the first step in an eager task: what asyncio.eager_task_factory makes,
# a Task of this class with eager_start=True (bastion/engine/eager.py, NATIVE_EAGER).
_NATIVE_EAGER: Final = sys.version_info >= (3, 12)
_TASK: Final[Any] = asyncio.Task


class Endpoint:
    """A route's handler for one method, and whether it is ``async def``."""

    __slots__ = ("fn", "is_async")

    def __init__(self, fn: Callable[..., Any], is_async: bool) -> None:
        self.fn = fn
        self.is_async = is_async


class Dispatcher:
    """An App's routes and mounts, and what it does with each request (see the module)."""

    def __init__(self, app: Any) -> None:
        # The App, for its WebSocket routes (App._websocket) and its own _finish, if a
        # subclass overrides it.
        self.app = app
        self.router = Router()
        self.websocket_router = Router()
        # (prefix, handler), longest prefix first; the App's own list (App.mount adds to it).
        self.mounts: list[tuple[str, Handler]] = []
        # A subclass's _finish, called in place of finish(); None for App's own.
        self.finish_override: Finish | None = None
        # Called when an endpoint ends after suspending, or on the pool.
        self.on_done: Finish = self.finish

    def override_finish(self, finish: Finish) -> None:
        self.finish_override = finish
        self.on_done = finish

    def handle(self, exchange: Exchange) -> None:
        head = exchange.head
        if head.upgrade and self.app._websocket(exchange):
            return
        found = self.router.match(head.path)
        if found is None:
            self.unrouted(exchange)
            return
        route, params = found
        exchange.route = route.path
        method = head.method
        endpoints = route.endpoints
        endpoint: Endpoint | None = endpoints.get(method)
        if endpoint is None and method == "HEAD":
            endpoint = endpoints.get("GET")
        if endpoint is None:
            self.not_allowed(exchange, route, method)
            return
        if endpoint.is_async:
            self.run(exchange, endpoint.fn(_REQUEST(exchange, params)))
        else:
            request = _SYNC_REQUEST(exchange, params)
            self.submit(
                exchange,
                _PARTIAL(_call_blocking, endpoint.fn, request, exchange),
                _PARTIAL(self.on_done, exchange),
            )

    def unrouted(self, exchange: Exchange) -> None:
        path = exchange.head.path
        mounted = self.mounted(path) if self.mounts else None
        if mounted is not None:
            mounted.handle(exchange)
            return
        if self.websocket_router.match(path) is not None:
            exchange.respond(426, _UPGRADE_REQUIRED, _WEBSOCKET_ONLY)
            return
        exchange.respond(404, _TEXT, _NOT_FOUND)

    def mounted(self, path: str) -> Handler | None:
        for prefix, handler in self.mounts:
            if path == prefix or path.startswith(prefix + "/") or not prefix:
                return handler
        return None

    def not_allowed(self, exchange: Exchange, route: Route, method: str) -> None:
        if not self.router.implements(method):
            exchange.respond(501, _TEXT, _NOT_IMPLEMENTED)  # RFC 9110 §15.6.2
            return
        allow = ("allow", ", ".join(route.allowed()))
        exchange.respond(405, [*_TEXT, allow], _METHOD_NOT_ALLOWED)

    def run(self, exchange: Exchange, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an ``async def`` endpoint's coroutine eagerly, then finish the request."""
        loop = exchange.loop
        # Each request in a context of its own: what a handler sets is not seen by the next.
        context = _COPY_CONTEXT()
        result: Any = None
        error: BaseException | None = None
        if _NATIVE_EAGER:
            # As asyncio.eager_task_factory makes it, in the request's context.
            task = _TASK(coro, loop=loop, context=context, eager_start=True)
            if not task.done():
                task.add_done_callback(partial(report, self.on_done, exchange))
                return
            if task.cancelled():
                error = asyncio.CancelledError()
            else:
                error = task.exception()
                if error is None:
                    result = task.result()
        else:
            steps = exchange.conn.state.first_steps
            value = steps.run(context, coro)
            outcome = steps.outcome
            if outcome == SUSPENDED:
                waiting = steps.take_waiting()
                continue_as_task(loop, context, waiting, value, self.on_done, exchange)
                return
            if outcome == RAISED:
                error = value
            else:
                result = value
        override = self.finish_override
        if override is None:
            self.finish(exchange, result, error)
        else:
            override(exchange, result, error)

    def submit(
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

    def finish(self, exchange: Exchange, result: Any, error: BaseException | None) -> None:
        if error is not None:
            exchange.fail(error)
            return
        if result is _STREAMED:
            return
        try:
            if type(result) is _RESPONSE or isinstance(result, _RESPONSE):
                exchange.respond(result.status, result.headers, result.body)
            elif isinstance(result, StreamingResponse):
                self.start_stream(exchange, result)
            else:
                response = _coerce(result)
                exchange.respond(response.status, response.headers, response.body)
        except Exception as exc:
            exchange.fail(exc)

    def start_stream(self, exchange: Exchange, response: StreamingResponse) -> None:
        content = response.content
        if isinstance(content, AsyncIterable):
            run_eagerly(
                exchange.loop, stream_async(exchange, response, content), fail_on_error, exchange
            )
        else:
            self.submit(
                exchange,
                partial(stream_blocking, exchange, response, content),
                partial(fail_on_error, exchange),
            )


def _call_blocking(fn: Callable[..., Any], request: SyncRequest, exchange: Exchange) -> Any:
    """Runs on a pool thread: a ``def`` endpoint, and its streamed body if it is a plain one."""
    result = fn(request)
    if isinstance(result, StreamingResponse) and not isinstance(result.content, AsyncIterable):
        stream_blocking(exchange, result, result.content)
        return _STREAMED
    return result


def _coerce(result: Any) -> Response:
    if isinstance(result, (bytes, str)):
        return Response(result)
    if isinstance(result, (dict, list)):
        return JSONResponse(result)
    if result is None:
        return Response(b"", status=204)
    raise TypeError(f"a handler returned {type(result).__name__}, not a Response")

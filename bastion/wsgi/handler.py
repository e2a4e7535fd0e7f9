"""``WSGIHandler``: a PEP 3333 application as a Bastion handler.

The event loop accepts the request and hands one job to the bounded thread pool; the worker
thread builds the environ, calls the application and walks its response; the loop writes.
A full pool answers 503 with ``Retry-After`` at once, like every blocking handler in Bastion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from bastion._compiled import mypyc_attr
from bastion.wsgi.environ import EnvironBuilder
from bastion.wsgi.response import SKIP, Action, WSGICall, complete_on_loop
from bastion.wsgi.streams import ERRORS

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

logger = logging.getLogger("bastion.error")

WSGIApplication = Callable[[dict[str, Any], Any], Iterable[bytes]]

_BUSY_HEADERS: Final = [("content-type", "text/plain; charset=utf-8"), ("retry-after", "1")]
_BUSY: Final = b"503 Service Unavailable: all workers are busy\n"
_SKIPPED: Final[Action] = (SKIP,)


# Called per request, held as constants: compiled code looks an imported name up in the
# module's dictionary on every use, a Final one not.
_PARTIAL: Final = partial
_COMPLETE_ON_LOOP: Final = complete_on_loop


@mypyc_attr(allow_interpreted_subclasses=True)
class WSGIHandler:
    """Serve a WSGI application (Flask, Django, ...): ``WSGIHandler(app, root_path="")``.

    ``root_path`` is the prefix the application is mounted under: a request for
    ``{root_path}/x`` reaches it with ``SCRIPT_NAME`` = ``root_path`` and ``PATH_INFO`` = ``/x``.
    A path outside the prefix is passed whole in ``PATH_INFO`` (a proxy in front already took
    the prefix away), still with ``SCRIPT_NAME`` = ``root_path`` so generated URLs carry it.
    """

    def __init__(self, app: WSGIApplication, root_path: str = "") -> None:
        if not callable(app):
            raise TypeError(f"a WSGI application must be callable, not {type(app).__name__}")
        self.app = app
        self.root_path = root_path
        self._environ = EnvironBuilder(root_path)
        self._job = self._run

    def __repr__(self) -> str:
        return f"WSGIHandler({self.app!r}, root_path={self.root_path!r})"

    def handle(self, exchange: Exchange) -> None:
        # The pool of the server this request came in on: one handler may serve several.
        state = exchange.conn.state
        if not state.pool.try_submit(
            _PARTIAL(self._job, exchange), _PARTIAL(_COMPLETE_ON_LOOP, exchange)
        ):
            state.stats.count_error("pool-full")
            exchange.respond(503, _BUSY_HEADERS, _BUSY)

    def _run(self, exchange: Exchange) -> Action:
        """One request, on a worker thread: call the application, send what it returns."""
        if exchange.disconnected:
            return _SKIPPED  # the client gave up while the request waited for a thread
        environ = self._environ.build(exchange)
        call = WSGICall(exchange, environ)
        try:
            result = self.app(environ, call.start_response)
            try:
                return call.finish(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        logger.exception(
                            "error closing the WSGI response of %s %s",
                            exchange.head.method,
                            exchange.head.target.decode("latin-1"),
                        )
        finally:
            ERRORS.flush()

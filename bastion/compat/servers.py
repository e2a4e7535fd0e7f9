"""``HTTPServer`` and ``ThreadingHTTPServer`` with the standard library's API, on Bastion.

Constructors, attributes and methods follow ``socketserver``/``http.server``: bind in the
constructor, ``serve_forever``/``shutdown`` from another thread, ``handle_request``,
``server_close``, use as a context manager. Underneath, an event loop owns the socket and
every connection; handler methods run on a bounded thread pool (one thread for
``HTTPServer``, like the original's one-request-at-a-time, several for
``ThreadingHTTPServer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from types import TracebackType
from typing import Any

from bastion.compat import adapter as adapter_module
from bastion.compat.adapter import HandlerClassAdapter, handler_factory
from bastion.engine.config import ServerConfig, default_threads
from bastion.engine.server import Server, new_event_loop

logger = logging.getLogger("bastion.error")


class HTTPServer:
    """``http.server.HTTPServer``: handlers run one at a time, connections are all served."""

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = 5
    allow_reuse_address = True
    allow_reuse_port = False
    timeout: float | None = None
    daemon_threads = False
    block_on_close = True
    threads = 1

    def __init__(
        self,
        server_address: tuple[str, int] | Any,
        RequestHandlerClass: type,
        bind_and_activate: bool = True,
        *,
        config: ServerConfig | None = None,
    ) -> None:
        # A handler class that cannot be served is refused now, not at the first request.
        handler_factory(RequestHandlerClass)
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self.config = config or ServerConfig(threads=self.threads)
        self.socket = socket.socket(self.address_family, self.socket_type)
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    # binding --------------------------------------------------------------------------------

    def server_bind(self) -> None:
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port

    def server_activate(self) -> None:
        # A queue of 5 (the standard library's default) drops connections under any real load.
        self.socket.listen(max(self.request_queue_size, self.config.backlog))

    def server_close(self) -> None:
        self.socket.close()

    def fileno(self) -> int:
        return self.socket.fileno()

    def __enter__(self) -> HTTPServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server_close()

    # hooks the standard library offers --------------------------------------------------------

    def service_actions(self) -> None:
        """Called about every ``poll_interval`` seconds while serving."""

    def handle_timeout(self) -> None:
        """Called when ``handle_request`` waited ``timeout`` seconds for nothing."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("exception while handling request from %s", client_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return True

    # serving ----------------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` is called from another thread (or Ctrl-C)."""
        self._run(poll_interval, requests=None)

    def handle_request(self) -> None:
        """Serve until one request has been answered, or ``timeout`` passed."""
        self._run(0.05, requests=1)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait until it has returned (call from another thread)."""
        self._stop_requested.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            # A closed loop means serve_forever is already returning.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        self._stopped.wait()

    def _run(self, poll_interval: float, requests: int | None) -> None:
        self._stopped.clear()
        loop = self._loop = new_event_loop()
        serving = loop.create_task(self._serve(poll_interval, requests))
        interrupted = _interrupt_by_cancelling(loop, serving)
        try:
            try:
                loop.run_until_complete(serving)
            except asyncio.CancelledError:
                if not interrupted:
                    raise
                raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            # Ctrl-C lands wherever the loop was; every task it left is ended before the loop
            # closes, or each would be reported as "destroyed but it is pending".
            serving.cancel()
            loop.run_until_complete(self._server_shutdown(0.5))
            _end_tasks(loop)
            raise
        finally:
            if interrupted is not None:
                loop.remove_signal_handler(signal.SIGINT)
            self._loop = None
            loop.close()
            if interrupted is not None:
                # uvloop leaves a handler of its own behind; Python's is what was there.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            self._stop_requested.clear()
            self._stopped.set()

    async def _serve(self, poll_interval: float, requests: int | None) -> None:
        adapter = HandlerClassAdapter(self.RequestHandlerClass, self)  # type: ignore[arg-type]
        # The engine closes what it serves; our own socket must outlive one serve_forever call.
        self._stop_event = asyncio.Event()
        if self._stop_requested.is_set():
            return
        self._server = Server(adapter, self.config, sockets=[self.socket.dup()])
        await self._server.start()
        state = self._server.state
        assert state is not None
        target = state.stats.requests + requests if requests is not None else None
        waited = 0.0
        while not self._stop_event.is_set():
            try:
                await asyncio.wait_for(self._stop_event.wait(), poll_interval)
            except asyncio.TimeoutError:
                waited += poll_interval
            self.service_actions()
            if target is not None:
                if sum(state.stats.responses_by_status.values()) >= target:
                    break
                if self.timeout is not None and waited >= self.timeout:
                    self.handle_timeout()
                    break
        await self._server_shutdown(self.config.graceful_timeout)

    async def _server_shutdown(self, timeout: float) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            await server.shutdown(timeout)


adapter_module._DEFAULT_VERIFIERS.append(HTTPServer.verify_request)


def _interrupt_by_cancelling(
    loop: asyncio.AbstractEventLoop, serving: asyncio.Task[None]
) -> list[bool] | None:
    """Make Ctrl-C cancel ``serving`` through the loop; a list that says if it did.

    Python's own SIGINT handler raises KeyboardInterrupt only when the main thread next runs
    Python code, and a loop waiting in C with a pool thread taking the signal may not wake for
    it. Only the default handler is replaced (a program's own, or an ignored SIGINT, is left),
    and only on the main thread, where signal handlers live.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    interrupted: list[bool] = []

    def interrupt() -> None:
        interrupted.append(True)
        serving.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError):  # no signal support in this loop
        return None
    return interrupted


def _end_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


class ThreadingHTTPServer(HTTPServer):
    """``http.server.ThreadingHTTPServer``: handlers run concurrently on a bounded pool."""

    daemon_threads = True
    threads = default_threads()

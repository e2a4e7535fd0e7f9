"""The server: listeners, the deadline sweep, the thread pool, signals and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterable

from bastion.engine.accesslog import AccessLog
from bastion.engine.config import ServerConfig
from bastion.engine.connection import HTTPConnection
from bastion.engine.handler import Handler, run_shutdown, run_startup
from bastion.engine.listeners import describe, open_listener, parse_bind
from bastion.engine.pool import ThreadPool
from bastion.engine.proxy import ProxyHeaders, TrustedPeers
from bastion.engine.stats import Stats
from bastion.http import format_date

logger = logging.getLogger("bastion.error")

# After a stop signal, how long a connection between requests may still deliver a request that
# was already on its way (answered with connection: close) before it is closed.
IDLE_GRACE = 1.0


class ServerState:
    """What every connection of one server shares; read on the hot path, so kept flat."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, handler: Handler, config: ServerConfig
    ) -> None:
        self.loop = loop
        self.handler = handler
        self.config = config
        self.stats = Stats()
        self.connections: set[HTTPConnection] = set()
        self.pool = ThreadPool(loop, config.threads, config.queue_size)
        self.draining = False
        self.sockets: list[socket.socket] = []
        self.now = loop.time()
        self._second = 0
        self.date_line = b""
        self.server_lines = b""
        self.tick_clock()

    @property
    def observed(self) -> bool:
        return bool(self.stats.request_observers)

    def tick_clock(self) -> None:
        """Refresh the coarse clock and, once a second, the cached Date/Server header lines."""
        self.now = self.loop.time()
        wall = time.time()
        second = int(wall)
        if second != self._second:
            self._second = second
            self.date_line = format_date(wall)
            server = (
                f"server: {self.config.server_name}\r\n".encode("latin-1")
                if self.config.server_header
                else b""
            )
            self.server_lines = server + self.date_line


class Server:
    """Serves one handler on one or more listeners, in the current event loop.

    ``await start()`` binds and begins accepting; ``await serve_until_stopped()`` returns
    after :meth:`request_stop` (SIGTERM/SIGINT when signals are installed) and a graceful drain.
    """

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig | None = None,
        *,
        binds: Iterable[str] = (),
        sockets: Iterable[socket.socket] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.config = config or ServerConfig()
        self._binds = [parse_bind(b) for b in binds]
        self._sockets = list(sockets)
        self._ssl = ssl_context
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self.state: ServerState | None = None
        self._unix_paths: list[str] = []

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    @property
    def urls(self) -> list[str]:
        scheme = "https" if self._ssl is not None else "http"
        return [describe(s, scheme) for s in self._sockets]

    @property
    def port(self) -> int:
        """The TCP port of the first TCP listener (handy with port 0 in tests)."""
        for sock in self._sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("no TCP listener")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        config = self.config
        handler = self.handler
        if config.proxy_headers:
            handler = ProxyHeaders(handler, TrustedPeers(config.forwarded_allow_ips))
        state = self.state = ServerState(loop, handler, config)
        if config.access_log:
            state.stats.request_observers.append(AccessLog(config.access_log_format))
        for spec in self._binds:
            self._sockets.append(open_listener(spec, self.config.backlog))
            if spec.kind == "unix":
                self._unix_paths.append(spec.path)
        if not self._sockets:
            self._sockets.append(open_listener(parse_bind("127.0.0.1:8000"), self.config.backlog))
        state.sockets = list(self._sockets)
        try:
            await run_startup(handler, state)
        except BaseException:
            # The application refused to start: give back what was bound for it.
            for sock in self._sockets:
                sock.close()
            for path in self._unix_paths:
                _unlink_quietly(path)
            raise
        # A TLS handshake is bounded like a request head: a peer that never completes it (or
        # sends plain HTTP, or garbage) is dropped without a word and without touching others.
        handshake_timeout = config.header_timeout if self._ssl is not None else None
        for sock in self._sockets:
            server = await loop.create_server(
                lambda: HTTPConnection(state),
                sock=sock,
                backlog=config.backlog,
                ssl=self._ssl,
                ssl_handshake_timeout=handshake_timeout,
            )
            self._servers.append(server)
        self._sweeper = loop.create_task(self._sweep(), name="bastion-sweep")

    async def _sweep(self) -> None:
        state = self.state
        assert state is not None
        interval = self.config.sweep_interval
        while True:
            await asyncio.sleep(interval)
            state.tick_clock()
            now = state.now
            for conn in list(state.connections):
                conn.check_deadlines(now)

    def request_stop(self) -> None:
        """Begin a graceful stop; safe to call from a signal handler on the loop."""
        if self._stop is not None:
            self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def abort(self) -> None:
        """Stop at once: every connection is reset, in-flight requests are abandoned."""
        state = self.state
        if state is not None:
            for conn in list(state.connections):
                conn.abort()
        self.request_stop()

    def _on_signal(self, signum: int) -> None:
        state = self.state
        if state is not None and state.draining:
            logger.warning("second %s: stopping now", signal.Signals(signum).name)
            for conn in list(state.connections):
                conn.abort()
            return
        logger.info("%s received: shutting down gracefully", signal.Signals(signum).name)
        self.request_stop()

    async def serve_until_stopped(self) -> None:
        assert self._stop is not None
        await self._stop.wait()
        limit = self.config.graceful_timeout
        await self.shutdown(idle_grace=min(IDLE_GRACE, limit / 2))

    async def shutdown(self, timeout: float | None = None, *, idle_grace: float = 0.0) -> None:
        """Stop accepting, let in-flight requests finish within ``timeout``, then close all.

        Connections between requests are closed once ``idle_grace`` has passed: a request may
        already be on its way on one of them, and closing under it would fail it (the client
        cannot tell whether it was processed). Within the grace such a request is served with
        ``connection: close``, which sends the client to another worker or server.
        """
        state = self.state
        if state is None or state.draining:
            return
        state.draining = True
        if self._stop is not None:
            self._stop.set()
        for server in self._servers:
            server.close()
        loop = state.loop
        limit = self.config.graceful_timeout if timeout is None else timeout
        deadline = loop.time() + limit
        close_idle_at = loop.time() + min(idle_grace, limit)
        while True:
            if loop.time() >= close_idle_at:
                for conn in list(state.connections):
                    conn.close_if_idle()
            if not state.connections or loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        if state.connections:
            logger.warning("graceful timeout: closing %d connections", len(state.connections))
            for conn in list(state.connections):
                conn.abort()
            await asyncio.sleep(0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.get_running_loop().run_in_executor(
            None, state.pool.shutdown, max(0.0, deadline - state.loop.time()) + 1.0
        )
        await run_shutdown(self.handler)
        for path in self._unix_paths:
            _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:

    with contextlib.suppress(OSError):
        os.unlink(path)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it installs, the standard loop elsewhere: the same code runs on both."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(
    handler: Handler,
    binds: Iterable[str] = ("127.0.0.1:8000",),
    config: ServerConfig | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_ready: object = None,
) -> None:
    """Serve ``handler`` until SIGTERM/SIGINT, then drain gracefully and return."""
    server = Server(handler, config, binds=binds, ssl_context=ssl_context)

    async def main() -> None:
        await server.start()
        server.install_signal_handlers()
        for url in server.urls:
            logger.info("serving on %s", url)
        if callable(on_ready):
            on_ready(server)
        await server.serve_until_stopped()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()

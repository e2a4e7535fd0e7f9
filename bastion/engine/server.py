"""The server: listeners, the deadline sweep, the thread pool, signals and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Iterable

from bastion.engine.config import ServerConfig
from bastion.engine.connection import HTTPConnection
from bastion.engine.handler import Handler, run_shutdown, run_startup
from bastion.engine.listeners import (
    describe,
    open_listener,
    parse_bind,
    refusing_new_connections,
)
from bastion.engine.proxy import ProxyHeaders, TrustedPeers
from bastion.engine.state import ServerState
from bastion.engine.stats import RequestObserver

logger = logging.getLogger("bastion.server")

# After a stop signal, how long a connection between requests may still deliver a request that
# was already on its way (answered with connection: close) before it is closed.
IDLE_GRACE = 1.0
# When a listener has stopped taking new connections (refuse_new_connections), how long it is
# still served so that handshakes already under way, a round trip from completing, are not
# reset by its close.
HANDSHAKE_SETTLE = 0.5


class Server:
    """Serves one handler on one or more listeners, in the current event loop.

    ``await start()`` binds and begins accepting; ``await serve_until_stopped()`` returns
    after :meth:`request_stop` (SIGTERM/SIGINT when signals are installed) and a graceful drain.

    ``observers`` are request observers (``Stats.request_observers``: an access log, metrics)
    that the caller built; they are attached when the server starts, and those with a
    ``close()`` method are closed after the drain, so that buffered output is written out.
    """

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig | None = None,
        *,
        binds: Iterable[str] = (),
        sockets: Iterable[socket.socket] = (),
        ssl_context: ssl.SSLContext | None = None,
        observers: Iterable[RequestObserver] = (),
    ) -> None:
        self.handler = handler
        self._observers = list(observers)
        self.config = config or ServerConfig()
        self._binds = [parse_bind(b) for b in binds]
        self._sockets = list(sockets)
        self._ssl = ssl_context
        self._servers: list[asyncio.AbstractServer] = []
        # Connections taken from the accept queue when the drain began, and when each was
        # established: they get the same idle grace as those accepted before the drain.
        self._adopting: set[asyncio.Task[None]] = set()
        self._adopted: dict[HTTPConnection, float] = {}
        # TLS connections accepted but still in their handshake, and since when: the drain
        # waits for them, since they are not among the server's connections until it is done.
        self._handshaking: dict[HTTPConnection, float] = {}
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
    def _handshake_timeout(self) -> float | None:
        # A TLS handshake is bounded like a request head: a peer that never completes it (or
        # sends plain HTTP, or garbage) is dropped without a word and without touching others.
        return self.config.header_timeout if self._ssl is not None else None

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
        for observer in self._observers:
            state.stats.attach(observer)
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
        factory = self._handshaking_connection if self._ssl is not None else self._connection
        for sock in self._sockets:
            server = await loop.create_server(
                factory,
                sock=sock,
                backlog=config.backlog,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout,
            )
            self._servers.append(server)
        self._sweeper = loop.create_task(self._sweep(), name="bastion-sweep")

    def _connection(self) -> HTTPConnection:
        assert self.state is not None
        return HTTPConnection(self.state)

    def _handshaking_connection(self) -> HTTPConnection:
        conn = self._connection()
        self._handshaking[conn] = conn.state.now
        return conn

    def _still_handshaking(self, now: float) -> bool:
        """Forget finished, failed and expired handshakes; whether any other is left."""
        limit = self._handshake_timeout or 0.0
        for conn, since in list(self._handshaking.items()):
            if conn.transport is not None or conn.closed or now > since + limit:
                del self._handshaking[conn]
        return bool(self._handshaking)

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
            if self._handshaking:
                self._still_handshaking(now)

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

        The listeners are closed only after the connections waiting in their accept queues
        have been taken (see :meth:`_stop_listening`), and those are served like the rest.
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
        loop = state.loop
        limit = self.config.graceful_timeout if timeout is None else timeout
        deadline = loop.time() + limit
        grace = min(idle_grace, limit)
        close_idle_at = loop.time() + grace
        # Listeners that whoever owns them has told to refuse new connections (a supervisor
        # that is stopping, or scaling down) are served a little longer, for the handshakes
        # already under way; any other listener is closed at once.
        settle = 0.0
        if any(refusing_new_connections(sock) for sock in self._sockets):
            settle = min(HANDSHAKE_SETTLE, limit / 2)
        listening_until = loop.time() + settle
        listening = True
        while True:
            if listening and loop.time() >= listening_until:
                listening = False
                self._adopt_all(self._stop_listening())
            # Sleep before looking: a connection the loop accepted just before is made (and
            # counted) a few loop iterations later, and must not be left out.
            await asyncio.sleep(0.02)
            now = loop.time()
            if now >= close_idle_at:
                for conn in list(state.connections):
                    if now >= self._adopted.get(conn, 0.0) + grace:
                        conn.close_if_idle()
            if now >= deadline or not (
                listening or state.connections or self._adopting or self._still_handshaking(now)
            ):
                break
        if listening:
            self._stop_listening()
        for task in list(self._adopting):
            task.cancel()
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
        self._close_observers()

    def _close_observers(self) -> None:
        for observer in self._observers:
            close = getattr(observer, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:  # one observer's failure must not hide the others' output
                logger.exception("closing request observer %r", observer)

    def _stop_listening(self) -> list[socket.socket]:
        """Close the listeners, returning the connections that were waiting in their queues.

        Closing a listening socket resets every connection still in its accept queue: their
        clients completed the handshake and may have sent a request, which would fail with no
        way to tell whether it ran. So the queue is emptied first, and the close follows with
        nothing in between that could let the loop run. When this process held the last
        reference, a later connection is refused at connect time; otherwise (a reload, or
        workers sharing one socket) the process still holding it accepts it.
        """
        accepted: list[socket.socket] = []
        for sock in self._sockets:
            if sock.fileno() < 0:
                continue
            # Bounded, so that a flood of new connections cannot keep the drain from closing.
            for _ in range(max(self.config.backlog, 1) * 2):
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionAbortedError:
                    continue
                except OSError as exc:  # out of descriptors or buffers: keep what we have
                    logger.warning("draining the accept queue: %s", exc)
                    break
                accepted.append(conn)
        for server in self._servers:
            server.close()
        return accepted

    def _adopt_all(self, accepted: list[socket.socket]) -> None:
        assert self.state is not None
        for conn in accepted:
            task = self.state.loop.create_task(self._adopt(conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        """Serve a connection taken from the accept queue while draining."""
        state = self.state
        assert state is not None
        try:
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _, protocol = await state.loop.connect_accepted_socket(
                self._connection,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except Exception as exc:  # a failed TLS handshake, or a peer already gone
            logger.debug("connection accepted while draining was lost: %r", exc)
            conn.close()
            return
        assert isinstance(protocol, HTTPConnection)
        self._adopted[protocol] = state.loop.time()


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


def freeze_startup_objects() -> None:
    """Keep what exists once a server has started out of every later garbage collection.

    The modules, classes and functions of the application and its libraries (tens of
    thousands of objects, all of them for good) would otherwise be walked by every full
    collection, which a server's churn of requests triggers every second or two: on a VM
    each walk stops the loop for tens of milliseconds, the whole of a busy server's p99.
    Only what is alive at this moment is frozen; garbage made later is collected as usual.
    Called by the process that serves (``run``, a worker), never by a library ``Server``.
    """
    gc.collect()
    gc.freeze()


def run(
    handler: Handler,
    binds: Iterable[str] = ("127.0.0.1:8000",),
    config: ServerConfig | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_ready: object = None,
    observers: Iterable[RequestObserver] = (),
) -> None:
    """Serve ``handler`` until SIGTERM/SIGINT, then drain gracefully and return.

    ``observers`` are given to the :class:`Server` (an access log, for instance).
    """
    server = Server(handler, config, binds=binds, ssl_context=ssl_context, observers=observers)

    async def main() -> None:
        await server.start()
        freeze_startup_objects()
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

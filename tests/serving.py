"""Test support: run a real Bastion server on a port-0 listener in a background thread."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from bastion.engine import Server, ServerConfig, new_event_loop
from bastion.engine.handler import Handler
from bastion.engine.stats import RequestObserver


class RunningServer:
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.host = "127.0.0.1"
        self.port = server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> Any:
        assert self.server.state is not None
        return self.server.state.stats

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        return sock

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` on the server's loop and return its result."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)


@contextmanager
def serve(
    handler: Handler,
    config: ServerConfig | None = None,
    binds: tuple[str, ...] = (),
    observers: Iterable[RequestObserver] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[RunningServer]:
    """Start ``handler`` on 127.0.0.1:0 (plus ``binds``), yield it, then shut it down."""
    loop = new_event_loop()
    server = Server(
        handler,
        config,
        binds=binds or ("127.0.0.1:0",),
        observers=observers,
        ssl_context=ssl_context,
    )
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="test-server", daemon=True)
    thread.start()
    started.wait(10)
    if failure:
        raise failure[0]
    try:
        yield RunningServer(server, loop)
    finally:
        future = asyncio.run_coroutine_threadsafe(server.shutdown(timeout=2.0), loop)
        future.result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def exchange_raw(
    sock: socket.socket, data: bytes, *, wait_close: bool = True, timeout: float = 5.0
) -> bytes:
    """Send ``data``; read until the server closes (or ``timeout``); return all bytes read."""
    sock.settimeout(timeout)
    sock.sendall(data)
    return read_until_close(sock, timeout) if wait_close else sock.recv(65536)


def read_until_close(sock: socket.socket, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            # Closed too: a server that closes with bytes of ours still unread (a client that
            # kept trickling) resets rather than sends FIN.
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"server did not close the connection; got {b''.join(chunks)!r}")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Read exactly one Content-Length-framed response, leaving any later bytes unread."""
    sock.settimeout(timeout)
    while True:
        peeked = sock.recv(65536, socket.MSG_PEEK)
        if not peeked:
            raise AssertionError("connection closed before a response")
        end = peeked.find(b"\r\n\r\n")
        if end >= 0:
            break
        time.sleep(0.01)
    head = _recv_exactly(sock, end + 4)[:-4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return status, headers, _recv_exactly(sock, length)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12])


class LoadThreads:
    """Threads that each run ``self._run()`` until the ``with`` block ends; ``_stop`` is set
    then, and ``_run`` returns when it sees it."""

    def __init__(self, threads: int) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in self._threads)

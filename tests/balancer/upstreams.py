"""Upstream servers for proxy tests: Bastion apps, and raw sockets that answer what we script."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from bastion import App, Response
from bastion.app import Request
from bastion.balancer.config import BalancerConfig
from bastion.balancer.proxy import Balancer
from bastion.engine import ServerConfig
from tests.serving import RunningServer, serve


def echo_app(name: str) -> App:
    """Answers with its name, the request's method, path and fields, and echoes bodies."""
    app = App()

    @app.route("/slow")
    async def slow(request: Request) -> str:
        await asyncio.sleep(float(request.query_param("s", "0.2") or 0.2))
        return f"slow from {name}\n"

    @app.route("/status/{code:int}")
    async def status(request: Request) -> Response:
        code = request.path_params["code"]
        return Response(f"{code} from {name}\n", status=code)

    @app.route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    async def anything(request: Request) -> object:
        if request.method in ("POST", "PUT"):
            return await request.body()
        query = request.query_string.decode()
        lines = [f"name={name}", f"method={request.method}", f"path={request.path}?{query}"]
        lines += [f"{key.lower()}: {value}" for key, value in request.headers.items()]
        return "\n".join(lines) + "\n"

    return app


@contextmanager
def balancer(config: BalancerConfig, server: ServerConfig | None = None) -> Iterator[RunningServer]:
    with serve(Balancer(config), server) as running:
        yield running


class RawUpstream:
    """A TCP server whose every connection is handed to ``script(sock)`` on its own thread.

    ``connections`` counts accepted connections; ``received`` collects the bytes each script
    read (scripts append to it), so a test can check what reached the upstream.
    """

    def __init__(self, script: Callable[[socket.socket, RawUpstream], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.received: list[bytes] = []
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(10)
            with suppress(OSError):  # the other end going away is how most scripts end
                self.script(sock, self)

    def close(self) -> None:
        self._closing = True
        self.listener.close()


def read_head(sock: socket.socket, upstream: RawUpstream) -> bytes:
    """Read one request head (and nothing after it) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    upstream.received.append(data)
    return data


@contextmanager
def raw_upstream(script: Callable[[socket.socket, RawUpstream], None]) -> Iterator[RawUpstream]:
    upstream = RawUpstream(script)
    try:
        yield upstream
    finally:
        upstream.close()

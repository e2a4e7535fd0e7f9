"""Hooks that ``http.server`` code overrides: logging, setup/finish, verify_request.

Each runs the same classes on both servers and compares what the hooks saw.
"""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any, ClassVar

import pytest

import bastion.compat
from tests.compat.differential import ask, running

SERVERS = [http.server.ThreadingHTTPServer, bastion.compat.ThreadingHTTPServer]


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


class Recorded(http.server.BaseHTTPRequestHandler):
    """Logs into a list instead of stderr, as handlers that log elsewhere do."""

    protocol_version = "HTTP/1.1"
    calls: ClassVar[list[tuple[Any, ...]]] = []
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        with self.lock:
            self.calls.append(("message", format, tuple(str(a) for a in args)))

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        with self.lock:
            self.calls.append(("request", int(code) if code != "-" else code, size))
        super().log_request(code, size)

    def log_error(self, format: str, *args: Any) -> None:
        with self.lock:
            self.calls.append(("error", format, tuple(str(a) for a in args)))
        super().log_error(format, *args)

    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_error(404, "File not found")
        elif self.path == "/explained":
            self.send_error(403, "No", "because")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    do_HEAD = do_GET


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/missing"), ("HEAD", "/missing"), ("GET", "/explained"), ("PUT", "/")],
)
def test_log_calls_are_the_standard_librarys(method: str, path: str) -> None:
    seen = []
    for server_class in SERVERS:
        Recorded.calls = []
        with running(server_class, Recorded) as port:
            ask(port, request(method, path), method.encode())
        seen.append(Recorded.calls)
    assert seen[1] == seen[0]
    assert seen[0]  # the case did log


class Counting(http.server.BaseHTTPRequestHandler):
    """Overrides setup and finish as connection-counting handlers do."""

    events: ClassVar[list[str]] = []

    def setup(self) -> None:
        super().setup()
        # Socket options and timeouts are the engine's under Bastion: accepted, not applied.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(5)
        self.events.append("setup")

    def finish(self) -> None:
        self.events.append("finish")
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.events.append(f"body {body.decode()}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def test_setup_and_finish_run_around_each_request() -> None:
    data = b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"
    seen = []
    for server_class in SERVERS:
        Counting.events = []
        with running(server_class, Counting) as port:
            for _ in range(2):
                (response,), _ = ask(port, data)
                assert response.body == b"ok"
        seen.append(Counting.events)
    assert seen[1] == seen[0] == ["setup", "body abc", "finish"] * 2


class Refusing(http.server.ThreadingHTTPServer):
    refused: ClassVar[list[Any]] = []

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.refused.append(client_address[0])
        return False


class RefusingBastion(bastion.compat.ThreadingHTTPServer):
    refused: ClassVar[list[Any]] = []

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.refused.append(client_address[0])
        return False


@pytest.mark.parametrize("server_class", [Refusing, RefusingBastion])
def test_verify_request_refuses_without_an_answer(server_class: Any) -> None:
    server_class.refused = []
    with running(server_class, Recorded) as port:
        assert ask(port, request("GET", "/")) == ([], False)
    assert server_class.refused == ["127.0.0.1"]

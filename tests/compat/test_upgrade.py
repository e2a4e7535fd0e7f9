"""A handler that answers ``101 Switching Protocols`` and then speaks on rfile/wfile itself."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any

import pytest

import bastion.compat
from bastion.engine import ServerConfig
from tests.compat.differential import running

SERVERS = [http.server.ThreadingHTTPServer, bastion.compat.ThreadingHTTPServer]
UPGRADE = b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n"


class LineEcho(http.server.BaseHTTPRequestHandler):
    """A made-up protocol after the switch: every line comes back prefixed, until "bye"."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Upgrade") != "line-echo":
            self.send_error(426)
            return
        self.send_response(101)
        self.send_header("Upgrade", "line-echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.write(b"hello\n")  # the new protocol's first bytes, in the same write
        while line := self.rfile.readline():
            self.wfile.write(b"echo: " + line)
            self.wfile.flush()
            if line == b"bye\n":
                break
        self.close_connection = True


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_exactly(sock: socket.socket, have: bytes, size: int) -> tuple[bytes, bytes]:
    while len(have) < size:
        chunk = sock.recv(4096)
        assert chunk, have
        have += chunk
    return have[:size], have[size:]


@pytest.mark.parametrize("server_class", SERVERS, ids=["stdlib", "bastion"])
def test_the_handler_takes_the_connection_over(server_class: Any) -> None:
    with running(server_class, LineEcho) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(UPGRADE)
            head, rest = read_head(sock)
            lines = head.split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
            fields = {line.split(b":")[0].lower(): line.split(b": ")[1] for line in lines[1:]}
            assert fields[b"upgrade"] == b"line-echo"
            assert fields[b"connection"] == b"Upgrade"
            hello, rest = read_exactly(sock, rest, 6)
            assert hello == b"hello\n"
            for text in (b"one\n", b"two\n" * 3, b"x" * 100_000 + b"\n", b"bye\n"):
                sock.sendall(text)
                echoed, rest = read_exactly(sock, rest, len(text) + 6 * text.count(b"\n"))
                assert echoed.replace(b"echo: ", b"") == text
            assert sock.recv(10) == b""  # the handler returned: the connection ends


def test_a_switch_the_client_did_not_ask_for_is_a_500() -> None:
    # http.server writes whatever the handler writes; a 101 that no Upgrade asked for would
    # leave the client reading a protocol it never offered.
    with running(bastion.compat.ThreadingHTTPServer, Unasked) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            head, _ = read_head(sock)
            assert head.startswith(b"HTTP/1.1 500 ")


def test_shutdown_ends_a_switched_connection() -> None:
    config = ServerConfig(graceful_timeout=0.5)
    server = bastion.compat.ThreadingHTTPServer(("127.0.0.1", 0), LineEcho, config=config)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        sock = socket.create_connection(server.server_address, timeout=10)
        sock.sendall(UPGRADE)
        _, data = read_head(sock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive()
    sock.settimeout(10)
    while chunk := sock.recv(4096):
        data += chunk
    assert data == b"hello\n"  # and then the close: the handler's rfile saw the end
    sock.close()


class Unasked(LineEcho):
    def do_GET(self) -> None:
        self.send_response(101)
        self.send_header("Upgrade", "line-echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()

"""bastion.compat servers and handlers beyond the differential cases."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import bastion.compat
from bastion.engine import ServerConfig
from tests.cli.running import bastion as bastion_process
from tests.compat import handlers
from tests.serving import read_response, read_until_close


@contextmanager
def running(
    handler: Any, server_class: Any = bastion.compat.ThreadingHTTPServer, **kw: Any
) -> Iterator[Any]:
    server = server_class(("127.0.0.1", 0), handler, **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_handler_sees_what_parse_request_would_set() -> None:
    with running(handlers.Inspect) as server:
        port = server.server_address[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.putrequest("GET", "//evil.example/a?b=1")
        conn.putheader("X-Multi", "1")
        conn.putheader("x-multi", "2")
        conn.endheaders()
        info = json.loads(conn.getresponse().read())
    assert info == {
        "command": "GET",
        "path": "/evil.example/a?b=1",
        "request_version": "HTTP/1.1",
        "requestline": "GET //evil.example/a?b=1 HTTP/1.1",
        "host": f"127.0.0.1:{port}",
        "multi": ["1", "2"],
        "missing": "default",
        "items": [["X-Multi", "1"], ["x-multi", "2"]],
        "client": "127.0.0.1",
        "address_string": "127.0.0.1",
        "server_port": port,
        "close_connection": False,
    }


def test_keep_alive_only_with_http11_and_a_length() -> None:
    with running(handlers.Hello) as server:
        sock = socket.create_connection(server.server_address, timeout=5)
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[2] == b"Hello, world!"
        sock.close()
    with running(handlers.NoLength) as server:
        sock = socket.create_connection(server.server_address, timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until_close(sock)
        assert data.endswith(b"line 0\nline 1\nline 2\n")
        assert b"connection: close" in data


def test_rfile_never_reads_into_the_next_request() -> None:
    with running(handlers.ReadsEverything) as server:
        sock = socket.create_connection(server.server_address, timeout=5)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert read_response(sock)[2] == b"5:hello"
        assert read_response(sock)[2] == b"get"
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        assert read_response(sock)[2] == b"7:abcdefg"
        sock.close()


def test_slow_handlers_do_not_block_a_fast_one_and_a_full_queue_is_503() -> None:
    gate = threading.Event()

    class Slow(handlers.Quiet):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/slow":
                gate.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    def get(port: int, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status

    config = ServerConfig(threads=3, queue_size=0)
    with running(Slow, config=config) as server:
        port = server.server_address[1]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(get, port, "/slow") for _ in range(2)]
            time.sleep(0.3)
            assert get(port, "/fast") == 200  # a third thread is free
            third = pool.submit(get, port, "/slow")
            time.sleep(0.3)
            assert get(port, "/fast") == 503  # all three threads busy, no queue
            gate.set()
            assert [f.result(10) for f in (*slow, third)] == [200, 200, 200]
        assert get(port, "/fast") == 200


def test_handle_request_serves_one_request() -> None:
    server = bastion.compat.HTTPServer(("127.0.0.1", 0), handlers.Hello)
    with server:
        results: list[bytes] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
            conn.request("GET", "/")
            results.append(conn.getresponse().read())

        thread = threading.Thread(target=client)
        thread.start()
        server.handle_request()
        thread.join(5)
        assert results == [b"Hello, world!"]
        server.timeout = 0.2
        started = time.monotonic()
        server.handle_request()  # nobody comes: returns after the timeout
        assert time.monotonic() - started < 3


def test_partial_with_directory_like_python_m_http_server(tmp_path: Any) -> None:
    from functools import partial

    (tmp_path / "file.txt").write_bytes(b"from disk\n")
    handler = partial(bastion.compat.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with running(handler) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request("GET", "/file.txt")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"from disk\n"
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request("GET", "/")
        assert b"file.txt" in conn.getresponse().read()


def test_handler_writing_garbage_gets_500_not_garbage() -> None:
    class Garbage(handlers.Quiet):
        def do_GET(self) -> None:
            self.wfile.write(b"this is not HTTP\r\n\r\n")

    class Split(handlers.Quiet):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Evil", "a\r\nSet-Cookie: injected=1")
            self.end_headers()

    for handler in (Garbage, Split):
        with running(handler) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 500
            assert response.getheader("set-cookie") is None


def test_bastion_run_serves_a_handler_class() -> None:
    with bastion_process("run", "tests.compat.handlers:Hello", "--bind", "127.0.0.1:0") as proc:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"Hello, world!"
        conn.close()


class _SubclassOfStdlib(BaseHTTPRequestHandler):
    """Not defined through bastion.compat at all."""

"""Keep-alive, HTTP/1.0, pipelining and framing of responses over real sockets."""

from __future__ import annotations

import http.client
import socket
import time

from bastion import App, Request, Response, StreamingResponse
from bastion.engine import ServerConfig
from tests.app.hello import app
from tests.serving import read_response, read_until_close, serve, status_of

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def test_http10_closes_by_default_and_keeps_alive_when_asked() -> None:
    with serve(app) as server:
        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = read_until_close(sock)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in data.lower()
        assert data.endswith(b"Hello, world!")

        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(sock)
        assert (status, body) == (200, b"Hello, world!")
        assert headers["connection"].lower() == "keep-alive"
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.close()


def test_connection_close_is_honoured() -> None:
    with serve(app) as server:
        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_until_close(sock)
        assert data.count(b"HTTP/1.1 200") == 1
        assert b"connection: close" in data


def test_pipelined_requests_answered_in_order() -> None:
    ordered = App()

    @ordered.get("/slow")
    async def slow(request: Request) -> Response:
        import asyncio

        await asyncio.sleep(0.2)
        return Response(b"slow")

    @ordered.get("/fast")
    async def fast(request: Request) -> Response:
        return Response(b"fast")

    @ordered.get("/sync")
    def sync(request: object) -> Response:
        return Response(b"sync")

    with serve(ordered) as server:
        sock = server.connect()
        requests = b"".join(
            f"GET /{p} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            for p in ("slow", "fast", "sync", "fast")
        )
        sock.sendall(requests)
        bodies = [read_response(sock)[2] for _ in range(4)]
        assert bodies == [b"slow", b"fast", b"sync", b"fast"]
        sock.close()


def test_many_pipelined_requests_in_one_write() -> None:
    with serve(app, ServerConfig(max_pipelined=4)) as server:
        sock = server.connect()
        sock.sendall(GET * 100)
        for _ in range(100):
            status, _, body = read_response(sock)
            assert (status, body) == (200, b"Hello, world!")
        sock.close()


def test_head_has_length_but_no_body() -> None:
    with serve(app) as server:
        sock = server.connect()
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + GET)
        time.sleep(0.2)
        data = sock.recv(65536)
        first, _, rest = data.partition(b"\r\n\r\n")
        assert b"content-length: 13" in first
        assert rest.startswith(b"HTTP/1.1 200 OK")  # no body bytes between the two responses
        sock.close()


def test_keepalive_timeout_closes_idle_connection() -> None:
    with serve(app, ServerConfig(keepalive_timeout=0.3)) as server:
        sock = server.connect()
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert read_until_close(sock, timeout=5) == b""
        assert time.monotonic() - started < 4


def test_streaming_response_is_chunked_for_http11_and_close_delimited_for_http10() -> None:
    streaming = App()

    @streaming.get("/")
    async def numbers(request: Request) -> StreamingResponse:
        async def produce() -> object:
            for i in range(3):
                yield f"{i}\n"

        return StreamingResponse(produce(), content_type="text/plain")  # type: ignore[arg-type]

    with serve(streaming) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.read() == b"0\n1\n2\n"
        conn.request("GET", "/")  # the connection survived the chunked response
        assert conn.getresponse().read() == b"0\n1\n2\n"
        conn.close()

        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = read_until_close(sock)
        assert status_of(data) == 200
        assert data.endswith(b"\r\n\r\n0\n1\n2\n")


def test_client_half_close_still_gets_its_answer() -> None:
    with serve(app) as server:
        sock = server.connect()
        sock.sendall(b"GET /sleep?s=0.1 HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_close(sock)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"slept")


def test_ipv6_and_unix_listeners(tmp_path: object) -> None:
    import os
    import pathlib

    path = str(pathlib.Path(str(tmp_path)) / "bastion.sock")
    with serve(app, binds=("127.0.0.1:0", f"unix:{path}", "[::1]:0")) as server:
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.settimeout(5)
        unix.connect(path)
        unix.sendall(GET)
        assert read_response(unix)[2] == b"Hello, world!"
        unix.close()
        v6_port = next(
            s.getsockname()[1] for s in server.server.sockets if s.family == socket.AF_INET6
        )
        v6 = socket.create_connection(("::1", v6_port), timeout=5)
        v6.sendall(GET)
        assert read_response(v6)[2] == b"Hello, world!"
        v6.close()
    assert not os.path.exists(path)

"""Connection limits, slow readers and large bodies: bounded resources under abuse."""

from __future__ import annotations

import http.client
import socket
import time

from bastion import App, Request, Response, StreamingResponse, SyncRequest
from bastion.engine import ServerConfig
from tests.app.hello import app
from tests.serving import read_response, read_until_close, serve, status_of


def test_connections_beyond_the_limit_get_503() -> None:
    with serve(app, ServerConfig(max_connections=2)) as server:
        held = [server.connect() for _ in range(2)]
        time.sleep(0.2)
        extra = server.connect()
        data = read_until_close(extra)
        assert status_of(data) == 503
        assert b"retry-after: 1" in data
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(held[0])[0] == 200
        for sock in held:
            sock.close()
        time.sleep(0.3)
        fresh = server.connect()
        fresh.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(fresh)[0] == 200


def test_slow_reader_is_cut_off_after_write_timeout() -> None:
    big = App()
    sent = []

    @big.get("/")
    async def endless(request: Request) -> StreamingResponse:
        async def produce() -> object:
            chunk = b"x" * 65536
            for _ in range(2000):  # 128 MiB: far more than socket buffers hold
                sent.append(len(chunk))
                yield chunk

        return StreamingResponse(produce())  # type: ignore[arg-type]

    with serve(big, ServerConfig(write_timeout=0.5)) as server:
        sock = server.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(2.5)  # never read: the server must give up on us
        assert sum(sent) < 64 * 1024 * 1024  # backpressure stopped the producer early
        deadline = time.monotonic() + 5
        closed = False
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                if not sock.recv(1 << 20):
                    closed = True
                    break
            except (ConnectionResetError, TimeoutError):
                closed = True
                break
        assert closed
        assert server.stats.errors_by_kind.get("timeout-write") == 1


def test_large_upload_streams_through_a_blocking_handler() -> None:
    upload = App()

    @upload.post("/count")
    def count(request: SyncRequest) -> Response:
        return Response(str(sum(len(c) for c in request.stream())))

    size = 32 * 1024 * 1024
    with serve(upload) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        chunk = b"y" * (1 << 20)
        conn.putrequest("POST", "/count")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for _ in range(size // len(chunk)):
            conn.send(chunk)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == str(size).encode()


def test_chunked_upload_to_async_handler() -> None:
    with serve(app) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("POST", "/echo", body=iter([b"hello ", b"chunked ", b"world"]))
        response = conn.getresponse()
        assert response.read() == b"hello chunked world"
        conn.request("POST", "/sync-echo", body=iter([b"a" * 100000, b"b"]))
        assert conn.getresponse().read() == b"a" * 100000 + b"b"

"""A client that leaves: closed (FIN after its request, or a full close) and half-closed.

A client that half-closes after sending its request may still be reading: it gets its answer
from every kind of handler. An application that waits on the client (a long poll, an event
stream) is told when it is gone — ASGI with ``http.disconnect``, the native App with
``request.disconnected`` / ``wait_disconnected()`` — and streamed responses stop, with their
iterators closed, once the connection is gone.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bastion import App, Request, Response, SyncRequest
from bastion.app import StreamingResponse
from bastion.asgi import ASGIHandler
from bastion.compat.adapter import HandlerClassAdapter, ServerInfo
from bastion.engine import ServerConfig
from bastion.engine.handler import Handler
from bastion.wsgi import WSGIHandler
from tests.serving import RunningServer, read_response, read_until_close, serve

DEADLINE = 5.0


def wait_for(condition: Callable[[], object], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- a half-closed client still gets its answers -----------------------------------------------


def native() -> App:
    app = App()

    @app.post("/async")
    async def on_loop(request: Request) -> Response:
        body = await request.body()
        await asyncio.sleep(0.05)  # the FIN arrives while the handler works
        return Response(b"async:" + body)

    @app.post("/def")
    def on_pool(request: SyncRequest) -> Response:
        body = request.body()
        time.sleep(0.05)
        return Response(b"def:" + body)

    return app


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    await asyncio.sleep(0.05)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi:" + message["body"]})


def wsgi_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi:" + body]


class CompatEcho(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.05)
        answer = b"compat:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


HALF_CLOSE_CASES: list[tuple[str, Callable[[], Handler], str, bytes]] = [
    ("native-async", native, "/async", b"async:"),
    ("native-def", native, "/def", b"def:"),
    ("asgi", lambda: ASGIHandler(asgi_echo, lifespan="off"), "/", b"asgi:"),
    ("wsgi", lambda: WSGIHandler(wsgi_echo), "/", b"wsgi:"),
    ("compat", lambda: HandlerClassAdapter(CompatEcho, ServerInfo(CompatEcho)), "/", b"compat:"),
]


def post(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        len(body),
        body,
    )


@pytest.mark.parametrize(
    ("make", "path", "prefix"),
    [pytest.param(*case[1:], id=case[0]) for case in HALF_CLOSE_CASES],
)
def test_half_closed_client_gets_every_answer(
    make: Callable[[], Handler], path: str, prefix: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(make()) as server, server.connect() as sock:
        sock.sendall(post(path, b"one") + post(path, b"two"))
        sock.shutdown(socket.SHUT_WR)
        assert read_response(sock, DEADLINE)[::2] == (200, prefix + b"one")
        assert read_response(sock, DEADLINE)[::2] == (200, prefix + b"two")
        assert read_until_close(sock, DEADLINE) == b""
    assert errors(caplog) == []


# --- an application waiting on the client hears that it left -----------------------------------


@pytest.mark.parametrize("how", ["fin", "close"])
@pytest.mark.parametrize("with_body", [False, True], ids=["get", "post"])
def test_asgi_long_poll_sees_disconnect(how: str, with_body: bool) -> None:
    heard: list[dict[str, Any]] = []

    async def long_poll(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await receive()
        assert request["type"] == "http.request"
        heard.append(await receive())  # nothing more to read: waits for the client to go

    with serve(ASGIHandler(long_poll, lifespan="off")) as server:
        sock = server.connect()
        if with_body:
            sock.sendall(post("/poll", b"subscribe"))
        else:
            sock.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        assert heard == []
        if how == "fin":
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.close()
        wait_for(lambda: heard)
        assert heard == [{"type": "http.disconnect"}]
        if how == "fin":
            # The application answered nothing, so nothing is sent and the connection ends.
            assert read_until_close(sock, DEADLINE) == b""
            sock.close()
        wait_for(lambda: not server.server.state.connections)  # type: ignore[union-attr]


def test_native_handler_can_ask_and_wait() -> None:
    seen: list[tuple[bool, bool]] = []
    app = App()

    @app.get("/poll")
    async def poll(request: Request) -> Response:
        before = request.disconnected
        await request.wait_disconnected()
        seen.append((before, request.disconnected))
        return Response(b"nobody reads this")

    @app.get("/ask")
    def ask(request: SyncRequest) -> Response:
        wait_for(lambda: request.disconnected)
        seen.append((True, request.disconnected))
        return Response(b"gone")

    with serve(app) as server:
        for path in (b"/poll", b"/ask"):
            with server.connect() as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                time.sleep(0.05)
                sock.shutdown(socket.SHUT_WR)
                wait_for(lambda: seen)
                # A half-closed client still gets what the handler chose to send.
                assert read_until_close(sock, DEADLINE).startswith(b"HTTP/1.1 200 OK")
            assert seen.pop() in ((False, True), (True, True))


# --- streams stop, and their iterators are closed, when the client is gone ---------------------


def test_native_async_stream_is_closed_when_the_client_leaves() -> None:
    closed = threading.Event()
    app = App()

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"data: tick\n\n"
                    await asyncio.sleep(0.005)
            finally:
                closed.set()

        return StreamingResponse(ticks(), content_type="text/event-stream")

    with serve(app) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        assert closed.wait(DEADLINE)


def test_wsgi_iterator_is_closed_when_the_client_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = threading.Event()

    class Ticks:
        def __iter__(self) -> Iterator[bytes]:
            while not closed.is_set():
                yield b"data: tick\n\n"
                time.sleep(0.005)

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Ticks:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return Ticks()

    with serve(WSGIHandler(app)) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        assert closed.wait(DEADLINE)
    assert errors(caplog) == []


def test_compat_handler_write_fails_like_a_socket_when_the_client_leaves() -> None:
    failures: list[BaseException] = []

    class Streamer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"4\r\ntick\r\n")
                    self.wfile.flush()
                    time.sleep(0.005)
            except ConnectionError as error:  # what the standard library raises here too
                failures.append(error)

    with serve(HandlerClassAdapter(Streamer, ServerInfo(Streamer))) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        wait_for(lambda: failures)


# --- refusals and deadlines land on the request they belong to ---------------------------------


def test_careless_asgi_app_answer_to_a_refused_request_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def careless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)  # the bad body is already refused when it first reads
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(message).encode()})

    with serve(ASGIHandler(careless, lifespan="off")) as server, server.connect() as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello!!\r\n0\r\n\r\n"
        )
        reply = read_until_close(sock, DEADLINE)
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert reply.count(b"HTTP/1.1") == 1
    assert errors(caplog) == []


def test_stalled_body_of_a_pipelined_request_does_not_refuse_the_one_before_it() -> None:
    app = App()

    @app.get("/slow")
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.5)
        return Response(b"slow")

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        return Response(await request.body())

    with serve(app, ServerConfig(body_timeout=0.2)) as server, server.connect() as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
        )
        status, _, body = read_response(sock, DEADLINE)
        assert (status, body) == (200, b"slow")
        status, headers, _ = read_response(sock, DEADLINE)
        assert status == 408 and headers["connection"] == "close"
        assert read_until_close(sock, DEADLINE) == b""


def test_server_keeps_serving_after_clients_leave_every_way(server_app: RunningServer) -> None:
    for leave in ("fin", "close", "reset"):
        sock = server_app.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe")
        if leave == "fin":
            sock.shutdown(socket.SHUT_WR)
        elif leave == "reset":
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        sock.close()
    wait_for(lambda: not server_app.server.state.connections)  # type: ignore[union-attr]
    with server_app.connect() as sock:
        sock.sendall(post("/echo", b"still here"))
        assert read_response(sock, DEADLINE)[::2] == (200, b"still here")


@pytest.fixture
def server_app() -> Iterator[RunningServer]:
    from tests.app.hello import app

    with serve(app) as server:
        yield server

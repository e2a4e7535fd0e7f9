"""ASGI 3 over real sockets with raw ASGI callables: scope, messages, streaming, errors."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.asgi import ASGIHandler
from bastion.asgi.types import Message, Receive, Scope, Send
from bastion.engine import ClientDisconnected, ServerConfig
from tests.serving import RunningServer, read_response, read_until_close, serve


@pytest.fixture(params=[False, True], ids=["task", "eager"])
def eager(request: pytest.FixtureRequest) -> bool:
    """Every raw-app test runs with a task per request and with the eager first step."""
    return bool(request.param)


def handler(app: Any, eager: bool, **kwargs: Any) -> ASGIHandler:
    return ASGIHandler(app, lifespan="off", eager=eager, **kwargs)


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers
            if headers is not None
            else [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def reset(sock: socket.socket) -> None:
    """Close abortively (RST), the way a client that is killed or times out goes away."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def assert_healthy(server: RunningServer) -> None:
    """A fresh client still gets served."""
    response = httpx.get(server.url + "/healthy", timeout=5)
    assert response.status_code == 200, response.text


# scope and message shapes ---------------------------------------------------------------------


class Recorder:
    """An app that keeps every scope and received message, and answers with a JSON summary."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.messages: list[Message] = []
        self.threads: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        self.threads.append(threading.current_thread().name)
        body = bytearray()
        while True:
            message = await receive()
            self.messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        summary = json.dumps({"path": scope["path"], "length": len(body)}).encode()
        await respond(send, 200, summary, [(b"content-type", b"application/json")])


def test_http_scope_shape(eager: bool) -> None:
    app = Recorder()
    with serve(handler(app, eager)) as server:
        with socket.create_connection((server.host, server.port)) as sock:
            local = sock.getsockname()
            sock.sendall(
                b"GET /caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: example.test\r\n"
                b"X-Multi: one\r\nx-multi: two\r\nUser-Agent: raw\r\n\r\n"
            )
            status, _, body = read_response(sock)
        assert status == 200
        assert json.loads(body) == {"path": "/café/a/b", "length": 0}

    scope = app.scopes[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert list(scope["headers"]) == [
        (b"host", b"example.test"),
        (b"x-multi", b"one"),
        (b"x-multi", b"two"),
        (b"user-agent", b"raw"),
    ]
    for name, value in scope["headers"]:
        assert isinstance(name, bytes) and isinstance(value, bytes)
    assert tuple(scope["client"]) == (local[0], local[1])
    assert tuple(scope["server"]) == (server.host, server.port)
    assert scope["state"] == {}
    assert app.messages == [{"type": "http.request", "body": b"", "more_body": False}]
    assert app.threads == ["test-server"]  # on the loop's thread: no hop to a pool


def test_http_10_and_post_body(eager: bool) -> None:
    app = Recorder()
    with serve(handler(app, eager)) as server:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"POST /p HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
            raw = read_until_close(sock)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b'{"path": "/p", "length": 5}')
    assert app.scopes[0]["http_version"] == "1.0"
    assert app.scopes[0]["method"] == "POST"
    assert app.messages[-1]["more_body"] is False
    assert b"".join(m["body"] for m in app.messages) == b"hello"
    for message in app.messages:
        assert set(message) == {"type", "body", "more_body"}
        assert isinstance(message["body"], bytes) and isinstance(message["more_body"], bool)


def test_root_path_is_prefixed(eager: bool) -> None:
    app = Recorder()
    with serve(handler(app, eager, root_path="/api/")) as server:
        response = httpx.get(server.url + "/items/a%20b?q=1")
    assert response.json() == {"path": "/api/items/a b", "length": 0}
    scope = app.scopes[0]
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items/a b"
    assert scope["raw_path"] == b"/api/items/a%20b"


def test_absolute_form_target(eager: bool) -> None:
    app = Recorder()
    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(b"GET http://example.test/x%2Fy?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        status, _, _ = read_response(sock)
    assert status == 200
    assert app.scopes[0]["path"] == "/x/y"
    assert app.scopes[0]["raw_path"] == b"/x%2Fy"
    assert app.scopes[0]["query_string"] == b"q=1"


def test_state_is_a_copy_per_request(eager: bool) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope["state"]))
        scope["state"]["mine"] = True
        await respond(send, 200, b"ok")

    with serve(handler(app, eager)) as server, httpx.Client(base_url=server.url) as client:
        client.get("/")
        client.get("/")
    assert seen == [{}, {}]


# the fast path -------------------------------------------------------------------------------


def test_single_body_response_goes_out_framed_by_its_own_length(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"Content-Length", b"5"),
                    (b"x-thing", b"1"),
                    (b"set-cookie", b"a=1"),
                    (b"set-cookie", b"b=2"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"hello", "more_body": False})

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        raw = b""
        while not raw.endswith(b"hello"):
            raw += sock.recv(65536)
    head = raw.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 201 created")
    assert head.count(b"content-length") == 1
    assert b"content-length: 5" in head
    assert head.count(b"set-cookie") == 2
    assert b"x-thing: 1" in head
    assert b"transfer-encoding" not in head


def test_response_without_content_length_gets_one(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"abc"})

    with serve(handler(app, eager)) as server:
        response = httpx.get(server.url)
    assert response.headers["content-length"] == "3"
    assert response.content == b"abc"


def test_head_request_has_no_body(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/announce":
            # Like a file response to HEAD: the length of the body that GET would send.
            await respond(send, 200, b"", [(b"content-length", b"1234")])
        else:
            await respond(send, 200, b"the body")

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /announce HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        sock.settimeout(5)
        raw = b""
        while raw.count(b"\r\n\r\n") < 2:
            raw += sock.recv(65536)
        time.sleep(0.1)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(100)  # nothing after the two heads
    first, second = raw.split(b"\r\n\r\n")[:2]
    assert b"content-length: 8" in first
    assert b"content-length: 1234" in second
    assert raw.endswith(b"\r\n\r\n")


def test_204_and_304_carry_no_body(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        status = int(scope["path"][1:])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(handler(app, eager)) as server, httpx.Client(base_url=server.url) as client:
        for status in (204, 304, 200):
            response = client.get(f"/{status}")
            assert response.status_code == status
            assert response.content == b""


def test_connection_close_from_the_app(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"bye", [(b"connection", b"close")])

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = read_until_close(sock)
    assert b"connection: close" in raw.lower()
    assert raw.endswith(b"bye")


def test_header_lines_are_sent_as_given_every_time(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        value = scope["query_string"]
        headers = [(b"X-Echo", value), (bytearray(b"x-kind"), bytearray(b"array"))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x"})

    with serve(handler(app, eager)) as server, httpx.Client(base_url=server.url) as client:
        for value in ("one", "two", "one", "one"):
            response = client.get(f"/?{value}")
            assert response.status_code == 200
            assert response.headers["x-echo"] == value
            assert response.headers["x-kind"] == "array"


@pytest.mark.parametrize("more_body", [False, True], ids=["respond", "stream"])
def test_app_server_and_date_headers_replace_the_servers(eager: bool, more_body: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"Server", b"my-app")]
        if scope["path"] == "/both":
            headers.append((b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"))
        # A generator, read once: the server must not need the headers twice.
        fields = (field for field in headers)
        await send({"type": "http.response.start", "status": 200, "headers": fields})
        await send({"type": "http.response.body", "body": b"x", "more_body": more_body})
        if more_body:
            await send({"type": "http.response.body", "body": b""})

    with serve(handler(app, eager)) as server, httpx.Client(base_url=server.url) as client:
        only_server = client.get("/server")
        both = client.get("/both")
    assert only_server.headers.get_list("server") == ["my-app"]
    assert len(only_server.headers.get_list("date")) == 1
    assert only_server.headers["date"].endswith(" GMT")
    assert both.headers.get_list("server") == ["my-app"]
    assert both.headers.get_list("date") == ["Thu, 01 Jan 1970 00:00:00 GMT"]


def test_pipelined_requests_answered_in_order(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)
        await respond(send, 200, scope["path"].encode())

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        bodies = [read_response(sock)[2] for _ in range(3)]
    assert bodies == [b"/slow", b"/b", b"/c"]


# request bodies -------------------------------------------------------------------------------


def test_large_streaming_upload_is_bounded(eager: bool) -> None:
    """16 MiB through a slow reader: the app sees it in pieces, never all at once."""
    sizes: list[int] = []
    flags: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        total = 0
        while True:
            message = await receive()
            sizes.append(len(message["body"]))
            flags.append(message["more_body"])
            total += len(message["body"])
            if len(sizes) % 16 == 0:
                await asyncio.sleep(0.001)  # a slow consumer, so the engine has to pause
            if not message["more_body"]:
                break
        await respond(send, 200, str(total).encode())

    total = 16 * 1024 * 1024

    def chunks() -> Iterator[bytes]:
        block = b"x" * 65536
        for _ in range(total // len(block)):
            yield block

    with serve(handler(app, eager)) as server, httpx.Client(timeout=30) as client:
        chunked = client.post(server.url + "/up", content=chunks())
        sized = client.post(server.url + "/up", content=b"y" * total)
    assert chunked.text == str(total)
    assert sized.text == str(total)
    assert len(sizes) > 16
    assert max(sizes) <= 2 * 1024 * 1024
    assert flags.count(False) == 2  # exactly one final message per request
    assert sum(sizes) == 2 * total


def test_expect_100_continue(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        await respond(send, 200, body[::-1])

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.settimeout(5)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"abc")
        status, _, body = read_response(sock)
    assert (status, body) == (200, b"cba")


def test_unread_body_then_keep_alive(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"ignored your body")

    with serve(handler(app, eager)) as server, httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.post("/", content=b"z" * 1000).text == "ignored your body"


def test_receive_after_response_is_disconnect(eager: bool) -> None:
    after: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, 200, b"done")
        after.append(await receive())

    with serve(handler(app, eager)) as server:
        assert httpx.post(server.url, content=b"abc").text == "done"
        wait_for(lambda: after)
    assert after == [{"type": "http.disconnect"}]


# response streaming ---------------------------------------------------------------------------


def test_streaming_response_is_chunked(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with serve(handler(app, eager)) as server, httpx.Client(base_url=server.url) as client:
        with client.stream("GET", "/") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            assert b"".join(response.iter_bytes()) == b"part0;part1;part2;part3;part4;"
        assert client.get("/").status_code == 200  # the connection is reused


def test_streaming_response_with_content_length(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]}
        )
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def", "more_body": False})

    with serve(handler(app, eager)) as server:
        response = httpx.get(server.url)
    assert response.headers["content-length"] == "6"
    assert "transfer-encoding" not in response.headers
    assert response.content == b"abcdef"


def test_streaming_to_http_10_client_is_close_delimited(eager: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": False})

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw = read_until_close(sock)
    assert raw.endswith(b"\r\n\r\none,two")


def test_large_streaming_response_with_backpressure(eager: bool) -> None:
    """A client that reads slowly holds the app in send(), not the server's memory."""
    sent: list[int] = []
    piece = b"r" * (256 * 1024)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):  # 16 MiB
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent.append(len(piece))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with serve(handler(app, eager)) as server, server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        # Nothing read yet: the app must be parked well short of the whole body.
        assert sum(sent) < 8 * 1024 * 1024
        conn = http.client.HTTPResponse(sock)
        conn.begin()
        total = len(conn.read())
    assert total == 64 * len(piece)


# disconnects ----------------------------------------------------------------------------------


def test_client_disconnect_wakes_a_waiting_receive(
    eager: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Long-poll: the app waits in receive() after the body; the client leaves."""
    seen: list[Message] = []
    waiting = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/healthy":
            await respond(send, 200, b"ok")
            return
        await read_body(receive)
        waiting.set()
        seen.append(await receive())

    with serve(handler(app, eager)) as server:
        sock = server.connect()
        sock.sendall(b"POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        assert waiting.wait(5)
        reset(sock)
        wait_for(lambda: seen)
        assert seen == [{"type": "http.disconnect"}]
        assert_healthy(server)
    assert errors(caplog) == []


def upload_then_leave(eager: bool, leave: Any, timeout: float = 5.0) -> None:
    seen: list[Message] = []
    started = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/healthy":
            await respond(send, 200, b"ok")
            return
        while True:
            message = await receive()
            started.set()
            if message["type"] == "http.disconnect":
                seen.append(message)
                return

    with serve(handler(app, eager)) as server:
        sock = server.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        assert started.wait(5)
        leave(sock)
        wait_for(lambda: seen, timeout)
        assert_healthy(server)


def test_client_disconnect_during_body_upload(eager: bool) -> None:
    upload_then_leave(eager, reset)


def test_client_closes_during_body_upload(eager: bool) -> None:
    upload_then_leave(eager, socket.socket.close, timeout=1.0)


def test_client_disconnect_mid_response(eager: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The app streams forever; the client reads a little and leaves; send() raises OSError."""
    outcome: list[BaseException] = []
    disconnect: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/healthy":
            await respond(send, 200, b"ok")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 4096, "more_body": True})
                await asyncio.sleep(0.001)
        except OSError as error:
            outcome.append(error)
            disconnect.append(await receive())
            raise

    with serve(handler(app, eager)) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        wait_for(lambda: outcome)
        assert isinstance(outcome[0], ClientDisconnected)
        assert disconnect == [{"type": "http.disconnect"}]
        assert_healthy(server)
    assert errors(caplog) == []


# bad applications -----------------------------------------------------------------------------


class Misbehaving:
    """One path per way of getting the protocol wrong."""

    def __init__(self) -> None:
        self.caught: list[BaseException] = []
        self.finished = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        start = {"type": "http.response.start", "status": 200, "headers": []}
        try:
            await getattr(self, path.strip("/").replace("-", "_"))(send, start)
        finally:
            if path != "/healthy":
                self.finished.set()

    async def healthy(self, send: Send, start: Message) -> None:
        await respond(send, 200, b"ok")

    async def raise_before_start(self, send: Send, start: Message) -> None:
        raise ValueError("boom before start")

    async def raise_after_start(self, send: Send, start: Message) -> None:
        await send(start)
        raise ValueError("boom after start")

    async def raise_mid_body(self, send: Send, start: Message) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom mid body")

    async def body_before_start(self, send: Send, start: Message) -> None:
        await send({"type": "http.response.body", "body": b"oops"})

    async def second_start(self, send: Send, start: Message) -> None:
        await send(start)
        await send(start)

    async def second_start_streaming(self, send: Send, start: Message) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await send(start)

    async def unknown_message(self, send: Send, start: Message) -> None:
        await send({"type": "http.response.nonsense"})

    async def bad_status(self, send: Send, start: Message) -> None:
        await send({**start, "status": "200"})

    async def informational_status(self, send: Send, start: Message) -> None:
        await send({**start, "status": 103})

    async def trailers(self, send: Send, start: Message) -> None:
        await send({**start, "trailers": True})
        await send({"type": "http.response.body", "body": b"with trailers"})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})

    async def str_headers(self, send: Send, start: Message) -> None:
        await send({**start, "headers": [("content-type", "text/plain")]})
        await send({"type": "http.response.body", "body": b"x"})

    async def header_injection(self, send: Send, start: Message) -> None:
        await send({**start, "headers": [(b"x-evil", b"a\r\nset-cookie: stolen=1")]})
        await send({"type": "http.response.body", "body": b"x"})

    async def swallow_violation(self, send: Send, start: Message) -> None:
        try:
            await send({"type": "http.response.body", "body": b"oops"})
        except RuntimeError as error:
            self.caught.append(error)
        await send(start)  # carries on as if nothing happened
        await send({"type": "http.response.body", "body": b"fine?"})

    async def after_final_body(self, send: Send, start: Message) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"complete"})
        try:
            await send({"type": "http.response.body", "body": b"extra"})
        except RuntimeError as error:
            self.caught.append(error)

    async def return_without_response(self, send: Send, start: Message) -> None:
        return

    async def return_after_start(self, send: Send, start: Message) -> None:
        await send(start)

    async def return_mid_body(self, send: Send, start: Message) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    async def short_body(self, send: Send, start: Message) -> None:
        await send({**start, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})

    async def long_body(self, send: Send, start: Message) -> None:
        await send({**start, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"12345"})

    async def short_stream(self, send: Send, start: Message) -> None:
        await send({**start, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def long_stream(self, send: Send, start: Message) -> None:
        await send({**start, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"67890", "more_body": False})

    async def after_response_work_fails(self, send: Send, start: Message) -> None:
        await respond(send, 200, b"sent")
        await asyncio.sleep(0.01)
        raise ValueError("background work failed")


@pytest.fixture
def misbehaving(eager: bool) -> Iterator[tuple[RunningServer, Misbehaving]]:
    app = Misbehaving()
    with serve(handler(app, eager)) as server:
        yield server, app


def get_raw(server: RunningServer, path: str) -> bytes:
    """GET ``path`` and return every byte until the server closes or goes quiet."""
    with server.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.settimeout(2)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            data += b"<open>"
        return data


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/raise-before-start", "boom before start"),
        ("/raise-after-start", "boom after start"),  # the head was held back: still a 500
        ("/body-before-start", "'http.response.body' before 'http.response.start'"),
        ("/second-start", "a second 'http.response.start'"),
        ("/unknown-message", "unexpected message type 'http.response.nonsense'"),
        ("/bad-status", "invalid status '200'"),
        ("/informational-status", "invalid status 103"),
        ("/str-headers", "must be byte strings"),
        ("/header-injection", "invalid character"),
        ("/return-without-response", "returned without sending a response"),
        ("/return-after-start", "returned without completing its response"),
    ],
)
def test_errors_before_the_body_are_500(
    misbehaving: tuple[RunningServer, Misbehaving],
    path: str,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, app = misbehaving
    raw = get_raw(server, path)
    assert raw.startswith(b"HTTP/1.1 500 "), raw
    assert raw.endswith(b"500 Internal Server Error\n")
    assert b"stolen" not in raw
    wait_for(app.finished.is_set)
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_info[1] if r.exc_info else ''}"
        for r in caplog.records
        if r.levelno >= logging.ERROR
    )
    assert message in logged
    assert_healthy(server)


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/raise-mid-body", "boom mid body"),
        ("/second-start-streaming", "a second 'http.response.start'"),
        ("/return-mid-body", "returned without completing its response"),
        ("/short-stream", "short of its Content-Length"),
        ("/long-stream", "longer than its Content-Length"),
        ("/short-body", "short of its Content-Length"),
        ("/long-body", "longer than its Content-Length"),
    ],
)
def test_errors_after_the_body_started_close_the_connection(
    misbehaving: tuple[RunningServer, Misbehaving],
    path: str,
    logged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, app = misbehaving
    raw = get_raw(server, path)
    assert raw.startswith(b"HTTP/1.1 200 OK"), raw
    assert not raw.endswith(b"<open>"), "the connection must be closed"
    assert not raw.endswith(b"0\r\n\r\n"), "a broken chunked response must not look complete"
    wait_for(app.finished.is_set)
    messages = [
        f"{r.getMessage()} {r.exc_info[1] if r.exc_info else ''}"
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]
    assert any(logged in m for m in messages), messages
    assert_healthy(server)


def test_content_length_mismatch_seen_by_http_client(
    misbehaving: tuple[RunningServer, Misbehaving],
) -> None:
    server, _ = misbehaving
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", "/short-body")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()


def test_violation_the_app_swallows_still_fails(
    misbehaving: tuple[RunningServer, Misbehaving],
) -> None:
    server, app = misbehaving
    raw = get_raw(server, "/swallow-violation")
    assert raw.startswith(b"HTTP/1.1 500 ")
    assert b"fine?" not in raw
    wait_for(app.finished.is_set)
    assert len(app.caught) == 1


def test_send_after_the_final_body(
    misbehaving: tuple[RunningServer, Misbehaving], caplog: pytest.LogCaptureFixture
) -> None:
    server, app = misbehaving
    with server.connect() as sock:
        sock.sendall(b"GET /after-final-body HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"complete")
        wait_for(app.finished.is_set)
        # The response was whole, so the connection goes on serving.
        sock.sendall(b"GET /healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[2] == b"ok"
    assert len(app.caught) == 1
    assert any("sent after the response was complete" in m for m in errors(caplog))


def test_trailers_are_accepted_and_dropped(
    misbehaving: tuple[RunningServer, Misbehaving], caplog: pytest.LogCaptureFixture
) -> None:
    server, app = misbehaving
    assert httpx.get(server.url + "/trailers").text == "with trailers"
    wait_for(app.finished.is_set)
    assert errors(caplog) == []


def test_error_after_the_response_is_logged(
    misbehaving: tuple[RunningServer, Misbehaving], caplog: pytest.LogCaptureFixture
) -> None:
    server, app = misbehaving
    response = httpx.get(server.url + "/after-response-work-fails")
    assert response.text == "sent"
    wait_for(app.finished.is_set)
    wait_for(lambda: errors(caplog))
    record = next(r for r in caplog.records if r.levelno >= logging.ERROR)
    assert "after sending its response" in record.getMessage()
    assert record.exc_info is not None and "background work failed" in str(record.exc_info[1])


def test_non_coroutine_awaitable_app(eager: bool) -> None:
    class App:
        def __call__(self, scope: Scope, receive: Receive, send: Send) -> asyncio.Future[None]:
            return asyncio.ensure_future(respond(send, 200, b"from a future"))

    with serve(handler(App(), eager)) as server:
        assert httpx.get(server.url).text == "from a future"


def test_background_work_finishes_before_shutdown(eager: bool) -> None:
    done: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"accepted")
        await asyncio.sleep(0.3)
        done.append("background")

    with serve(handler(app, eager), ServerConfig(graceful_timeout=5)) as server:
        assert httpx.get(server.url).text == "accepted"
    assert done == ["background"]


def test_constructor_validation() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    with pytest.raises(TypeError):
        ASGIHandler(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ASGIHandler(app, root_path="api")
    with pytest.raises(ValueError):
        ASGIHandler(app, lifespan="sometimes")  # type: ignore[arg-type]

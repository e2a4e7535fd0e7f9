"""Every way a request body can be framed, right or wrong, against every kind of handler.

One cell is a framing case (valid, malformed, cut short, stalled) x a handler kind (native
``async def`` and ``def``, ASGI, WSGI, an ``http.server`` class) x the moment the handler first
touches the body (never, at once, after an ``await``, after a thread hop, after it started its
response) x how the request travels (whole, head then body, after or before a pipelined
request). Each cell asserts what the client sees over a real socket: exactly one answer per
request, in order, the right one (a refused request never gets the application's answer), a
closed connection after any refusal, and a connection that still serves the next request when
it stays open. Every read has a deadline, so a hang fails the cell instead of the suite.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import io
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bastion import App, Request, Response, SyncRequest
from bastion.app import StreamingResponse
from bastion.asgi import ASGIHandler
from bastion.compat.adapter import HandlerClassAdapter, ServerInfo
from bastion.engine import ServerConfig
from bastion.engine.handler import Handler
from bastion.http import Limits
from bastion.wsgi import WSGIHandler
from tests.serving import RunningServer, serve

MAX_BODY = 4096
READ_DEADLINE = 5.0  # far beyond any answer here; only a hang reaches it
PAUSE = 0.01  # between a head and its body, so the handler is already waiting for it

# --- framing cases ------------------------------------------------------------------------------

VALID = "valid"  # answered by the application, connection kept open
MALFORMED = "malformed"  # refused with a status, connection closed
CUT = "cut"  # the client half-closes mid-body: no answer from the server itself
STALL = "stall"  # the client stops sending mid-body: 408 once the body deadline passes
OVERRUN = "overrun"  # more bytes than Content-Length: they are the next (bad) request


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    head: bytes  # framing header lines, each ending in CRLF
    body: bytes  # what goes on the wire after the head
    echo: bytes = b""  # the body the application must see (VALID, OVERRUN)
    status: int = 0  # the refusal (MALFORMED, STALL)


CHUNKED = b"Transfer-Encoding: chunked\r\n"


def _chunked(name: str, wire: bytes, status: int = 400) -> Case:
    return Case(name, MALFORMED, CHUNKED, wire, status=status)


CASES = [
    Case("cl-exact", VALID, b"Content-Length: 11\r\n", b"hello world", b"hello world"),
    Case("cl-zero", VALID, b"Content-Length: 0\r\n", b"", b""),
    Case("chunked", VALID, CHUNKED, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    Case("chunked-empty", VALID, CHUNKED, b"0\r\n\r\n", b""),
    Case("chunked-ext", VALID, CHUNKED, b'5;a=b;c="d e"\r\nhello\r\n0;z\r\n\r\n', b"hello"),
    Case("chunked-trailers", VALID, CHUNKED, b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", b"hello"),
    Case("chunked-hex", VALID, CHUNKED, b"00A\r\nhellohello\r\n0\r\n\r\n", b"hellohello"),
    Case(
        "cl-long",
        OVERRUN,
        b"Content-Length: 5\r\n",
        b"helloGARBAGE\r\n\r\n",
        b"hello",
        status=400,
    ),
    # chunk-size lines llhttp refuses in strict mode
    _chunked("size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-plus", b"+5\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-leading-space", b" 5\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-trailing-space", b"5 \r\nhello\r\n0\r\n\r\n"),
    _chunked("size-trailing-tab", b"5\t\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-empty", b"\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-only-extension", b";a=b\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-nul", b"5\x00\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-underscore", b"0_5\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-decimal-point", b"5.0\r\nhello\r\n0\r\n\r\n"),
    _chunked("size-bare-cr", b"5\rx\r\nhello\r\n0\r\n\r\n"),
    _chunked("extension-control-char", b"5;a\x01\r\nhello\r\n0\r\n\r\n"),
    _chunked("extension-open-quote", b'5;a="b\r\nhello\r\n0\r\n\r\n'),
    _chunked("size-overflow", b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    # chunk data that disagrees with its size line
    _chunked("data-longer", b"5\r\nhello!!\r\n0\r\n\r\n"),
    _chunked("data-no-crlf", b"5\r\nhello0\r\n\r\n"),
    _chunked("data-shorter", b"5\r\nhi\r\n0\r\n\r\n"),
    _chunked("bare-lf-lines", b"5\nhello\n0\n\n"),
    _chunked("bare-lf-after-data", b"5\r\nhello\n0\r\n\r\n"),
    _chunked("trailer-invalid", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"),
    _chunked("trailer-folded", b"5\r\nhello\r\n0\r\nX: 1\r\n 2\r\n\r\n"),
    _chunked(
        "body-too-large", b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY + 1, b"x" * (MAX_BODY + 1)), 413
    ),
    # the client gives up (FIN) before the body is complete
    Case("cut-mid-chunk", CUT, CHUNKED, b"5\r\nhel"),
    Case("cut-mid-size-line", CUT, CHUNKED, b"5\r\nhello\r\n1"),
    Case("cut-before-last-chunk", CUT, CHUNKED, b"5\r\nhello\r\n"),
    Case("cut-cl-short", CUT, b"Content-Length: 11\r\n", b"hello"),
    # the client stops sending but stays connected
    Case("stall-cl-short", STALL, b"Content-Length: 11\r\n", b"hello", status=408),
    Case("stall-mid-chunk", STALL, CHUNKED, b"5\r\nhello\r\n3\r\nab", status=408),
]

KINDS = ["native-async", "native-def", "asgi", "wsgi", "compat"]
MOMENTS = ["never", "at-once", "after-await", "after-thread-hop", "after-responding"]
MODES = ["whole", "split", "after-probe", "before-probe"]
# Moments at which the application may legitimately have answered before the body failed.
EARLY = frozenset({"never", "after-responding"})


def _cells() -> Iterator[Any]:
    for case in CASES:
        # A stalled body costs a body deadline per cell; the travel modes add nothing there.
        # Bytes pipelined after a body that never ends would only be more of that body.
        if case.kind == STALL:
            modes = ["whole"]
        elif case.kind == CUT:
            modes = [mode for mode in MODES if mode != "before-probe"]
        else:
            modes = MODES
        for kind in KINDS:
            for moment in MOMENTS:
                for mode in modes:
                    yield pytest.param(
                        case, kind, moment, mode, id=f"{kind}-{moment}-{mode}-{case.name}"
                    )


# --- the handlers: one of each kind, told the moment by the last path segment -----------------


def _hop() -> None:
    time.sleep(0.005)


def native_app() -> App:
    app = App()

    @app.get("/probe")
    async def probe(request: Request) -> Response:
        return Response(b"probe")

    @app.post("/native-async/{moment}")
    async def on_loop(request: Request) -> Any:
        moment = request.path_params["moment"]
        if moment == "never":
            return Response(b"never")
        if moment == "after-await":
            await asyncio.sleep(0.005)
        elif moment == "after-thread-hop":
            await asyncio.get_running_loop().run_in_executor(None, _hop)
        elif moment == "after-responding":

            async def late_read() -> Any:
                yield b"echo:"
                yield await request.body()

            return StreamingResponse(late_read())
        return Response(b"echo:" + await request.body())

    @app.post("/native-def/{moment}")
    def on_pool(request: SyncRequest) -> Any:
        moment = request.path_params["moment"]
        if moment == "never":
            return Response(b"never")
        if moment in ("after-await", "after-thread-hop"):
            _hop()
        elif moment == "after-responding":

            def late_read() -> Iterator[bytes]:
                yield b"echo:"
                yield request.body()

            return StreamingResponse(late_read())
        return Response(b"echo:" + request.body())

    return app


async def _asgi_body(receive: Any) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    start = {"type": "http.response.start", "status": 200, "headers": []}
    moment = scope["path"].rsplit("/", 1)[1]
    if moment == "probe":
        await send(start)
        await send({"type": "http.response.body", "body": b"probe"})
        return
    if moment == "never":
        await send(start)
        await send({"type": "http.response.body", "body": b"never"})
        return
    if moment == "after-await":
        await asyncio.sleep(0.005)
    elif moment == "after-thread-hop":
        await asyncio.get_running_loop().run_in_executor(None, _hop)
    elif moment == "after-responding":
        await send(start)
        await send({"type": "http.response.body", "body": b"echo:", "more_body": True})
        body = await _asgi_body(receive)
        await send({"type": "http.response.body", "body": body or b""})
        return
    body = await _asgi_body(receive)
    # A careless application answers even when told the client is gone: the server must
    # drop that answer, never send it for a refused request.
    await send(start)
    await send({"type": "http.response.body", "body": b"echo:" + (body or b"")})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    moment = environ["PATH_INFO"].rsplit("/", 1)[1]
    headers = [("Content-Type", "application/octet-stream")]
    if moment in ("probe", "never"):
        start_response("200 OK", headers)
        return [moment.encode()]
    if moment in ("after-await", "after-thread-hop"):
        _hop()
    elif moment == "after-responding":
        start_response("200 OK", headers)

        def late_read() -> Iterator[bytes]:
            yield b"echo:"
            yield environ["wsgi.input"].read()

        return late_read()
    body = environ["wsgi.input"].read()
    start_response("200 OK", headers)
    return [b"echo:" + body]


class CompatHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(b"probe")

    def do_POST(self) -> None:
        moment = self.path.rsplit("/", 1)[1]
        if moment == "never":
            self._answer(b"never")
            return
        if moment in ("after-await", "after-thread-hop"):
            _hop()
        elif moment == "after-responding":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\necho:\r\n")
            self.wfile.flush()
            body = self.rfile.read()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
            return
        self._answer(b"echo:" + self.rfile.read())


def _handler(kind: str) -> Handler:
    if kind == "asgi":
        return ASGIHandler(asgi_app, lifespan="off")
    if kind == "wsgi":
        return WSGIHandler(wsgi_app)
    if kind == "compat":
        return HandlerClassAdapter(CompatHandler, ServerInfo(CompatHandler))
    return native_app()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, bool], RunningServer]]:
    """A server per handler kind, and per body deadline (short only for the stalled cases)."""
    limits = Limits(max_body_bytes=MAX_BODY)
    running: dict[tuple[str, bool], RunningServer] = {}
    contexts = []
    try:
        for name in ("native", "asgi", "wsgi", "compat"):
            for short in (False, True):
                config = ServerConfig(
                    limits=limits, body_timeout=0.3 if short else 10.0, header_timeout=10.0
                )
                context = serve(_handler(name), config)
                running[(name, short)] = context.__enter__()
                contexts.append(context)
        yield running
    finally:
        for context in reversed(contexts):
            context.__exit__(None, None, None)


# --- the client side --------------------------------------------------------------------------


class _Unclosable(io.BufferedReader):
    """One buffered reader shared by successive responses: http.client closes it after each."""

    def close(self) -> None:
        pass


class _Wire:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = _Unclosable(sock.makefile("rb", buffering=0))  # type: ignore[arg-type]

    def makefile(self, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return self.file


@dataclass
class Answer:
    status: int
    body: bytes
    complete: bool
    closes: bool


def next_answer(wire: _Wire) -> Answer | None:
    """The next response on the connection, or None if it closed first."""
    response = http.client.HTTPResponse(wire, method="POST")  # type: ignore[arg-type]
    try:
        response.begin()
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return None
    try:
        return Answer(response.status, response.read(), True, response.will_close)
    except http.client.IncompleteRead as cut:
        return Answer(response.status, cut.partial, False, True)
    except ConnectionResetError:
        return Answer(response.status, b"", False, True)


def assert_closed(wire: _Wire) -> None:
    """Nothing more comes: not a byte of a second answer, just the end of the connection."""
    try:
        rest = wire.file.read(1)
    except ConnectionResetError:
        return
    assert rest == b"", f"bytes after the last answer: {rest + wire.file.read1(200)!r}"


def expect_probe(answer: Answer | None) -> None:
    assert answer is not None, "the pipelined request got no answer"
    assert (answer.status, answer.body) == (200, b"probe")


PROBE = b"GET /probe HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.mark.parametrize(("case", "kind", "moment", "mode"), list(_cells()))
def test_cell(
    servers: dict[tuple[str, bool], RunningServer], case: Case, kind: str, moment: str, mode: str
) -> None:
    family = "native" if kind.startswith("native") else kind
    server = servers[(family, case.kind == STALL)]
    head = b"POST /%s/%s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (
        kind.encode(),
        moment.encode(),
        case.head,
    )
    sock = server.connect(timeout=READ_DEADLINE)
    try:
        wire = _Wire(sock)
        first = PROBE if mode == "after-probe" else b""
        last = PROBE if mode == "before-probe" else b""
        try:
            if mode == "split":
                sock.sendall(head)
                time.sleep(PAUSE)
                sock.sendall(case.body)
            else:
                sock.sendall(first + head + case.body + last)
            if case.kind == CUT:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered early and closed; what it sent is still readable
        if first:
            expect_probe(next_answer(wire))
        answer = next_answer(wire)
        check(case, moment, mode, wire, answer)
    finally:
        sock.close()


def check(case: Case, moment: str, mode: str, wire: _Wire, answer: Answer | None) -> None:
    if case.kind in (VALID, OVERRUN):
        assert answer is not None, "a valid request got no answer"
        assert answer.status == 200 and answer.complete, answer
        assert answer.body == (b"never" if moment == "never" else b"echo:" + case.echo)
        if case.kind == OVERRUN:
            refusal = next_answer(wire)
            assert refusal is not None and refusal.status == case.status and refusal.closes
            assert_closed(wire)
            return
        if answer.closes:
            # Only a body the handler had not read when it answered may cost the connection:
            # the server does not read past a body of unknown length to keep it.
            assert moment in EARLY, answer
            assert_closed(wire)
            return
        if mode == "before-probe":
            expect_probe(next_answer(wire))
        wire.sock.sendall(PROBE)
        expect_probe(next_answer(wire))
        return
    if case.kind == CUT:
        if answer is not None:
            assert moment in EARLY and answer.status == 200, answer
        assert_closed(wire)
        return
    # MALFORMED and STALL: the refusal is the request's one answer, unless the application
    # had already answered (or begun to) before the body went wrong.
    assert answer is not None, "a refused request got no answer"
    if answer.status == case.status:
        assert answer.complete and answer.closes, answer
    else:
        assert moment in EARLY, f"the application's answer was sent for a refused request: {answer}"
        assert answer.status == 200, answer
        assert answer.complete or moment == "after-responding", answer
    assert_closed(wire)

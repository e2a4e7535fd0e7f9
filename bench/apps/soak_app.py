"""The application behind ``bench/soak.py``, written three times: native ``App``, ASGI, WSGI.

Each variant serves the same paths, so one client mix drives all three:

- ``GET /`` and ``GET /sync``: a fixed 13-byte body (``/sync`` is a plain ``def`` route
  in the native variant, so the thread pool is exercised too).
- ``POST /echo``, ``/echo-late`` and ``/sync/echo``: the request body, back. ``/echo-late``
  yields to the loop before its first body read, which is when a body that already ended
  or failed has to be handed over by the engine rather than read live.
- ``POST /ignore``: answers at once without reading the body, which the server then has to
  discard (or refuse) by itself.
- ``GET /stream?n=N``: N small pieces, one every 20 ms, with no Content-Length (chunked).
- ``GET /big``: 4 MiB at once, larger than loopback socket buffers, so the server has to
  wait for the client to read.
- ``GET /wait``: stays open up to ``WAIT_S`` until the client goes away (ASGI: a long-poll
  in ``receive()``; native and WSGI: a heartbeat stream, as they have no way to ask).
- ``GET /stats``: this worker's pid and how each ``/wait`` ended, as JSON.
"""

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import bastion
from bench.apps.asgi_hello import Message, Receive, Send, lifespan

HELLO = b"Hello, world!"
BIG = b"x" * (4 * 1024 * 1024)
PIECE = b"." * 512
PIECE_GAP_S = 0.02
WAIT_S = 20.0
HEARTBEAT_S = 0.25
MAX_PIECES = 200

# How each /wait ended, per worker: the soak reads these to tell whether an application
# ever learns that its client left.
STATS = {"wait_saw_disconnect": 0, "wait_timed_out": 0}


def _stats_body() -> bytes:
    return json.dumps({"pid": os.getpid(), **STATS}).encode()


def _pieces(query: bytes | str) -> int:
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    values = parse_qs(text).get("n", ["10"])
    try:
        return max(1, min(MAX_PIECES, int(values[0])))
    except ValueError:
        return 10


# --- native App ------------------------------------------------------------------------

app = bastion.App()


@app.get("/")
async def hello(request: bastion.Request) -> bastion.Response:
    return bastion.Response(HELLO, headers={"content-type": "text/plain"})


@app.get("/sync")
def hello_sync(request: bastion.SyncRequest) -> bastion.Response:
    return bastion.Response(HELLO, headers={"content-type": "text/plain"})


@app.post("/echo")
async def echo(request: bastion.Request) -> bastion.Response:
    return bastion.Response(await request.body())


@app.post("/echo-late")
async def echo_late(request: bastion.Request) -> bastion.Response:
    await asyncio.sleep(0)
    return bastion.Response(await request.body())


@app.post("/sync/echo")
def echo_sync(request: bastion.SyncRequest) -> bastion.Response:
    return bastion.Response(request.body())


@app.post("/ignore")
async def ignore(request: bastion.Request) -> bastion.Response:
    return bastion.Response(HELLO)


@app.get("/stream")
async def stream(request: bastion.Request) -> bastion.StreamingResponse:
    async def pieces(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield PIECE
            await asyncio.sleep(PIECE_GAP_S)

    return bastion.StreamingResponse(pieces(_pieces(request.query_string)))


@app.get("/big")
async def big(request: bastion.Request) -> bastion.Response:
    return bastion.Response(BIG)


@app.get("/wait")
async def wait(request: bastion.Request) -> bastion.StreamingResponse:
    async def heartbeat() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + WAIT_S
        try:
            while time.monotonic() < deadline:
                yield b"."
                await asyncio.sleep(HEARTBEAT_S)
        except (asyncio.CancelledError, GeneratorExit):
            STATS["wait_saw_disconnect"] += 1
            raise
        STATS["wait_timed_out"] += 1

    return bastion.StreamingResponse(heartbeat())


@app.get("/stats")
async def stats(request: bastion.Request) -> bastion.Response:
    return bastion.Response(_stats_body(), headers={"content-type": "application/json"})


# --- ASGI ------------------------------------------------------------------------------


async def _asgi_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client left first."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _asgi_send(send: Send, body: bytes, status: int = 200) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _asgi_wait(receive: Receive, send: Send) -> None:
    """A long-poll: nothing to say until the client leaves or the wait runs out."""
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            break
        if message["type"] == "http.disconnect":
            STATS["wait_saw_disconnect"] += 1
            return
    STATS["wait_timed_out"] += 1
    await _asgi_send(send, b"timed out")


async def asgi(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    if path in ("/echo", "/echo-late", "/sync/echo"):
        if path == "/echo-late":
            await asyncio.sleep(0)
        body = await _asgi_body(receive)
        if body is not None:
            await _asgi_send(send, body)
    elif path in ("/", "/sync", "/ignore"):
        await _asgi_send(send, HELLO)
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(_pieces(scope["query_string"])):
            await send({"type": "http.response.body", "body": PIECE, "more_body": True})
            await asyncio.sleep(PIECE_GAP_S)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":
        await _asgi_send(send, BIG)
    elif path == "/wait":
        await _asgi_wait(receive, send)
    elif path == "/stats":
        await _asgi_send(send, _stats_body())
    else:
        await _asgi_send(send, b"not found", status=404)


# --- WSGI ------------------------------------------------------------------------------


def _wsgi_pieces(count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield PIECE
        time.sleep(PIECE_GAP_S)


class _WsgiHeartbeat:
    """A heartbeat body whose ``close()`` tells an early end (client gone) from a full one."""

    def __init__(self) -> None:
        self._deadline = time.monotonic() + WAIT_S
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        while time.monotonic() < self._deadline:
            yield b"."
            time.sleep(HEARTBEAT_S)
        self._done = True

    def close(self) -> None:
        STATS["wait_timed_out" if self._done else "wait_saw_disconnect"] += 1


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path in ("/echo", "/echo-late", "/sync/echo"):
        body = environ["wsgi.input"].read()
    elif path in ("/", "/sync", "/ignore"):
        body = HELLO
    elif path == "/stream":
        start_response("200 OK", [])
        return _wsgi_pieces(_pieces(environ.get("QUERY_STRING", "")))
    elif path == "/big":
        body = BIG
    elif path == "/wait":
        start_response("200 OK", [])
        return _WsgiHeartbeat()
    elif path == "/stats":
        body = _stats_body()
    else:
        start_response("404 Not Found", [("Content-Length", "9")])
        return [b"not found"]
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]

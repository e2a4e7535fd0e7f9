"""Limits and liveness of a WebSocket: message size after inflation, the receive queue, pings,
the closing handshake, graceful shutdown, and the counters."""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bastion import App
from bastion.app import WebSocket
from bastion.asgi import ASGIHandler
from bastion.engine import ServerConfig
from bastion.websocket import WebSocketConfig, websocket_stats
from tests.serving import RunningServer, serve
from tests.websocket.support import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    closed_by_server,
    echo_app,
    frame,
    handshake_request,
    open_raw,
    read_close,
    read_frame,
    read_head,
    wait_until,
)

# Short deadlines, and a sweep that checks them often enough (a quarter of the shortest).
FAST = ServerConfig(write_timeout=0.4, graceful_timeout=5)
LIVELY = WebSocketConfig(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.3, receive_queue=4)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 15))


def ws_url(server: RunningServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# permessage-deflate ----------------------------------------------------------------------------

echo = echo_app(path="/echo")


@pytest.fixture(scope="module")
def echo_server() -> Iterator[RunningServer]:
    with serve(echo) as running:
        yield running


def test_compressed_messages_round_trip(echo_server: RunningServer) -> None:
    text = "compressible " * 5000

    async def talk() -> tuple[Any, str]:
        async with connect(ws_url(echo_server, "/echo"), compression="deflate") as ws:
            assert ws.response is not None
            await ws.send(text)
            return await ws.recv(), ws.response.headers["sec-websocket-extensions"]

    echoed, answer = run(talk())
    assert echoed == text
    assert answer.startswith("permessage-deflate")


def test_compression_bomb_closes_1009(echo_server: RunningServer) -> None:
    # 16 MiB of zeros deflate to about 16 KiB: far over the 1 MiB limit once inflated.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    bomb = compressor.compress(bytes(16 * 1024 * 1024)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692 §7.2.1: the sync flush's empty block is left off
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12"
    with echo_server.connect() as sock:
        sock.sendall(handshake_request("/echo", offer))
        assert b"permessage-deflate" in read_head(sock)
        sock.sendall(frame(BINARY, bomb, rsv=4))  # RSV1: compressed
        assert read_close(sock) == 1009
        assert closed_by_server(sock)


def test_counters(echo_server: RunningServer) -> None:
    state = echo_server.server.state
    assert state is not None
    stats = websocket_stats(state)
    before = (stats.opened, stats.messages_in, stats.bytes_in, stats.closes_by_code.get(4000, 0))

    async def talk() -> None:
        async with connect(ws_url(echo_server, "/echo"), compression=None) as ws:
            for _ in range(3):
                await ws.send("12345")
                await ws.recv()
            await ws.close(4000)

    run(talk())
    wait_until(lambda: stats.closes_by_code.get(4000, 0) > before[3])
    assert stats.opened == before[0] + 1
    assert stats.messages_in == before[1] + 3
    assert stats.bytes_in == before[2] + 15
    assert stats.messages_out >= 3 and stats.bytes_out >= 15
    assert stats.open == 0


# the receive queue ------------------------------------------------------------------------------

slow_app = App(websocket=LIVELY)
held: dict[str, Any] = {}


@slow_app.websocket("/slow")
async def slow(ws: WebSocket) -> None:
    await ws.accept()
    held["ws"] = ws
    held["release"] = release = asyncio.Event()
    await release.wait()
    received = []
    async for message in ws:
        received.append(message)
        if message == "last":
            break
    await ws.send(f"{len(received)}")


@pytest.fixture(scope="module")
def slow_server() -> Iterator[RunningServer]:
    with serve(slow_app, FAST) as running:
        yield running


def test_receive_queue_is_bounded_and_nothing_is_lost(slow_server: RunningServer) -> None:
    held.clear()
    size = 20 * 1024
    # A read of the socket is at most 256 KiB: its messages are taken whole, then no more.
    bound = LIVELY.receive_queue + 256 * 1024 // size + 1

    async def talk() -> Any:
        async with connect(ws_url(slow_server, "/slow"), compression=None) as ws:

            async def send_all() -> None:
                for index in range(199):
                    await ws.send(f"{index:04d}" + "x" * size)
                await ws.send("last")

            sending = asyncio.create_task(send_all())

            def queued() -> tuple[int, bool]:
                connection = held["ws"]._connection
                return len(connection._messages), connection.conn._reading_paused

            # Long enough for several pings to go unanswered (their pongs wait unread).
            await asyncio.sleep(1.0)
            length, paused = slow_server.call(queued)
            slow_server.call(held["release"].set)
            await sending
            return length, paused, await ws.recv()

    length, paused, count = run(talk())
    assert paused
    assert length <= bound
    assert count == "200"


# pings and the closing handshake --------------------------------------------------------------

quiet_app = App(websocket=LIVELY)


@quiet_app.websocket("/wait")
async def wait(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@quiet_app.websocket("/close-now")
async def close_now(ws: WebSocket) -> None:
    await ws.accept()
    await ws.close(1000, "bye")
    held["close_now"] = True
    await asyncio.sleep(60)  # still running: only the deadline ends the connection


@pytest.fixture(scope="module")
def quiet_server() -> Iterator[RunningServer]:
    with serve(quiet_app, FAST) as running:
        yield running


def test_peer_that_never_answers_pings_is_closed_1011(quiet_server: RunningServer) -> None:
    with open_raw(quiet_server, "/wait") as sock:
        opcode, _ = read_frame(sock)
        assert opcode == PING
        assert read_close(sock) == 1011
        assert closed_by_server(sock)


def test_peer_that_answers_pings_stays(quiet_server: RunningServer) -> None:
    async def talk() -> Any:
        async with connect(ws_url(quiet_server, "/wait"), ping_interval=None) as ws:
            # Several ping intervals and pong deadlines pass; the client library answers.
            await asyncio.sleep(1.5)
            await ws.send("still here")
            return await ws.recv()

    assert run(talk()) == "still here"


def test_peer_that_never_answers_our_close_is_cut_off(quiet_server: RunningServer) -> None:
    with open_raw(quiet_server, "/close-now") as sock:
        assert read_close(sock) == 1000
        assert closed_by_server(sock)


# graceful shutdown ---------------------------------------------------------------------------


def test_graceful_shutdown_sends_1001_and_waits_for_the_handshake() -> None:
    with serve(echo, ServerConfig(graceful_timeout=10)) as server:

        async def talk() -> tuple[int | None, str]:
            async with connect(ws_url(server, "/echo")) as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                stopping = asyncio.get_running_loop().run_in_executor(
                    None,
                    lambda: asyncio.run_coroutine_threadsafe(
                        server.server.shutdown(), server.loop
                    ).result(15),
                )
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                await stopping
                rcvd = closed.value.rcvd
                return (rcvd.code, rcvd.reason) if rcvd else (None, "")

        code, reason = run(talk())
        assert code == 1001
        assert reason == "server shutting down"
        assert server.server.state is not None
        assert not server.server.state.connections


def test_graceful_shutdown_is_bounded_by_a_silent_peer() -> None:
    with serve(quiet_app, ServerConfig(graceful_timeout=10, write_timeout=0.4)) as server:
        sock = open_raw(server, "/wait")
        try:
            future = asyncio.run_coroutine_threadsafe(server.server.shutdown(), server.loop)
            assert read_close(sock) == 1001
            future.result(15)  # the close timeout, not the graceful timeout, ends the wait
            assert closed_by_server(sock)
        finally:
            sock.close()


def test_sending_text_frames_byte_by_byte(echo_server: RunningServer) -> None:
    with open_raw(echo_server, "/echo") as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in frame(TEXT, b"trickled"):
            sock.send(bytes([byte]))
        assert read_frame(sock) == (TEXT, b"trickled")
        sock.sendall(frame(CLOSE, b"\x03\xe8"))
        assert read_close(sock) == 1000


def test_an_idle_websocket_outlives_the_http_deadlines() -> None:
    # The keep-alive, header and body deadlines are for HTTP; a WebSocket accepted by its
    # handler at once (before its request's end was parsed) must not inherit one.
    config = ServerConfig(keepalive_timeout=0.2, header_timeout=0.2, body_timeout=0.2)
    still = echo_app(WebSocketConfig(ping_interval=None), "/echo")
    with serve(still, config) as server, open_raw(server, "/echo") as sock:
        assert not closed_by_server(sock, timeout=1.0)
        sock.sendall(frame(TEXT, b"awake"))
        assert read_frame(sock) == (TEXT, b"awake")


def test_a_frame_sent_before_the_101_ends_the_connection(echo_server: RunningServer) -> None:
    state = echo_server.server.state
    assert state is not None
    stats = websocket_stats(state)
    with echo_server.connect() as sock:
        sock.sendall(handshake_request("/echo") + frame(TEXT, b"too early"))
        assert closed_by_server(sock)
    # The handler heard of it: nothing is left open on the server.
    wait_until(lambda: stats.open == 0)
    assert echo_server.stats.errors_by_kind.get("switched-early-data", 0) >= 1


def test_shutdown_cancels_a_handler_that_ignores_its_closed_websocket() -> None:
    stubborn = App()
    seen: dict[str, bool] = {}

    @stubborn.websocket("/ws")
    async def ignore(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await asyncio.sleep(60)  # never looks at its WebSocket again
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    with serve(stubborn, ServerConfig(graceful_timeout=2)) as server:
        sock = open_raw(server, "/ws")
        try:
            future = asyncio.run_coroutine_threadsafe(server.server.shutdown(), server.loop)
            assert read_close(sock) == 1001
            sock.sendall(frame(CLOSE, b"\x03\xe9"))
            future.result(15)
        finally:
            sock.close()
    assert seen == {"cancelled": True}


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text")})


@pytest.mark.parametrize("kind", ["app", "asgi"])
def test_one_application_on_two_servers_stopping_one_leaves_the_other(kind: str) -> None:
    handler: Any = echo_app() if kind == "app" else ASGIHandler(asgi_echo, lifespan="off")
    with serve(handler) as staying:
        with open_raw(staying, "/ws") as sock:
            with serve(handler) as leaving, open_raw(leaving, "/ws") as gone:
                gone.sendall(frame(TEXT, b"one"))
                assert read_frame(gone) == (TEXT, b"one")
            # The second server stopped (its WebSocket closed with 1001); this one still echoes.
            sock.sendall(frame(TEXT, b"still here"))
            assert read_frame(sock) == (TEXT, b"still here")

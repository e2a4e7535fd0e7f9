"""Responses written in one turn of the event loop leave together at its end: each still
reaches its own client, whole and in order, however many connections share the turn, when
a handler blocks the turn, and when a stream paces itself by the transport's backpressure."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from bastion import App, Request, Response, StreamingResponse
from bastion.engine import ServerConfig
from bastion.engine.outbox import Outbox
from tests.serving import read_response, serve

app = App()
produced = [0]  # chunks the endless stream has made


@app.get("/n/{n:int}")
async def number(request: Request) -> Response:
    return Response(str(request.path_params["n"]).encode())


@app.get("/block")
async def block(request: Request) -> Response:
    time.sleep(0.3)  # holds the loop: the turn it runs in lasts this long
    return Response(b"blocked")


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        while True:
            produced[0] += 1
            yield b"x" * 8192

    return StreamingResponse(chunks())


def _requests_in_one_turn(server, paths: list[str]) -> list[socket.socket]:  # type: ignore[no-untyped-def]
    """One connection a path, each sending its request while the loop is held, so that the
    loop reads them all in its next turn."""
    socks = [server.connect() for _ in paths]
    time.sleep(0.2)  # every connection accepted
    server.loop.call_soon_threadsafe(time.sleep, 0.3)
    time.sleep(0.05)
    for sock, path in zip(socks, paths, strict=True):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return socks


def test_every_connection_served_in_one_turn_gets_its_own_answers() -> None:
    # More connections than a turn holds before it lets the first ones go.
    with serve(app) as server:
        socks = _requests_in_one_turn(server, [f"/n/{n}" for n in range(150)])
        try:
            for n, sock in enumerate(socks):
                status, _, body = read_response(sock)
                assert (status, body) == (200, str(n).encode())
            # And the next request on each is answered too (nothing stayed held).
            for n, sock in enumerate(socks):
                sock.sendall(f"GET /n/{n + 1000} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            for n, sock in enumerate(socks):
                assert read_response(sock)[2] == str(n + 1000).encode()
        finally:
            for sock in socks:
                sock.close()


def test_pipelined_answers_leave_in_order_whatever_else_the_turn_holds() -> None:
    with serve(app) as server:
        socks = _requests_in_one_turn(server, ["/n/1", "/n/2", "/block", "/n/3"])
        pipelined = server.connect()
        pipelined.sendall(b"".join(b"GET /n/%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in range(20)))
        try:
            bodies = [read_response(sock)[2] for sock in socks]
            assert bodies == [b"1", b"2", b"blocked", b"3"]
            assert [read_response(pipelined)[2] for _ in range(20)] == [
                str(n).encode() for n in range(20)
            ]
        finally:
            for sock in (*socks, pipelined):
                sock.close()


def test_a_stream_paced_by_backpressure_holds_a_bounded_amount() -> None:
    produced[0] = 0
    with serve(app, ServerConfig(write_timeout=30.0)) as server:
        for listener in server.server.sockets:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect((server.host, server.port))
        try:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.5)  # the client reads nothing
            state = server.server.state
            assert state is not None

            def held() -> tuple[int, int]:
                (conn,) = state.connections
                assert conn.transport is not None
                return (
                    conn.transport.get_write_buffer_size(),
                    conn.transport.get_write_buffer_limits()[1],
                )

            buffered, high = server.call(held)
            sent = produced[0]
            time.sleep(0.3)
            # The stream waits: it wrote nothing more, and the server holds no more than the
            # transport's limit and one chunk.
            assert produced[0] == sent
            assert buffered <= high + 8192
        finally:
            sock.close()


def test_a_held_send_that_fails_holds_back_no_other(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        outbox = Outbox(loop)
        sent: list[str] = []

        def broken() -> None:
            raise OSError("gone")

        outbox.later(broken)
        outbox.later(lambda: sent.append("second"))
        assert sent == []  # held until the turn ends
        loop.run_until_complete(asyncio.sleep(0))
        assert sent == ["second"]
        assert "cannot send a held request" in caplog.text
    finally:
        loop.close()

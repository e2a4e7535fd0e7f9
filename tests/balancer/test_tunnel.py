"""WebSocket through the balancer: a real client and server, and the bytes in between."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bastion.balancer.config import Timeouts, single_route
from tests.balancer.upstreams import RawUpstream, balancer, raw_upstream, read_head
from tests.serving import read_response


@pytest.fixture
def websocket_echo() -> Iterator[str]:
    """A websockets server on its own loop and thread, echoing every message."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = loop.create_future()
    address: list[str] = []

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            address.append(f"http://127.0.0.1:{port}")
            ready.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(5)
    yield address[0]
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(5)
    loop.close()


def test_websocket_messages_cross_the_balancer_both_ways(websocket_echo: str) -> None:
    with balancer(single_route([websocket_echo])) as lb:

        async def talk() -> list[str | bytes]:
            async with connect(f"ws://127.0.0.1:{lb.port}/chat") as ws:
                replies: list[str | bytes] = []
                for message in ("hello", b"\x00\x01binary", "x" * 200_000):
                    await ws.send(message)
                    replies.append(await ws.recv())
                return replies

        replies = asyncio.run(talk())
    assert replies == ["hello", b"\x00\x01binary", "x" * 200_000]


def test_upgrade_fields_reach_the_upstream_and_a_refusal_passes_back() -> None:
    def refuses(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")

    with raw_upstream(refuses) as up, balancer(single_route([up.url])) as lb:
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        status, _, body = read_response(sock)
        assert (status, body) == (403, b"no")
        sock.close()
    sent = up.received[0].lower()
    assert b"upgrade: websocket\r\n" in sent and b"connection: upgrade\r\n" in sent


def test_tunnel_passes_half_close_and_ends_when_idle() -> None:
    def echo_until_eof(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nfirst"
        )
        while data := sock.recv(65536):
            sock.sendall(data)
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)

    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with raw_upstream(echo_until_eof) as up:
        config = single_route([up.url], timeouts=Timeouts(idle=0.5))
        with balancer(config) as lb:
            sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
            sock.sendall(handshake)
            data = b""
            while b"first" not in data:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 101 ")
            sock.sendall(b"ping")
            assert sock.recv(100) == b"ping"
            sock.shutdown(socket.SHUT_WR)
            rest = b""
            while chunk := sock.recv(100):
                rest += chunk
            assert rest == b"bye"
            sock.close()

            idle = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
            idle.sendall(handshake)
            idle.recv(65536)
            idle.settimeout(3)
            # Nothing said either way: the tunnel is closed after its idle timeout.
            tail = b""
            while chunk := idle.recv(100):
                tail += chunk
            assert tail in (b"", b"first")
            idle.close()

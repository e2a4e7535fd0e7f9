"""A bare uvloop ``asyncio.Protocol`` that answers any handshake with a canned 101 and then
sends back one fixed 34-byte frame for every 38 bytes it receives (the benchmark's 32-byte
masked text frames), with no parsing, unmasking or checks at all.

It is not a WebSocket server; it is the least a Python server can do per message, so it
shows how fast the benchmark's client can go when the server costs next to nothing (the
client measured alone), and marks the ceiling for any Python server on the same stack.

Usage: ``python -m bench.apps.ws_bare PORT [--host 127.0.0.1]``.
"""

import argparse
import asyncio

import uvloop

SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-accept: unchecked\r\n\r\n"
)
FRAME_IN = 38  # 2-byte header, 4-byte mask, 32-byte payload
ECHO = b"\x81\x20" + b"x" * 32


class CannedEcho(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.switched = False
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.switched:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return
            self.switched = True
            self.transport.write(SWITCHING)  # type: ignore[union-attr]
            data = data[end + 4 :]
        self.pending += len(data)
        count, self.pending = divmod(self.pending, FRAME_IN)
        if count:
            self.transport.write(ECHO * count)  # type: ignore[union-attr]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedEcho, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))

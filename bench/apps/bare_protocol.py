"""A bare uvloop + httptools ``asyncio.Protocol`` with a canned response.

It does the least work a Python server can do per request (parse, write fixed bytes) and
so marks the ceiling any Python-level server on the same stack can reach.

Usage: ``python -m bench.apps.bare_protocol PORT [--host 127.0.0.1]``.
"""

import argparse
import asyncio

import httptools
import uvloop

BODY = b"Hello, world!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/plain\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HelloProtocol(asyncio.Protocol):
    """One instance per connection; httptools calls back into it as requests complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(BAD_REQUEST)
            self._close()

    def on_message_complete(self) -> None:
        self._write(RESPONSE)
        if not self.parser.should_keep_alive():
            self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

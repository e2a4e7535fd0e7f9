"""Support for the differential tests: one raw request to a server, what a client saw.

The client is written on a plain socket, not ``http.client``, because it must see what
``http.client`` hides: interim 1xx responses, the exact reason phrase and header bytes, and
whether the server kept the connection open (it is asked a second question on it).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Each server writes its own; everything else must match.
IGNORED_FIELDS = frozenset({"date", "server"})
PING = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"


@dataclass(frozen=True)
class Seen:
    """One response as a client sees it."""

    status_line: bytes
    fields: tuple[tuple[str, bytes], ...]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ", 2)[1])


@contextmanager
def running(server_class: Any, handler: Any) -> Iterator[int]:
    server = server_class(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(self.buffer)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise EOFError(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


def _read_one(reader: _Reader, method: bytes) -> tuple[Seen, bool]:
    """One response; and True if its body ran to the end of the connection."""
    status_line = reader.line()
    fields = []
    while line := reader.line():
        name, _, value = line.partition(b":")
        fields.append((name.decode("latin-1").strip().lower(), value.strip(b" \t")))
    status = int(status_line.split(b" ", 2)[1])
    framing = dict(fields)
    to_eof = False
    if method == b"HEAD" or status < 200 or status in (204, 304):
        body = b""
    elif b"chunked" in framing.get("transfer-encoding", b""):
        body = b""
        while size := int(reader.line().split(b";")[0], 16):
            body += reader.exactly(size)
            reader.line()
        while reader.line():
            pass
    elif "content-length" in framing:
        body = reader.exactly(int(framing["content-length"]))
    else:
        body, to_eof = reader.rest(), True
    kept = tuple((n, v) for n, v in fields if n not in IGNORED_FIELDS)
    return Seen(status_line, kept, body), to_eof


def ask(port: int, request: bytes, method: bytes = b"GET") -> tuple[list[Seen], bool]:
    """Send ``request``; return every response to it (interim ones first) and whether the
    connection then still answers a second request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reader = _Reader(sock)
        responses: list[Seen] = []
        while True:
            try:
                seen, to_eof = _read_one(reader, method)
            except EOFError:
                return responses, False
            responses.append(seen)
            if seen.status >= 200 or seen.status == 101:
                break
        if to_eof or responses[-1].status == 101:
            return responses, False
        try:
            sock.sendall(PING)
            _read_one(reader, b"GET")
        except (EOFError, OSError):
            return responses, False
        return responses, True


def comparable(seen: tuple[list[Seen], bool]) -> tuple[Any, ...]:
    """What must be the same, with the differences Bastion makes on purpose taken out (each
    is a line of docs/migrating-from-http-server.md)."""
    responses, kept_open = seen
    out = []
    for response in responses:
        # Bastion speaks HTTP/1.1 whatever protocol_version says; that still decides framing.
        code_and_reason = response.status_line.split(b" ", 1)[1]
        fields = [
            field
            for field in response.fields
            # Connection is Bastion's to write (close whenever it closes, keep-alive to an
            # HTTP/1.0 client it keeps); whether the connection stays open is compared below.
            if field[0] != "connection"
            # RFC 9110 §8.6: no Content-Length on a 1xx or 204 (nor, from Bastion, on a 304).
            and not (field[0] == "content-length" and response.status in (204, 304))
        ]
        # Bastion writes the framing fields after the handler's own; the order of different
        # fields carries no meaning (RFC 9110 §5.3), that of repeated ones is kept by the sort.
        fields.sort(key=lambda field: field[0])
        out.append((code_and_reason, fields, response.body))
    return tuple(out), kept_open

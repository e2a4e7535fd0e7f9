"""Raw WebSocket frames over a plain socket, for what a well-behaved client never sends."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Callable

from bastion import App
from bastion.app import WebSocket
from bastion.websocket import WebSocketConfig
from tests.serving import RunningServer
from tests.serving import _recv_exactly as _exactly

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake_request(path: str = "/ws", *extra: str, key: str = KEY, version: str = "13") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read one response head (up to the empty line), leaving what follows unread."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def open_raw(server: RunningServer, path: str = "/ws", *extra: str) -> socket.socket:
    """A plain socket past the handshake (asserting it was accepted)."""
    sock = server.connect()
    sock.sendall(handshake_request(path, *extra))
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` overrides the announced payload length."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def read_frame(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """One server frame: (opcode, payload). Server frames are never masked."""
    sock.settimeout(timeout)
    first, second = _exactly(sock, 2)
    assert not second & 0x80, "a server frame must not be masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", _exactly(sock, 2))
    elif size == 127:
        (size,) = struct.unpack("!Q", _exactly(sock, 8))
    return first & 0x0F, _exactly(sock, size)


def read_close(sock: socket.socket, timeout: float = 5.0) -> int:
    """Skip frames until the server's close frame; return its code (1005 for none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, payload = read_frame(sock, timeout)
        if opcode == CLOSE:
            return struct.unpack("!H", payload[:2])[0] if payload else 1005
    raise AssertionError("no close frame")


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server closed the TCP connection (EOF or reset) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def echo_app(config: WebSocketConfig | None = None, path: str = "/ws") -> App:
    """An App whose WebSocket route at ``path`` echoes every message."""
    app = App(websocket=config)

    @app.websocket(path)
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    return app


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)

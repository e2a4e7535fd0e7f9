"""Small WSGI applications shared by the tests, and a client for raw HTTP exchanges."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

StartResponse = Callable[..., Callable[[bytes], object]]
Environ = dict[str, Any]


def environ_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Answers with the environ as JSON: every str value, and what the wsgi.* keys hold."""
    shown: dict[str, Any] = {k: v for k, v in environ.items() if isinstance(v, str)}
    shown["wsgi.version"] = list(environ["wsgi.version"])
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        shown[key] = environ[key]
    shown["has file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    shown["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(shown).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new connection, half-close, return all bytes until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock, timeout)


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    chunks = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def repeat(chunk: bytes, count: int) -> Iterator[bytes]:
    """The same chunk ``count`` times: a large body that costs the client no memory."""
    for _ in range(count):
        yield chunk


def collect(iterable: Iterable[bytes]) -> bytes:
    return b"".join(iterable)

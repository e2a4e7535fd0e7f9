"""Where a server listens: ``host:port`` (IPv4 or IPv6), ``unix:/path``, or an inherited fd."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BindSpec:
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(spec: str) -> BindSpec:
    """Parse ``127.0.0.1:8000``, ``[::1]:8000``, ``:8000``, ``unix:/run/app.sock``, ``fd://3``."""
    spec = spec.strip()
    if spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if not path:
            raise ValueError("unix: bind needs a path")
        return BindSpec("unix", path=path)
    if spec.startswith("fd://"):
        digits = spec[len("fd://") :]
        if not digits.isdigit():
            raise ValueError(f"invalid file descriptor in {spec!r}")
        return BindSpec("fd", fd=int(digits))
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid IPv6 bind {spec!r}: expected [address]:port")
    else:
        host, sep, port = spec.rpartition(":")
        if not sep:
            host, port = "127.0.0.1", spec
        host = host or "0.0.0.0"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid port in bind {spec!r}")
    return BindSpec("tcp", host=host, port=int(port))


def open_listener(spec: BindSpec, backlog: int = 2048) -> socket.socket:
    """A bound, listening, non-blocking socket for ``spec``."""
    if spec.kind == "fd":
        sock = socket.socket(fileno=spec.fd)
    elif spec.kind == "unix":
        _remove_stale_socket(spec.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(spec.path)
    else:
        family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((spec.host, spec.port))
        except OSError:
            sock.close()
            raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    os.unlink(path)


def describe(sock: socket.socket) -> str:
    """The URL-ish address a listener serves on, with the real port when bound to 0."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"

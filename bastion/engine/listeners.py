"""Where a server listens: ``host:port`` (IPv4 or IPv6), ``unix:/path``, or an inherited fd.

Also the listening side of worker processes: :class:`Listener` keeps one address's sockets in
the supervisor, shared by every worker or, with ``SO_REUSEPORT`` on Linux, one per worker slot
so the kernel spreads new connections evenly; and :func:`systemd_sockets` takes the sockets
systemd passes to a socket-activated service.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import stat
import struct
import sys
from collections.abc import MutableMapping
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


class ListenError(OSError):
    """An address cannot be listened on; the message names it: ``cannot listen on
    127.0.0.1:8000: address already in use``."""

    def __init__(self, spec: BindSpec, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"cannot listen on {spec}: {reason[:1].lower()}{reason[1:]}")

    def __str__(self) -> str:
        return str(self.strerror)


def open_listener(
    spec: BindSpec, backlog: int = 2048, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """A bound, listening, non-blocking socket for ``spec`` (``reuse_port``: TCP only).

    With ``listen=False`` the socket is only bound: whoever serves it listens on it.
    Raises :class:`ListenError` when the address cannot be had.
    """
    try:
        return _open_listener(spec, backlog, reuse_port=reuse_port, listen=listen)
    except OSError as exc:
        raise ListenError(spec, exc) from exc


def _open_listener(
    spec: BindSpec, backlog: int, *, reuse_port: bool, listen: bool
) -> socket.socket:
    if spec.kind == "fd":
        sock = socket.socket(fileno=spec.fd)
        _check_listening(sock, str(spec))
    elif spec.kind == "unix":
        _remove_stale_socket(spec.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(spec.path)
    else:
        family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((spec.host, spec.port))
        except OSError:
            sock.close()
            raise
    if listen:
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


def describe(sock: socket.socket, scheme: str = "http") -> str:
    """The URL-ish address a listener serves on, with the real port when bound to 0."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{host}]:{port}"
    return f"{scheme}://{host}:{port}"


def _check_listening(sock: socket.socket, name: str) -> None:
    option = getattr(socket, "SO_ACCEPTCONN", None)
    try:
        listening = 1 if option is None else sock.getsockopt(socket.SOL_SOCKET, option)
    except OSError as exc:
        sock.detach()
        raise OSError(f"{name} is not a socket") from exc
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise OSError(f"{name} is not a listening stream socket")


# Linux's SO_ATTACH_FILTER / SO_GET_FILTER, which the socket module does not name.
_SO_ATTACH_FILTER = 26
# A classic BPF socket filter, run on each TCP segment that reaches the listening socket (at
# offset 0: the TCP header): drop a segment whose flags have SYN without ACK, keep the rest.
_REFUSE_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]: the flags byte
    (0x54, 0, 0, 0x12),  # and #(SYN|ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN: drop, else keep
    (0x06, 0, 0, 0),  # ret #0
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1
)


def refuse_new_connections(sock: socket.socket) -> bool:
    """Have a listening TCP socket ignore new connection attempts from now on (Linux).

    Closing a listening socket resets the handshakes still under way on it, and there is no
    way to close it without racing the next one. With this filter the kernel drops every new
    SYN while the handshakes already begun complete into the accept queue, where whoever
    serves the socket can accept them before closing it. A dropped client sends its SYN again
    about a second later and is then refused (or, with ``SO_REUSEPORT``, reaches a socket that
    is still open). It applies to the socket, not to this descriptor: every process sharing
    the socket stops receiving new connections on it. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux") or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return False
    code = b"".join(struct.pack("HBBI", *op) for op in _REFUSE_SYN)
    program = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(_REFUSE_SYN), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def refusing_new_connections(sock: socket.socket) -> bool:
    """Whether :func:`refuse_new_connections` (or any socket filter) applies to ``sock``."""
    if not sys.platform.startswith("linux") or sock.fileno() < 0:
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, 256))
    except OSError:
        return False


# sd_listen_fds(3): passed sockets start at fd 3.
SD_LISTEN_FDS_START = 3


def systemd_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process (socket activation), if any.

    They are taken only when ``LISTEN_PID`` names this process, and the variables are then
    removed, so a child process never mistakes them for its own.
    """
    env = os.environ if environ is None else environ
    count, pid = env.get("LISTEN_FDS", ""), env.get("LISTEN_PID", "")
    if not count:
        return []
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        _check_listening(sock, f"LISTEN_FDS socket {fd}")
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def reuse_port_balances() -> bool:
    """Whether ``SO_REUSEPORT`` spreads connections over sockets (Linux), rather than handing
    them all to one of them (what BSD and macOS do without their own extensions)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class Listener:
    """One listening address in the supervisor, and the socket(s) its workers accept on.

    With ``reuse_port`` there is one ``SO_REUSEPORT`` socket per worker slot; the supervisor
    keeps each open while any worker may use it, so a restarted or reloaded worker in the same
    slot takes over its accept queue and no queued connection is lost. Otherwise all workers
    share one socket.

    A slot's socket is created bound but not listening: the kernel starts handing it
    connections only once its first worker serves (the server listens when it starts), so none
    wait on a worker that is still loading, or are reset when that worker is stopped before it
    ever served. The first socket listens at once, so that connections arriving while the
    workers start are queued rather than refused.
    """

    def __init__(
        self,
        spec: BindSpec,
        backlog: int,
        reuse_port: bool,
        sock: socket.socket | None = None,
    ) -> None:
        self.spec = spec
        self.backlog = backlog
        self.reuse_port = reuse_port and spec.kind == "tcp" and sock is None
        self.sockets: list[socket.socket] = [] if sock is None else [sock]
        self.owned = sock is None
        self.owned_path = spec.path if spec.kind == "unix" and sock is None else ""

    @property
    def key(self) -> str:
        return str(self.spec)

    def open(self) -> None:
        if self.sockets:
            return
        if self.reuse_port and self.spec.port:
            # A plain bind first: SO_REUSEPORT would otherwise let us join (and split traffic
            # with) another server already listening on this port, instead of failing.
            family = socket.AF_INET6 if ":" in self.spec.host else socket.AF_INET
            probe = socket.socket(family, socket.SOCK_STREAM)
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((self.spec.host, self.spec.port))
            except OSError as exc:
                raise ListenError(self.spec, exc) from exc
            finally:
                probe.close()
        self.sockets.append(open_listener(self.spec, self.backlog, reuse_port=self.reuse_port))

    def socket_for(self, slot: int) -> socket.socket:
        if not self.reuse_port:
            return self.sockets[0]
        while len(self.sockets) <= slot:
            port = self.sockets[0].getsockname()[1]
            spec = BindSpec("tcp", host=self.spec.host, port=port)
            self.sockets.append(open_listener(spec, self.backlog, reuse_port=True, listen=False))
        return self.sockets[slot]

    def trim(self, slots: int) -> None:
        """Close per-slot sockets beyond ``slots`` (at least one always stays)."""
        while self.reuse_port and len(self.sockets) > max(1, slots):
            self._release(self.sockets.pop())

    def url(self, scheme: str) -> str:
        return describe(self.sockets[0], scheme)

    def close(self) -> None:
        for sock in self.sockets:
            self._release(sock)
        self.sockets.clear()
        if self.owned_path:
            with contextlib.suppress(OSError):
                os.unlink(self.owned_path)

    def _release(self, sock: socket.socket) -> None:
        # A worker may still hold this socket and will close it once it has taken the
        # connections in its queue; new ones must stop arriving first (and a socket that was
        # passed in belongs to someone who may serve it again, so it is left as it is).
        if self.owned:
            refuse_new_connections(sock)
        sock.close()

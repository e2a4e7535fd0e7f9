"""Starting, probing and always stopping server processes.

Servers run in their own session (process group) so that one ``killpg`` also reaches the
workers they fork (nginx, gunicorn, granian). Every wait has a deadline, so a server that
never comes up or never goes down cannot hang the run.
"""

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.harness.specs import HOST

T = TypeVar("T")

SERVER_CORE = "0"
CLIENT_CORE = "1"


class ServerStartError(RuntimeError):
    """The server exited, or did not accept connections, before the deadline."""


def free_port() -> int:
    """Ask the kernel for an unused loopback port (tiny race window; fine for a bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(argv: list[str], core: str | None) -> list[str]:
    """Prefix ``taskset`` so server and load generator never share a core (None: unpinned)."""
    return ["taskset", "-c", core, *argv] if core is not None else list(argv)


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_listening(server: RunningServer, timeout: float) -> None:
    """Poll the port; fail early if the process dies instead of waiting out the clock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(f"exited with code {server.process.returncode}")
        if _can_connect(server.port):
            return
        time.sleep(0.1)
    raise ServerStartError(f"not listening after {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure forked workers went with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return


@contextlib.contextmanager
def running_server(
    argv: list[str],
    port: int,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    start_timeout: float = 20.0,
    core: str | None = SERVER_CORE,
) -> Iterator[RunningServer]:
    """Start ``argv`` pinned to ``core``; stop it on exit, whatever happened."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            pinned(argv, core),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(process, port, log_path)
    try:
        wait_until_listening(server, start_timeout)
        yield server
    finally:
        stop(process)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """SIGTERM (e.g. from `timeout`) takes the Ctrl-C path, so servers are always stopped."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def serve_and_run(
    argv: list[str],
    port: int,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    work: Callable[[RunningServer], Coroutine[Any, Any, T]],
    timeout: float,
    core: str | None = SERVER_CORE,
) -> tuple[T | None, int]:
    """Start a server, run ``work`` against it on a fresh event loop, and stop the server.

    Returns ``(result, 0)``, or ``(None, exit status)`` after saying on stderr why there is
    no result: the server did not start, ``work`` outlived ``timeout``, or an interrupt.
    """
    try:
        with running_server(argv, port, cwd, env, log_path, core=core) as server:
            return asyncio.run(asyncio.wait_for(work(server), timeout)), 0
    except ServerStartError as exc:
        print(f"server failed to start: {exc}\n{_tail(log_path)}", file=sys.stderr)
        return None, 1
    except asyncio.TimeoutError:
        print(f"gave up after {timeout:.0f}s", file=sys.stderr)
        return None, 1
    except KeyboardInterrupt:
        print("interrupted; server stopped", file=sys.stderr)
        return None, 130


def _tail(path: Path, lines: int = 10) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    """Read one response framed by Content-Length (every benchmarked server sends it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock, deadline)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        body += _recv(sock, deadline)
    return head + b"\r\n\r\n" + body[:length]


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("connection closed before a full response")
    return chunk


def _unverified_tls() -> ssl.SSLContext:
    """A client context that accepts any certificate: the benchmark's is self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _connect(port: int, timeout: float, tls: bool) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    if not tls:
        return sock
    try:
        return _unverified_tls().wrap_socket(sock)
    except BaseException:
        sock.close()
        raise


def check_response(
    port: int,
    path: str,
    body_ok: Callable[[bytes], bool],
    timeout: float = 5.0,
    *,
    tls: bool = False,
    keepalive: bool = True,
) -> str | None:
    """Send two keep-alive requests on one connection; return a problem, or None if fine.

    Two requests, because a server that closes after the first would silently turn the
    benchmark into a connection-setup benchmark; a server known to close (``keepalive``
    False) gets one. ``body_ok`` judges each response body.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + timeout
    try:
        with _connect(port, timeout, tls) as sock:
            for attempt in (1, 2) if keepalive else (1,):
                sock.sendall(request)
                response = _read_response(sock, deadline)
                problem = _response_problem(response, body_ok)
                if problem:
                    return f"request {attempt}: {problem}"
    except (OSError, ValueError) as exc:
        return f"check failed: {exc}"
    return None


def _response_problem(response: bytes, body_ok: Callable[[bytes], bool]) -> str | None:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in f"{status_line} ":
        return f"unexpected status line {status_line!r}"
    if not body_ok(body):
        return f"unexpected body ({len(body)} bytes) {body[:40]!r}"
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, read from /proc (Linux only)."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return list(dict.fromkeys(found))


def rss_kib(pid: int) -> int | None:
    """Resident set size from /proc/PID/status, in KiB; None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None

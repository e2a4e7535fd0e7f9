"""Helpers for the static file tests: a served tree, raw requests, curl."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bastion.engine import Server, ServerConfig
from bastion.static import StaticFiles
from tests.serving import RunningServer, read_response, serve


@contextmanager
def serve_dir(directory: Path | str, **options: Any) -> Iterator[RunningServer]:
    with serve(StaticFiles(directory, **options)) as server:
        yield server


def get(
    server: RunningServer,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, dict[str, str], bytes]:
    """One request over http.client; the status, lower-cased headers and body."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def raw(
    server: RunningServer, target: str | bytes, extra: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send a request line exactly as given (no client-side normalising of the path)."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    sock = socket.create_connection((server.host, server.port), timeout=10)
    try:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")
        return read_response(sock)
    finally:
        sock.close()


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout, check=False)


def write(path: Path, data: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@contextmanager
def serve_on(
    handler: Any,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    config: ServerConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[RunningServer]:
    """Like ``tests.serving.serve``, on a loop of our choosing and optionally with TLS."""
    loop = loop_factory()
    server = Server(handler, config, binds=("127.0.0.1:0",), ssl_context=ssl_context)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="static-test-server", daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield RunningServer(server, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(timeout=2.0), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (needs the openssl command)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"serving on (http://[^/ ]+)/")


class ServeProcess:
    def __init__(self, popen: subprocess.Popen[str], url: str, lines: list[str]) -> None:
        self.popen = popen
        self.url = url
        self.lines = lines

    def stop(self, timeout: float = 10) -> int:
        """Ctrl-C, then the exit status; the rest of stderr lands in ``lines``."""
        self.popen.send_signal(signal.SIGINT)
        code = self.popen.wait(timeout)
        assert self.popen.stderr is not None
        self.lines.extend(self.popen.stderr.read().splitlines(keepends=True))
        return code

    def read_line(self, timeout: float = 5) -> str:
        assert self.popen.stderr is not None
        ready, _, _ = select.select([self.popen.stderr], [], [], timeout)
        assert ready, "no output from the server"
        line = self.popen.stderr.readline()
        self.lines.append(line)
        return line

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


@contextmanager
def serve_process(
    *args: str, prefix: Sequence[str] = (), command: Sequence[str] = ("-m", "bastion.static")
) -> Iterator[ServeProcess]:
    """``python -m bastion.static ARGS`` until it prints the URL it serves on."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [*prefix, sys.executable, *command, *args]
    popen = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert popen.stderr is not None
        url = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = popen.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = _URL.search(line)
            if found:
                url = found.group(1)
                break
        if not url:
            popen.kill()
            raise AssertionError("server did not start: " + "".join(lines) + popen.stderr.read())
        yield ServeProcess(popen, url, lines)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(5)

"""Stopping, scaling down and reloading never reset a connection the kernel accepted.

A client that connects while the server drains is either answered or refused at connect time
(ECONNREFUSED); it is never accepted, sent its request and then reset, which would leave it
unable to tell whether the request ran.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bastion.engine import Server, ServerConfig, new_event_loop
from tests.ops.apps import app
from tests.ops.running import supervisor
from tests.serving import LoadThreads, read_response

APP = "tests.ops.apps:app"
REQUEST = b"GET / HTTP/1.1\r\nHost: drain.test\r\n\r\n"
BODY = b"Hello, world!"


def answered(sock: socket.socket) -> tuple[bool, dict[str, str]]:
    """Whether the next response on ``sock`` is the application's 200, and its headers."""
    status, headers, body = read_response(sock, timeout=10)
    return status == 200 and body == BODY, headers


class Dialer(LoadThreads):
    """Threads that each open connection after connection, sending a request on each as soon
    as it is connected, and sort what happens: answered, refused at connect, or a failure."""

    def __init__(self, port: int, threads: int = 6) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.phase = "starting"  # named in each failure, to tell which step caused it
        self._lock = threading.Lock()
        super().__init__(threads)

    def count(self, what: str) -> int:
        with self._lock:
            return self.counts[what]

    def wait_for(self, what: str, more: int, timeout: float = 15.0) -> None:
        target = self.count(what) + more
        deadline = time.monotonic() + timeout
        while self.count(what) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count(what) >= target, f"{more} more {what} not seen: {self.counts}"

    def _record(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1
            if what not in ("answered", "refused"):
                self.failures.append(f"{self.phase}: {what}")

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(10)
            try:
                sock.connect(("127.0.0.1", self.port))
            except ConnectionRefusedError:
                sock.close()
                self._record("refused")
                time.sleep(0.002)
                continue
            except OSError as exc:
                sock.close()
                self._record(f"connect failed: {exc!r}")
                continue
            try:
                sock.sendall(REQUEST)
                ok, _ = answered(sock)
                self._record("answered" if ok else "a wrong answer")
            except (OSError, AssertionError) as exc:  # a reset, an empty reply, or none in time
                self._record(f"after the request was sent: {exc!r}")
            finally:
                sock.close()


@pytest.mark.parametrize("sockets", ["--reuse-port", "--no-reuse-port"])
def test_a_stop_answers_or_refuses_every_new_connection(sockets: str) -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2", sockets) as proc:
        proc.wait_workers(2)
        with Dialer(proc.port) as dialer:
            dialer.wait_for("answered", 200)
            dialer.phase = "SIGTERM"
            proc.signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.text
            # Everything is closed now: whatever comes next must be refused at connect.
            dialer.wait_for("refused", 20)
        assert dialer.failures == [], dialer.counts


def test_scaling_down_and_reloading_keep_answering_every_connection() -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2", "--reuse-port") as proc:
        proc.wait_workers(2)
        with Dialer(proc.port) as dialer:
            dialer.wait_for("answered", 100)
            dialer.phase = "SIGTTIN"
            proc.signal(signal.SIGTTIN)
            proc.wait_workers(3)
            dialer.wait_for("answered", 100)
            # The third worker's own listening socket goes with it.
            dialer.phase = "SIGTTOU"
            proc.signal(signal.SIGTTOU)
            proc.wait_workers(2)
            dialer.wait_for("answered", 100)
            mark = proc.mark()
            dialer.phase = "SIGHUP"
            proc.signal(signal.SIGHUP)
            proc.wait_for("reload complete", after=mark)
            proc.wait_workers(2)
            dialer.wait_for("answered", 100)
            assert dialer.count("refused") == 0, dialer.counts
            dialer.phase = "SIGTERM"
            proc.signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.text
            dialer.wait_for("refused", 20)
        assert dialer.failures == [], dialer.counts


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_connections_waiting_in_the_accept_queue_are_served_by_the_drain(
    family: str, tmp_path: Path
) -> None:
    # The loop never runs between the connects and the drain, so every connection is still
    # in the kernel's accept queue when the server stops listening.
    path = str(tmp_path / "drain.sock")
    bind = f"unix:{path}" if family == "unix" else "127.0.0.1:0"
    server = Server(app, ServerConfig(graceful_timeout=10), binds=[bind])
    port = 0

    def dial() -> socket.socket:
        if family == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(path)
            return sock
        return socket.create_connection(("127.0.0.1", port), timeout=10)

    async def scenario() -> list[socket.socket]:
        nonlocal port
        await server.start()
        port = server.port if family == "tcp" else 0
        clients = [dial() for _ in range(8)]
        for client in clients:
            client.sendall(REQUEST)
        await asyncio.wait_for(server.shutdown(idle_grace=5.0), 30)
        return clients

    loop = new_event_loop()
    try:
        clients = loop.run_until_complete(scenario())
    finally:
        loop.close()
    try:
        for client in clients:
            ok, headers = answered(client)
            assert ok and headers.get("connection") == "close", headers
            assert client.recv(1) == b""  # and then closed, cleanly
    finally:
        for client in clients:
            client.close()
    with pytest.raises(OSError) as refused:
        dial().close()
    assert refused.value.errno in (errno.ECONNREFUSED, errno.ENOENT)

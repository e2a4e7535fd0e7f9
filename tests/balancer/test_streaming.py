"""1 GiB each way through a real `bastion balance`: the balancer's memory stays flat."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.cli.running import bastion

GIB = 1 << 30
BLOCK = b"\0" * (1 << 20)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker_of(supervisor: int) -> int:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


class Sampler:
    """Samples a process's resident memory every 50 ms while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def upload(port: int, size: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"PUT /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(BLOCK)):
            sock.sendall(BLOCK)
        head, body = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        while len(body) < len(str(size)):
            body += sock.recv(100)
        return body


def download(port: int, size: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /source/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        head, body = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"content-length: %d" % size in head.lower()
        received = len(body)
        buffer = bytearray(1 << 20)
        while received < size:
            count = sock.recv_into(buffer)
            assert count, received
            received += count
        return received


def test_a_gibibyte_each_way_keeps_the_balancer_flat() -> None:
    limit = ["--max-body-size", str(2 * GIB)]
    with bastion("run", "tests.balancer.bulk:app", "--bind", "127.0.0.1:0", *limit) as upstream:
        args = ["--upstream", f"127.0.0.1:{upstream.port}", "--bind", "127.0.0.1:0", *limit]
        with bastion("balance", *args) as lb:
            worker = worker_of(lb.popen.pid)
            assert download(lb.port, 8 << 20) == 8 << 20  # warm up: pools, buffers, imports
            baseline = rss(worker)
            started = time.monotonic()
            with Sampler(worker) as sampler:
                assert upload(lb.port, GIB) == str(GIB).encode()
                assert download(lb.port, GIB) == GIB
            # Two gibibytes went through; the balancer held a few buffers' worth at a time.
            assert sampler.peak - baseline < 48 << 20, (baseline, sampler.peak)
            assert time.monotonic() - started < 120

"""Large files: bounded memory, zero-copy and copying paths, slow and stalled readers."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import http.client
import os
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bastion.engine import ServerConfig, new_event_loop, sendfile
from bastion.static import StaticFiles
from tests.serving import read_response
from tests.static.support import curl, open_fds, self_signed, serve_on, serve_process

GIB = 1024**3


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def test_one_gib_sparse_file_with_bounded_memory(tmp_path: Path) -> None:
    sparse(tmp_path / "huge.img", GIB)
    with serve_process(str(tmp_path), "--port", "0", "--quiet") as proc:
        assert curl("-o", "/dev/null", f"{proc.url}/").returncode == 0  # warm up: imports done
        before = proc.peak_rss_kib()
        result = curl(
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            f"{proc.url}/huge.img",
            timeout=120,
        )
        assert result.stdout == f"200 {GIB}".encode()
        # a range from deep inside, and a HEAD, of the same file
        result = curl(
            "-r",
            f"{GIB - 10}-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            f"{proc.url}/huge.img",
        )
        assert result.stdout == b"206 10"
        growth_mib = (proc.peak_rss_kib() - before) / 1024
        assert proc.stop() == 0
    assert growth_mib < 32, f"server peak RSS grew by {growth_mib:.1f} MiB"


def _peak_rss_during(action: threading.Thread) -> int:
    """Sample this process's RSS while ``action`` runs; the peak growth in KiB."""

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    base = peak = rss()
    action.start()
    while action.is_alive():
        peak = max(peak, rss())
        time.sleep(0.005)
    action.join()
    return peak - base


def test_tls_uses_the_copying_path_with_bounded_memory(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    context = self_signed(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "random.bin").write_bytes(data)
    sparse(tmp_path / "sparse.img", 256 * 1024 * 1024)
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    with serve_on(StaticFiles(tmp_path), new_event_loop, ssl_context=context) as server:
        conn = http.client.HTTPSConnection(
            server.host, server.port, timeout=30, context=client_context
        )
        conn.request("GET", "/random.bin")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == data
        conn.request("GET", "/random.bin", headers={"Range": "bytes=100-2999999,-7"})
        response = conn.getresponse()
        assert response.status == 206
        body = response.read()
        assert data[100:3000000] in body and data[-7:] in body
        conn.close()
        result: list[bytes] = []
        download = threading.Thread(
            target=lambda: result.append(
                curl(
                    "-k",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    f"https://{server.host}:{server.port}/sparse.img",
                    timeout=120,
                ).stdout
            )
        )
        growth_kib = _peak_rss_during(download)
        assert result == [str(256 * 1024 * 1024).encode()]
    assert growth_kib < 48 * 1024, f"RSS grew by {growth_kib / 1024:.1f} MiB"


def test_standard_asyncio_loop(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    (tmp_path / "f.bin").write_bytes(data)
    with serve_on(StaticFiles(tmp_path), asyncio.new_event_loop) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        for _ in range(2):
            conn.request("GET", "/f.bin")
            response = conn.getresponse()
            assert response.read() == data
        conn.close()


def test_slow_reader_gets_every_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose socket buffer fills: sendfile meets EAGAIN and waits for writability."""
    waits: list[int] = []
    real_wait = sendfile._wait_writable

    async def counting_wait(conn: Any, fd: int) -> None:
        waits.append(fd)
        await real_wait(conn, fd)

    monkeypatch.setattr(sendfile, "_wait_writable", counting_wait)
    data = os.urandom(24 * 1024 * 1024)
    (tmp_path / "f.bin").write_bytes(data)
    fds_before = open_fds()
    with serve_on(StaticFiles(tmp_path), new_event_loop) as server:
        sock = socket.create_connection((server.host, server.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.sendall(
            b"GET /f.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /f.bin HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        for _ in range(2):
            digest = hashlib.sha256()
            status, _headers, _body = read_response_slowly(sock, digest)
            assert status == 200
            assert digest.digest() == hashlib.sha256(data).digest()
        sock.close()
    assert waits, "the socket never filled up"
    assert open_fds() <= fds_before + 1  # no duplicate descriptor or file left open


def read_response_slowly(
    sock: socket.socket, digest: hashlib._Hash
) -> tuple[int, dict[str, str], None]:
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    remaining = int(headers["content-length"])
    pause_every = 0
    while remaining:
        chunk = sock.recv(min(remaining, 256 * 1024))
        assert chunk
        digest.update(chunk)
        remaining -= len(chunk)
        pause_every += 1
        if pause_every % 16 == 0:
            time.sleep(0.002)
    return int(lines[0].split()[1]), headers, None


def test_stalled_reader_is_cut_off_by_the_write_timeout(tmp_path: Path) -> None:
    sparse(tmp_path / "big.img", 512 * 1024 * 1024)
    (tmp_path / "ok.txt").write_text("ok")
    fds_before = open_fds()
    config = ServerConfig(write_timeout=0.5)
    with serve_on(StaticFiles(tmp_path), new_event_loop, config=config) as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.sendall(b"GET /big.img HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        during = open_fds()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not server.stats.errors_by_kind.get("timeout-write"):
            time.sleep(0.1)
        assert server.stats.errors_by_kind.get("timeout-write") == 1
        # the connection really is closed: reading on ends in EOF or a reset, well short of 512 MiB
        total = 0
        try:
            while chunk := sock.recv(1 << 20):
                total += len(chunk)
        except ConnectionResetError:
            pass
        assert total < 64 * 1024 * 1024
        sock.close()
        time.sleep(0.1)
        assert open_fds() < during  # socket, its duplicate and the file are all closed
        other = socket.create_connection((server.host, server.port), timeout=5)
        other.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(other)[2] == b"ok"
        other.close()
    assert open_fds() <= fds_before + 1


def test_file_system_without_sendfile_falls_back_to_copying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> int:
        raise OSError(errno.EINVAL, "sendfile not supported here")

    monkeypatch.setattr(os, "sendfile", unsupported)
    data = os.urandom(3 * 1024 * 1024 + 1)
    (tmp_path / "f.bin").write_bytes(data)
    with serve_on(StaticFiles(tmp_path), new_event_loop) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        conn.request("GET", "/f.bin")
        assert conn.getresponse().read() == data
        conn.request("GET", "/f.bin", headers={"Range": "bytes=1000-2000000"})
        assert conn.getresponse().read() == data[1000:2000001]
        conn.close()

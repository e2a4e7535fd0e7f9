"""wsgi.input: file semantics, chunked bodies, 100-continue, timeouts, large uploads."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from bastion.engine import ServerConfig
from bastion.http import Limits
from bastion.wsgi import WSGIHandler
from tests.serving import RunningServer, serve
from tests.wsgi.apps import Environ, StartResponse, raw_request, repeat, split_response


def reader(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Reads the body the way the query string says, and reports what it got."""
    stream = environ["wsgi.input"]
    how = environ["QUERY_STRING"]
    result: Any
    if how == "all":
        result = stream.read().decode()
    elif how.startswith("sized-"):
        size = int(how[6:])
        result = []
        while piece := stream.read(size):
            result.append(piece.decode())
    elif how == "lines":
        result = [line.decode() for line in stream]
    elif how == "readline-limit":
        result = [stream.readline(4).decode(), stream.readline().decode(), stream.readline(100)]
        result[2] = result[2].decode()
    elif how == "readlines":
        result = [line.decode() for line in stream.readlines()]
    elif how == "readlines-hint":
        result = [line.decode() for line in stream.readlines(5)]
    elif how == "mixed":
        result = [
            stream.read(3).decode(),
            stream.readline().decode(),
            stream.read(0).decode(),
            stream.read(4).decode(),
            stream.read().decode(),
            stream.read(10).decode(),
            stream.readline().decode(),
        ]
    elif how == "digest":
        digest = hashlib.sha256()
        total = 0
        while chunk := stream.read(65536):
            digest.update(chunk)
            total += len(chunk)
        result = {"size": total, "sha256": digest.hexdigest()}
    elif how == "past-end":
        first = stream.read(10**9)
        result = [len(first), stream.read(), stream.readline().decode(), list(stream)]
        result[1] = result[1].decode()
    else:
        result = None
    body = json.dumps({"result": result, "length": environ.get("CONTENT_LENGTH")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(WSGIHandler(reader)) as running:
        yield running


def _post(server: RunningServer, how: str, body: Any, **kwargs: Any) -> Any:
    response = httpx.post(f"{server.url}/?{how}", content=body, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


TEXT = b"first line\nsecond\n\nlast without newline"


def test_read_all(server: RunningServer) -> None:
    answer = _post(server, "all", TEXT)
    assert answer == {"result": TEXT.decode(), "length": str(len(TEXT))}


def test_sized_reads_return_full_sizes_until_the_end(server: RunningServer) -> None:
    answer = _post(server, "sized-7", TEXT)
    pieces = answer["result"]
    assert "".join(pieces) == TEXT.decode()
    assert all(len(p) == 7 for p in pieces[:-1])


def test_iteration_and_readlines(server: RunningServer) -> None:
    lines = ["first line\n", "second\n", "\n", "last without newline"]
    assert _post(server, "lines", TEXT)["result"] == lines
    assert _post(server, "readlines", TEXT)["result"] == lines
    assert _post(server, "readlines-hint", TEXT)["result"] == lines[:1]
    assert _post(server, "readline-limit", TEXT)["result"] == ["firs", "t line\n", "second\n"]


def test_mixed_reads(server: RunningServer) -> None:
    answer = _post(server, "mixed", TEXT)
    assert answer["result"] == [
        "fir",
        "st line\n",
        "",
        "seco",
        "nd\n\nlast without newline",
        "",
        "",
    ]


def test_reads_stop_at_the_end_of_the_body(server: RunningServer) -> None:
    # A second request follows on the same connection: reading past the body would eat it.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(
            b"POST /?past-end HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /?all HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnext"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert json.loads(first.partition(b"\r\n\r\n")[2])["result"] == [5, "", "", []]
    assert json.loads(second.partition(b"\r\n\r\n")[2])["result"] == "next"


def test_chunked_request_body(server: RunningServer) -> None:
    answer = _post(server, "lines", iter([b"fir", b"st line\nsec", b"ond\n", b"", b"end"]))
    assert answer["length"] is None  # no CONTENT_LENGTH: wsgi.input_terminated says read to EOF
    assert answer["result"] == ["first line\n", "second\n", "end"]
    raw = (
        b"POST /?all HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = split_response(raw_request(server.port, raw))
    assert status == 200
    assert json.loads(body)["result"] == "hello world"


def test_large_chunked_upload_is_streamed(server: RunningServer) -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    expected = hashlib.sha256(block * 80).hexdigest()
    answer = _post(server, "digest", repeat(block, 80))
    assert answer["result"] == {"size": len(block) * 80, "sha256": expected}


def test_expect_100_continue(server: RunningServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(
            b"POST /?all HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        sock.sendall(b"hello")
        while chunk := sock.recv(65536):
            rest += chunk
    finally:
        sock.close()
    status, _, body = split_response(rest)
    assert status == 200
    assert json.loads(body)["result"] == "hello"


def test_stalled_body_times_out() -> None:
    with serve(WSGIHandler(reader), ServerConfig(body_timeout=0.5)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(b"POST /?all HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            sock.close()
        assert data.startswith(b"HTTP/1.1 408")
        assert requests.get(server.url, timeout=5).status_code == 200


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_100_mib_upload_with_bounded_memory() -> None:
    """The peak resident size of this process (server and client) grows far less than the body.

    The kernel's high-water mark is reset first, so the peak measured is the upload's own.
    """
    size = 100 * 1024 * 1024
    block = b"\x5a" * (256 * 1024)
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    config = ServerConfig(limits=Limits(max_body_bytes=size))
    with serve(WSGIHandler(reader), config) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        # warm up the connection, threads and code paths before measuring
        conn.request("POST", "/?digest", body=b"warm up")
        assert conn.getresponse().read()
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset VmHWM to the current resident size
        except OSError:
            pytest.skip("cannot reset the peak resident size here")
        before = _rss_kib("VmRSS")
        conn.request(
            "POST",
            "/?digest",
            body=repeat(block, size // len(block)),
            headers={"Content-Length": str(size)},
        )
        answer = json.loads(conn.getresponse().read())
        conn.close()
        growth_mib = (_rss_kib("VmHWM") - before) / 1024
    assert answer["result"] == {"size": size, "sha256": expected.hexdigest()}
    assert growth_mib < 24, f"peak resident size grew {growth_mib:.1f} MiB for a 100 MiB upload"


def test_malformed_chunked_body_while_reading_is_400(server: RunningServer) -> None:
    raw = (
        b"POST /?all HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nZZ\r\n"  # not a chunk size
    )
    status, headers, _ = split_response(raw_request(server.port, raw))
    assert status == 400
    assert headers["connection"] == "close"
    assert requests.get(server.url, timeout=5).status_code == 200


def test_chunked_body_over_the_size_limit_is_413() -> None:
    config = ServerConfig(limits=Limits(max_body_bytes=1000))
    with serve(WSGIHandler(reader), config) as server:
        response = httpx.post(f"{server.url}/?digest", content=repeat(b"x" * 600, 5), timeout=10)
        assert response.status_code == 413

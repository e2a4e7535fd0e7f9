"""start_response, write(), the response iterable, framing errors and close(), over real sockets."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import requests

from bastion.engine import ServerConfig
from bastion.wsgi import FileWrapper, WSGIHandler
from tests.serving import RunningServer, read_response, serve
from tests.wsgi.apps import Environ, StartResponse, raw_request, split_response

TEXT = [("Content-Type", "text/plain")]


class Closing:
    """A response iterable that records whether close() was called."""

    def __init__(self, chunks: Iterator[bytes], closed: threading.Event) -> None:
        self._chunks = chunks
        self._closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._closed.set()


closed_events: dict[str, threading.Event] = {}
stream_gate = threading.Event()
reading = threading.Event()
FILE_DIR: list[Path] = []


def _closed(name: str) -> threading.Event:
    return closed_events.setdefault(name, threading.Event())


def app(environ: Environ, start_response: StartResponse) -> Any:
    path = environ["PATH_INFO"]
    query = environ["QUERY_STRING"]
    if path == "/hello":
        start_response("200 OK", [*TEXT, ("Content-Length", "5")])
        return [b"hello"]
    if path == "/list":
        start_response("201 Created", TEXT)
        return [b"one ", b"two ", b"three"]
    if path == "/generator":

        def generate() -> Iterator[bytes]:
            yield b""
            yield b"gen"
            yield b"erated"

        start_response("200 OK", TEXT)
        return generate()
    if path == "/generator-with-length":
        start_response("200 OK", [*TEXT, ("Content-Length", "5")])
        return iter([b"", b"hello"])
    if path == "/write":
        write = start_response("200 OK", TEXT)
        write(b"from write, ")
        write(b"")
        return [b"then ", b"returned"]
    if path == "/write-only":
        write = start_response("200 OK", [*TEXT, ("Content-Length", "10")])
        write(b"0123456789")
        return []
    if path == "/error-before-start":
        raise RuntimeError("boom before start_response")
    if path == "/error-after-start":
        start_response("200 OK", TEXT)
        raise RuntimeError("boom after start_response")
    if path == "/error-in-body":

        def broken() -> Iterator[bytes]:
            yield b"first part"
            raise RuntimeError("boom in the body")

        start_response("200 OK", TEXT)
        return Closing(broken(), _closed("error-in-body"))
    if path == "/error-before-first-chunk":

        def late() -> Iterator[bytes]:
            yield b""
            raise RuntimeError("boom before any byte")

        start_response("200 OK", TEXT)
        return Closing(late(), _closed("error-before-first-chunk"))
    if path == "/exc-info-before-head":
        start_response("200 OK", TEXT)
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("500 Internal Server Error", TEXT, sys.exc_info())
        return [b"handled"]
    if path == "/exc-info-after-head":
        write = start_response("200 OK", TEXT)
        write(b"partial")
        try:
            raise ValueError("too late")
        except ValueError:
            try:
                start_response("500 Internal Server Error", TEXT, sys.exc_info())
            except ValueError:
                environ["wsgi.errors"].write("re-raised as PEP 3333 says\n")
                raise
        return [b"unreachable"]
    if path == "/start-twice":
        start_response("200 OK", TEXT)
        try:
            start_response("200 OK", TEXT)
        except RuntimeError:
            start_response("409 Conflict", TEXT, (RuntimeError, RuntimeError("x"), None))
            return [b"second call refused"]
        return [b"second call accepted"]
    if path == "/no-start":
        return [b"never started"]
    if path == "/short":  # declares more than it sends
        start_response("200 OK", [*TEXT, ("Content-Length", "10")])
        if query == "list":
            return [b"12345"]
        return Closing(iter([b"123", b"45"]), _closed("short"))
    if path == "/long":  # sends more than it declares
        start_response("200 OK", [*TEXT, ("Content-Length", "5")])
        if query == "list":
            return [b"1234567890"]
        return Closing(iter([b"12345", b"67890"]), _closed("long"))
    if path == "/hop-by-hop":
        start_response(
            "200 OK",
            [
                *TEXT,
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("X-Kept", "yes"),
            ],
        )
        return [b"fine"]
    if path == "/connection-close":
        start_response("200 OK", [*TEXT, ("Connection", "close")])
        return [b"bye"]
    if path == "/custom-reason":
        start_response("299 Custom Thing", TEXT)
        return [b"custom"]
    if path == "/bad-status":
        start_response("OK", TEXT)
        return [b"x"]
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"x"]
    if path == "/query-header":
        start_response("200 OK", [*TEXT, ("X-Query", query)])
        return [b"q"]
    if path == "/str-body":
        start_response("200 OK", TEXT)
        return ["text is not bytes"]
    if path == "/head-length":
        start_response("200 OK", [*TEXT, ("Content-Length", "1000")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"x" * 1000]
    if path == "/streaming":

        def slow() -> Iterator[bytes]:
            yield b"first\n"
            # The client answers once it has the first line: proof nothing was buffered.
            if not stream_gate.wait(10):
                yield b"timed out\n"
                return
            yield b"second\n"

        start_response("200 OK", TEXT)
        return Closing(slow(), _closed("streaming"))
    if path == "/endless":

        def endless() -> Iterator[bytes]:
            block = b"z" * 65536
            while True:
                yield block

        start_response("200 OK", TEXT)
        return Closing(endless(), _closed("endless"))
    if path == "/file":
        name = FILE_DIR[0] / "data.bin"
        handle = name.open("rb")
        if query == "skip":
            handle.read(10)
        headers = list(TEXT)
        if query == "length":
            headers.append(("Content-Length", "100"))
        start_response("200 OK", headers)
        wrapper = environ["wsgi.file_wrapper"](handle, 4096)
        assert isinstance(wrapper, FileWrapper)
        return wrapper
    if path == "/big-file":
        handle = (FILE_DIR[0] / "big.bin").open("rb")
        start_response("200 OK", TEXT)
        return environ["wsgi.file_wrapper"](handle)
    if path == "/filelike":
        from io import BytesIO

        start_response("200 OK", TEXT)
        return environ["wsgi.file_wrapper"](BytesIO(b"not a real file " * 1000), 1000)
    if path == "/echo-lazy":

        def echo() -> Iterator[bytes]:
            stream = environ["wsgi.input"]
            reading.set()
            while chunk := stream.read(1024):
                yield chunk

        start_response("200 OK", TEXT)
        return Closing(echo(), _closed("echo-lazy"))
    if path == "/errors-stream":
        errors = environ["wsgi.errors"]
        errors.write("line one\nline ")
        errors.writelines(["two\n", "unfinished"])
        start_response("200 OK", TEXT)
        return [b"logged"]
    start_response("404 Not Found", TEXT)
    return [b"not found"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("files")
    (directory / "data.bin").write_bytes(bytes(range(256)) * 4)
    (directory / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    FILE_DIR[:] = [directory]
    with serve(WSGIHandler(app)) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _assert_alive(server: RunningServer) -> None:
    assert httpx.get(server.url + "/hello", timeout=5).text == "hello"


def test_fast_path_list_with_length(client: httpx.Client) -> None:
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["content-length"] == "5"
    assert response.headers["content-type"] == "text/plain"


def test_list_without_length_gets_one(client: httpx.Client) -> None:
    response = client.get("/list")
    assert response.status_code == 201
    assert response.text == "one two three"
    assert response.headers["content-length"] == "13"


def test_generator_is_streamed_chunked(client: httpx.Client) -> None:
    response = client.get("/generator")
    assert response.text == "generated"
    assert response.headers["transfer-encoding"] == "chunked"
    response = client.get("/generator-with-length")
    assert response.text == "hello"
    assert response.headers["content-length"] == "5"


def test_http10_client_gets_a_close_delimited_stream(server: RunningServer) -> None:
    data = raw_request(server.port, b"GET /generator HTTP/1.0\r\n\r\n")
    status, headers, body = split_response(data)
    assert (status, body) == (200, b"generated")
    assert "transfer-encoding" not in headers and "content-length" not in headers


def test_write_callable(client: httpx.Client) -> None:
    assert client.get("/write").text == "from write, then returned"
    response = client.get("/write-only")
    assert response.text == "0123456789"
    assert response.headers["content-length"] == "10"


def test_keep_alive_across_response_kinds(server: RunningServer) -> None:
    sock = server.connect()
    try:
        for path in ("/hello", "/list", "/write-only", "/hello"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, _ = read_response(sock)
            assert status in (200, 201), path
            assert headers.get("connection") != "close"
    finally:
        sock.close()


def test_error_before_start_response_is_500(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        response = client.get("/error-before-start")
    assert response.status_code == 500
    assert any(r.exc_info and "boom before" in str(r.exc_info[1]) for r in caplog.records)


def test_error_after_start_response_before_body_is_500(client: httpx.Client) -> None:
    assert client.get("/error-after-start").status_code == 500
    closed_events.pop("error-before-first-chunk", None)
    assert client.get("/error-before-first-chunk").status_code == 500
    assert _closed("error-before-first-chunk").wait(5)


def test_error_after_body_started_closes_connection(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    closed_events.pop("error-in-body", None)
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        data = raw_request(server.port, b"GET /error-in-body HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(data)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert b"first part" in body
    assert not body.endswith(b"0\r\n\r\n")  # never a properly terminated body
    assert _closed("error-in-body").wait(5)
    assert any("boom in the body" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    _assert_alive(server)


def test_exc_info_replaces_the_status_before_the_head_is_sent(client: httpx.Client) -> None:
    response = client.get("/exc-info-before-head")
    assert response.status_code == 500
    assert response.text == "handled"


def test_exc_info_after_the_head_is_sent_reraises(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        data = raw_request(server.port, b"GET /exc-info-after-head HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = split_response(data)
    assert status == 200
    assert b"partial" in body and not body.endswith(b"0\r\n\r\n")
    messages = [r.getMessage() for r in caplog.records]
    assert "re-raised as PEP 3333 says" in messages


def test_second_start_response_without_exc_info_is_an_error(client: httpx.Client) -> None:
    response = client.get("/start-twice")
    assert (response.status_code, response.text) == (409, "second call refused")


def test_returning_without_start_response_is_500(client: httpx.Client) -> None:
    assert client.get("/no-start").status_code == 500


@pytest.mark.parametrize("query", ["list", "iterable"])
def test_body_shorter_than_content_length_closes_connection(
    server: RunningServer, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        data = raw_request(server.port, f"GET /short?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, headers, body = split_response(data)
    assert status == 200
    assert headers["content-length"] == "10"
    assert body == b"12345"  # then the server closed: the client sees a truncated body
    assert any("short of its Content-Length" in r.getMessage() for r in caplog.records)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{server.url}/short?{query}")
    _assert_alive(server)


@pytest.mark.parametrize("query", ["list", "iterable"])
def test_body_longer_than_content_length_closes_connection(
    server: RunningServer, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    closed_events.pop("long", None)
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        data = raw_request(server.port, f"GET /long?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, headers, body = split_response(data)
    assert status == 200
    assert headers["content-length"] == "5"
    assert len(body) <= 5
    assert b"67890" not in body
    assert any("longer than its Content-Length" in r.getMessage() for r in caplog.records)
    if query == "iterable":
        assert _closed("long").wait(5)
    _assert_alive(server)


def test_hop_by_hop_headers_are_dropped(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bastion.error"):
        response = client.get("/hop-by-hop")
    assert response.text == "fine"
    assert response.headers["x-kept"] == "yes"
    assert "keep-alive" not in response.headers
    assert "upgrade" not in response.headers
    assert "transfer-encoding" not in response.headers
    assert response.headers["content-length"] == "4"


def test_connection_close_from_the_app_is_honoured(server: RunningServer) -> None:
    data = raw_request(server.port, b"GET /connection-close HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(data)
    assert (status, body) == (200, b"bye")
    assert headers["connection"] == "close"


def test_status_code_is_kept_and_invalid_ones_refused(client: httpx.Client) -> None:
    assert client.get("/custom-reason").status_code == 299
    assert client.get("/bad-status").status_code == 500
    response = client.get("/bad-header")
    assert response.status_code == 500
    assert "injected" not in response.headers
    assert client.get("/str-body").status_code == 500


def test_header_lists_sent_again_are_answered_the_same(server: RunningServer) -> None:
    # The checked and encoded form of a header list is remembered: a list refused once is
    # refused every time, and one that differs by a value gets its own head.
    with httpx.Client(base_url=server.url) as client:
        for query in ("a", "b", "a", "c" * 300, "a"):
            response = client.get(f"/query-header?{query}")
            assert (response.status_code, response.headers["x-query"]) == (200, query)
            response = client.get("/bad-header")
            assert response.status_code == 500
            assert "injected" not in response.headers
    for _ in range(2):
        data = raw_request(server.port, b"GET /connection-close HTTP/1.1\r\nHost: x\r\n\r\n")
        assert split_response(data)[1]["connection"] == "close"


def test_head_keeps_the_declared_length(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path, length in (("/head-length", "1000"), ("/hello", "5"), ("/file", "1024")):
            conn.request("HEAD", path)
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("content-length") == length
            assert response.read() == b""
        # An endless stream is not iterated for HEAD: the head is the whole answer.
        closed_events.pop("endless", None)
        conn.request("HEAD", "/endless")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b""
        assert _closed("endless").wait(5)
        # The same connection still frames correctly: no stray body bytes were sent.
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello"
    finally:
        conn.close()


def test_streaming_response_is_not_buffered(server: RunningServer) -> None:
    stream_gate.clear()
    closed_events.pop("streaming", None)
    with httpx.stream("GET", server.url + "/streaming", timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines) == "first"
        stream_gate.set()
        assert next(lines) == "second"
    assert _closed("streaming").wait(5)


def test_client_disconnect_mid_response_calls_close(server: RunningServer) -> None:
    closed_events.pop("endless", None)
    sock = server.connect()
    sock.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    received = 0
    while received < 1024 * 1024:
        received += len(sock.recv(65536))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # a reset, mid-body
    assert _closed("endless").wait(10)
    _assert_alive(server)


def test_file_wrapper_sends_a_real_file(client: httpx.Client) -> None:
    expected = bytes(range(256)) * 4
    response = client.get("/file")
    assert response.content == expected
    assert response.headers["content-length"] == "1024"  # from the file's size
    response = client.get("/file?skip")
    assert response.content == expected[10:]  # from the current position
    response = client.get("/file?length")
    assert response.content == expected[:100]  # up to Content-Length (PEP 3333)
    response = client.head("/file")
    assert response.headers["content-length"] == "1024"
    assert response.content == b""


def test_file_wrapper_large_file_in_blocks(server: RunningServer) -> None:
    from bastion.engine.exchange import Exchange

    expected = (FILE_DIR[0] / "big.bin").read_bytes()
    # Without the engine's zero-copy path (TLS, say), the worker reads and streams blocks.
    with mock.patch.object(Exchange, "send_file", None, create=True):
        response = requests.get(server.url + "/big-file", timeout=10)
    assert response.headers["content-length"] == str(len(expected))
    assert response.content == expected


def test_file_wrapper_uses_sendfile_over_plain_tcp(server: RunningServer) -> None:
    from bastion.engine.exchange import Exchange

    if not hasattr(Exchange, "send_file") or not hasattr(os, "sendfile"):
        pytest.skip("no zero-copy file sending here")
    expected = (FILE_DIR[0] / "big.bin").read_bytes()
    with mock.patch("os.sendfile", wraps=os.sendfile) as sendfile:
        response = requests.get(server.url + "/big-file", timeout=10)
    assert response.content == expected
    assert sendfile.called


def test_file_wrapper_over_a_file_like_object(client: httpx.Client) -> None:
    response = client.get("/filelike")
    assert response.content == b"not a real file " * 1000


def test_wsgi_errors_goes_to_the_error_log(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        assert client.get("/errors-stream").text == "logged"
    messages = [r.getMessage() for r in caplog.records if r.name == "bastion.error"]
    assert messages[-3:] == ["line one", "line two", "unfinished"]


def test_pool_full_answers_503() -> None:
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def blocking(environ: Environ, start_response: StartResponse) -> list[bytes]:
        entered.release()
        gate.wait(10)
        start_response("200 OK", TEXT)
        return [b"done"]

    with serve(WSGIHandler(blocking), ServerConfig(threads=1, queue_size=0)) as server:
        results: list[int] = []
        first = threading.Thread(
            target=lambda: results.append(httpx.get(server.url, timeout=10).status_code)
        )
        first.start()
        assert entered.acquire(timeout=5)
        busy = httpx.get(server.url, timeout=5)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        gate.set()
        first.join(10)
        assert results == [200]
        assert httpx.get(server.url, timeout=5).status_code == 200


def test_close_is_called_when_client_leaves_during_the_body(server: RunningServer) -> None:
    # The client sends the head and a part of a declared body, then resets: reading
    # wsgi.input raises, the iterable is closed, and the server keeps serving.
    closed_events.pop("echo-lazy", None)
    reading.clear()
    sock = server.connect()
    sock.sendall(b"POST /echo-lazy HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
    assert reading.wait(5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    assert _closed("echo-lazy").wait(10)
    _assert_alive(server)


def test_custom_reason_phrase_is_sent() -> None:
    from bastion.wsgi import WSGIHandler
    from tests.serving import serve

    def custom(environ: Any, start_response: Any) -> list[bytes]:
        start_response("299 Fine Thanks", [("Content-Length", "2")])
        return [b"ok"]

    with serve(WSGIHandler(custom)) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.reason, response.read()) == (299, "Fine Thanks", b"ok")

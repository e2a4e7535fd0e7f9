"""The refusal table over a real socket: status, close, no handler, and the server lives on.

Every request here is refused by the server; each test checks what a client sees (the status,
that the connection is closed, that no handler ran or completed) and that the next client is
still served. Deadlines (slowloris, stalled bodies) are checked with small timeouts: only that
they fire while the client is still trickling, never how fast.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bastion import App, Request, Response, SyncRequest
from bastion.engine import ServerConfig
from bastion.http import Limits
from tests.app.hello import app as hello_app
from tests.serving import (
    RunningServer,
    exchange_raw,
    read_response,
    read_until_close,
    serve,
    status_of,
)

LIMITS = Limits(max_request_line=200, max_header_count=10, max_header_bytes=1000, max_body_bytes=64)
CONFIG = ServerConfig(limits=LIMITS, header_timeout=5.0, body_timeout=5.0)

# --- a small app whose handlers record that they ran -------------------------------------------

calls: list[str] = []  # "<METHOD> <path>" when a handler starts, "done <path>" when it returns
calls_lock = threading.Lock()
gate = threading.Event()


def record(entry: str) -> None:
    with calls_lock:
        calls.append(entry)


def recorded() -> list[str]:
    with calls_lock:
        return list(calls)


def make_probe() -> App:
    """A fresh app per server: an App remembers the server it was started by."""
    probe = App()

    @probe.route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    async def echo(request: Request) -> Response:
        record(f"{request.method} {request.path}")
        body = await request.body()
        record(f"done {request.path}")
        return Response(b"echo:" + body, headers={"content-type": "application/octet-stream"})

    @probe.post("/no-read")
    async def no_read(request: Request) -> Response:
        record(f"{request.method} {request.path}")
        return Response(b"answered without reading")

    @probe.post("/wait-then-read")
    def wait_then_read(request: SyncRequest) -> Response:
        record(f"{request.method} {request.path}")
        gate.wait(10)
        body = request.body()
        record(f"done {request.path}")
        return Response(b"echo:" + body)

    @probe.get("/slow")
    def slow(request: SyncRequest) -> Response:
        record(f"{request.method} {request.path}")
        time.sleep(0.3)
        record(f"done {request.path}")
        return Response(b"slow done")

    return probe


@pytest.fixture(autouse=True)
def _fresh_records() -> Iterator[None]:
    with calls_lock:
        calls.clear()
    gate.clear()
    yield
    gate.set()  # never leave a pool thread waiting


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(make_probe(), CONFIG) as running:
        yield running


# --- helpers ---------------------------------------------------------------------------------

Parsed = tuple[int, dict[str, str], bytes]


def split_responses(data: bytes) -> list[Parsed]:
    """Cut a byte stream into its Content-Length-framed (or bodiless 1xx) responses."""
    responses: list[Parsed] = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        status = int(lines[0][9:12])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            assert colon, f"malformed header line {line!r}"
            headers[name.strip().lower()] = value.strip()
        length = 0 if status < 200 else int(headers["content-length"])
        assert len(rest) >= length, f"response body cut short: {data[:200]!r}"
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def refused(server: RunningServer, request: bytes | list[bytes]) -> Parsed:
    """Send ``request``; expect exactly one response and a close; return that response."""
    sock = server.connect()
    try:
        for piece in [request] if isinstance(request, bytes) else request:
            sock.sendall(piece)
        data = read_until_close(sock)
    finally:
        sock.close()
    responses = split_responses(data)
    assert len(responses) == 1, f"expected one response, got {data!r}"
    status, headers, body = responses[0]
    assert headers.get("connection") == "close"
    assert body.startswith(str(status).encode())
    return responses[0]


def assert_still_serving(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(b"POST /still-alive HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok")
        status, _, body = read_response(sock)
    finally:
        sock.close()
    assert (status, body) == (200, b"echo:ok")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"condition not met in time; recorded: {recorded()}")


def nothing_received(sock: socket.socket, wait: float = 0.3) -> bool:
    """True if neither a byte nor a close arrives within ``wait``."""
    sock.settimeout(wait)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    return False


def trickle(sock: socket.socket, data: bytes, gap: float, piece: int = 1) -> bool:
    """Send ``data`` ``piece`` bytes at a time, ``gap`` seconds apart; stop early once the
    server answers or closes (returning True). False if all was sent without a word back."""
    for start in range(0, len(data), piece):
        sock.settimeout(5.0)
        try:
            sock.sendall(data[start : start + piece])
        except (BrokenPipeError, ConnectionResetError):
            return True
        time.sleep(gap)
        sock.settimeout(0.0)  # a peek that never waits
        try:
            sock.recv(1, socket.MSG_PEEK)  # data or end of stream
            return True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return True
        finally:
            sock.settimeout(5.0)
    return False


# --- the refusal table -----------------------------------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: t\r\n"
POST = b"POST /target HTTP/1.1\r\nHost: t\r\n"

HEAD_REFUSALS = [
    pytest.param(b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400, id="line-extra-word"),
    pytest.param(b"GET\r\nHost: t\r\n\r\n", 400, id="line-method-only"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="line-space-in-target"),
    pytest.param(b"GET / HTTP/1.1\nHost: t\r\n\r\n", 400, id="line-bare-lf"),
    pytest.param(b"GET / HTTP/1.x\r\nHost: t\r\n\r\n", 400, id="version-1.x"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, id="version-2.0"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 505, id="version-1.2"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505, id="version-0.9"),
    pytest.param(GET + b"Bad Name: v\r\n\r\n", 400, id="name-space"),
    pytest.param(GET + b"Name : v\r\n\r\n", 400, id="name-space-before-colon"),
    pytest.param(GET + b"X: a\r\n b\r\n\r\n", 400, id="obs-fold"),
    pytest.param(GET + b"X: a\rb\r\n\r\n", 400, id="value-bare-cr"),
    pytest.param(GET + b"X: a\x00b\r\n\r\n", 400, id="value-nul"),
    pytest.param(GET + b"X: a\x01b\r\n\r\n", 400, id="value-soh"),
    pytest.param(GET + b"X: a\x7fb\r\n\r\n", 400, id="value-del"),
    pytest.param(
        POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        id="cl-and-te",
    ),
    pytest.param(POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, id="cl-two"),
    pytest.param(POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, id="cl-same"),
    pytest.param(POST + b"Content-Length: -3\r\n\r\nabc", 400, id="cl-negative"),
    pytest.param(POST + b"Content-Length: +3\r\n\r\nabc", 400, id="cl-plus"),
    pytest.param(POST + b"Content-Length: 1_0\r\n\r\n0123456789", 400, id="cl-underscore"),
    pytest.param(POST + b"Content-Length: 0x10\r\n\r\n", 400, id="cl-hex"),
    pytest.param(POST + b"Content-Length:  3 3\r\n\r\nabc", 400, id="cl-two-numbers"),
    pytest.param(POST + b"Transfer-Encoding: gzip\r\n\r\nabc", 400, id="te-gzip"),
    pytest.param(
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, id="te-chunked-twice"
    ),
    pytest.param(
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        501,
        id="te-gzip-chunked",
    ),
    pytest.param(
        b"POST /target HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        id="te-on-http10",
    ),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="host-missing"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="host-two"),
    pytest.param(GET + b"Expect: something-else\r\n\r\n", 417, id="expect-other"),
    pytest.param(b"\x01\x02\x03 / HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="method-garbage"),
    pytest.param(b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501, id="method-connect"),
    pytest.param(b"GET /" + b"a" * 250 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, id="line-too-long"),
    pytest.param(
        GET + b"".join(b"X-%d: v\r\n" % i for i in range(12)) + b"\r\n", 431, id="too-many-headers"
    ),
    pytest.param(GET + b"X-Big: " + b"v" * 1200 + b"\r\n\r\n", 431, id="headers-too-large"),
    pytest.param(POST + b"Content-Length: 65\r\n\r\n", 413, id="content-length-over-limit"),
]


@pytest.mark.parametrize(("request_bytes", "status"), HEAD_REFUSALS)
def test_refused_request(server: RunningServer, request_bytes: bytes, status: int) -> None:
    response_status, _, body = refused(server, request_bytes)
    assert response_status == status
    assert b"echo:" not in body
    assert recorded() == []  # no handler ran
    assert_still_serving(server)


@pytest.mark.parametrize(("request_bytes", "status"), HEAD_REFUSALS)
def test_refused_request_sent_byte_by_byte(request_bytes: bytes, status: int) -> None:
    # A head deadline far beyond the trickle's few seconds, however busy the machine: the
    # refusal checked is the request's own, never a 408.
    patient = dataclasses.replace(CONFIG, header_timeout=60.0)
    with serve(make_probe(), patient) as server:
        sock = server.connect()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # Stop sending once the server has answered: it stops reading at the refusal.
            trickle(sock, request_bytes, gap=0.002)
            data = read_until_close(sock)
        finally:
            sock.close()
    assert status_of(data) == status
    assert recorded() == []


def test_refused_request_against_the_shared_hello_app() -> None:
    with serve(hello_app) as server:
        data = exchange_raw(server.connect(), POST + b"Content-Length: +3\r\n\r\nabc")
        assert status_of(data) == 400
        assert b"abc" not in data.partition(b"\r\n\r\n")[2]
        data = exchange_raw(server.connect(), b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
        assert status_of(data) == 505
        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[::2] == (200, b"Hello, world!")
        sock.close()


def test_refusals_are_logged(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bastion.error")
    refused(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    wait_for(lambda: any(r.name == "bastion.error" for r in caplog.records))
    assert any(r.levelno == logging.INFO and "400" in r.getMessage() for r in caplog.records)


def test_http10_without_host_is_served(server: RunningServer) -> None:
    data = exchange_raw(server.connect(), b"GET /old HTTP/1.0\r\n\r\n")
    (response,) = split_responses(data)
    assert response[0] == 200
    assert response[2] == b"echo:"


# --- refusals in the body: the head was fine, so the handler ran; it must not see a body -----


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", 400, id="chunk-size-zz"),
        pytest.param(b"+3\r\nabc\r\n0\r\n\r\n", 400, id="chunk-size-plus"),
        pytest.param(b"0x3\r\nabc\r\n0\r\n\r\n", 400, id="chunk-size-0x"),
        pytest.param(b"f" * 18 + b"\r\nabc\r\n0\r\n\r\n", 400, id="chunk-size-huge"),
        pytest.param(b"3\r\nabcd\r\n0\r\n\r\n", 400, id="chunk-data-too-long"),
        pytest.param(
            b"40\r\n" + b"a" * 64 + b"\r\n1\r\nb\r\n0\r\n\r\n", 413, id="chunked-over-limit"
        ),
    ],
)
def test_malformed_chunked_body_is_refused(server: RunningServer, body: bytes, status: int) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    response_status, _, response_body = refused(server, [head, body])
    assert response_status == status
    assert b"echo:" not in response_body
    assert "done /upload" not in recorded()  # the handler never got a complete body
    assert_still_serving(server)


def test_malformed_chunk_after_the_handler_answered_gets_no_second_response(
    server: RunningServer,
) -> None:
    # The handler answers at once without reading; the body then turns out to be malformed.
    # One request gets one response: the client must not read a 400 as a second answer.
    sock = server.connect()
    try:
        sock.sendall(b"POST /no-read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        wait_for(lambda: recorded() == ["POST /no-read"])
        sock.sendall(b"zz\r\nabc\r\n0\r\n\r\n")
        data = read_until_close(sock)
    finally:
        sock.close()
    assert [r[0] for r in split_responses(data)] in ([200], [400])


def test_malformed_chunk_in_the_same_packet_as_an_answered_head(server: RunningServer) -> None:
    data = exchange_raw(
        server.connect(),
        b"POST /no-read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    )
    assert len(split_responses(data)) == 1, data


# --- pipelining ------------------------------------------------------------------------------


def test_bad_request_pipelined_after_a_good_one(server: RunningServer) -> None:
    data = exchange_raw(
        server.connect(),
        b"POST /good HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        b"POST /bad HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc"
        b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    responses = split_responses(data)
    assert [r[0] for r in responses] == [200, 400]
    assert responses[0][2] == b"echo:hi"
    assert responses[1][1]["connection"] == "close"
    assert recorded() == ["POST /good", "done /good"]
    assert_still_serving(server)


def test_bad_request_pipelined_after_a_slow_one_waits_for_its_answer(
    server: RunningServer,
) -> None:
    data = exchange_raw(
        server.connect(),
        b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/9.9\r\nHost: t\r\n\r\n",
    )
    responses = split_responses(data)
    assert [r[0] for r in responses] == [200, 505]
    assert responses[0][2] == b"slow done"
    assert recorded() == ["GET /slow", "done /slow"]


def test_bad_request_after_good_ones_on_a_keep_alive_connection(server: RunningServer) -> None:
    sock = server.connect()
    try:
        for i in range(3):
            sock.sendall(b"GET /n%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            assert read_response(sock)[::2] == (200, b"echo:")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n")
        data = read_until_close(sock)
    finally:
        sock.close()
    assert [r[0] for r in split_responses(data)] == [400]
    assert recorded() == [entry for i in range(3) for entry in (f"GET /n{i}", f"done /n{i}")]


# --- limits while the request trickles in ----------------------------------------------------


def test_request_line_trickled_over_the_limit_is_414(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(b"GET /")
        answered = trickle(sock, b"a" * 50 * LIMITS.max_request_line, gap=0.001, piece=20)
        assert answered, "the server let the request line grow without bound"
        data = read_until_close(sock)
    finally:
        sock.close()
    assert status_of(data) == 414
    assert recorded() == []


def test_huge_header_value_trickled_is_431(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(GET + b"X-Huge: ")
        answered = trickle(sock, b"v" * 50 * LIMITS.max_header_bytes, gap=0.001, piece=20)
        assert answered, "the server buffered an endless header value"
        data = read_until_close(sock)
    finally:
        sock.close()
    assert status_of(data) == 431
    assert recorded() == []


# --- deadlines -------------------------------------------------------------------------------


def test_slowloris_head_gets_408_while_still_trickling() -> None:
    with serve(make_probe(), ServerConfig(header_timeout=0.5)) as server:
        sock = server.connect()
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
            # A byte every 0.1 s keeps the connection busy for 6 s, far past the 0.5 s
            # deadline; the head never completes, so only a whole-head deadline can end this.
            answered = trickle(sock, b"X-Slow: " + b"a" * 52, gap=0.1)
            assert answered, "the header deadline was reset by trickled bytes"
            data = read_until_close(sock)
        finally:
            sock.close()
        assert status_of(data) == 408
        assert len(split_responses(data)) == 1
        assert recorded() == []
        assert_still_serving(server)


def test_slowloris_on_a_kept_alive_connection_gets_408() -> None:
    with serve(make_probe(), ServerConfig(header_timeout=0.5, keepalive_timeout=5.0)) as server:
        sock = server.connect()
        try:
            sock.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
            sock.sendall(b"GET /second HTTP/1.1\r\n")
            answered = trickle(sock, b"X-Slow: " + b"a" * 52, gap=0.1)
            assert answered, "the header deadline was reset by trickled bytes"
            data = read_until_close(sock)
        finally:
            sock.close()
        assert status_of(data) == 408
        assert "GET /second" not in recorded()


def test_silent_connection_is_closed_without_a_response() -> None:
    with serve(make_probe(), ServerConfig(header_timeout=0.5)) as server:
        sock = server.connect()
        try:
            assert read_until_close(sock, timeout=10) == b""
        finally:
            sock.close()
        assert recorded() == []
        assert_still_serving(server)


def test_body_that_stops_arriving_gets_408() -> None:
    with serve(make_probe(), ServerConfig(body_timeout=0.5)) as server:
        sock = server.connect()
        try:
            sock.sendall(b"POST /stalled HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            data = read_until_close(sock, timeout=10)
        finally:
            sock.close()
        assert status_of(data) == 408
        assert len(split_responses(data)) == 1
        assert b"echo:" not in data
        assert "done /stalled" not in recorded()
        assert_still_serving(server)


def test_chunked_body_that_stops_arriving_gets_408() -> None:
    with serve(make_probe(), ServerConfig(body_timeout=0.5)) as server:
        sock = server.connect()
        try:
            sock.sendall(
                b"POST /stalled HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n"
            )
            data = read_until_close(sock, timeout=10)
        finally:
            sock.close()
        assert status_of(data) == 408
        assert "done /stalled" not in recorded()


def test_slow_but_steady_body_is_not_cut_off() -> None:
    # body_timeout bounds silence, not the whole upload: a byte every 0.1 s is fine.
    with serve(make_probe(), ServerConfig(body_timeout=1.0)) as server:
        sock = server.connect()
        try:
            sock.sendall(b"POST /steady HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n")
            body = b"0123456789" * 2
            # Nothing may come back (no 408) while the body is still arriving.
            assert not trickle(sock, body[:-1], gap=0.1)
            sock.sendall(body[-1:])
            status, _, echoed = read_response(sock)
        finally:
            sock.close()
        assert (status, echoed) == (200, b"echo:" + body)


# --- Content-Length over the limit and 100-continue -----------------------------------------


def test_content_length_over_limit_is_413_before_the_body_is_sent(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(POST + b"Content-Length: 1000000\r\n\r\n")  # and not one body byte
        data = read_until_close(sock)
    finally:
        sock.close()
    (response,) = split_responses(data)
    assert response[0] == 413
    assert recorded() == []
    assert_still_serving(server)


def test_content_length_over_limit_with_the_body_already_sent(server: RunningServer) -> None:
    data = exchange_raw(server.connect(), POST + b"Content-Length: 200\r\n\r\n" + b"x" * 200)
    assert [r[0] for r in split_responses(data)] == [413]
    assert recorded() == []


def test_100_continue_is_sent_only_when_the_handler_reads_the_body(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(
            b"POST /wait-then-read HTTP/1.1\r\nHost: t\r\n"
            b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        wait_for(lambda: recorded() == ["POST /wait-then-read"])
        assert nothing_received(sock), "100 Continue was sent before the handler asked for it"
        gate.set()
        sock.settimeout(5)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"echo:hello")
        # The connection is still good for another request.
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[::2] == (200, b"echo:")
    finally:
        sock.close()


def test_100_continue_for_an_async_handler_that_reads_at_once(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(
            b"POST /async HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        status, _, _ = read_response(sock)
        assert status == 100
        sock.sendall(b"abc")
        assert read_response(sock)[::2] == (200, b"echo:abc")
    finally:
        sock.close()


def test_no_100_continue_when_the_handler_does_not_read(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(
            b"POST /no-read HTTP/1.1\r\nHost: t\r\n"
            b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        status, _, body = read_response(sock)
    finally:
        sock.close()
    assert (status, body) == (200, b"answered without reading")


def test_413_without_100_continue_when_content_length_is_over_the_limit(
    server: RunningServer,
) -> None:
    sock = server.connect()
    try:
        sock.sendall(POST + b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
        data = read_until_close(sock)
    finally:
        sock.close()
    assert b"100 Continue" not in data
    assert [r[0] for r in split_responses(data)] == [413]
    assert recorded() == []


def test_417_for_an_unknown_expectation_without_reading_the_body(server: RunningServer) -> None:
    sock = server.connect()
    try:
        sock.sendall(POST + b"Expect: 200-ok\r\nContent-Length: 5\r\n\r\n")
        data = read_until_close(sock)
    finally:
        sock.close()
    assert [r[0] for r in split_responses(data)] == [417]
    assert recorded() == []

"""The access log: one observer, batched, in five formats, to a logger, a file or a stream."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bastion.engine.exchange import Exchange
from bastion.http.request import RequestHead
from bastion.observe import accesslog
from bastion.observe.accesslog import AccessLog, compile_format
from bastion.observe.logline import NamedFormat
from bastion.static import StaticFiles
from tests.app.hello import app
from tests.ops.running import supervisor, wait_for_lines
from tests.serving import read_response, read_until_close, serve


class Recorder(io.StringIO):
    """A stream without a file descriptor that remembers every write it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    @property
    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


def answers(sock: socket.socket, count: int) -> list[int]:
    return [read_response(sock)[0] for _ in range(count)]


def requests_logged(spec: str, raw: bytes, count: int = 1) -> list[str]:
    out = Recorder()
    log = AccessLog(spec, out)
    with serve(app, observers=[log]) as server, server.connect() as sock:
        sock.sendall(raw)
        deadline = time.monotonic() + 5
        while len(out.lines) < count and time.monotonic() < deadline:
            assert log.wait_written()
            time.sleep(0.01)
    return out.lines


COMMON = re.compile(
    r"^127\.0\.0\.1 - (?P<user>\S+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
    r'"(?P<line>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)$'
)


def test_common_format() -> None:
    auth = base64.b64encode(b"alice:secret").decode()
    raw = (
        b"GET /?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        + f"GET /nope HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\n\r\n".encode()
        + b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    first, second, third = requests_logged("common", raw, count=3)
    found = COMMON.match(first)
    assert found, first
    assert found["line"] == "GET /?x=1 HTTP/1.1" and found["status"] == "200"
    assert found["bytes"] == "13" and found["user"] == "-"
    found = COMMON.match(second)
    assert found and found["status"] == "404" and found["user"] == "alice"
    found = COMMON.match(third)
    assert found and found["bytes"] == "-"


def test_combined_format_escapes_quotes() -> None:
    raw = b'GET / HTTP/1.1\r\nHost: t\r\nReferer: http://x/"y"\r\nUser-Agent: t\\est\xe9\r\n\r\n'
    (line,) = requests_logged("combined", raw)
    assert line.endswith(' 200 13 "http://x/\\"y\\"" "t\\\\est\\xe9"'), line


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_json_format_with_trace_and_request_ids() -> None:
    raw = (
        b'POST /echo?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nUser-Agent: u"a\r\n'
        + f"traceparent: 00-{TRACE}-00f067aa0ba902b7-01\r\n".encode()
        + b"X-Request-ID: req-\xe9\r\n\r\nping"
        + b"GET / HTTP/1.0\r\n\r\n"
    )
    first, second = (json.loads(line) for line in requests_logged("json", raw, count=2))
    assert first["client"] == "127.0.0.1" and first["method"] == "POST"
    assert first["path"] == "/echo?q=1" and first["protocol"] == "HTTP/1.1"
    assert first["status"] == 200 and first["bytes"] == 4 and first["scheme"] == "http"
    assert first["host"] == "h" and first["user_agent"] == 'u"a' and first["referer"] is None
    assert first["trace_id"] == TRACE and first["request_id"] == "req-é"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", first["time"])
    assert second["trace_id"] is None and second["request_id"] is None
    assert second["host"] is None and second["protocol"] == "HTTP/1.0"


@pytest.mark.parametrize(
    ("traceparent", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"  00-{TRACE}-00f067aa0ba902b7-00 ", TRACE),
        (f"01-{TRACE}-00f067aa0ba902b7-01-future", TRACE),  # a later version may add fields
        (f"00-{TRACE}-00f067aa0ba902b7-01-extra", "-"),
        (f"ff-{TRACE}-00f067aa0ba902b7-01", "-"),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", "-"),
        (f"00-{TRACE}-{'0' * 16}-01", "-"),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", "-"),
        ("garbage", "-"),
    ],
)
def test_trace_id_directive(traceparent: str, expected: str) -> None:
    raw = (
        f"GET / HTTP/1.1\r\nHost: h\r\nX-Request-ID: abc 1\r\ntraceparent: {traceparent}\r\n\r\n"
    ).encode()
    (line,) = requests_logged("%{trace_id}n|%{request_id}n|%>s", raw)
    assert line == f"{expected}|abc 1|200"


def test_custom_format() -> None:
    raw = b"GET /sleep?s=0.05 HTTP/1.1\r\nHost: h\r\nX-Id: 42\r\n\r\n"
    spec = "%m %U%q %H %>s %B %{X-Id}i %{Missing}i %v %D %{ms}T %% {done} \\ 'q'\t."
    (line,) = requests_logged(spec, raw)
    method, path, proto, status, size, xid, missing, host, micros, millis, *rest = line.split()
    assert (method, path, proto, status, size) == ("GET", "/sleep?s=0.05", "HTTP/1.1", "200", "5")
    assert (xid, missing, host, rest) == ("42", "-", "h", ["%", "{done}", "\\", "'q'", "."])
    assert line.endswith("\t.")
    # Both fields render the same measured duration, in their own units (and the handler slept,
    # so it is not zero); no bound on the time itself.
    assert int(micros) > 0
    assert abs(int(micros) // 1000 - int(millis)) <= 1


class Durations:
    """An observer remembering the durations it was given."""

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self.seen: list[float] = []

    def __call__(self, exchange: Exchange, duration: float) -> None:
        self.seen.append(duration)


def test_an_observer_that_reads_no_duration_is_given_none_and_the_others_still_are() -> None:
    untimed, timed = Durations(timed=False), Durations(timed=True)
    with serve(app, observers=[untimed, timed]) as server, server.connect() as sock:
        sock.sendall(b"GET /sleep?s=0.02 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert answers(sock, 1) == [200]
    assert untimed.seen == [0.0]
    assert len(timed.seen) == 1 and timed.seen[0] > 0


def test_the_named_formats_need_no_duration_and_those_showing_one_do() -> None:
    for spec in ("common", "combined", "http.server", "%h %r %s"):
        assert not AccessLog(spec, io.StringIO()).timed, spec
    for spec in ("json", "%D", "%T", "%{ms}T"):
        assert AccessLog(spec, io.StringIO()).timed, spec


def _exchange(
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    status: int = 200,
    bytes_sent: int = 0,
    forwarded: bool = True,
    method: str = "GET",
    version: str = "1.1",
) -> Exchange:
    """A real exchange, served, then given a head the parser would refuse (to test escaping)."""
    served: list[Exchange] = []
    with serve(app, observers=[lambda exchange, _: served.append(exchange)]) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert answers(sock, 1) == [200]
    exchange = served[0]
    exchange.head = RequestHead(method, target, version, headers, True, None, False, False)
    exchange.conn.client = ("10.0.0.2", 6)
    exchange.forwarded_client = ("10.0.0.1", 5) if forwarded else None
    exchange.status = status
    exchange.bytes_sent = bytes_sent
    return exchange


def test_escaping_is_the_same_for_new_and_repeated_values() -> None:
    # Escaped values are remembered: the second line comes from the cache, the first not.
    auth = base64.b64encode(b'b"o\\b\x01:pw').decode().encode()
    exchange = _exchange(
        b'/a"b\\c\x01\x7f\xe9?q="\x1b',
        [
            (b"Host", b"h\x00"),
            (b"REFERER", b'r"1'),
            (b"Referer", b"second"),
            (b"User-Agent", b"ua\\\xff"),
            (b"Authorization", b"Basic " + auth),
        ],
    )
    formats = {
        "combined": (
            '10.0.0.1 - b\\"o\\\\b\\x01 [] '
            '"GET /a\\"b\\\\c\\x01\\x7f\\xe9?q=\\"\\x1b HTTP/1.1" 200 - "r\\"1" "ua\\\\\\xff"'
        ),
        "%U|%q|%v|%a|%{x-missing}i|%l|%%": (
            '/a\\"b\\\\c\\x01\\x7f\\xe9|?q=\\"\\x1b|h\\x00|10.0.0.2|-|-|%'
        ),
        # http.server escapes control characters only.
        "http.server": '10.0.0.1 - - [] "GET /a"b\\c\\x01\\x7f\xe9?q="\\x1b HTTP/1.1" 200 -',
    }
    for spec, expected in formats.items():
        render = compile_format(spec)
        for _ in range(2):
            line = re.sub(r"\[[^]]*\]", "[]", render(exchange, 0.0))
            assert line == expected, spec


def test_the_hand_written_formats_write_what_their_format_strings_say() -> None:
    # common and combined have hand-written renderers; spelt out as strings, the same
    # directives go through the general format compiler. Both must give the same line.
    auth = b"Basic " + base64.b64encode(b"ann:pw")
    cases = [
        _exchange(b"/", [(b"Host", b"h")]),
        _exchange(b"/a?b=c", [], status=404, bytes_sent=1234, forwarded=False),
        _exchange(
            b'/q"\xe9',
            [
                (b"user-agent", b"curl/8"),
                (b"Authorization", auth),
                (b"Referer", b"http://x/"),
                (b"REFERER", b"second"),
                (b"User-Agent", b"second"),
            ],
            status=500,
            bytes_sent=7,
        ),
        _exchange(b"/", [(b"Authorization", b"Bearer t"), (b"X-Referer", b"no")]),
        # The same target again with another status, method or version: a line is never
        # the one remembered for the target's last request.
        _exchange(b"/", [], status=304),
        _exchange(b"/", [], method="HEAD"),
        _exchange(b"/", [], version="1.0"),
        _exchange(b"/", [(b"Host", b"h")]),
    ]
    for name, spelt_out in accesslog.NAMED_FORMATS.items():
        for spec in (name, spelt_out):
            hand_written = compile_format(spec)
            assert isinstance(hand_written, NamedFormat), spec
            generated = accesslog._generated(spelt_out)[0]
            for exchange in cases:
                assert hand_written(exchange, 0.0) == generated(exchange, 0.0), spec


def test_each_line_shows_its_own_request_to_a_target_seen_before() -> None:
    exchange = _exchange(b"/same", [])
    renders = {name: compile_format(name) for name in ("http.server", "common")}
    for method, version, status in [
        ("GET", "1.1", 200),
        ("GET", "1.1", 304),
        ("HEAD", "1.1", 304),
        ("HEAD", "1.0", 304),
        ("GET", "1.1", 200),
    ]:
        exchange.head = RequestHead(method, b"/same", version, [], True, None, False, False)
        exchange.status = status
        request = f'"{method} /same HTTP/{version}" {status}'
        line = re.sub(r"\[[^]]*\]", "[]", renders["http.server"](exchange, 0.0))
        assert line == f"10.0.0.1 - - [] {request} -"
        line = re.sub(r"\[[^]]*\]", "[]", renders["common"](exchange, 0.0))
        assert line == f"10.0.0.1 - - [] {request} -"


def test_a_regular_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog("%U", str(path))
    with serve(app, observers=[log]) as server, server.connect() as sock:
        sock.sendall(b"GET /?n HTTP/1.1\r\nHost: t\r\n\r\n" * 50)
        assert answers(sock, 50) == [200] * 50
        assert log.wait_written()
        assert path.read_text().splitlines() == ["/"] * 50


def test_lines_are_written_in_batches() -> None:
    out = Recorder()
    log = AccessLog("%U", out)
    count = 200
    with serve(app, observers=[log]) as server, server.connect() as sock:
        # Pipelined, so that many requests finish in one turn of the event loop.
        sock.sendall(b"GET /?n HTTP/1.1\r\nHost: t\r\n\r\n" * count)
        assert answers(sock, count) == [200] * count
        assert log.wait_written()
    assert out.lines == ["/"] * count
    assert len(out.writes) <= count // 20, len(out.writes)


def test_a_batch_is_handed_over_every_batch_lines_lines() -> None:
    out = Recorder()
    log = AccessLog("%U", out, batch_lines=5)
    with serve(app, observers=[log]) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 23)
        answers(sock, 23)
        assert log.wait_written()
    assert out.lines == ["/"] * 23
    assert all(write.count("\n") <= 23 for write in out.writes)


def test_a_stalled_output_drops_lines_and_never_blocks_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader, writer = os.pipe()  # nobody reads it until the end: it fills up and stays full
    log = AccessLog("common", writer, max_pending=8192)
    count = 3000
    try:
        with (
            caplog.at_level(logging.WARNING, logger="bastion.error"),
            serve(app, observers=[log]) as server,
        ):
            started = time.monotonic()
            with server.connect() as sock:
                for _ in range(count // 100):
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 100)
                    assert answers(sock, 100) == [200] * 100
                    log.wait_written(0.01)  # hand the batch over now
            assert time.monotonic() - started < 20
            assert log.dropped > 0
            # The reader comes back: what was kept is written, what was dropped is said.
            drained: list[bytes] = []
            draining = threading.Thread(target=_drain, args=(reader, drained), daemon=True)
            draining.start()
            assert log.wait_written(10)
            with server.connect() as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert answers(sock, 1) == [200]
            assert log.wait_written(10)
        os.close(writer)
        writer = -1
        draining.join(10)
        written = b"".join(drained).decode().splitlines()
        assert all(COMMON.match(line) for line in written)
        assert len(written) + log.dropped == count + 1
        assert any("lines dropped" in r.getMessage() for r in caplog.records)
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


def _drain(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 65536):
        into.append(chunk)


def test_a_file_output_follows_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accesslog, "ROTATION_CHECK", 0.0)
    path = tmp_path / "access.log"
    log = AccessLog("%U", str(path))
    with serve(app, observers=[log]) as server, server.connect() as sock:
        sock.sendall(b"GET /?before HTTP/1.1\r\nHost: t\r\n\r\n")
        answers(sock, 1)
        assert log.wait_written()
        path.rename(tmp_path / "access.log.1")
        sock.sendall(b"GET /?after HTTP/1.1\r\nHost: t\r\n\r\n")
        answers(sock, 1)
        assert log.wait_written()
    assert (tmp_path / "access.log.1").read_text() == "/\n"
    assert path.read_text() == "/\n"


def test_the_logger_output(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog("%m %U")  # the bastion.access logger by default
    with (
        caplog.at_level(logging.INFO, logger="bastion.access"),
        serve(app, observers=[log]) as server,
    ):
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\n\r\n")
            answers(sock, 2)
        assert log.wait_written()
    records = [r for r in caplog.records if r.name == "bastion.access"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "GET /"),
        (logging.INFO, "POST /echo"),
    ]


def test_the_server_writes_out_the_last_lines_when_it_stops() -> None:
    out = Recorder()
    log = AccessLog("%U", out)
    with serve(app, observers=[log]) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        answers(sock, 1)
    assert out.lines == ["/"]  # no wait: the shutdown closed the log


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("%Z", "unsupported directive '%Z'"),
        ("%{x}o", "unsupported directive"),
        ("%", "incomplete directive"),
        ("trailing %", "incomplete directive"),
        ("%{minutes}T", "unknown unit"),
        ("%{span}n", "use trace_id or request_id"),
        ("", "empty access log format"),
    ],
)
def test_bad_formats_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_format(spec)
    with pytest.raises(ValueError, match=re.escape(message)):
        AccessLog(spec, io.StringIO())


# http.server's own line ------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "index.txt").write_text("hello\n")
    (tmp_path / "a b.txt").write_text("spaced\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x")
    return tmp_path


REQUESTS = [
    b"GET /index.txt HTTP/1.1",
    b"HEAD /index.txt HTTP/1.1",
    b"GET /index.txt?x=1&y=%20 HTTP/1.1",
    b"GET /a%20b.txt HTTP/1.0",
    b"GET /missing HTTP/1.1",
    b"GET /sub/x.txt HTTP/1.1",
    b"GET /sub HTTP/1.1",
]
STAMP = re.compile(r"\[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\]")


@contextmanager
def stdlib_server(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, io.StringIO]]:
    """``python -m http.server``'s handler in a thread; what it writes to stderr."""
    err = io.StringIO()
    # log_message looks sys.stderr up on every call; the server thread writes to this one.
    monkeypatch.setattr(sys, "stderr", err)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], err
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _ask(port: int, request_line: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nHost: t\r\nConnection: close\r\n\r\n")
        read_until_close(sock)


def test_the_http_server_format_is_the_standard_librarys_line(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stdlib_server(site, monkeypatch) as (port, err):
        for request_line in REQUESTS:
            _ask(port, request_line)
    # For an error, http.server also logs "code 404, message ..." first: not a request line.
    theirs = [line for line in err.getvalue().splitlines() if '"' in line]
    out = Recorder()
    log = AccessLog("http.server", out)
    with serve(StaticFiles(site), observers=[log]) as server:
        for request_line in REQUESTS:
            _ask(server.port, request_line)
        assert log.wait_written()
    ours = out.lines
    assert len(theirs) == len(REQUESTS) and all(STAMP.search(line) for line in ours)
    assert [STAMP.sub("[]", line) for line in ours] == [STAMP.sub("[]", line) for line in theirs]
    assert ours[0].startswith("127.0.0.1 - - [") and ours[0].endswith(
        '"GET /index.txt HTTP/1.1" 200 -'
    )


def stdout_of_run(*flags: str, path: str = "/pid") -> tuple[list[str], str]:
    """``bastion run`` with ``flags``: one request, SIGTERM; its stdout lines and its stderr."""
    args = ("tests.ops.apps:app", "--bind", "127.0.0.1:0", *flags)
    with supervisor(*args, stdout=subprocess.PIPE) as proc:
        proc.get(path)
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.popen.stdout is not None
        return proc.popen.stdout.read().splitlines(), proc.text


def test_bastion_run_can_write_the_http_server_line() -> None:
    (line,), _ = stdout_of_run("--access-log", "--access-log-format", "http.server")
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /pid HTTP/1\.1" 200 -', line)


# bastion run -----------------------------------------------------------------------------


def test_the_access_log_is_off_by_default_and_goes_to_stdout_when_on() -> None:
    assert stdout_of_run(path="/")[0] == []
    (line,), stderr = stdout_of_run("--access-log", "--access-log-format", "json")
    assert json.loads(line)["path"] == "/pid"
    assert '"path"' not in stderr  # not on stderr with the error log


def test_with_a_logging_configuration_the_lines_go_to_the_logger(tmp_path: Path) -> None:
    routed = tmp_path / "routed.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "formatters": {"tagged": {"format": "ACCESS %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(routed),
                              "formatter": "tagged"},
                     "err": {"class": "logging.StreamHandler"}},
        "loggers": {"bastion.access": {"handlers": ["file"], "level": "INFO",
                                       "propagate": False}},
        "root": {"handlers": ["err"], "level": "INFO"},
    }))  # fmt: skip
    args = ("--bind", "127.0.0.1:0", "--access-log", "--access-log-format", "%m %U",
            "--log-config", str(config))  # fmt: skip
    with supervisor("tests.ops.apps:app", *args, stdout=subprocess.PIPE) as proc:
        proc.get("/pid")
        assert wait_for_lines(routed, lambda lines: bool(lines)) == ["ACCESS INFO GET /pid"]
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.popen.stdout is not None and proc.popen.stdout.read() == ""


def test_an_access_log_file_that_cannot_be_opened_stops_start_up(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "access.log"
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "run", "tests.ops.apps:app", "--bind", "127.0.0.1:0",
         "--access-log", "--access-log-file", str(target)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot open log file {target}" in result.stderr

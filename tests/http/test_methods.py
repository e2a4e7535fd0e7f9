"""Methods llhttp does not know: accepted as RFC 9110 tokens, framed like any other request.

Every test compares against the same bytes sent with a method llhttp knows: an extension
method must change nothing but the method's name, however the bytes are cut into reads, and
whatever came before it on the connection.
"""

from __future__ import annotations

import pytest

from bastion.http import (
    BadRequest,
    Limits,
    NotImplementedByServer,
    ProtocolError,
    RequestParser,
)
from tests.http.test_parser import (
    REFUSALS,
    Event,
    Recorder,
    byte_by_byte,
    parse,
    refusal,
)

HOST = b"Host: example.com\r\n"
EXTENSIONS = [
    b"FOO",
    b"get",
    b"Get",
    b"-BLARGH",
    b"X" * 40,
    b"PURGEX",
    b"C0NNECT",
    b"!#$%&'*+.^_`|~",
]
# Known to llhttp only for RTSP or HTTP/2, so refused by it on an HTTP/1.1 request line.
OTHER_PROTOCOLS = [b"PLAY", b"DESCRIBE", b"GET_PARAMETER", b"PRI"]

REQUESTS = [
    b"M /a?b=1 HTTP/1.1\r\n" + HOST + b"\r\n",
    b"M /post HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
    b"M /c HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"M /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
    b"M http://example.com/abs HTTP/1.1\r\n" + HOST + b"\r\n",
]
BEFORE = [
    b"",
    b"GET / HTTP/1.1\r\n" + HOST + b"\r\n",
    b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nxyz",
    b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\n{}",
    b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
]


def with_method(request: bytes, method: bytes) -> bytes:
    assert request.startswith(b"M ")
    return method + request[1:]


def renamed(events: list[Event], method: str) -> list[Event]:
    """``events`` with the method of every head that says PUT replaced by ``method``."""
    out: list[Event] = []
    for kind, value in events:
        if kind == "head" and isinstance(value, tuple) and value[0] == "PUT":
            value = (method, *value[1:])
        out.append((kind, value))
    return out


def cuts(data: bytes) -> list[list[bytes]]:
    """The ways of cutting ``data`` into reads that the tests try: whole, in two everywhere,
    and byte by byte."""
    return [[data], *([data[:i], data[i:]] for i in range(1, len(data))), byte_by_byte(data)]


@pytest.mark.parametrize("method", EXTENSIONS + OTHER_PROTOCOLS, ids=lambda m: m.decode()[:12])
@pytest.mark.parametrize("request_bytes", REQUESTS, ids=range(len(REQUESTS)))
def test_an_extension_method_is_parsed_like_a_known_one(
    request_bytes: bytes, method: bytes
) -> None:
    expected = renamed(parse(with_method(request_bytes, b"PUT")).merged(), method.decode())
    assert parse(with_method(request_bytes, method)).merged() == expected


@pytest.mark.parametrize(
    "before", BEFORE, ids=["alone", "after-get", "after-body", "after-json", "after-chunked"]
)
@pytest.mark.parametrize("method", [b"FOO", b"PLAY", b"get"], ids=lambda m: m.decode())
def test_every_cut_of_a_pipeline_gives_the_same_requests(before: bytes, method: bytes) -> None:
    after = b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"
    stream = before + with_method(REQUESTS[1], method) + after + with_method(REQUESTS[2], method)
    known = before + with_method(REQUESTS[1], b"PUT") + after + with_method(REQUESTS[2], b"PUT")
    expected = renamed(parse(known).merged(), method.decode())
    for feeds in cuts(stream):
        assert parse(feeds).merged() == expected, [len(f) for f in feeds]


def test_a_read_full_of_extension_methods() -> None:
    one = b"X / HTTP/1.1\r\nHost: a\r\n\r\n"
    sink = parse(one * 3000)
    assert [h.method for h in sink.heads] == ["X"] * 3000


def test_extension_methods_after_earlier_reads_of_every_kind() -> None:
    # Reads ending in LF, in a body, and a partial method held across reads.
    feeds = [
        b"GET / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nab",
        b"c",
        b"GET / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"PU",
        b"RGEX /x HTTP/1.1\r\n" + HOST + b"\r\n",
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\n\r\nz",
        b"CUSTOM /y HTTP/1.1\r\n" + HOST + b"\r\n",
    ]
    sink = parse(feeds)
    assert [h.method for h in sink.heads] == ["GET", "POST", "GET", "PURGEX", "POST", "CUSTOM"]


def test_a_real_source_request_keeps_its_name() -> None:
    first = b"FOO / HTTP/1.1\r\n" + HOST + b"\r\nSOURCE / HTTP/1.1\r\n" + HOST + b"\r\n"
    sink = parse([first, b"SOURCE /again HTTP/1.1\r\n" + HOST + b"\r\n"])
    assert [h.method for h in sink.heads] == ["FOO", "SOURCE", "SOURCE"]


def test_an_upgrade_with_an_extension_method() -> None:
    upgrade = b"FOO / HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: x\r\n\r\n"
    sink = parse(upgrade + b"BAR / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [(h.method, h.upgrade) for h in sink.heads] == [("FOO", True), ("BAR", False)]


# --- what stays refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error_class", "status"),
    [
        pytest.param(data.replace(b"GET ", b"FOO ", 1).replace(b"POST ", b"BAR ", 1), cls, st, id=n)
        for n, data, cls, st in REFUSALS
        if data.startswith((b"GET /", b"POST /", b"GET http"))
    ],
)
def test_an_extension_method_is_refused_for_what_a_known_one_is(
    data: bytes, error_class: type[ProtocolError], status: int
) -> None:
    for feeds in (data, byte_by_byte(data)):
        error = refusal(feeds)
        assert type(error) is error_class
        assert error.status == status


@pytest.mark.parametrize(
    "data",
    [
        b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"G\xc3\x89T / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"FOO\t/ HTTP/1.1\r\n" + HOST + b"\r\n",
        b"FOO\r\n" + HOST + b"\r\n",
        b"FOO / RTSP/1.0\r\n" + HOST + b"\r\n",
        b"FOO / ICE/1.0\r\n" + HOST + b"\r\n",
        b"FOO * HTTP/1.1\r\n" + HOST + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
)
def test_what_is_not_a_token_method_and_a_request_line_is_400(data: bytes) -> None:
    for feeds in (data, byte_by_byte(data)):
        assert refusal(feeds).status == 400


def test_a_method_that_never_ends_is_bounded() -> None:
    error = refusal(byte_by_byte(b"X" * 10_000))
    assert error.status == 414
    assert refusal(b"X" * 10_000).status == 414
    assert refusal(b"X" * 10_000 + b" / HTTP/1.1\r\n" + HOST + b"\r\n").status == 414


def upload_then(rest: bytes) -> tuple[Recorder, ProtocolError]:
    """An upload whose reads all end inside its body, past what is kept to replay, then
    ``rest`` in the same read as the body's last bytes."""
    sink = Recorder()
    parser = RequestParser(sink, Limits(max_body_bytes=1 << 20))
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 100000\r\n\r\n" + b"a" * 70_000)
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"a" * 30_000 + rest)
    assert [h.method for h in sink.heads] == ["POST"]
    return sink, caught.value


def test_an_extension_method_that_cannot_be_placed_is_refused_not_guessed() -> None:
    _, error = upload_then(b"FOO / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert type(error) is NotImplementedByServer


def test_garbage_where_a_request_cannot_be_placed_is_400() -> None:
    _, error = upload_then(b"\x01\x02")
    assert type(error) is BadRequest


def test_a_known_method_after_a_long_upload_is_still_parsed() -> None:
    sink = Recorder()
    parser = RequestParser(sink, Limits(max_body_bytes=1 << 20))
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 100000\r\n\r\n" + b"a" * 70_000)
    parser.feed(b"a" * 30_000 + b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    parser.feed(b"FOO / HTTP/1.1\r\n" + HOST + b"\r\n")  # a clean start again
    assert [h.method for h in sink.heads] == ["POST", "GET", "FOO"]


def test_a_split_http10_line_with_a_slash_in_a_field_is_accepted() -> None:
    feeds = [b"GET / HTTP/1.0\r\nX-Path: a / b\r\n", b"\r\n"]
    assert [h.method for h in parse(feeds).heads] == ["GET"]
    assert [h.method for h in parse(byte_by_byte(b"".join(feeds))).heads] == ["GET"]


@pytest.mark.parametrize("line", [b"GET / RTSP/1.0", b"FOO / ICE/1.0", b"PLAY / RTSP/1.0"])
def test_a_split_request_line_of_another_protocol_is_refused(line: bytes) -> None:
    data = line + b"\r\nX-Path: a / b\r\n\r\n"
    assert refusal(byte_by_byte(data)).status == 400

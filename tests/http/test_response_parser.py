"""Sans-IO tests of the response parser: an upstream's bytes in, response events out.

Every malformed vector names the error it must raise; every valid one is also fed in pieces,
and a property test checks that however a pipeline of responses is cut, it parses the same.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.http import (
    BadGateway,
    IncompleteResponse,
    Limits,
    NoResponse,
    ProtocolError,
    ResponseHead,
    ResponseParser,
)

Event = tuple[object, ...]
END: Event = ("end",)
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
SMALL = Limits(max_request_line=64, max_header_count=4, max_header_bytes=200)


class Recorder:
    """A sink that remembers every event, with body chunks merged as they arrive."""

    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.events: list[Event] = []

    def on_informational(self, head: ResponseHead) -> None:
        self.events.append(("info", head.status, head.reason, head.headers))

    def on_response(self, head: ResponseHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.status, head.reason, head.version, head.headers))

    def on_body(self, data: bytes) -> None:
        assert data, "the parser reported an empty body chunk"
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)  # type: ignore[operator]
        else:
            self.events.append(("body", data))

    def on_response_end(self) -> None:
        self.events.append(END)


def parse(
    data: bytes | list[bytes],
    methods: tuple[str, ...] = ("GET",),
    *,
    eof: bool = False,
    upgrade: bool = False,
    limits: Limits | None = None,
    max_body_bytes: int | None = None,
) -> tuple[Recorder, ResponseParser, int | None]:
    sink = Recorder()
    parser = ResponseParser(sink, limits, max_body_bytes=max_body_bytes)
    for method in methods:
        parser.expect(method, upgrade=upgrade)
    offset = None
    for piece in [data] if isinstance(data, bytes) else data:
        offset = parser.feed(piece)
    if eof:
        parser.feed_eof()
    return sink, parser, offset


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# Valid responses: (wire bytes, methods, expected events). Each is also fed byte by byte.
VALID: list[tuple[str, bytes, tuple[str, ...], list[Event]]] = [
    (
        "content-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
        ("GET",),
        [
            ("head", 200, b"OK", "1.1", [(b"Content-Length", b"5"), (b"X-A", b"b")]),
            ("body", b"hello"),
            END,
        ],
    ),
    (
        "chunked with extensions and trailers",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a=b\r\nhe\nlo\r\n0000A\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
        ("GET",),
        [
            ("head", 200, b"OK", "1.1", [(b"Transfer-Encoding", b"chunked")]),
            ("body", b"he\nlo0123456789"),
            END,
        ],
    ),
    (
        "empty reason, trailing space trimmed from a value, case kept",
        b"HTTP/1.1 404 \r\ncontent-LENGTH: 0\r\nX-Obs: \xe9t\xe9 \t\r\n\r\n",
        ("GET",),
        [("head", 404, b"", "1.1", [(b"content-LENGTH", b"0"), (b"X-Obs", b"\xe9t\xe9")]), END],
    ),
    (
        "HTTP/1.0 keep-alive",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
        ("GET",),
        [
            (
                "head",
                200,
                b"OK",
                "1.0",
                [(b"Connection", b"keep-alive"), (b"Content-Length", b"1")],
            ),
            ("body", b"x"),
            END,
        ],
    ),
    (
        "HEAD: no body whatever the fields say",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX: close-delimited-looking\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ("HEAD", "HEAD", "HEAD", "GET"),
        [
            ("head", 200, b"OK", "1.1", [(b"Content-Length", b"1000")]),
            END,
            ("head", 200, b"OK", "1.1", [(b"Transfer-Encoding", b"chunked")]),
            END,
            ("head", 200, b"OK", "1.1", [(b"X", b"close-delimited-looking")]),
            END,
            ("head", 200, b"OK", "1.1", [(b"Content-Length", b"2")]),
            ("body", b"ok"),
            END,
        ],
    ),
    (
        "interim responses, then the final one",
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ("POST",),
        [
            ("info", 100, b"Continue", []),
            ("info", 103, b"Early Hints", [(b"Link", b"</s.css>; rel=preload")]),
            ("head", 201, b"Created", "1.1", [(b"Content-Length", b"2")]),
            ("body", b"ok"),
            END,
        ],
    ),
    (
        "204 and 304 have no body",
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
        ("GET", "GET", "GET"),
        [
            ("head", 204, b"No Content", "1.1", []),
            END,
            ("head", 304, b"Not Modified", "1.1", [(b"Content-Length", b"99")]),
            END,
            ("head", 200, b"OK", "1.1", [(b"Content-Length", b"1")]),
            ("body", b"z"),
            END,
        ],
    ),
]


@pytest.mark.parametrize(
    ("data", "methods", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID]
)
def test_valid_responses(data: bytes, methods: tuple[str, ...], expected: list[Event]) -> None:
    whole, parser, _ = parse(data, methods)
    assert whole.events == expected
    assert parser.pending == 0 and parser.reusable
    pieces, _, _ = parse(bytewise(data), methods)
    assert pieces.events == expected


def test_framing_attributes() -> None:
    sink, _, _ = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
        ("GET", "GET", "HEAD", "GET"),
    )
    length, chunked, head, not_modified = sink.heads
    assert (length.content_length, length.chunked, length.has_body) == (3, False, True)
    assert (chunked.content_length, chunked.chunked, chunked.has_body) == (None, True, True)
    assert (head.content_length, head.has_body, head.keep_alive) == (7, False, True)
    assert not not_modified.has_body and not not_modified.close_delimited
    assert length.get("content-length") == "3" and length.get("x") is None


def test_close_delimited_body_ends_at_eof() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of\r\n\r\nthis"
    sink, parser, _ = parse(data)
    head = sink.heads[0]
    assert head.close_delimited and head.has_body and not head.keep_alive
    assert sink.events[-1] != END
    parser.feed(b" and more")
    parser.feed_eof()
    assert sink.events[1:] == [("body", b"all of\r\n\r\nthis and more"), END]
    assert not parser.reusable


def test_connection_close_ends_the_stream() -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
    sink, parser, _ = parse(data, ("GET", "GET"))
    assert not sink.heads[0].keep_alive and sink.events[-1] == END
    with pytest.raises(BadGateway, match="after closing"):
        parser.feed(OK_EMPTY)
    with pytest.raises(RuntimeError):
        parser.expect("GET")


def test_http10_without_keep_alive_closes() -> None:
    sink, parser, _ = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not sink.heads[0].keep_alive and not parser.reusable


def test_switching_protocols_reports_the_tunnel_offset() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    frame = b"\x81\x05hello"
    sink, parser, offset = parse(head + frame, upgrade=True)
    assert offset == len(head)
    assert sink.heads[0].upgrade and sink.events[-1] == END
    assert parser.upgraded and not parser.reusable
    with pytest.raises(RuntimeError):
        parser.feed(frame)
    # Split anywhere, the offset is the one in the feed that ended the head.
    for cut in range(1, len(head)):
        _, parser, offset = parse([head[:cut], head[cut:] + frame], upgrade=True)
        assert parser.upgraded
        assert offset == len(head) - cut


def test_interim_before_switching_protocols() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\nrest"
    )
    sink, _, offset = parse(data, upgrade=True)
    assert offset == len(data) - 4
    assert [e[0] for e in sink.events] == ["info", "head", "end"]


def test_expect_rules() -> None:
    parser = ResponseParser(Recorder())
    with pytest.raises(ValueError, match="CONNECT"):
        parser.expect("CONNECT")
    parser.expect("GET", upgrade=True)
    with pytest.raises(ValueError, match="upgrade"):
        parser.expect("GET")


def test_eof_outcomes() -> None:
    _, parser, _ = parse(b"", ())
    parser.feed_eof()  # an idle connection closing is no error
    with pytest.raises(NoResponse):
        parse(b"", eof=True)
    with pytest.raises(NoResponse):
        # The first response closes; the pipelined second request is never answered.
        parse(b"HTTP/1.1 200 OK\r\n\r\nbody", ("GET", "GET"), eof=True)
    for cut in (b"HTTP/1.1 200 OK\r\nContent-", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"):
        with pytest.raises(IncompleteResponse):
            parse(cut, eof=True)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
    with pytest.raises(IncompleteResponse):
        parse(chunked, eof=True)
    with pytest.raises(IncompleteResponse):
        parse(b"HTTP/1.1 100 Continue\r\n\r\n", eof=True)


# Malformed and ambiguous responses: (id, wire bytes, methods, expected error, message part).
MALFORMED: list[tuple[str, bytes, tuple[str, ...], type[ProtocolError], str]] = [
    (
        "CL and TE",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ("GET",),
        BadGateway,
        "Transfer-Encoding",
    ),
    (
        "TE and CL",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "two lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "same length twice",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "plus sign",
        b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "length list",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "empty length",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "huge length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000000001\r\n\r\nx",
        ("GET",),
        BadGateway,
        "Content-Length",
    ),
    (
        "gzip last",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "Transfer-Encoding",
    ),
    (
        "identity",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "Transfer-Encoding",
    ),
    (
        "gzip, chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "Transfer-Encoding",
    ),
    (
        "chunked twice",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "Transfer-Encoding",
    ),
    (
        "TE on 1.0",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "HTTP/1.0",
    ),
    (
        "chunk size space",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "chunk size",
    ),
    (
        "chunk size 0x",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "chunk size",
    ),
    (
        "negative chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "chunk size",
    ),
    (
        "chunk overflow",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        ("GET",),
        BadGateway,
        "overflow",
    ),
    (
        "chunk too long",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "chunk data",
    ),
    (
        "chunk bare LF",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        ("GET",),
        BadGateway,
        "CR",
    ),
    (
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "whitespace",
    ),
    (
        "bare CR",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "LF",
    ),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", ("GET",), BadGateway, "CR"),
    ("NUL in value", b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", ("GET",), BadGateway, "header value"),
    ("space in name", b"HTTP/1.1 200 OK\r\nX Y: a\r\n\r\n", ("GET",), BadGateway, "header token"),
    (
        "space before colon",
        b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc",
        ("GET",),
        BadGateway,
        "header",
    ),
    (
        "NUL in reason",
        b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "reason",
    ),
    (
        "control in reason",
        b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "reason",
    ),
    ("status 4 digits", b"HTTP/1.1 2000 OK\r\n\r\n", ("GET",), BadGateway, "status"),
    (
        "status 099",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "status code 99",
    ),
    (
        "status 600",
        b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "status code 600",
    ),
    ("two spaces", b"HTTP/1.1  200 OK\r\n\r\n", ("GET",), BadGateway, "status"),
    ("lowercase http", b"http/1.1 200 OK\r\n\r\n", ("GET",), BadGateway, "status line"),
    ("RTSP", b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", ("GET",), BadGateway, "status line"),
    ("ICE", b"ICE/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ("GET",), BadGateway, "status line"),
    ("HTTP/2.0", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", ("GET",), BadGateway, "HTTP/2.0"),
    ("HTTP/0.9", b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n", ("GET",), BadGateway, "HTTP/0.9"),
    ("HTTP/1.2", b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n", ("GET",), BadGateway, "version"),
    (
        "empty line first",
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ("GET",),
        BadGateway,
        "status line",
    ),
    ("garbage", b"hello\r\n\r\n", ("GET",), BadGateway, "status line"),
    ("unsolicited", OK_EMPTY, (), BadGateway, "no request"),
    (
        "bytes past the length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx\r\n",
        ("GET",),
        BadGateway,
        "no request",
    ),
    ("CRLF after a response", OK_EMPTY + b"\r\n", ("GET", "GET"), BadGateway, "status line"),
    (
        "length on a 1xx",
        b"HTTP/1.1 150 Odd\r\nContent-Length: 3\r\n\r\nabc" + OK_EMPTY,
        ("GET",),
        BadGateway,
        "150",
    ),
    (
        "chunked 1xx",
        b"HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        ("GET",),
        BadGateway,
        "100",
    ),
    (
        "101 unasked",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ("GET",),
        BadGateway,
        "did not ask",
    ),
    (
        "101 without Upgrade",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ("UPGRADE",),
        BadGateway,
        "101 without",
    ),
    (
        "101 on 1.0",
        b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ("UPGRADE",),
        BadGateway,
        "101 without",
    ),
]


@pytest.mark.parametrize(
    ("data", "methods", "error", "message"),
    [v[1:] for v in MALFORMED],
    ids=[v[0] for v in MALFORMED],
)
def test_malformed_responses(
    data: bytes, methods: tuple[str, ...], error: type[ProtocolError], message: str
) -> None:
    upgrade = methods == ("UPGRADE",)
    methods = ("GET",) if upgrade else methods
    for pieces in ([data], bytewise(data)):
        with pytest.raises(error, match=message) as raised:
            parse(pieces, methods, upgrade=upgrade)
        assert raised.value.status == 502


def test_error_is_sticky() -> None:
    sink = Recorder()
    parser = ResponseParser(sink)
    parser.expect("GET")
    with pytest.raises(BadGateway) as first:
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    with pytest.raises(BadGateway) as again:
        parser.feed(OK_EMPTY)
    assert again.value is first.value
    assert not parser.reusable


# Limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 200 " + b"r" * 65 + b"\r\n\r\n", "status line too long"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(5)) + b"\r\n",
            "too many",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 200 + b"\r\n\r\n", "too large"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 400, "head too large"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 70,
            "chunk line too long",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"".join(b"T%d: y\r\n" % i for i in range(6))
            + b"\r\n",
            "trailer",
        ),
    ],
)
def test_limits(data: bytes, message: str) -> None:
    for pieces in ([data], bytewise(data)):
        with pytest.raises(BadGateway, match=message):
            parse(pieces, limits=SMALL)


def test_unseen_bytes_are_bounded() -> None:
    """A head that never ends is refused once it is larger than any head allowed."""
    sink = Recorder()
    parser = ResponseParser(sink, SMALL)
    parser.expect("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nX: ")
    with pytest.raises(BadGateway, match="head too large"):
        for _ in range(100):
            parser.feed(b"y" * 10)


def test_body_limit() -> None:
    with pytest.raises(BadGateway, match="body too large"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", max_body_bytes=10)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n"
    with pytest.raises(BadGateway, match="body too large"):
        parse(chunked, max_body_bytes=10)
    sink, _, _ = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"x" * 10, max_body_bytes=10
    )
    assert sink.events[-1] == END
    # HEAD: the length describes a body that is not there.
    parse(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", ("HEAD",), max_body_bytes=10)


# Properties: any split parses like the whole --------------------------------------------------

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_BODY = st.binary(min_size=0, max_size=40)


@st.composite
def responses(draw: st.DrawFn) -> tuple[str, bytes, list[Event]]:
    """One response, the method it answers and the events it must produce."""
    kind = draw(st.sampled_from(["length", "chunked", "head", "204", "304", "interim"]))
    reason = draw(st.sampled_from([b"OK", b"", b"Fine Thanks"]))
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"X-A", b"x-b", b"Set-Cookie"]),
                st.sampled_from([b"1", b"a b", b"v"]),
            ),
            max_size=3,
        )
    )
    fields = b"".join(n + b": " + v + b"\r\n" for n, v in extra)
    body = draw(_BODY)
    method = "GET"
    events: list[Event] = []
    if kind == "interim":
        events.append(("info", 103, b"Early Hints", [(b"Link", b"</a>")]))
        prefix = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        kind = "length"
    else:
        prefix = b""
    if kind == "length":
        framing = [(b"Content-Length", b"%d" % len(body))]
        payload = body
    elif kind == "chunked":
        sizes = draw(st.lists(st.integers(1, 9), max_size=4))
        pieces, rest = [], body
        for size in sizes:
            if rest:
                pieces.append(rest[:size])
                rest = rest[size:]
        if rest:
            pieces.append(rest)
        framing = [(b"Transfer-Encoding", b"chunked")]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif kind == "head":
        method = "HEAD"
        framing = [(b"Content-Length", b"%d" % (len(body) + 1))]
        payload = body = b""
    else:
        framing, payload, body = [], b"", b""
    status = {"204": 204, "304": 304}.get(kind, 200)
    headers = framing + extra
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    head += b"".join(n + b": " + v + b"\r\n" for n, v in framing) + fields + b"\r\n"
    events.append(("head", status, reason, "1.1", headers))
    if body:
        events.append(("body", body))
    events.append(END)
    return method, prefix + head + payload, events


def joined(
    pipeline: list[tuple[str, bytes, list[Event]]],
) -> tuple[tuple[str, ...], bytes, list[Event]]:
    """The methods, the bytes and the events of a pipeline of responses."""
    methods = tuple(method for method, _, _ in pipeline)
    data = b"".join(wire for _, wire, _ in pipeline)
    return methods, data, [event for _, _, events in pipeline for event in events]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@BOUNDED
@given(
    pipeline=st.lists(responses(), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_split_parses_like_the_whole(
    pipeline: list[tuple[str, bytes, list[Event]]], cuts: list[int]
) -> None:
    methods, data, expected = joined(pipeline)
    whole, parser, _ = parse(data, methods)
    assert whole.events == expected
    assert parser.reusable
    pieces, _, _ = parse(split(data, cuts), methods)
    assert pieces.events == expected


@BOUNDED
@given(
    pipeline=st.lists(responses(), min_size=1, max_size=3), junk=st.binary(min_size=1, max_size=8)
)
def test_bytes_after_the_last_response_are_refused(
    pipeline: list[tuple[str, bytes, list[Event]]], junk: bytes
) -> None:
    """Nothing an upstream sends past what was asked for is taken as part of a response."""
    methods, data, expected = joined(pipeline)
    sink = Recorder()
    parser = ResponseParser(sink)
    for method in methods:
        parser.expect(method)
    with pytest.raises(BadGateway):
        parser.feed(data + junk)
    assert sink.events == expected

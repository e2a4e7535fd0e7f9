"""Sans-IO tests of the request parser and the response serializers: bytes in, events out.

No sockets, no loop, no clock: every rule of the refusal table in the README is checked here
with byte strings alone, and the engine tests check the same table over a real socket.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import re
from collections.abc import Iterable

import pytest

from bastion.http import (
    LAST_CHUNK,
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    Limits,
    NotImplementedByServer,
    ProtocolError,
    RequestHead,
    RequestParser,
    URITooLong,
    VersionNotSupported,
    encode_chunk,
    encode_headers,
    error_response,
    format_date,
    parse_content_length,
    status_line,
)

# A request head reduced to plain values, so two parses can be compared with ``==``.
HeadTuple = tuple[str, bytes, str, list[tuple[bytes, bytes]], bool, int | None, bool, bool]
Event = tuple[str, HeadTuple | bytes | None]  # ("head", ...), ("body", data), ("end", None)
END: Event = ("end", None)

HOST = b"Host: example.com\r\n"
SMALL = Limits(max_request_line=100, max_header_count=8, max_header_bytes=400, max_body_bytes=16)


class Recorder:
    """A sink that remembers everything the parser reports, in order."""

    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.events: list[Event] = []

    def on_request(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.events.append(("head", _head_tuple(head)))

    def on_body(self, data: bytes) -> None:
        assert data, "the parser reported an empty body chunk"
        self.events.append(("body", data))

    def on_request_end(self) -> None:
        self.events.append(END)

    def body(self) -> bytes:
        """Every body byte reported so far, across requests."""
        return b"".join(e[1] for e in self.events if isinstance(e[1], bytes))

    def merged(self) -> list[Event]:
        """Events with adjacent body chunks joined: how a body is cut depends on the feeds."""
        merged: list[Event] = []
        for event in self.events:
            if event[0] == "body" and merged and merged[-1][0] == "body":
                previous = merged[-1]
                assert isinstance(previous[1], bytes) and isinstance(event[1], bytes)
                merged[-1] = ("body", previous[1] + event[1])
            else:
                merged.append(event)
        return merged


def _head_tuple(head: RequestHead) -> HeadTuple:
    return (
        head.method,
        head.target,
        head.version,
        list(head.headers),
        head.keep_alive,
        head.content_length,
        head.chunked,
        head.expect_continue,
    )


def parse(feeds: bytes | Iterable[bytes], limits: Limits | None = None) -> Recorder:
    sink = Recorder()
    parser = RequestParser(sink, limits)
    for data in [feeds] if isinstance(feeds, bytes) else feeds:
        parser.feed(data)
    return sink


def refusal(feeds: bytes | Iterable[bytes], limits: Limits | None = None) -> ProtocolError:
    """The error the parser raises for ``feeds``; fails the test if it accepts them."""
    sink = Recorder()
    parser = RequestParser(sink, limits)
    with pytest.raises(ProtocolError) as caught:
        for data in [feeds] if isinstance(feeds, bytes) else feeds:
            parser.feed(data)
    return caught.value


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- accepted requests -----------------------------------------------------------------------


def test_simple_get() -> None:
    sink = parse(b"GET /hello/w%C3%B6rld?x=1&y=2 HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [e[0] for e in sink.events] == ["head", "end"]
    (head,) = sink.heads
    assert head.method == "GET"
    assert head.target == b"/hello/w%C3%B6rld?x=1&y=2"
    assert head.version == "1.1"
    assert head.path == "/hello/wörld"
    assert head.raw_path == b"/hello/w%C3%B6rld"
    assert head.query_string == b"x=1&y=2"
    assert head.keep_alive is True
    assert head.content_length is None
    assert head.chunked is False
    assert head.has_body is False
    assert head.expect_continue is False
    assert head.upgrade is False


def test_headers_kept_in_order_with_original_case() -> None:
    sink = parse(
        b"GET / HTTP/1.1\r\n"
        b"host: example.com\r\n"
        b"X-Custom-THING: One\r\n"
        b"accept: */*\r\n"
        b"X-Dup: first\r\n"
        b"x-dup: second\r\n"
        b"X-Empty:\r\n"
        b"X-Spaced: \t padded value \t\r\n"
        b"\r\n"
    )
    (head,) = sink.heads
    assert head.headers == [
        (b"host", b"example.com"),
        (b"X-Custom-THING", b"One"),
        (b"accept", b"*/*"),
        (b"X-Dup", b"first"),
        (b"x-dup", b"second"),
        (b"X-Empty", b""),
        (b"X-Spaced", b"padded value"),
    ]
    assert head.get("x-custom-thing") == "One"
    assert head.get("X-DUP") == "first"
    assert head.get_all("X-Dup") == ["first", "second"]
    assert head.get("missing", "default") == "default"


def test_tab_and_obs_text_in_values_are_kept() -> None:
    sink = parse(b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\tb\r\nX-B: caf\xe9\r\n\r\n")
    assert sink.heads[0].headers[1:] == [(b"X-A", b"a\tb"), (b"X-B", b"caf\xe9")]


def test_pipelined_requests_in_one_feed() -> None:
    data = (
        b"GET /one HTTP/1.1\r\n" + HOST + b"\r\n"
        b"POST /two HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello"
        b"POST /three HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET /four HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    )
    sink = parse(data)
    assert [e[0] for e in sink.merged()] == [
        "head", "end",
        "head", "body", "end",
        "head", "body", "end",
        "head", "end",
    ]  # fmt: skip
    assert [h.target for h in sink.heads] == [b"/one", b"/two", b"/three", b"/four"]
    assert [e[1] for e in sink.merged() if e[0] == "body"] == [b"hello", b"abc"]
    assert [h.keep_alive for h in sink.heads] == [True, True, True, False]


def test_leading_empty_lines_before_a_request_are_skipped() -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
    sink = parse(b"\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [h.target for h in sink.heads] == [b"/"]


CHUNKED_REQUEST = (
    b"POST /upload?x=1 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"X-After: yes\r\n"
    b"\r\n"
    b"4;name=value\r\nWiki\r\n"
    b"5\r\npedia\r\n"
    b"E\r\n in\r\n\r\nchunks.\r\n"
    b"0\r\n"
    b"X-Trailer: done\r\n"
    b"\r\n"
    b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"
)


def test_every_split_point_gives_the_same_events() -> None:
    whole = parse(CHUNKED_REQUEST).merged()
    assert [e[0] for e in whole] == ["head", "body", "end", "head", "end"]
    assert whole[1] == ("body", b"Wikipedia in\r\n\r\nchunks.")
    for cut in range(1, len(CHUNKED_REQUEST)):
        split = parse([CHUNKED_REQUEST[:cut], CHUNKED_REQUEST[cut:]]).merged()
        assert split == whole, f"split at byte {cut}"
    for first in range(1, len(CHUNKED_REQUEST), 7):
        for second in range(first + 1, len(CHUNKED_REQUEST), 5):
            feeds = [
                CHUNKED_REQUEST[:first],
                CHUNKED_REQUEST[first:second],
                CHUNKED_REQUEST[second:],
            ]
            assert parse(feeds).merged() == whole, f"split at bytes {first} and {second}"


def test_byte_by_byte_gives_the_same_events() -> None:
    whole = parse(CHUNKED_REQUEST).merged()
    assert parse(byte_by_byte(CHUNKED_REQUEST)).merged() == whole


def test_empty_feeds_change_nothing() -> None:
    request = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
    whole = parse(request).merged()
    assert parse([b"", request[:5], b"", request[5:], b""]).merged() == whole


def test_chunked_body_with_extensions_and_trailers() -> None:
    sink = parse(
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3;foo=bar\r\nabc\r\n"
        b'2;a;b="quoted; value"\r\nde\r\n'
        b"0;last\r\n"
        b"X-Checksum: 1234\r\n"
        b"X-Other: 5\r\n"
        b"\r\n"
    )
    events = sink.merged()
    assert [e[0] for e in events] == ["head", "body", "end"]
    assert events[1] == ("body", b"abcde")
    (head,) = sink.heads
    assert head.chunked is True
    assert head.content_length is None
    assert head.has_body is True
    # Trailer fields arrive after the head was reported; they never show up among its headers.
    assert head.headers == [(b"Host", b"example.com"), (b"Transfer-Encoding", b"chunked")]


def test_transfer_coding_names_are_case_insensitive() -> None:
    sink = parse(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
    assert sink.heads[0].chunked is True
    assert [e[0] for e in sink.events] == ["head", "end"]


def test_content_length_body() -> None:
    sink = parse(
        [
            b"PUT /item HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\nhello",
            b" world",
            b"GET /after HTTP/1.1\r\n" + HOST + b"\r\n",
        ]
    )
    events = sink.merged()
    assert [e[0] for e in events] == ["head", "body", "end", "head", "end"]
    assert events[1] == ("body", b"hello world")
    assert sink.heads[0].content_length == 11
    assert sink.heads[0].chunked is False
    assert sink.heads[0].has_body is True
    assert sink.heads[1].target == b"/after"


def test_content_length_zero_has_no_body() -> None:
    sink = parse(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n")
    assert [e[0] for e in sink.events] == ["head", "end"]
    assert sink.heads[0].content_length == 0
    assert sink.heads[0].has_body is False


def test_body_is_not_reported_before_it_arrives() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    parser.feed(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 4\r\n\r\n")
    assert [e[0] for e in sink.events] == ["head"]
    assert parser.in_request
    parser.feed(b"ab")
    parser.feed(b"cd")
    assert sink.merged()[1:] == [("body", b"abcd"), END]
    assert not parser.in_request


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n", True),
        (b"GET / HTTP/1.0\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: close\r\n", False),
    ],
)
def test_keep_alive_rules(head: bytes, keep_alive: bool) -> None:
    sink = parse(head + b"\r\n")
    assert sink.heads[0].keep_alive is keep_alive


def test_http10_request_without_host_is_accepted() -> None:
    sink = parse(b"GET /old HTTP/1.0\r\n\r\n")
    assert sink.heads[0].version == "1.0"
    assert sink.heads[0].target == b"/old"


def test_http10_content_length_body() -> None:
    sink = parse(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
    assert sink.merged()[1:] == [("body", b"abc"), END]


@pytest.mark.parametrize(
    ("request_bytes", "expect_continue"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", False),
        # RFC 9110 §10.1.1: an Expect from an HTTP/1.0 client is ignored.
        (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", False),
        # A request without content is owed no interim 100.
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", False),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            True,
        ),
    ],
)
def test_expect_100_continue_flag(request_bytes: bytes, expect_continue: bool) -> None:
    sink = parse(request_bytes)
    assert sink.heads[0].expect_continue is expect_continue
    # A body still to come, or none at all.
    has_body = sink.heads[0].has_body
    assert [e[0] for e in sink.events] == (["head"] if has_body else ["head", "end"])


UPGRADE_THEN_GET = (
    b"GET /first HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    b"\r\n"
    b"GET /second HTTP/1.1\r\n" + HOST + b"\r\n"
)


def test_upgrade_request_and_the_next_one_are_both_reported() -> None:
    sink = parse(UPGRADE_THEN_GET)
    assert [e[0] for e in sink.events] == ["head", "end", "head", "end"]
    first, second = sink.heads
    assert first.target == b"/first"
    assert first.upgrade is True
    assert second.target == b"/second"
    assert second.upgrade is False


def test_upgrade_request_split_across_feeds() -> None:
    whole = parse(UPGRADE_THEN_GET).merged()
    for cut in range(1, len(UPGRADE_THEN_GET)):
        split = parse([UPGRADE_THEN_GET[:cut], UPGRADE_THEN_GET[cut:]]).merged()
        assert split == whole, f"split at byte {cut}"
    assert parse(byte_by_byte(UPGRADE_THEN_GET)).merged() == whole


def test_many_requests_on_one_parser() -> None:
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    request = b"POST /r HTTP/1.1\r\n" + HOST + b"Content-Length: 4\r\n\r\nbody"
    for _ in range(200):
        for piece in (request[:7], request[7:30], request[30:]):
            parser.feed(piece)
    assert len(sink.heads) == 200
    assert sink.merged().count(("body", b"body")) == 200


def test_limits_are_inclusive() -> None:
    url = b"/" + b"u" * (SMALL.max_request_line - 1)
    fields = [HOST, b"Content-Length: %d\r\n" % SMALL.max_body_bytes]
    fields += [b"X-%d: v\r\n" % i for i in range(SMALL.max_header_count - len(fields))]
    body = b"b" * SMALL.max_body_bytes
    request = b"POST " + url + b" HTTP/1.1\r\n" + b"".join(fields) + b"\r\n" + body
    sink = parse(request, SMALL)
    assert sink.heads[0].target == url
    assert len(sink.heads[0].headers) == SMALL.max_header_count
    assert sink.merged()[1:] == [("body", body), END]


def test_head_within_limits_is_accepted_however_it_is_cut() -> None:
    # The request line and the header fields are each exactly at their limit; how TCP happens
    # to segment the head must not decide whether it is accepted.
    limits = Limits(max_request_line=100, max_header_count=8, max_header_bytes=400)
    url = b"/" + b"u" * 99
    host = b"Host: x\r\n"  # counts 1 + 4 + 4 = 9 bytes
    filler = b"X-Fill: " + b"f" * (400 - 9 - (6 + 4)) + b"\r\n"
    request = b"GET " + url + b" HTTP/1.1\r\n" + host + filler + b"\r\n"
    whole = parse(request, limits).merged()
    assert [e[0] for e in whole] == ["head", "end"]
    assert parse(byte_by_byte(request), limits).merged() == whole
    assert parse([request[:1], request[1:]], limits).merged() == whole
    step = 16
    pieces = [request[i : i + step] for i in range(0, len(request), step)]
    assert parse(pieces, limits).merged() == whole


# --- the refusal table -----------------------------------------------------------------------

GET_X = b"GET / HTTP/1.1\r\nHost: x\r\n"
POST_X = b"POST / HTTP/1.1\r\nHost: x\r\n"
CHUNKED_HEAD = POST_X + b"Transfer-Encoding: chunked\r\n\r\n"

REFUSALS: list[tuple[str, bytes, type[ProtocolError], int]] = [
    # request line
    ("line-extra-word", b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-method-only", b"GET\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-no-method", b" / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-tab-separator", b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-ctl-in-target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-nul-in-target", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-del-in-target", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-bare-lf", b"GET / HTTP/1.1\nHost: x\r\n\r\n", BadRequest, 400),
    ("line-bare-cr", b"GET / HTTP/1.1\rHost: x\r\n\r\n", BadRequest, 400),
    ("line-trailing-space", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", BadRequest, 400),
    # version
    ("version-1.x", b"GET / HTTP/1.x\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("version-x.1", b"GET / HTTP/x.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("version-lowercase", b"GET / http/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("version-no-dot", b"GET / HTTP/11\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("version-1.10", b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("version-no-minor", b"GET / HTTP/1.\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("version-2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", VersionNotSupported, 505),
    ("version-1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", VersionNotSupported, 505),
    ("version-0.9", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", VersionNotSupported, 505),
    ("version-3.0", b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", VersionNotSupported, 505),
    # header names
    ("name-space", GET_X + b"Bad Name: v\r\n\r\n", BadRequest, 400),
    ("name-space-before-colon", GET_X + b"Name : v\r\n\r\n", BadRequest, 400),
    ("name-tab-before-colon", GET_X + b"Name\t: v\r\n\r\n", BadRequest, 400),
    ("name-paren", GET_X + b"Bad(: v\r\n\r\n", BadRequest, 400),
    ("name-empty", GET_X + b": v\r\n\r\n", BadRequest, 400),
    ("name-no-colon", GET_X + b"NoColon\r\n\r\n", BadRequest, 400),
    ("name-nul", GET_X + b"X\x00Y: v\r\n\r\n", BadRequest, 400),
    ("name-non-ascii", GET_X + b"X\xe9: v\r\n\r\n", BadRequest, 400),
    # header values and line structure
    ("obs-fold-space", GET_X + b"X: a\r\n b\r\n\r\n", BadRequest, 400),
    ("obs-fold-tab", GET_X + b"X: a\r\n\tb\r\n\r\n", BadRequest, 400),
    ("fold-before-first-field", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", BadRequest, 400),
    ("value-bare-cr", GET_X + b"X: a\rb\r\n\r\n", BadRequest, 400),
    ("value-bare-lf", GET_X + b"X: a\nY: b\r\n\r\n", BadRequest, 400),
    ("value-nul", GET_X + b"X: a\x00b\r\n\r\n", BadRequest, 400),
    ("value-soh", GET_X + b"X: a\x01b\r\n\r\n", BadRequest, 400),
    ("value-vt", GET_X + b"X: a\x0bb\r\n\r\n", BadRequest, 400),
    ("value-esc", GET_X + b"X: a\x1bb\r\n\r\n", BadRequest, 400),
    ("value-del", GET_X + b"X: a\x7fb\r\n\r\n", BadRequest, 400),
    ("host-nul", b"GET / HTTP/1.1\r\nHost: ex\x00ample\r\n\r\n", BadRequest, 400),
    # framing: Content-Length and Transfer-Encoding
    (
        "cl-and-te",
        POST_X + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        BadRequest,
        400,
    ),
    (
        "te-and-cl",
        POST_X + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        BadRequest,
        400,
    ),
    (
        "cl-two-different",
        POST_X + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        BadRequest,
        400,
    ),
    (
        "cl-two-identical",
        POST_X + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        BadRequest,
        400,
    ),
    ("cl-list", POST_X + b"Content-Length: 3, 3\r\n\r\nabc", BadRequest, 400),
    ("cl-negative", POST_X + b"Content-Length: -3\r\n\r\nabc", BadRequest, 400),
    ("cl-plus", POST_X + b"Content-Length: +3\r\n\r\nabc", BadRequest, 400),
    ("cl-underscore", POST_X + b"Content-Length: 1_0\r\n\r\n", BadRequest, 400),
    ("cl-hex", POST_X + b"Content-Length: 0x10\r\n\r\n", BadRequest, 400),
    ("cl-two-numbers", POST_X + b"Content-Length:  3 3\r\n\r\nabc", BadRequest, 400),
    ("cl-empty", POST_X + b"Content-Length: \r\n\r\n", BadRequest, 400),
    ("cl-decimal", POST_X + b"Content-Length: 3.0\r\n\r\n", BadRequest, 400),
    ("cl-overflow", POST_X + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n", BadRequest, 400),
    ("te-gzip-alone", POST_X + b"Transfer-Encoding: gzip\r\n\r\n", BadRequest, 400),
    ("te-identity", POST_X + b"Transfer-Encoding: identity\r\n\r\n", BadRequest, 400),
    (
        "te-chunked-chunked",
        POST_X + b"Transfer-Encoding: chunked, chunked\r\n\r\n",
        BadRequest,
        400,
    ),
    (
        "te-chunked-in-two-fields",
        POST_X + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        BadRequest,
        400,
    ),
    ("te-chunked-then-gzip", POST_X + b"Transfer-Encoding: chunked, gzip\r\n\r\n", BadRequest, 400),
    ("te-empty", POST_X + b"Transfer-Encoding: \r\n\r\n", BadRequest, 400),
    (
        "te-gzip-chunked",
        POST_X + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        NotImplementedByServer,
        501,
    ),
    (
        "te-gzip-chunked-in-two-fields",
        POST_X + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        NotImplementedByServer,
        501,
    ),
    (
        "te-on-http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        BadRequest,
        400,
    ),
    # chunk sizes (the head is fine, the body is not)
    ("chunk-size-zz", CHUNKED_HEAD + b"zz\r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-plus", CHUNKED_HEAD + b"+3\r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-minus", CHUNKED_HEAD + b"-3\r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-0x", CHUNKED_HEAD + b"0x3\r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-underscore", CHUNKED_HEAD + b"1_0\r\n0123456789\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-space", CHUNKED_HEAD + b"3 \r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-empty", CHUNKED_HEAD + b"\r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-huge", CHUNKED_HEAD + b"f" * 18 + b"\r\nabc\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-size-2**64", CHUNKED_HEAD + b"1" + b"0" * 16 + b"\r\nabc\r\n", BadRequest, 400),
    ("chunk-data-too-long", CHUNKED_HEAD + b"3\r\nabcd\r\n0\r\n\r\n", BadRequest, 400),
    ("chunk-bare-lf", CHUNKED_HEAD + b"3\nabc\r\n0\r\n\r\n", BadRequest, 400),
    # Host (RFC 9112 §3.2)
    ("host-missing", b"GET / HTTP/1.1\r\n\r\n", BadRequest, 400),
    ("host-two-different", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest, 400),
    ("host-two-identical", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", BadRequest, 400),
    ("host-two-on-http10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest, 400),
    # Host values (RFC 9110 §7.2: uri-host [":" port]); a list, a path or userinfo is a 400
    *(
        (f"host-value-{name}", b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n", BadRequest, 400)
        for name, value in [
            ("empty", b""),
            ("spaces-only", b"   "),
            ("userinfo", b"user@example.com"),
            ("userinfo-password", b"user:pw@example.com"),
            ("path", b"example.com/path"),
            ("query", b"example.com?x"),
            ("fragment", b"example.com#x"),
            ("list", b"a, b"),
            ("list-no-space", b"a,b"),
            ("inner-space", b"exa mple.com"),
            ("inner-tab", b"exa\tmple.com"),
            ("port-letters", b"example.com:http"),
            ("port-empty", b"example.com:"),
            ("port-six-digits", b"example.com:123456"),
            ("port-over-65535", b"example.com:65536"),
            ("port-sign", b"example.com:+80"),
            ("port-twice", b"example.com:80:80"),
            ("port-only", b":80"),
            ("ipv6-unbracketed", b"::1"),
            ("ipv6-unclosed", b"[::1"),
            ("ipv6-invalid", b"[::g]"),
            ("ipv6-zone", b"[fe80::1%25eth0]"),
            ("ipv6-trailing", b"[::1]x"),
            ("ipv6-empty", b"[]"),
            ("bad-percent", b"exa%zzmple.com"),
            ("short-percent", b"example.com%4"),
            ("backslash", b"example.com\\x"),
            ("quote", b'"example.com"'),
            ("angle", b"<example.com>"),
            ("obs-text", b"ex\xe4mple.com"),
            ("underscore-colon", b"a_b:"),
        ]
    ),
    ("host-invalid-on-http10", b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n", BadRequest, 400),
    (
        "host-invalid-with-absolute-form",
        b"GET http://example.com/ HTTP/1.1\r\nHost: a/b\r\n\r\n",
        BadRequest,
        400,
    ),
    # request-target forms (RFC 9112 §3.2)
    ("target-asterisk-get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-asterisk-post", b"POST * HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-asterisk-head", b"HEAD * HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-asterisk-suffix", b"OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-asterisk-slash", b"OPTIONS */ HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-asterisk-query", b"OPTIONS *? HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-double-asterisk", b"OPTIONS ** HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-relative", b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-authority-form", b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-query-only", b"GET ?x HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-fragment", b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-fragment-after-query", b"GET /?a=1#x HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-fragment-only", b"GET # HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-scheme-one-slash", b"GET http:/x HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("target-scheme-no-slash", b"GET http:x HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    *(
        (
            f"target-absolute-{name}",
            b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            BadRequest,
            400,
        )
        for name, target in [
            ("ftp", b"ftp://example.com/"),
            ("other-scheme", b"x://example.com/"),
            ("no-authority", b"http://"),
            ("empty-host", b"http:///path"),
            ("userinfo", b"http://user@example.com/"),
            ("userinfo-password", b"http://user:pw@example.com/"),
            ("comma", b"http://a,b/"),
            ("port-letters", b"http://example.com:ab/"),
            ("port-too-long", b"http://example.com:99999999/"),
            ("port-over-65535", b"http://example.com:70000/"),
            ("port-empty", b"http://example.com:/"),
            ("ipv6-invalid", b"http://[::g]/"),
            ("fragment", b"http://example.com/#x"),
            ("fragment-no-path", b"http://example.com#x"),
        ]
    ),
    # Expect
    ("expect-other", GET_X + b"Expect: something-else\r\n\r\n", ExpectationFailed, 417),
    # methods
    ("method-garbage-bytes", b"\x01\x02\x03 / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("method-with-paren", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    ("method-non-ascii", b"G\xc3\x89T / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest, 400),
    (
        "method-connect",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        NotImplementedByServer,
        501,
    ),
    # an upgrade can not carry a body that we would then have to read as HTTP/1.1
    (
        "upgrade-with-body",
        POST_X + b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
        NotImplementedByServer,
        501,
    ),
]

REFUSAL_PARAMS = [pytest.param(data, cls, status, id=name) for name, data, cls, status in REFUSALS]


@pytest.mark.parametrize(("data", "error_class", "status"), REFUSAL_PARAMS)
def test_refusal_table(data: bytes, error_class: type[ProtocolError], status: int) -> None:
    error = refusal(data)
    assert type(error) is error_class
    assert error.status == status
    assert error.detail


@pytest.mark.parametrize(("data", "error_class", "status"), REFUSAL_PARAMS)
def test_refusal_table_byte_by_byte(
    data: bytes, error_class: type[ProtocolError], status: int
) -> None:
    error = refusal(byte_by_byte(data))
    assert type(error) is error_class
    assert error.status == status


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(data, id=name)
        for name, data, _, _ in REFUSALS
        if not data.startswith(CHUNKED_HEAD)
    ],
)
def test_refused_head_is_never_reported(data: bytes) -> None:
    sink = Recorder()
    with pytest.raises(ProtocolError):
        RequestParser(sink).feed(data)
    assert sink.heads == []


def test_request_line_without_version_is_refused() -> None:
    # llhttp reads "GET /" as an HTTP/0.9 simple request: either a 400 or a 505 refuses it.
    sink = Recorder()
    with pytest.raises(ProtocolError) as caught:
        RequestParser(sink).feed(b"GET /\r\nHost: x\r\n\r\n")
    assert caught.value.status in (400, 505)
    assert sink.heads == []


def test_a_target_ending_like_a_version_is_still_a_simple_request() -> None:
    # The version is read from the end of the request line where it can be: "/HTTP/1.1" is
    # a target with no version after it, which llhttp takes for HTTP/0.9.
    error = refusal(b"GET /HTTP/1.1\r\nHost: x\r\n\r\n")
    assert error.status in (400, 505)


KEEP_ALIVE = b"Connection: keep-alive\r\n"
VERSIONED = [
    b"GET /a HTTP/1.0\r\n" + HOST + KEEP_ALIVE + b"\r\n",
    b"\r\nGET /b HTTP/1.1\r\n" + HOST + b"\r\n",
    b"POST /c HTTP/1.0\r\n" + HOST + KEEP_ALIVE + b"Content-Length: 4\r\n\r\nHTTP",
    b"GET /d HTTP/1.1\r\n" + HOST + b"X-Line: GET / HTTP/1.0\r\n\r\n",
    b"BREW /pot HTTP/1.0\r\n" + HOST + KEEP_ALIVE + b"\r\n",  # a method llhttp does not know
    b"UNSUBSCRIBE /u HTTP/1.1\r\n" + HOST + b"A: HTTP/1.0\r\n\r\n",  # its longest known one
    b"GET /e HTTP/1.0\r\n" + HOST + b"\r\n",
]


@pytest.mark.parametrize("split", range(0, sum(map(len, VERSIONED)), 7))
def test_each_request_has_its_own_version_however_reads_fall(split: int) -> None:
    # Pipelined requests of both versions, in one read, in two split anywhere, and byte by
    # byte: the version each reports is the one its own request line names.
    data = b"".join(VERSIONED)
    expected = ["1.0", "1.1", "1.0", "1.1", "1.0", "1.1", "1.0"]
    for feeds in (
        [data],
        [data[:split], data[split:]],
        [*byte_by_byte(data[:split]), data[split:]],
    ):
        assert [head.version for head in parse(feeds).heads] == expected


@pytest.mark.parametrize(
    "line",
    [b"GET / RTSP/1.0", b"POST / RTSP/1.0", b"DESCRIBE / RTSP/1.0", b"SOURCE / ICE/1.0"],
)
def test_non_http_protocol_name_is_refused(line: bytes) -> None:
    # llhttp's request grammar also admits RTSP/x.y and ICE/x.y request lines and reports
    # them as version 1.0; neither is HTTP, and a request line that is not HTTP is malformed.
    error = refusal(line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert error.status in (400, 505)


def test_http2_preface_is_refused() -> None:
    error = refusal(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert error.status in (400, 505)


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (POST_X + b"Transfer-Encoding: gzip\r\n\r\n", 400),
        (POST_X + b"Content-Length: +1\r\n\r\n", 400),
        (GET_X + b"Expect: nope\r\n\r\n", 417),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ],
)
def test_refusal_after_an_upgrade_request_in_the_same_feed(bad: bytes, status: int) -> None:
    # The bytes after an upgrade request go to a fresh llhttp parser; what that one refuses
    # must still come out as a ProtocolError, not as httptools' own callback error.
    upgrade = GET_X + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    sink = Recorder()
    parser = RequestParser(sink, Limits(max_request_line=100))
    with pytest.raises(ProtocolError) as caught:
        parser.feed(upgrade + bad)
    assert caught.value.status == status
    assert len(sink.heads) == 1


def test_good_request_is_reported_before_a_bad_pipelined_one() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    with pytest.raises(BadRequest):
        parser.feed(
            b"GET /good HTTP/1.1\r\n" + HOST + b"\r\n"
            b"GET /bad HTTP/1.1\r\n" + HOST + b"Content-Length: +3\r\n\r\nabc"
        )
    assert [h.target for h in sink.heads] == [b"/good"]
    assert [e[0] for e in sink.events] == ["head", "end"]


def test_garbage_method_split_across_feeds_is_a_400() -> None:
    error = refusal([b"GET / HTTP/1.1\r\n" + HOST + b"\r\n", b"G", b"(T / HTTP/1.1\r\n"])
    assert type(error) is BadRequest


# --- limits ----------------------------------------------------------------------------------


def test_request_line_over_limit_is_414() -> None:
    url = b"/" + b"u" * SMALL.max_request_line
    error = refusal(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n\r\n", SMALL)
    assert type(error) is URITooLong
    assert error.status == 414


def test_request_line_trickled_over_many_feeds_is_414_without_waiting_for_its_end() -> None:
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    parser.feed(b"GET /")
    fed = 0
    with pytest.raises(URITooLong):
        while fed < 100 * SMALL.max_request_line:
            parser.feed(b"u")
            fed += 1
    assert fed <= SMALL.max_request_line
    assert sink.heads == []


def test_too_many_headers_is_431() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(SMALL.max_header_count))
    error = refusal(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n", SMALL)
    assert type(error) is HeadersTooLarge
    assert error.status == 431


def test_headers_too_large_is_431() -> None:
    value = b"v" * SMALL.max_header_bytes
    error = refusal(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + value + b"\r\n\r\n", SMALL)
    assert type(error) is HeadersTooLarge
    assert error.status == 431


def test_many_small_headers_adding_up_to_too_much_is_431() -> None:
    limits = Limits(max_header_count=1000, max_header_bytes=400)
    fields = b"".join(b"X-%03d: %s\r\n" % (i, b"v" * 20) for i in range(20))
    error = refusal(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n", limits)
    assert error.status == 431


@pytest.mark.parametrize("piece", [1, 7, 64])
def test_huge_header_value_trickled_is_431_and_bounded(piece: int) -> None:
    # One header value that never ends, fed a little at a time: every feed must be counted,
    # or httptools keeps concatenating the unfinished value without bound.
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
    bound = 2 * (SMALL.max_header_bytes + SMALL.max_request_line)
    fed = 0
    with pytest.raises(HeadersTooLarge):
        while fed < 1000 * bound:
            parser.feed(b"v" * piece)
            fed += piece
    assert fed <= bound
    assert sink.heads == []


def test_huge_header_name_trickled_is_431_and_bounded() -> None:
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-")
    bound = 2 * (SMALL.max_header_bytes + SMALL.max_request_line)
    fed = 0
    with pytest.raises(HeadersTooLarge):
        while fed < 1000 * bound:
            parser.feed(b"n")
            fed += 1
    assert fed <= bound


def test_huge_trailer_value_trickled_is_refused_and_bounded() -> None:
    # Trailer fields are buffered like header fields: the same bound must hold after the body.
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    parser.feed(CHUNKED_HEAD + b"3\r\nabc\r\n0\r\nX-Trailer: ")
    bound = 2 * (SMALL.max_header_bytes + SMALL.max_request_line)
    fed = 0
    with pytest.raises(ProtocolError) as caught:
        while fed < 1000 * bound:
            parser.feed(b"v")
            fed += 1
    assert caught.value.status == 431
    assert fed <= bound


def test_too_many_trailer_fields_is_431() -> None:
    trailers = b"".join(b"T-%d: v\r\n" % i for i in range(SMALL.max_header_count))
    error = refusal(CHUNKED_HEAD + b"0\r\n" + trailers + b"\r\n", SMALL)
    assert error.status == 431


def test_body_over_limit_by_content_length_is_413_at_head_time() -> None:
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (SMALL.max_body_bytes + 1)
    with pytest.raises(ContentTooLarge) as caught:
        parser.feed(head)  # no body byte has been sent
    assert caught.value.status == 413
    assert sink.heads == []


def test_huge_content_length_is_413_not_a_crash() -> None:
    error = refusal(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\n")
    assert error.status == 413


def test_chunked_body_over_limit_is_413() -> None:
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    parser.feed(CHUNKED_HEAD)
    parser.feed(b"a\r\n" + b"a" * 10 + b"\r\n")
    with pytest.raises(ContentTooLarge) as caught:
        parser.feed(b"a\r\n" + b"b" * 10 + b"\r\n0\r\n\r\n")
    assert caught.value.status == 413
    body = sink.body()
    assert len(body) <= SMALL.max_body_bytes
    assert END not in sink.events


def test_chunked_body_over_limit_in_one_huge_chunk_is_413() -> None:
    sink = Recorder()
    parser = RequestParser(sink, SMALL)
    with pytest.raises(ContentTooLarge):
        parser.feed(CHUNKED_HEAD + b"7fffffffffffffff\r\n" + b"x" * 64)
    body = sink.body()
    assert len(body) <= SMALL.max_body_bytes


def test_body_limit_zero_refuses_any_body() -> None:
    limits = Limits(max_body_bytes=0)
    assert parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", limits).heads
    assert (
        refusal(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", limits).status == 413
    )


def test_limits_validate_their_values() -> None:
    with pytest.raises(ValueError):
        Limits(max_request_line=0)
    with pytest.raises(ValueError):
        Limits(max_header_count=-1)
    with pytest.raises(ValueError):
        Limits(max_body_bytes=-1)


# --- parse_content_length ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"0", 0), (b"42", 42), (b"007", 7), (b" 42\t", 42), (b"9" * 18, int("9" * 18))],
)
def test_parse_content_length_accepts_plain_digits(value: bytes, expected: int) -> None:
    assert parse_content_length(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b" ",
        b"-3",
        b"+3",
        b"-0",
        b"1_0",
        b"0x10",
        b"3 3",
        b"3,3",
        b"3.0",
        b"1e3",
        b"\xd9\xa3",  # ARABIC-INDIC DIGIT THREE: int() would take it as a str
        b"\xef\xbc\x93",  # FULLWIDTH DIGIT THREE
        b"9" * 19,
        b"3\x00",
    ],
)
def test_parse_content_length_refuses_other_spellings(value: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_content_length(value)
    assert caught.value.status == 400


# --- responses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (204, b"HTTP/1.1 204 No Content\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (413, b"HTTP/1.1 413 Content Too Large\r\n"),
        (431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        (505, b"HTTP/1.1 505 HTTP Version Not Supported\r\n"),
    ],
)
def test_status_line(status: int, line: bytes) -> None:
    assert status_line(status) == line


def test_status_line_with_custom_or_unknown_reason() -> None:
    assert status_line(200, "Fine") == b"HTTP/1.1 200 Fine\r\n"
    assert status_line(299) == b"HTTP/1.1 299 \r\n"  # the reason phrase may be empty, not the SP


@pytest.mark.parametrize("status", [0, 99, 1000, -200])
def test_status_line_refuses_impossible_codes(status: int) -> None:
    with pytest.raises(ValueError):
        status_line(status)


@pytest.mark.parametrize("reason", ["OK\r\nSet-Cookie: a=b", "OK\n", "OK\r", "O\x00K"])
def test_status_line_refuses_split_reason(reason: str) -> None:
    with pytest.raises(ValueError):
        status_line(200, reason)


def test_encode_headers() -> None:
    block = encode_headers([("Content-Type", "text/plain"), ("X-Tab", "a\tb"), ("x-empty", "")])
    assert block == b"Content-Type: text/plain\r\nX-Tab: a\tb\r\nx-empty: \r\n"
    assert encode_headers([]) == b""
    assert encode_headers([("X-Latin", "café")]) == b"X-Latin: caf\xe9\r\n"


def test_encode_headers_writes_numbers_and_takes_any_iterable_of_pairs() -> None:
    # The same on the compiled build, which checks declared types, as on the pure one.
    assert encode_headers([("X-Count", 5), ("X-Ratio", 0.5)]) == b"X-Count: 5\r\nX-Ratio: 0.5\r\n"
    assert encode_headers((("A", "1"), ("B", "2"))) == b"A: 1\r\nB: 2\r\n"
    assert encode_headers(pair for pair in [("A", "1")]) == b"A: 1\r\n"


@pytest.mark.parametrize(
    "value",
    [
        "a\r\nSet-Cookie: stolen=1",
        "a\nSet-Cookie: stolen=1",
        "a\rb",
        "a\x00b",
        "a\x01b",
        "a\x7fb",
        "\r\n",
        "a\x0bb",
    ],
)
def test_encode_headers_refuses_response_splitting_values(value: str) -> None:
    with pytest.raises(ValueError):
        encode_headers([("X-Value", value)])
    # A line that was accepted before must not make a bad one pass later (no stale caching).
    encode_headers([("X-Value", "fine")])
    with pytest.raises(ValueError):
        encode_headers([("X-Value", "fine"), ("X-Value", value)])


@pytest.mark.parametrize(
    "name",
    ["", "Bad Name", "Bad:Name", "X-Header\r\nSet-Cookie", "X\n", "X\x00", "Bad(", "Ünicode", " X"],
)
def test_encode_headers_refuses_invalid_names(name: str) -> None:
    with pytest.raises(ValueError):
        encode_headers([(name, "value")])


def test_encode_headers_refuses_what_latin1_cannot_carry() -> None:
    with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError
        encode_headers([("X-Euro", "€")])


def test_encode_chunk_and_last_chunk_round_trip_through_the_parser() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert encode_chunk(b"x" * 4096).startswith(b"1000\r\n")
    assert LAST_CHUNK == b"0\r\n\r\n"
    pieces = [b"a", b"bc" * 100, b"\r\n0\r\n\r\n", b"z" * 5000]
    body = b"".join(encode_chunk(p) for p in pieces) + LAST_CHUNK
    sink = parse(CHUNKED_HEAD + body)
    assert sink.merged()[1:] == [("body", b"".join(pieces)), END]


class _FakeSocket:
    """Enough of a socket for :class:`http.client.HTTPResponse` to read a response from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


def read_back(data: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    response = http.client.HTTPResponse(_FakeSocket(data))  # type: ignore[arg-type]
    response.begin()
    return response, response.read()


@pytest.mark.parametrize("status", [400, 408, 413, 414, 417, 431, 501, 505])
def test_error_response_is_self_framed_and_closes(status: int) -> None:
    data = error_response(status, "because")
    response, body = read_back(data)
    assert response.status == status
    assert response.version == 11
    assert response.getheader("Connection") == "close"
    assert response.getheader("Content-Type", "").startswith("text/plain")
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert response.getheader("Transfer-Encoding") is None
    assert body.startswith(f"{status} ".encode())
    assert b"because" in body
    assert data.endswith(body)  # nothing after the declared body
    assert response.will_close


def test_error_response_reason_phrases() -> None:
    response, _ = read_back(error_response(413))
    assert response.reason == "Content Too Large"
    response, _ = read_back(error_response(431))
    assert response.reason == "Request Header Fields Too Large"


def test_error_response_with_date_line() -> None:
    date_line = format_date(1_700_000_000)
    response, _ = read_back(error_response(400, "x", date_line=date_line))
    assert response.getheader("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_error_response_detail_cannot_inject_headers() -> None:
    data = error_response(400, "oops\r\nSet-Cookie: a=b\r\n\r\nHTTP/1.1 200 OK")
    response, body = read_back(data)
    assert response.getheader("Set-Cookie") is None
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert data.count(b"HTTP/1.1 ") == 2  # the status line and the quoted text in the body
    assert data.startswith(b"HTTP/1.1 400 ")


def test_error_response_non_ascii_detail_is_counted_in_bytes() -> None:
    response, body = read_back(error_response(400, "naïve ☃"))
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert "naïve ☃" in body.decode("utf-8")


def test_format_date() -> None:
    assert format_date(0) == b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    line = format_date(1_234_567_890.75)
    assert re.fullmatch(
        rb"date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
        rb"Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT\r\n",
        line,
    )
    value = line[len(b"date: ") : -2].decode("ascii")
    assert email.utils.parsedate_to_datetime(value).timestamp() == 1_234_567_890


def test_spaces_after_a_method_are_bounded_like_the_request_line() -> None:
    # llhttp skips spaces between the method and the target without a word to us; a client
    # that sends nothing else must still meet a limit, whatever the size of its reads.
    limits = Limits(max_request_line=300)
    for feeds in (b"PATCH" + b" " * 1000, byte_by_byte(b"GET" + b" " * 1000)):
        error = refusal(feeds, limits)
        assert isinstance(error, URITooLong)
        assert error.status == 414

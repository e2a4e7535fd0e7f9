"""Malformed requests from RFC 9110/9112, each sent over a raw socket to one running server.

Every vector gets a fresh connection and must end, within a short deadline, in exactly one
response with the expected status and then a close; where framing is lost (the client stops
mid-request) in a close with at most one error response. No vector may reach the
application's answer. The server must still serve a valid request when the table is done.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from bastion import App, Request, Response
from bastion.engine import ServerConfig
from bastion.http import Limits
from tests.serving import RunningServer, read_response, serve

LIMITS = Limits(max_request_line=200, max_header_count=12, max_header_bytes=1000, max_body_bytes=64)
# Short deadlines so that the few vectors which stall the server cost half a second each.
CONFIG = ServerConfig(limits=LIMITS, header_timeout=0.5, body_timeout=0.5, keepalive_timeout=2.0)
VECTOR_DEADLINE = 3.0  # seconds for one vector, from connect to close

# Every response carries this; an error response never does.
APP_MARK = b"echo:"
CLOSED = 0  # expected "status" of a vector whose framing is lost: a close, with at most a 4xx


def make_app() -> App:
    app = App()

    @app.route("/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    async def echo(request: Request) -> Response:
        # The body is read before anything else, so that a bad body is seen at once.
        body = await request.body()
        return Response(APP_MARK + request.path.encode() + b":" + body)

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(make_app(), CONFIG) as running:
        yield running


# --- the vectors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    name: str
    data: bytes
    status: int  # the one status expected, or CLOSED
    eof: bool = False  # half-close after sending: the client has nothing more to say
    xfail: str = ""
    answered: int = 0  # valid requests pipelined before the bad one, each answered first


GET = b"GET / HTTP/1.1\r\nHost: t\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: t\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
END = b"\r\n"


def line(request_line: bytes) -> bytes:
    return request_line + b"\r\nHost: t\r\n\r\n"


def target(raw: bytes, method: bytes = b"GET") -> bytes:
    return line(method + b" " + raw + b" HTTP/1.1")


def version(raw: bytes) -> bytes:
    return line(b"GET / " + raw)


def field(raw: bytes) -> bytes:
    return GET + raw + b"\r\n\r\n"


def host(raw: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: " + raw + b"\r\n\r\n"


def chunked(body: bytes) -> bytes:
    return CHUNKED + body


def group(prefix: str, status: int, cases: list[tuple[str, bytes]]) -> list[Vector]:
    return [Vector(f"{prefix}-{name}", data, status) for name, data in cases]


VECTORS: list[Vector] = [
    # request line: methods (RFC 9110 §9: a method is a case-sensitive token; any token
    # reaches the application, see test_extension_methods_reach_the_application)
    *group(
        "method",
        501,
        [
            ("connect", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n"),
        ],
    ),
    *group(
        "method",
        400,
        [
            ("garbage", line(b"\x01\x02\x03 / HTTP/1.1")),
            ("paren", line(b"G(T / HTTP/1.1")),
            ("slash", line(b"GE/T / HTTP/1.1")),
            ("non-ascii", line(b"G\xc3\x89T / HTTP/1.1")),
            ("nul", line(b"G\x00T / HTTP/1.1")),
            ("empty", line(b" / HTTP/1.1")),
            ("leading-space", line(b" GET / HTTP/1.1")),
            ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ],
    ),
    # request line: structure and spacing (RFC 9112 §3)
    *group(
        "line",
        400,
        [
            ("extra-word", line(b"GET / HTTP/1.1 extra")),
            ("method-only", line(b"GET")),
            ("no-spaces", line(b"GET/HTTP/1.1")),
            ("tab-after-method", line(b"GET\t/ HTTP/1.1")),
            ("tab-before-version", line(b"GET /\tHTTP/1.1")),
            ("trailing-space", line(b"GET / HTTP/1.1 ")),
            ("trailing-tab", line(b"GET / HTTP/1.1\t")),
            ("bare-lf", b"GET / HTTP/1.1\nHost: t\r\n\r\n"),
            ("bare-cr", b"GET / HTTP/1.1\rHost: t\r\n\r\n"),
            ("cr-cr-lf", b"GET / HTTP/1.1\r\r\nHost: t\r\n\r\n"),
            ("all-bare-lf", b"GET / HTTP/1.1\nHost: t\n\n"),
            ("space-in-target", target(b"/a b")),
            ("nul-in-target", target(b"/a\x00b")),
            ("soh-in-target", target(b"/a\x01b")),
            ("vt-in-target", target(b"/a\x0bb")),
            ("ff-in-target", target(b"/a\x0cb")),
            ("del-in-target", target(b"/a\x7fb")),
            ("obs-text-in-target", target(b"/a\x80b")),
            ("ff-byte-in-target", target(b"/a\xffb")),
            ("utf8-in-target", target("/é".encode())),
            ("cr-in-target", target(b"/a\rb")),
            ("lf-in-target", target(b"/a\nb")),
        ],
    ),
    # request-target forms (RFC 9112 §3.2)
    *group(
        "target",
        400,
        [
            ("asterisk-get", target(b"*")),
            ("asterisk-post", target(b"*", b"POST")),
            ("asterisk-head", target(b"*", b"HEAD")),
            ("asterisk-delete", target(b"*", b"DELETE")),
            ("asterisk-suffix", target(b"*x", b"OPTIONS")),
            ("asterisk-slash", target(b"*/", b"OPTIONS")),
            ("asterisk-query", target(b"*?", b"OPTIONS")),
            ("double-asterisk", target(b"**", b"OPTIONS")),
            ("relative", target(b"foo")),
            ("relative-dot", target(b"./foo")),
            ("authority-form", target(b"t:80")),
            ("authority-form-name", target(b"example.com")),
            ("query-only", target(b"?x")),
            ("fragment", target(b"/a#frag")),
            ("fragment-after-query", target(b"/?a=1#x")),
            ("fragment-only", target(b"#")),
            ("scheme-one-slash", target(b"http:/x")),
            ("scheme-no-slash", target(b"http:x")),
            ("absolute-ftp", target(b"ftp://t/")),
            ("absolute-other-scheme", target(b"x://t/")),
            ("absolute-ws", target(b"ws://t/")),
            ("absolute-no-authority", target(b"http://")),
            ("absolute-empty-host", target(b"http:///p")),
            ("absolute-userinfo", target(b"http://user@t/")),
            ("absolute-userinfo-password", target(b"http://user:pw@t/")),
            ("absolute-comma", target(b"http://a,b/")),
            ("absolute-port-letters", target(b"http://t:ab/")),
            ("absolute-port-too-long", target(b"http://t:99999999/")),
            ("absolute-port-over-65535", target(b"http://t:70000/")),
            ("absolute-port-empty", target(b"http://t:/")),
            ("absolute-ipv6-invalid", target(b"http://[::g]/")),
            ("absolute-ipv6-unbracketed", target(b"http://::1/")),
            ("absolute-fragment", target(b"http://t/#x")),
            ("absolute-fragment-no-path", target(b"http://t#x")),
            ("absolute-bad-host-char", target(b'http://t"/')),
        ],
    ),
    Vector("target-too-long", target(b"/" + b"a" * 250), 414),
    Vector("target-too-long-query", target(b"/?" + b"q" * 250), 414),
    Vector("target-too-long-absolute", target(b"http://t/" + b"a" * 250), 414),
    # versions (RFC 9112 §2.3): well-formed but unsupported is 505, malformed is 400
    *group(
        "version",
        505,
        [
            ("1.2", version(b"HTTP/1.2")),
            ("1.9", version(b"HTTP/1.9")),
            ("2.0", version(b"HTTP/2.0")),
            ("3.0", version(b"HTTP/3.0")),
            ("0.9", version(b"HTTP/0.9")),
        ],
    ),
    *group(
        "version",
        400,
        [
            ("1.x", version(b"HTTP/1.x")),
            ("x.1", version(b"HTTP/x.1")),
            ("lowercase", version(b"http/1.1")),
            ("mixed-case", version(b"Http/1.1")),
            ("no-dot", version(b"HTTP/11")),
            ("two-digit-minor", version(b"HTTP/1.10")),
            ("two-digit-major", version(b"HTTP/01.1")),
            ("no-minor", version(b"HTTP/1.")),
            ("no-number", version(b"HTTP/")),
            ("no-slash", version(b"HTTP1.1")),
            ("name-only", version(b"HTTP")),
            ("three-parts", version(b"HTTP/1.1.1")),
            ("suffix", version(b"HTTP/1.1x")),
            ("https", version(b"HTTPS/1.1")),
            ("space-in-version", version(b"HTTP/ 1.1")),
            ("space-before-slash", version(b"HTTP /1.1")),
            ("rtsp", version(b"RTSP/1.0")),
            ("ice", version(b"ICE/1.0")),
        ],
    ),
    # header field names (RFC 9110 §5.1: a token; RFC 9112 §5.1: no space before the colon)
    *group(
        "name",
        400,
        [
            ("space", field(b"Bad Name: v")),
            ("space-before-colon", field(b"Name : v")),
            ("tab-before-colon", field(b"Name\t: v")),
            ("empty", field(b": v")),
            ("no-colon", field(b"NoColon")),
            ("nul", field(b"X\x00Y: v")),
            ("non-ascii", field(b"X\xe9: v")),
            ("paren", field(b"Bad(: v")),
            ("at", field(b"a@b: v")),
            ("bracket", field(b"a[b]: v")),
            ("brace", field(b"a{b}: v")),
            ("slash", field(b"a/b: v")),
            ("backslash", field(b"a\\b: v")),
            ("quote", field(b'a"b: v')),
            ("comma", field(b"a,b: v")),
            ("semicolon", field(b"a;b: v")),
            ("equals", field(b"a=b: v")),
            ("question", field(b"a?b: v")),
            ("del", field(b"a\x7fb: v")),
            ("cr-in-name", field(b"a\rb: v")),
            ("leading-space-first-field", b"GET / HTTP/1.1\r\n Host: t\r\n\r\n"),
            ("leading-tab-first-field", b"GET / HTTP/1.1\r\n\tHost: t\r\n\r\n"),
        ],
    ),
    # header field values (RFC 9110 §5.5: no CTLs but HTAB; RFC 9112 §5.2: no obs-fold)
    *group(
        "value",
        400,
        [
            ("obs-fold-space", field(b"X: a\r\n b")),
            ("obs-fold-tab", field(b"X: a\r\n\tb")),
            ("obs-fold-empty-first", field(b"X:\r\n b")),
            ("bare-cr", field(b"X: a\rb")),
            ("bare-cr-at-end", field(b"X: a\r")),
            ("bare-lf", GET + b"X: a\nY: b\r\n\r\n"),
            ("lf-terminated-field", GET + b"X: a\n\r\n"),
            ("lf-lf-end-of-head", GET + b"X: a\r\n\n"),
            ("nul", field(b"X: a\x00b")),
            ("soh", field(b"X: a\x01b")),
            ("bs", field(b"X: a\x08b")),
            ("vt", field(b"X: a\x0bb")),
            ("ff", field(b"X: a\x0cb")),
            ("so", field(b"X: a\x0eb")),
            ("esc", field(b"X: a\x1bb")),
            ("us", field(b"X: a\x1fb")),
            ("del", field(b"X: a\x7fb")),
            ("nul-only", field(b"X: \x00")),
        ],
    ),
    # Host (RFC 9112 §3.2, RFC 9110 §7.2)
    *group(
        "host",
        400,
        [
            ("missing", b"GET / HTTP/1.1\r\n\r\n"),
            ("two-different", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            ("two-identical", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            ("two-cases", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            ("two-on-http10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            ("invalid-on-http10", b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n"),
            ("missing-with-absolute-form", b"GET http://t/ HTTP/1.1\r\n\r\n"),
            ("invalid-with-absolute-form", b"GET http://t/ HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            ("empty", host(b"")),
            ("spaces-only", host(b"   ")),
            ("userinfo", host(b"user@t")),
            ("userinfo-password", host(b"user:pw@t")),
            ("path", host(b"t/path")),
            ("query", host(b"t?x")),
            ("fragment", host(b"t#x")),
            ("list", host(b"a, b")),
            ("list-no-space", host(b"a,b")),
            ("inner-space", host(b"ex ample")),
            ("inner-tab", host(b"ex\tample")),
            ("port-letters", host(b"t:http")),
            ("port-empty", host(b"t:")),
            ("port-six-digits", host(b"t:123456")),
            ("port-over-65535", host(b"t:65536")),
            ("port-sign", host(b"t:+80")),
            ("port-twice", host(b"t:80:80")),
            ("port-only", host(b":80")),
            ("ipv6-unbracketed", host(b"::1")),
            ("ipv6-unclosed", host(b"[::1")),
            ("ipv6-invalid", host(b"[::g]")),
            ("ipv6-zone", host(b"[fe80::1%25eth0]")),
            ("ipv6-trailing", host(b"[::1]x")),
            ("ipv6-empty", host(b"[]")),
            ("bad-percent", host(b"ex%zzample")),
            ("short-percent", host(b"t%4")),
            ("backslash", host(b"t\\x")),
            ("quoted", host(b'"t"')),
            ("angle", host(b"<t>")),
            ("obs-text", host(b"ex\xe4mple")),
            ("nul", host(b"ex\x00ample")),
        ],
    ),
    # framing: Content-Length (RFC 9112 §6.3, RFC 9110 §8.6)
    *group(
        "cl",
        400,
        [
            ("and-te", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("te-and-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            (
                "and-te-http10",
                b"POST /p HTTP/1.0\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            ("zero-and-te", POST + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ("two-different", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            ("two-identical", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            ("list", POST + b"Content-Length: 3, 3\r\n\r\nabc"),
            ("trailing-comma", POST + b"Content-Length: 3,\r\n\r\nabc"),
            ("negative", POST + b"Content-Length: -3\r\n\r\nabc"),
            ("plus", POST + b"Content-Length: +3\r\n\r\nabc"),
            ("underscore", POST + b"Content-Length: 1_0\r\n\r\n"),
            ("hex", POST + b"Content-Length: 0x10\r\n\r\n"),
            ("two-numbers", POST + b"Content-Length:  3 3\r\n\r\nabc"),
            ("empty", POST + b"Content-Length: \r\n\r\n"),
            ("decimal", POST + b"Content-Length: 3.0\r\n\r\n"),
            ("exponent", POST + b"Content-Length: 1e1\r\n\r\n"),
            ("letter-suffix", POST + b"Content-Length: 3a\r\n\r\nabc"),
            ("non-ascii-digit", POST + b"Content-Length: \xef\xbc\x93\r\n\r\nabc"),
            ("overflow", POST + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n"),
            ("2**64", POST + b"Content-Length: 18446744073709551616\r\n\r\n"),
        ],
    ),
    # framing: Transfer-Encoding (RFC 9112 §6.1, §6.3, §7)
    *group(
        "te",
        400,
        [
            ("gzip-alone", POST + b"Transfer-Encoding: gzip\r\n\r\nabc"),
            ("identity", POST + b"Transfer-Encoding: identity\r\n\r\n"),
            ("chunked-twice", POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            (
                "chunked-in-two-fields",
                POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            ("chunked-then-gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
            ("empty", POST + b"Transfer-Encoding: \r\n\r\n"),
            ("with-parameter", POST + b"Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"),
            ("quoted", POST + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n'),
            ("prefixed", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            ("suffixed", POST + b"Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n"),
            ("trailing-comma", POST + b"Transfer-Encoding: chunked ,\r\n\r\n0\r\n\r\n"),
            (
                "on-http10",
                b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ),
            ("on-http10-get", b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ],
    ),
    *group(
        "te",
        501,
        [
            (
                "gzip-chunked",
                POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ),
            ("deflate-chunked", POST + b"Transfer-Encoding: deflate, chunked\r\n\r\n0\r\n\r\n"),
            (
                "gzip-then-chunked-field",
                POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ],
    ),
    # chunked bodies (RFC 9112 §7.1): the head is fine, the body is not
    *group(
        "chunk",
        400,
        [
            ("size-zz", chunked(b"zz\r\nabc\r\n0\r\n\r\n")),
            ("size-g", chunked(b"g\r\nabc\r\n0\r\n\r\n")),
            ("size-plus", chunked(b"+3\r\nabc\r\n0\r\n\r\n")),
            ("size-minus", chunked(b"-3\r\nabc\r\n0\r\n\r\n")),
            ("size-0x", chunked(b"0x3\r\nabc\r\n0\r\n\r\n")),
            ("size-underscore", chunked(b"1_0\r\n0123456789\r\n0\r\n\r\n")),
            ("size-trailing-space", chunked(b"3 \r\nabc\r\n0\r\n\r\n")),
            ("size-leading-space", chunked(b" 3\r\nabc\r\n0\r\n\r\n")),
            ("size-tab", chunked(b"3\t\r\nabc\r\n0\r\n\r\n")),
            ("size-empty", chunked(b"\r\nabc\r\n0\r\n\r\n")),
            ("size-huge", chunked(b"f" * 18 + b"\r\nabc\r\n0\r\n\r\n")),
            ("size-2**64", chunked(b"1" + b"0" * 16 + b"\r\nabc\r\n")),
            ("size-non-ascii", chunked(b"\xef\xbc\x93\r\nabc\r\n0\r\n\r\n")),
            ("size-bare-lf", chunked(b"3\nabc\r\n0\r\n\r\n")),
            ("size-bare-cr", chunked(b"3\rabc\r\n0\r\n\r\n")),
            ("last-size-bare-lf", chunked(b"3\r\nabc\r\n0\n\r\n")),
            ("data-too-long", chunked(b"3\r\nabcd\r\n0\r\n\r\n")),
            ("data-too-short", chunked(b"3\r\nab\r\n0\r\n\r\n")),
            ("data-no-crlf", chunked(b"5\r\nhello0\r\n\r\n")),
            ("data-extra-bytes", chunked(b"5\r\nhello!!\r\n0\r\n\r\n")),
            ("data-bare-lf", chunked(b"3\r\nabc\n0\r\n\r\n")),
            ("data-bare-cr", chunked(b"3\r\nabc\r0\r\n\r\n")),
            ("ext-space-in-name", chunked(b"3;a b\r\nabc\r\n0\r\n\r\n")),
            ("ext-ctl-in-name", chunked(b"3;\x01\r\nabc\r\n0\r\n\r\n")),
            ("ext-space-in-value", chunked(b"3;e=v w\r\nabc\r\n0\r\n\r\n")),
            ("ext-obs-text-value", chunked(b"3;e=\xff\r\nabc\r\n0\r\n\r\n")),
            ("ext-ctl-in-quoted", chunked(b'3;e="a\x01"\r\nabc\r\n0\r\n\r\n')),
            ("ext-nul", chunked(b"3;e\x00\r\nabc\r\n0\r\n\r\n")),
            ("ext-bare-cr", chunked(b"3;e\rabc\r\n0\r\n\r\n")),
            ("ext-bare-lf", chunked(b"3;e\nabc\r\n0\r\n\r\n")),
            ("trailer-bad-name", chunked(b"3\r\nabc\r\n0\r\nX y: z\r\n\r\n")),
            ("trailer-ctl-value", chunked(b"3\r\nabc\r\n0\r\nX:\x01\r\n\r\n")),
            ("trailer-nul-value", chunked(b"3\r\nabc\r\n0\r\nX: a\x00\r\n\r\n")),
            ("trailer-obs-fold", chunked(b"3\r\nabc\r\n0\r\nX: a\r\n b\r\n\r\n")),
            ("trailer-bare-cr", chunked(b"3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n")),
            ("trailer-bare-lf-end", chunked(b"3\r\nabc\r\n0\r\n\n")),
            ("trailer-space-before-colon", chunked(b"3\r\nabc\r\n0\r\nX : y\r\n\r\n")),
            ("trailer-leading-space", chunked(b"3\r\nabc\r\n0\r\n X: y\r\n\r\n")),
            ("trailer-content-length", chunked(b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n")),
            (
                "trailer-transfer-encoding",
                chunked(b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ),
        ],
    ),
    # Expect (RFC 9110 §10.1.1)
    *group(
        "expect",
        417,
        [
            ("other", field(b"Expect: something-else")),
            ("with-other", field(b"Expect: 100-continue, foo")),
            ("empty", field(b"Expect:")),
            ("suffixed", field(b"Expect: 100-continuex")),
            ("200-ok", field(b"Expect: 200-ok")),
            ("second-field-bad", GET + b"Expect: 100-continue\r\nExpect: x\r\n\r\n"),
            ("with-body", POST + b"Expect: nope\r\nContent-Length: 3\r\n\r\nabc"),
        ],
    ),
    # an upgrade cannot carry a body that we would then read as HTTP/1.1
    *group(
        "upgrade",
        501,
        [
            (
                "with-length",
                POST + b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
            ),
            (
                "with-chunked",
                POST + b"Connection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
            (
                "websocket-with-body",
                POST + b"Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\nx",
            ),
        ],
    ),
    # limits
    *group(
        "limit",
        431,
        [
            ("too-many-fields", GET + b"".join(b"X-%d: v\r\n" % i for i in range(14)) + END),
            ("field-too-large", field(b"X-Big: " + b"v" * 1200)),
            ("name-too-large", field(b"X" * 1200 + b": v")),
            (
                "many-fields-add-up",
                GET + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 240) for i in range(5)) + END,
            ),
            ("trailer-too-large", chunked(b"1\r\na\r\n0\r\nX: " + b"v" * 1200 + b"\r\n\r\n")),
            (
                "too-many-trailers",
                chunked(b"0\r\n" + b"".join(b"T-%d: v\r\n" % i for i in range(14)) + END),
            ),
        ],
    ),
    *group(
        "limit",
        413,
        [
            ("content-length", POST + b"Content-Length: 65\r\n\r\n"),
            ("content-length-huge", POST + b"Content-Length: 100000000000000000\r\n\r\n"),
            ("chunked-one-chunk", chunked(b"41\r\n" + b"a" * 65 + b"\r\n0\r\n\r\n")),
            (
                "chunked-many-chunks",
                chunked(b"20\r\n" + b"a" * 32 + b"\r\n" + b"21\r\n" + b"b" * 33 + b"\r\n0\r\n\r\n"),
            ),
        ],
    ),
    # the client stops: a head or body that never completes is a 408 once its deadline passes
    # (these are sent all at once, when the table starts; see ``stalled``)
    Vector("stall-head", b"GET / HTTP/1.1\r\nHost: t\r\n", 408),
    Vector("stall-request-line", b"GET /waiting", 408),
    Vector("stall-cl-body", POST + b"Content-Length: 10\r\n\r\nabc", 408),
    Vector("stall-chunk-data", chunked(b"a\r\nabc"), 408),
    Vector("stall-chunk-size-line", chunked(b"3\r\nabc\r\n1"), 408),
    Vector("stall-trailers", chunked(b"3\r\nabc\r\n0\r\nX: y\r\n"), 408),
    # pipelined: the valid requests before a bad one are answered, in order, then the refusal;
    # a valid request after a bad one is never answered
    *(
        Vector(
            f"pipelined-{name}",
            GET + END + POST + b"Content-Length: 2\r\n\r\nok" + bad,
            status,
            answered=2,
        )
        for name, bad, status in [
            ("then-bad-host", host(b"a b"), 400),
            ("then-asterisk-get", target(b"*"), 400),
            ("then-fragment", target(b"/a#b"), 400),
            (
                "then-cl-and-te",
                POST + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("then-bad-chunk", chunked(b"zz\r\n"), 400),
            ("then-version-2.0", version(b"HTTP/2.0"), 505),
            ("then-expect", field(b"Expect: nope"), 417),
            (
                "then-too-many-fields",
                GET + b"".join(b"X-%d: v\r\n" % i for i in range(14)) + END,
                431,
            ),
            ("then-garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        ]
    ),
    *(
        Vector(f"pipelined-{name}-then-good", bad + GET + END, status)
        for name, bad, status in [
            ("bad-host", host(b"a,b"), 400),
            ("asterisk-get", target(b"*"), 400),
            ("cl-two", POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
            ("chunk-data-too-long", chunked(b"1\r\nab\r\n0\r\n\r\n"), 400),
            ("chunk-ext-bad", chunked(b"1;a b\r\na\r\n0\r\n\r\n"), 400),
            ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ]
    ),
    # the client half-closes mid-request: the framing is lost, so a close (at most a 4xx)
    Vector("eof-mid-request-line", b"GET /half", CLOSED, eof=True),
    Vector("eof-mid-head", b"GET / HTTP/1.1\r\nHost: t\r\nX: y", CLOSED, eof=True),
    Vector("eof-mid-cl-body", POST + b"Content-Length: 10\r\n\r\nabc", CLOSED, eof=True),
    Vector("eof-mid-chunk", chunked(b"a\r\nabc"), CLOSED, eof=True),
    Vector("eof-mid-size-line", chunked(b"3\r\nabc\r\n1"), CLOSED, eof=True),
    Vector("eof-before-last-chunk", chunked(b"3\r\nabc\r\n"), CLOSED, eof=True),
    Vector("eof-in-trailers", chunked(b"3\r\nabc\r\n0\r\nX: y\r\n"), CLOSED, eof=True),
]


def params() -> list[Any]:
    out: list[Any] = []
    for vector in VECTORS:
        marks = [pytest.mark.xfail(reason=vector.xfail, strict=False)] if vector.xfail else []
        out.append(pytest.param(vector, id=vector.name, marks=marks))
    return out


def test_table_is_large_and_names_are_unique() -> None:
    names = [vector.name for vector in VECTORS]
    assert len(names) == len(set(names))
    assert len(VECTORS) >= 200


# --- running one vector ----------------------------------------------------------------------


def exchange(server: RunningServer, vector: Vector) -> tuple[bytes, bool]:
    """Send the vector; return what came back before the close, and whether it closed."""
    deadline = time.monotonic() + VECTOR_DEADLINE
    sock = socket.create_connection((server.host, server.port), timeout=VECTOR_DEADLINE)
    received = b""
    try:
        try:
            sock.sendall(vector.data)
            if vector.eof:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before reading it all: what it said is still read
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return received, False
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
    finally:
        sock.close()


def statuses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The Content-Length-framed responses in ``data``; fails on a cut or malformed one."""
    responses: list[tuple[int, dict[str, str], bytes]] = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers: dict[str, str] = {}
        for header_line in lines[1:]:
            name, _, value = header_line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        assert len(rest) >= length, f"response body cut short: {data[:200]!r}"
        responses.append((int(lines[0][9:12]), headers, rest[:length]))
        data = rest[length:]
    return responses


@pytest.fixture(scope="module")
def stalled(server: RunningServer) -> Iterator[dict[str, Future[tuple[bytes, bool]]]]:
    """The vectors that wait for a deadline, all sent at once so their waits overlap."""
    slow = [vector for vector in VECTORS if vector.name.startswith("stall-")]
    with ThreadPoolExecutor(len(slow)) as pool:
        yield {vector.name: pool.submit(exchange, server, vector) for vector in slow}


@pytest.mark.parametrize("vector", params())
def test_vector(
    server: RunningServer, stalled: dict[str, Future[tuple[bytes, bool]]], vector: Vector
) -> None:
    running = stalled.get(vector.name)
    data, closed = exchange(server, vector) if running is None else running.result()
    assert closed, f"no close within {VECTOR_DEADLINE}s; received {data[:300]!r}"
    responses = statuses(data)
    assert all(APP_MARK not in body for _, _, body in responses[vector.answered :]), data[:300]
    if vector.status == CLOSED:
        assert len(responses) <= 1, data[:300]
        assert all(400 <= status < 500 for status, _, _ in responses), data[:300]
        return
    assert [status for status, _, _ in responses] == [200] * vector.answered + [vector.status], (
        data[:300]
    )
    for _, _, body in responses[: vector.answered]:
        assert body.startswith(APP_MARK)
    status, headers, body = responses[-1]
    assert headers.get("connection") == "close"
    assert body.startswith(str(status).encode())


# --- valid edge cases: the same server answers them, through the application ------------------


ACCEPTED = [
    pytest.param(target(b"http://t/x?q=1"), b"/x", id="absolute-form"),
    pytest.param(target(b"HTTPS://other.example:8443/x"), b"/x", id="absolute-form-https"),
    pytest.param(target(b"http://t"), b"/", id="absolute-form-empty-path"),
    pytest.param(target(b"//x"), b"//x", id="double-slash-path"),
    pytest.param(host(b"t:8080"), b"/", id="host-with-port"),
    pytest.param(host(b"[::1]:8080"), b"/", id="host-ipv6"),
    pytest.param(host(b"127.0.0.1"), b"/", id="host-ipv4"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", b"/", id="http10-without-host"),
    pytest.param(chunked(b"3;a=b;c\r\nabc\r\n0\r\n\r\n"), b"/p:abc", id="chunk-extensions"),
    pytest.param(chunked(b'3;a="b c"\r\nabc\r\n0\r\n\r\n'), b"/p:abc", id="chunk-ext-quoted"),
    pytest.param(chunked(b"003\r\nabc\r\n0\r\nX: y\r\n\r\n"), b"/p:abc", id="chunk-trailers"),
    pytest.param(chunked(b"0\r\n\r\n"), b"/p:", id="chunked-empty"),
    pytest.param(POST + b"Content-Length: 03\r\n\r\nabc", b"/p:abc", id="cl-leading-zero"),
    pytest.param(POST + b"Content-Length: 3 \r\n\r\nabc", b"/p:abc", id="cl-trailing-space"),
    pytest.param(field(b"Expect: 100-Continue"), b"/", id="expect-continue-any-case"),
    pytest.param(field(b"X: a\tb \x80\xff"), b"/", id="value-tab-and-obs-text"),
    pytest.param(b"\r\n" + GET + END, b"/", id="empty-line-before-request"),
]


@pytest.mark.parametrize(("request_bytes", "answer"), ACCEPTED)
def test_accepted_edge_case(server: RunningServer, request_bytes: bytes, answer: bytes) -> None:
    sock = server.connect(timeout=VECTOR_DEADLINE)
    try:
        sock.sendall(request_bytes)
        status, _, body = read_response(sock, timeout=VECTOR_DEADLINE)
    finally:
        sock.close()
    assert status == 200
    assert body.startswith(APP_MARK + answer)


def test_options_asterisk_reaches_the_application(server: RunningServer) -> None:
    # The application's router has no "*" route: a 404 from it, not a refusal.
    sock = server.connect(timeout=VECTOR_DEADLINE)
    try:
        sock.sendall(target(b"*", b"OPTIONS"))
        status, headers, _ = read_response(sock, timeout=VECTOR_DEADLINE)
    finally:
        sock.close()
    assert status == 404
    assert headers.get("connection") != "close"


@pytest.mark.parametrize(
    "method", [b"FOO", b"get", b"Get", b"123", b"A" * 40, b"PURGE", b"PLAY"], ids=bytes.decode
)
def test_extension_methods_reach_the_application(server: RunningServer, method: bytes) -> None:
    # Any token is a method; the App answers 501 for one no route takes (RFC 9110 §15.6.2),
    # on a connection that stays open, also when the request follows a body in the same read.
    sock = socket.create_connection((server.host, server.port), timeout=VECTOR_DEADLINE)
    try:
        sock.sendall(GET + END + POST + b"Content-Length: 2\r\n\r\nok" + target(b"/m", method))
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"Implemented\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    finally:
        sock.close()
    responses = statuses(data)
    assert [status for status, _, _ in responses] == [200, 200, 501]
    assert responses[-1][1].get("connection") != "close"


def test_still_serving_after_the_table(server: RunningServer) -> None:
    sock = server.connect(timeout=VECTOR_DEADLINE)
    try:
        for _ in range(2):  # and keeps the connection open
            sock.sendall(POST + b"Content-Length: 2\r\n\r\nok")
            status, _, body = read_response(sock, timeout=VECTOR_DEADLINE)
            assert (status, body) == (200, APP_MARK + b"/p:ok")
    finally:
        sock.close()

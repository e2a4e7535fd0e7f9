"""Sans-IO request parser: llhttp (through httptools) for the grammar, Bastion's policy on top.

Feed it bytes; it calls a sink with request heads, body chunks and request ends, or raises a
:class:`~bastion.http.errors.ProtocolError` carrying the status to answer with. It has no
sockets, no clock and no threads, so every rule here is tested with byte strings alone.

llhttp already refuses most ambiguous framing in its strict mode (all leniency flags stay off):
obs-fold, bare CR/LF, NUL and other control characters, invalid header names, a
``Content-Length`` beside ``Transfer-Encoding``, duplicate or non-digit ``Content-Length``, a
``Transfer-Encoding`` whose last coding is not ``chunked``, and invalid chunk sizes. What it
leaves to the server, and this module adds: limits on the request line, header count and bytes
and the body; one ``Host`` on HTTP/1.1 (RFC 9112 §3.2); no ``Transfer-Encoding`` on HTTP/1.0
(RFC 9112 §6.1); 501 for transfer codings we do not decode; ``Expect``; CONNECT and upgrades.
"""

from __future__ import annotations

from typing import Protocol

import httptools

from bastion.http.errors import (
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplementedByServer,
    ProtocolError,
    URITooLong,
    VersionNotSupported,
)
from bastion.http.limits import Limits
from bastion.http.request import RequestHead

_SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})
_POLICY_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"host", b"expect"})
# llhttp's own message for a well-formed but unknown version (HTTP/1.2, HTTP/3.0): that is a
# 505, while a malformed version (HTTP/1.x) is a 400.
_UNSUPPORTED_VERSION_REASON = "Invalid HTTP version"
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MAX_DIGITS = 18  # 10**18 bytes is far beyond any limit and still fits a machine word
_METHODS: dict[bytes, str] = {}


class RequestSink(Protocol):
    """What the parser reports to; the engine's connection is one, tests record into another."""

    def on_request(self, head: RequestHead) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_request_end(self) -> None: ...


def parse_content_length(value: bytes) -> int:
    """ASCII digits only: ``int()`` would also take ``+3``, ``1_0`` and other spellings."""
    digits = value.strip(b" \t")
    if not digits or len(digits) > _MAX_DIGITS or not digits.isdigit():
        raise BadRequest(f"invalid Content-Length {value[:40]!r}")
    return int(digits)


def _method_name(raw: bytes) -> str:
    name = _METHODS.get(raw)
    if name is None:
        name = raw.decode("ascii")
        if len(_METHODS) < 64:
            _METHODS[raw] = name
    return name


class RequestParser:
    """Parses a stream of pipelined HTTP/1.x requests from one connection."""

    __slots__ = (
        "_sink",
        "_limits",
        "_parser",
        "_error",
        "_url",
        "_headers",
        "_header_count",
        "_header_bytes",
        "_in_head",
        "_head_from_earlier_feed",
        "_carried_head_bytes",
        "_content_length",
        "_chunked",
        "_codings",
        "_host_count",
        "_expect_continue",
        "_body_bytes",
        "_head_done",
        "_first_line_seen",
    )

    def __init__(self, sink: RequestSink, limits: Limits | None = None) -> None:
        self._sink = sink
        self._limits = limits or Limits()
        self._parser = httptools.HttpRequestParser(self)
        self._error: ProtocolError | None = None
        self._in_head = False
        self._head_from_earlier_feed = False
        self._carried_head_bytes = 0
        self._first_line_seen = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_count = 0
        self._header_bytes = 0
        self._content_length: int | None = None
        self._chunked = False
        self._codings: list[bytes] = []
        self._host_count = 0
        self._expect_continue = False
        self._body_bytes = 0
        self._head_done = False

    @property
    def in_request(self) -> bool:
        """True once any byte of a request has been parsed and until that request ends."""
        return self._in_head or self._head_done

    @property
    def reading_head(self) -> bool:
        return self._in_head

    def feed(self, data: bytes) -> None:
        """Parse ``data``; report what it completes to the sink; raise ProtocolError if bad."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # We never switch protocols, so the request was answered as plain HTTP/1.1; the
            # parser is left in "upgraded" mode, so the bytes after it go to a fresh one.
            self._parser = httptools.HttpRequestParser(self)
            offset = int(upgrade.args[0])
            if offset < len(data):
                self.feed(data[offset:])
            return
        except httptools.HttpParserCallbackError:
            error = self._error
            if error is None:
                raise
            raise error from None
        except httptools.HttpParserInvalidMethodError:
            raise self._method_error(data) from None
        except httptools.HttpParserError as exc:
            raise self._grammar_error(exc) from None
        if self._in_head:
            if self._head_from_earlier_feed:
                # Bytes of an unfinished header are buffered inside the parser where our
                # callbacks cannot see them; count whole feeds so that buffer stays bounded.
                self._carried_head_bytes += len(data)
                limit = self._limits.max_header_bytes + self._limits.max_request_line
                if self._carried_head_bytes > limit:
                    self._fail(HeadersTooLarge("request head too large"))
            else:
                self._head_from_earlier_feed = True

    def _method_error(self, data: bytes) -> ProtocolError:
        method, _, _ = data.partition(b" ")
        if method and not self._first_line_seen and all(c in _TCHAR for c in method):
            return NotImplementedByServer(f"unknown method {method[:20]!r}")
        return BadRequest("malformed request line")

    def _grammar_error(self, exc: Exception) -> ProtocolError:
        reason = str(exc)
        if reason.startswith(_UNSUPPORTED_VERSION_REASON):
            return VersionNotSupported("unsupported HTTP version")
        return BadRequest(reason or "malformed request")

    def _fail(self, error: ProtocolError) -> None:
        self._error = error
        raise error

    # httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_from_earlier_feed = False
        self._carried_head_bytes = 0
        self._first_line_seen = False

    def on_url(self, fragment: bytes) -> None:
        url = self._url + fragment if self._url else fragment
        if len(url) > self._limits.max_request_line:
            self._fail(URITooLong("request target too long"))
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._first_line_seen = True
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > self._limits.max_header_count:
            self._fail(HeadersTooLarge("too many header fields"))
        if self._header_bytes > self._limits.max_header_bytes:
            self._fail(HeadersTooLarge("header fields too large"))
        if self._head_done:
            return  # a trailer field: counted against the limits, not acted upon
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered in _POLICY_HEADERS:
            self._apply_policy_header(lowered, value)

    def _apply_policy_header(self, lowered: bytes, value: bytes) -> None:
        if lowered == b"content-length":
            self._content_length = parse_content_length(value)
        elif lowered == b"transfer-encoding":
            self._codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif lowered == b"host":
            self._host_count += 1
        elif value.strip(b" \t").lower() == b"100-continue":
            self._expect_continue = True
        else:
            self._fail(ExpectationFailed("only 100-continue is supported"))

    def _check_transfer_codings(self) -> None:
        """RFC 9112 §6.3: chunked must be last and only once; anything else we cannot decode."""
        codings = [c for c in self._codings if c]
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            self._fail(BadRequest("Transfer-Encoding must end with a single chunked"))
        if len(codings) > 1:
            self._fail(NotImplementedByServer("unsupported transfer coding"))
        self._chunked = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        if self._codings:
            self._check_transfer_codings()
        version = parser.get_http_version()
        if version not in _SUPPORTED_VERSIONS:
            self._fail(VersionNotSupported(f"HTTP/{version} is not supported"))
        method = _method_name(parser.get_method())
        if method == "CONNECT":
            self._fail(NotImplementedByServer("CONNECT is not supported"))
        if version == "1.1":
            if self._host_count != 1:
                self._fail(BadRequest("HTTP/1.1 requires exactly one Host header"))
        else:
            if self._host_count > 1:
                self._fail(BadRequest("more than one Host header"))
            if self._chunked:
                self._fail(BadRequest("Transfer-Encoding on an HTTP/1.0 request"))
            self._expect_continue = False
        length = self._content_length
        if length is not None and length > self._limits.max_body_bytes:
            self._fail(ContentTooLarge("request body too large"))
        upgrade = parser.should_upgrade()
        if upgrade and (self._chunked or length):
            self._fail(NotImplementedByServer("protocol upgrade with a request body"))
        self._in_head = False
        self._head_done = True
        head = RequestHead(
            method,
            self._url,
            version,
            self._headers,
            parser.should_keep_alive() and not upgrade,
            length,
            self._chunked,
            self._expect_continue,
            upgrade,
        )
        self._sink.on_request(head)

    def on_body(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._body_bytes > self._limits.max_body_bytes:
            self._fail(ContentTooLarge("request body too large"))
        self._sink.on_body(data)

    def on_message_complete(self) -> None:
        self._reset()
        self._sink.on_request_end()

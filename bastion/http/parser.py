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

llhttp checks the characters of a request target but not its form, and the Host field value
not at all, so this module also holds the request to RFC 9112 §3.2: a target is origin-form
(``/path?query``), ``*`` for OPTIONS alone, or an ``http``/``https`` absolute URI with a valid
authority and no userinfo; no target carries a fragment; and every ``Host`` is
``uri-host [":" port]`` (RFC 9110 §7.2) with no list, path, userinfo or whitespace in it.

Methods are any RFC 9110 token (§9.1: case-sensitive, so ``get`` is a method of its own, not
``GET``); llhttp knows a fixed list. When it stops at a method it does not know, the request it
stopped in is located exactly (see :meth:`RequestParser._extension_method`), parsed by a fresh
llhttp parser under a stand-in method it frames identically, and reported with its own method.
Where the start of that request cannot be known for certain the request is refused, as before.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Final, NoReturn, Protocol

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

_SUPPORTED_VERSIONS: Final = frozenset({"1.0", "1.1"})
# The end of a request line naming each version: httptools formats the version as a new
# string for every request (str.format, several times the cost of anything else it is asked).
_LINE_END_11: Final = b" HTTP/1.1\r\n"
_LINE_END_10: Final = b" HTTP/1.0\r\n"
_FRAMING_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# Where a message stands (Final each: a tuple assignment is looked up on every use).
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_TRAILERS: Final = 3
# llhttp's own message for a well-formed but unknown version (HTTP/1.2, HTTP/3.0): that is a
# 505, while a malformed version (HTTP/1.x) is a 400.
_UNSUPPORTED_VERSION_REASON: Final = "Invalid HTTP version"
_TCHAR: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_MAX_DIGITS: Final = 18  # 10**18 bytes is far beyond any limit and still fits a machine word
_METHODS: Final[dict[bytes, str]] = {}
_REQUEST_LINE: Final = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) [^ ]+ HTTP/[0-9]\.[0-9]")
# What llhttp parses a request with an extension method as: a method it knows, frames like
# any other (by Content-Length or Transfer-Encoding), and that is rare on the wire, so that
# the one lookup able to tell it apart is off the path of common methods.
_STAND_IN: Final = b"SOURCE"
# llhttp's reasons for a token it knows only for another protocol (RTSP's PLAY, HTTP/2's PRI).
_OTHER_PROTOCOLS_METHOD: Final = frozenset(
    {"Invalid method for HTTP/x.x request", "Expected HTTP/2 Connection Preface"}
)
# Bytes llhttp may hold before a method is complete, arriving in reads that report nothing.
_MAX_HELD: Final = 256
# How much of the reads since the last clean start between requests is kept to find a request
# with an extension method again; beyond it, that request is refused (see _extension_method).
_MAX_REPLAY: Final = 64 * 1024
_CLEAN: Final[list[bytes]] = []  # shared, never appended to: see RequestParser._keep_for_replay
# What a request line holds before its target, the only thing llhttp keeps unreported.
_METHOD_BYTES: Final = _TCHAR | {32}
# RFC 3986 host and port. A reg-name may hold sub-delims, but not ",": a Host of "a, b" is a
# list, and which member a proxy or an application would pick is a guess. A port, when its
# colon is present, must be there too: an empty one is legal but no client sends it, and the
# code that splits host from port downstream should not have to handle it.
_AUTHORITY: Final = re.compile(
    rb"(?:(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})+"
    rb"|\[(?P<ipv6>[0-9A-Fa-f:.]+)\]"
    rb"|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+;=:]+\])"
    rb"(?::(?P<port>[0-9]{1,5}))?"
)
# A service sees the same few Host values on every request; checking one is a set lookup.
_valid_authorities: Final[set[bytes]] = set()
_MAX_REMEMBERED_AUTHORITIES: Final = 256


class RequestSink(Protocol):
    """What the parser reports to; the engine's connection is one, tests record into another."""

    def on_request(self, head: RequestHead) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_request_end(self) -> None: ...


def strip_field_value(value: bytes) -> bytes:
    """A field value without trailing whitespace (RFC 9110 §5.5: surrounding whitespace is
    not part of it; llhttp drops only the leading part)."""
    # Looked at before stripping: few values end in whitespace, and a byte compared costs
    # less than a method called.
    if value and (value[-1] == 32 or value[-1] == 9):  # SP, HTAB
        return value.rstrip(b" \t")
    return value


def parse_content_length(value: bytes) -> int:
    """ASCII digits only: ``int()`` would also take ``+3``, ``1_0`` and other spellings."""
    if value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)  # the usual value, with no whitespace to strip
    digits = value.strip(b" \t")
    if not digits or len(digits) > _MAX_DIGITS or not digits.isdigit():
        raise BadRequest(f"invalid Content-Length {value[:40]!r}")
    return int(digits)


def is_valid_authority(value: bytes) -> bool:
    """True if ``value`` is ``uri-host [":" port]`` as a Host field or an absolute URI has it."""
    if value in _valid_authorities:
        return True
    match = _AUTHORITY.fullmatch(value)
    if match is None:
        return False
    port = match.group("port")
    if port is not None and int(port) > 65535:
        return False
    ipv6 = match.group("ipv6")
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6.decode("ascii"))
        except ValueError:
            return False
    if len(_valid_authorities) < _MAX_REMEMBERED_AUTHORITIES:
        _valid_authorities.add(value)
    return True


def callback_failure(
    recorded: ProtocolError | None, callback_error: httptools.HttpParserCallbackError
) -> ProtocolError:
    """The refusal one of our parser callbacks raised inside httptools.

    httptools chains what a callback raised as the context of its own error; anything but a
    ProtocolError there is a bug, and the original error propagates.
    """
    error = recorded or callback_error.__context__
    if not isinstance(error, ProtocolError):
        raise callback_error
    return error


class RequestParser:
    """Parses a stream of pipelined HTTP/1.x requests from one connection."""

    __slots__ = (
        "_on_request",
        "_on_body",
        "_on_request_end",
        "_limits",
        "_max_header_count",
        "_max_header_bytes",
        "_feed_data",
        "_get_method",
        "_get_http_version",
        "_should_upgrade",
        "_should_keep_alive",
        "_error",
        "_phase",
        "_url",
        "_headers",
        "_header_bytes",
        "_host_count",
        "_framing",
        "_body_bytes",
        "_progressed",
        "_data",
        "_replay",
        "_replay_size",
        "_idle_prefix",
        "_stand_in_for",
        "_unseen_bytes",
        "_line_start",
    )

    def __init__(self, sink: RequestSink, limits: Limits | None = None) -> None:
        # Bound once, like the httptools parser's methods (see _use).
        self._on_request: Callable[[RequestHead], None] = sink.on_request
        self._on_body: Callable[[bytes], None] = sink.on_body
        self._on_request_end: Callable[[], None] = sink.on_request_end
        limits = self._limits = limits or Limits()
        # Copied out of the limits object: read once per header on the hot path.
        self._max_header_count = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        self._use(httptools.HttpRequestParser(self))
        self._error: ProtocolError | None = None
        self._phase = _IDLE
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._host_count = 0
        self._framing: _Framing | None = None
        self._body_bytes = 0
        self._progressed = False
        self._unseen_bytes = 0
        self._data = b""
        # From the last boundary known to be clean, what llhttp was fed before this read and
        # still holds (the pieces of ``_replay``, then ``_idle_prefix``), or None when that
        # is not known.
        self._replay: list[bytes] | None = _CLEAN
        self._replay_size = 0
        self._idle_prefix = b""
        self._stand_in_for: str | None = None
        # The read the next request's line starts at, when it starts at the read's first
        # byte (after any empty lines); else None.
        self._line_start: bytes | None = None

    def _use(self, parser: httptools.HttpRequestParser) -> None:
        """Parse with ``parser`` from now on. Its methods are kept bound: called through the
        parser object, each would be looked up on its type again on every request."""
        self._feed_data: Callable[[bytes], None] = parser.feed_data
        self._get_method: Callable[[], bytes] = parser.get_method
        self._get_http_version: Callable[[], str] = parser.get_http_version
        self._should_upgrade: Callable[[], bool] = parser.should_upgrade
        self._should_keep_alive: Callable[[], bool] = parser.should_keep_alive

    @property
    def in_request(self) -> bool:
        """True once any byte of a request has been parsed and until that request ends."""
        return self._phase != _IDLE

    @property
    def reading_head(self) -> bool:
        return self._phase == _HEAD

    def feed(self, data: bytes) -> None:
        """Parse ``data``; report what it completes to the sink; raise ProtocolError if bad."""
        while True:
            self._data = data
            if self._phase == _IDLE:
                # Nothing of a request is held from before this read (see _keep_for_replay),
                # so its first byte starts the next request's line or an empty line.
                clean = self._replay is _CLEAN and not self._idle_prefix
                self._line_start = data if clean else None
            try:
                self._feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                # We never switch protocols inside the parser, so the request was read as
                # plain HTTP/1.1; the parser is left in "upgraded" mode, so the bytes after it
                # go to a fresh one. They are fed outside this handler: an error raised while
                # it runs would take the upgrade as its context and hide the ProtocolError
                # httptools chained.
                data = data[int(upgrade.args[0]) :]
                self._use(httptools.HttpRequestParser(self))
                self._replay = _CLEAN
                self._idle_prefix = b""
            except httptools.HttpParserCallbackError as callback_error:
                error = self._error = callback_failure(self._error, callback_error)
                raise error from None
            except httptools.HttpParserInvalidMethodError:
                data = self._extension_method(data)
            except httptools.HttpParserError as exc:
                if str(exc) not in _OTHER_PROTOCOLS_METHOD:
                    raise _grammar_error(exc) from None
                data = self._extension_method(data)
            else:
                if self._progressed:
                    self._progressed = False
                    self._unseen_bytes = 0
                    # Between requests, after a last byte that no method holds (LF, "}"),
                    # nothing of a next request is pending: a clean start. Otherwise what was
                    # read since the last clean start is kept, bounded, should a request in it
                    # need to be found again (a head in several reads, a read ending in a body).
                    if data and data[-1] not in _METHOD_BYTES and self._phase == _IDLE:
                        self._replay = _CLEAN
                        self._idle_prefix = b""
                    elif self._replay is not None:
                        self._keep_for_replay(data)
                elif self._phase != _IDLE:
                    if self._replay is not None:
                        self._keep_for_replay(data)
                    self._count_unseen(len(data))
                else:
                    self._hold_unseen(data)
                return
            if not data:
                return

    def _keep_for_replay(self, data: bytes) -> None:
        replay = self._replay
        assert replay is not None
        if self._idle_prefix:
            data = self._idle_prefix + data
            self._idle_prefix = b""
        if replay is _CLEAN:
            self._replay = [data] if len(data) <= _MAX_REPLAY else None
            self._replay_size = len(data)
            return
        # Pieces, joined only if a request must be found: no copying on the way.
        self._replay_size += len(data)
        if self._replay_size <= _MAX_REPLAY:
            replay.append(data)
        else:
            self._replay = None

    def _hold_unseen(self, data: bytes) -> None:
        """A read between requests that llhttp took without a word: part of a method."""
        prefix = self._idle_prefix + data
        self._idle_prefix = prefix if len(prefix) <= _MAX_HELD else b""
        if len(prefix) > _MAX_HELD:
            self._replay = None
        # llhttp skips any number of spaces after a method, silently: bounded too.
        self._unseen_bytes += len(data)
        if self._unseen_bytes > self._limits.max_request_line:
            self._fail(URITooLong("request line too long"))

    def _extension_method(self, data: bytes) -> bytes:
        """Continue past a method llhttp does not know; return what is left to parse.

        llhttp does not say where the request it stopped in begins. It is found by replaying,
        on a throwaway parser, the bytes since the last point known to be a clean start
        between requests: the failing request begins after the last request that replay
        completes. That point is known when this read began between requests and what llhttp
        held from before it is known: nothing after a read that ended between requests in an
        LF, else the reads since such a point, up to :data:`_MAX_REPLAY` bytes. Past that
        (uploads, say, whose reads all end inside a body) the request is refused rather than
        guessed at. The request is then parsed again from its start by a fresh parser, with
        its method swapped for :data:`_STAND_IN`, and reported under its own.
        """
        buffer = None
        if self._replay is not None:
            buffer = b"".join((*self._replay, self._idle_prefix, data))
        start = _failing_request_start(buffer) if buffer is not None else None
        if buffer is None or start is None:
            raise self._method_error(data)
        request = buffer[start:]
        size = 0
        for byte in request:
            if byte not in _TCHAR:
                break
            size += 1
        if size > self._limits.max_request_line:
            self._fail(URITooLong("request line too long"))
        if size == len(request):
            # The method is still arriving: hold it until its end is here.
            self._feed_data = _HeldMethod().feed_data
            self._replay = _CLEAN
            self._idle_prefix = request
            return b""
        if not size or request[size] != 32:  # a method, then one space
            raise BadRequest("malformed request line")
        self._stand_in_for = request[:size].decode("ascii")
        # A method llhttp knows for another protocol failed only at the version: our callbacks
        # already saw the target, and the request starts over.
        self._phase = _IDLE
        self._url = b""
        self._use(httptools.HttpRequestParser(self))
        self._replay = _CLEAN
        self._idle_prefix = b""
        self._unseen_bytes = 0
        return _STAND_IN + request[size:]

    def _method_error(self, data: bytes) -> ProtocolError:
        """The refusal for a method that cannot be placed: 501 where the request line is
        plainly a request line with a method token, else 400 (bytes that are no request)."""
        line = data.lstrip(b"\r\n").partition(b"\r\n")[0]
        if _REQUEST_LINE.fullmatch(line):
            return NotImplementedByServer(
                "a method this server cannot place in the stream; send it on a new connection"
            )
        return BadRequest("malformed request line")

    def _method_name(self, raw: bytes) -> str:
        """The name of a method not yet in the cache: maybe the one a stand-in stands for."""
        if raw == _STAND_IN:
            name, self._stand_in_for = self._stand_in_for, None
            # Never cached: the next request sent as SOURCE may be a real one.
            return name or "SOURCE"
        name = raw.decode("ascii")
        if len(_METHODS) < 64:
            _METHODS[raw] = name
        return name

    def _count_unseen(self, size: int) -> None:
        """Bound what llhttp buffers out of our sight.

        A header line, a chunk-size line or a trailer that never ends is held inside the
        parser until it is complete; our callbacks see nothing. A feed that completed no
        field at all is counted whole, and too many such bytes in a row end the request.
        """
        self._unseen_bytes += size
        if self._unseen_bytes > self._limits.max_header_bytes + self._limits.max_request_line:
            what = "request head" if self._phase == _HEAD else "chunk line or trailer section"
            self._fail(HeadersTooLarge(f"{what} too large"))

    def _fail(self, error: ProtocolError) -> NoReturn:
        self._error = error
        raise error

    # httptools callbacks -------------------------------------------------------------------

    # No on_message_begin: httptools skips callbacks a parser does not define, and a request
    # always starts with its target. Per-request state is reset when the previous one ends.

    def on_url(self, fragment: bytes) -> None:
        self._progressed = True
        self._phase = _HEAD
        url = self._url + fragment if self._url else fragment
        if len(url) > self._limits.max_request_line:
            self._fail(URITooLong("request target too long"))
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progressed = True
        headers = self._headers
        self._header_bytes += len(name) + len(value) + 4
        if len(headers) >= self._max_header_count:
            self._fail(HeadersTooLarge("too many header fields"))
        if self._header_bytes > self._max_header_bytes:
            self._fail(HeadersTooLarge("header fields too large"))
        if self._phase != _HEAD:
            # A trailer field: counted against the limits, not acted upon. The head (and its
            # header list) already belongs to the handler, so trailers start a list of their
            # own that only serves the count.
            if self._phase == _BODY:
                self._phase = _TRAILERS
                self._headers = [*headers]
            self._headers.append((b"", b""))
            return
        value = strip_field_value(value)
        headers.append((name, value))
        lowered = name.lower()
        if lowered == b"host":
            self._host_count += 1
            if value not in _valid_authorities and not is_valid_authority(value):
                self._fail(BadRequest(f"invalid Host {value[:60]!r}"))
        elif lowered in _FRAMING_HEADERS:
            framing = self._framing
            if framing is None:
                framing = self._framing = _Framing()
            framing.add(lowered, value)

    def on_headers_complete(self) -> None:
        raw_method = self._get_method()
        version = self._line_version(raw_method)
        if version is None:
            version = self._get_http_version()
        if version not in _SUPPORTED_VERSIONS:
            self._fail(VersionNotSupported(f"HTTP/{version} is not supported"))
        if version == "1.0":
            self._check_protocol_name()
        method = _METHODS.get(raw_method) or self._method_name(raw_method)
        if method == "CONNECT":
            self._fail(NotImplementedByServer("CONNECT is not supported"))
        hosts = self._host_count
        if hosts != 1 and (hosts or version == "1.1"):
            self._fail(BadRequest("a request needs exactly one Host header"))
        url = self._url
        origin = None
        # Origin-form is the fast path. Integers, because ``b"#" in url`` costs several times
        # more than the membership test of one byte value.
        if not url or url[0] != 47 or 35 in url:  # "/" and "#"
            origin = self._other_target_form(method, url, hosts)
        framing = self._framing
        length = None
        chunked = expect_continue = False
        if framing is not None:
            framing.check(version, self._limits.max_body_bytes)
            length = framing.content_length
            chunked = framing.chunked
            expect_continue = framing.expect_continue
        upgrade = self._should_upgrade()
        if upgrade and (chunked or length):
            self._fail(NotImplementedByServer("protocol upgrade with a request body"))
        self._phase = _BODY
        self._body_bytes = 0
        head = RequestHead(
            method,
            self._url,
            version,
            self._headers,
            self._should_keep_alive() and not upgrade,
            length,
            chunked,
            expect_continue,
            upgrade,
            origin,
        )
        self._on_request(head)

    def _line_version(self, raw_method: bytes) -> str | None:
        """The version the request line ends with, read from the bytes when the line is where
        it is known to be and ends in `` HTTP/1.1`` or `` HTTP/1.0``; else None (ask llhttp).

        llhttp accepted the line, so it is the method, a space, the target (no space, no CR
        or LF in it) and the version, at the start of the read the request began in. Empty
        lines before it only move it further on: the bytes where it would end are then part
        of it, which never read as a line's end.
        """
        line = self._line_start
        if line is None:
            return None
        self._line_start = None  # a request pipelined after this one in the read asks llhttp
        end = len(raw_method) + 1 + len(self._url)
        tail = line[end : end + len(_LINE_END_11)]
        if tail == _LINE_END_11:
            return "1.1"
        if tail == _LINE_END_10:
            return "1.0"
        return None

    def _other_target_form(self, method: str, url: bytes, hosts: int) -> bytes:
        """Check a target that is not plain origin-form; return its origin-form equivalent.

        For an absolute-form target, RFC 9112 §3.2.2 has the server use the target's authority
        and ignore the Host field, so the Host field in the head is replaced with (or, on an
        HTTP/1.0 request without one, given) that authority: every adapter then sees one
        consistent host, whichever of the two it reads.
        """
        if url == b"*":
            if method == "OPTIONS":
                return url
            self._fail(BadRequest("asterisk-form is only for OPTIONS"))
        if b"#" in url:
            self._fail(BadRequest("a request target has no fragment"))
        if url[:1] == b"/":
            return url
        origin, authority = _split_absolute_form(url)
        if origin is None or authority is None:
            self._fail(BadRequest("request target is neither a path nor an http(s) URI"))
        if not authority or b"@" in authority or not is_valid_authority(authority):
            self._fail(BadRequest(f"invalid authority in request target {authority[:60]!r}"))
        if not origin:
            # RFC 9112 §3.2.4: an OPTIONS for the server as a whole may reach it this way.
            origin = b"*" if method == "OPTIONS" else b"/"
        elif origin[0] == 63:  # "?": an empty path is "/" (RFC 9110 §4.2.3)
            origin = b"/" + origin
        headers = self._headers
        if hosts:
            for index, (name, _) in enumerate(headers):
                if name.lower() == b"host":
                    headers[index] = (name, authority)
        else:
            headers.append((b"Host", authority))
        return origin

    def _check_protocol_name(self) -> None:
        """llhttp also reads ``RTSP/1.0`` and ``ICE/1.0`` request lines and calls them 1.0.

        The protocol name is not reported, so the line is looked up in the bytes being parsed,
        and in the reads kept since the last clean start when it began in an earlier one. Only
        1.0 requests are checked (RTSP and ICE are 1.0 protocols; HTTP/1.1 pays nothing). A
        valid line is never refused: the request is let through when an HTTP line with its
        target is there at all, even if it is another pipelined request's, or when no line is
        found (it began before the kept reads).
        """
        marker = b" " + self._url + b" "
        data = self._data
        if marker + b"HTTP/" in data:
            return
        if self._replay:
            # The line began in an earlier read, kept since the last clean start.
            data = b"".join((*self._replay, self._idle_prefix, data))
            if marker + b"HTTP/" in data:
                return
        if marker + b"RTSP/" in data or marker + b"ICE/" in data:
            self._fail(BadRequest("not an HTTP request line"))

    def on_body(self, data: bytes) -> None:
        self._progressed = True
        self._body_bytes += len(data)
        if self._body_bytes > self._limits.max_body_bytes:
            self._fail(ContentTooLarge("request body too large"))
        self._on_body(data)

    def on_message_complete(self) -> None:
        self._progressed = True
        self._phase = _IDLE
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._host_count = 0
        self._framing = None
        self._on_request_end()


class _Framing:
    """The headers that decide where a body ends; rare enough to live apart from the hot path."""

    __slots__ = ("content_length", "codings", "chunked", "expect_continue")

    def __init__(self) -> None:
        self.content_length: int | None = None
        self.codings: list[bytes] = []
        self.chunked = False
        self.expect_continue = False

    def add(self, lowered: bytes, value: bytes) -> None:
        if lowered == b"content-length":
            # llhttp already refuses a second Content-Length; this refuses any spelling of a
            # number other than plain digits.
            self.content_length = parse_content_length(value)
        elif lowered == b"transfer-encoding":
            self.codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif value.strip(b" \t").lower() == b"100-continue":
            self.expect_continue = True
        else:
            raise ExpectationFailed("only 100-continue is supported")

    def check(self, version: str, max_body_bytes: int) -> None:
        if self.codings:
            # RFC 9112 §6.1: a Transfer-Encoding on HTTP/1.0 means the framing is faulty.
            if version != "1.1":
                raise BadRequest("Transfer-Encoding on an HTTP/1.0 request")
            # RFC 9112 §6.3: chunked must come last, once; we decode no other coding.
            codings = [c for c in self.codings if c]
            if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                raise BadRequest("Transfer-Encoding must end with a single chunked")
            if len(codings) > 1:
                raise NotImplementedByServer("unsupported transfer coding")
            self.chunked = True
        if version != "1.1" or not (self.chunked or self.content_length):
            # RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue is ignored, and a request
            # without content has nothing to wait for, so no interim 100 is owed to it.
            self.expect_continue = False
        length = self.content_length
        if length is not None and length > max_body_bytes:
            raise ContentTooLarge("request body too large")


class _HeldMethod:
    """Stands in for llhttp while an unknown method is still arriving: every read goes back
    to :meth:`RequestParser._extension_method`, which holds the bytes that came before."""

    def feed_data(self, data: bytes) -> None:
        raise httptools.HttpParserInvalidMethodError("method still arriving")


class _Completions:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def on_message_complete(self) -> None:
        self.count += 1


def _completions(data: bytes) -> tuple[int, bool]:
    """How many requests llhttp completes in ``data`` from a clean start, and whether it
    then stopped at a method it does not know."""
    counter = _Completions()
    try:
        httptools.HttpRequestParser(counter).feed_data(data)
    except httptools.HttpParserInvalidMethodError:
        return counter.count, True
    except httptools.HttpParserError as exc:
        return counter.count, str(exc) in _OTHER_PROTOCOLS_METHOD
    except httptools.HttpParserUpgrade:
        return counter.count, False
    return counter.count, False


def _failing_request_start(data: bytes) -> int | None:
    """Where the request llhttp stops in (at an unknown method) begins in ``data``, which
    starts cleanly between requests; None if replaying it does not stop there."""
    completed, stopped = _completions(data)
    if not stopped:
        return None
    # The shortest prefix that completes as many requests ends where the last one ends: the
    # count only grows with the prefix, so it is found by bisection.
    low, high = 0, len(data)
    if completed:
        while low < high:
            middle = (low + high) // 2
            if _completions(data[:middle])[0] >= completed:
                high = middle
            else:
                low = middle + 1
    # llhttp skips empty lines between requests.
    while low < len(data) and data[low] in (13, 10):
        low += 1
    return low


def _split_absolute_form(url: bytes) -> tuple[bytes | None, bytes | None]:
    """``scheme://authority/path?query`` → (``/path?query``, ``authority``) for http(s)."""
    cut = url.find(b"://")
    if cut < 0 or url[:cut].lower() not in (b"http", b"https"):
        return None, None
    rest = url[cut + 3 :]
    end = len(rest)
    for separator in (b"/", b"?"):
        at = rest.find(separator, 0, end)
        if at >= 0:
            end = at
    return rest[end:], rest[:end]


def _grammar_error(exc: Exception) -> ProtocolError:
    reason = str(exc)
    if reason.startswith(_UNSUPPORTED_VERSION_REASON):
        return VersionNotSupported("unsupported HTTP version")
    return BadRequest(reason or "malformed request")

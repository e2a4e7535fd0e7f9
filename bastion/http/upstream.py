"""Sans-IO response parser for the client side of a connection: what an upstream answers.

A proxy's upstream connection sends requests and reads responses. This module reads them:
feed it bytes, and it calls a sink with response heads, body chunks and response ends, or
raises a :class:`~bastion.http.errors.BadGateway` (status 502) for anything malformed,
ambiguous or over a limit. Like the request parser it has no sockets, no clock and no threads.

llhttp (through httptools) checks the grammar with every leniency off: obs-fold, bare CR/LF,
NUL and other controls in field values, invalid field names, two ``Content-Length`` fields,
``Content-Length`` beside ``Transfer-Encoding``, non-digit lengths and invalid chunk lines.
What it leaves to us, and this module adds:

- **the request each response answers.** A response to HEAD has no body whatever its fields
  say (RFC 9112 §6.3), and llhttp can only be told so by the return value of its
  ``on_headers_complete`` callback, which httptools does not pass on. So the parser is told
  the method of every request sent (:meth:`ResponseParser.expect`) and feeds llhttp no byte
  past the head of a response to HEAD; llhttp's parser is then replaced by a fresh one.
- **exact message boundaries.** To stop at a head's end, the parser must know where each
  response starts, so it never lets llhttp run past a boundary it cannot see: a head is fed up
  to its first empty line, a ``Content-Length`` body by its length, a chunked body chunk by
  chunk (size line, data, CRLF) and its trailers line by line. llhttp still judges every byte;
  the parser only chooses where to cut, and checks that llhttp agreed. The same boundaries
  give the offset of the first tunnel byte after a 101, and refuse bytes an upstream sends
  with no request awaiting them.
- **policy.** Only ``HTTP/1.0`` and ``HTTP/1.1`` (llhttp also reads ``HTTP/0.9``, ``HTTP/2.0``,
  ``RTSP/`` and ``ICE/`` status lines); a status from 100 to 599; a reason phrase without
  control characters (llhttp lets NUL through there); ``Transfer-Encoding`` only as a single
  final ``chunked`` on HTTP/1.1 (llhttp reads a response with another last coding until the
  connection closes, which is how a smuggled response hides); no framing on a 1xx (llhttp
  reads a ``Content-Length`` body on a 104-199); a 101 only for a request that asked to
  upgrade, with ``Upgrade`` and ``Connection: upgrade``; limits on the status line, the header
  count and bytes, chunk lines and, optionally, the body.
- **the end of the connection.** httptools does not expose ``llhttp_finish``, so
  :meth:`ResponseParser.feed_eof` ends a close-delimited body itself, and tells a response cut
  short (:class:`~bastion.http.errors.IncompleteResponse`) from one that never began
  (:class:`~bastion.http.errors.NoResponse`).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Final, NoReturn, Protocol

import httptools

from bastion.http.errors import (
    BadGateway,
    BadRequest,
    IncompleteResponse,
    NoResponse,
    ProtocolError,
)
from bastion.http.limits import Limits
from bastion.http.parser import callback_failure, parse_content_length, strip_field_value

# Where the parser stands in the byte stream. Each phase knows how far llhttp may be fed.
_IDLE: Final = 0  # between responses: the next byte starts a status line
_HEAD: Final = 1  # in a head: feed up to the first empty line
_NO_BODY: Final = 2  # head complete, llhttp about to end the message on its own
_LENGTH: Final = 3  # Content-Length body: feed exactly what is left of it
_UNTIL_EOF: Final = 4  # close-delimited body: everything until the connection ends
_CHUNK_LINE: Final = 5  # chunk-size line: feed up to its LF
_CHUNK_DATA: Final = 6  # chunk data: feed exactly its size
_CHUNK_END: Final = 7  # the CRLF after chunk data
_TRAILERS: Final = 8  # after the last chunk: feed line by line until the message ends
_DONE: Final = 9  # switched protocols, or the connection ended: no more HTTP

_PROTOCOL: Final = b"HTTP/"
# A status line's first bytes, by the version they name: read here, rather than asked of
# httptools, which formats the version as a new string for every response.
_STATUS_LINE_VERSIONS: Final = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_VERSION_BYTES: Final = 8
_SUPPORTED_VERSIONS: Final = frozenset({"1.0", "1.1"})
_HEAD_END: Final = b"\r\n\r\n"
# RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ).
_BAD_REASON: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Any chunk size llhttp accepts fits in 64 bits; leading zeros aside, 16 hex digits.
_MAX_CHUNK_DIGITS: Final = 16
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
# The fields that frame a response, or say whether its connection stays open.
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class ResponseHead:
    """Status, reason, version and header fields of one response, exactly as accepted.

    Header names keep the case the upstream sent, in order; ``get`` compares
    case-insensitively. The framing attributes describe this message on this connection:

    - ``content_length``: the ``Content-Length`` field's value, or None. On a response to HEAD
      or a 304 it describes the representation, not this message, which has no body.
    - ``chunked``: the body is chunked (it never is when ``has_body`` is false).
    - ``close_delimited``: the body ends when the connection does (no length, not chunked).
    - ``has_body``: false for responses to HEAD, 1xx, 101, 204, 304 and a zero length.
    - ``keep_alive``: the connection can carry another request after this response.
    - ``upgrade``: a 101 the parser accepted; the bytes after it belong to another protocol.
    """

    __slots__ = (
        "status",
        "reason",
        "version",
        "headers",
        "keep_alive",
        "content_length",
        "chunked",
        "close_delimited",
        "has_body",
        "upgrade",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        close_delimited: bool,
        has_body: bool,
        upgrade: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.close_delimited = close_delimited
        self.has_body = has_body
        self.upgrade = upgrade

    @property
    def informational(self) -> bool:
        """A 1xx other than 101: an interim response, the final one is still to come."""
        return self.status < 200 and self.status != 101

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as latin-1."""
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self.headers if key.lower() == wanted]

    def __repr__(self) -> str:
        return f"<ResponseHead HTTP/{self.version} {self.status} {self.reason!r}>"


class ResponseSink(Protocol):
    """What the response parser reports to: the proxy's upstream connection, or a test."""

    def on_informational(self, head: ResponseHead) -> None:
        """A 1xx interim response (100 Continue, 103 Early Hints); the final one follows."""

    def on_response(self, head: ResponseHead) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_response_end(self) -> None: ...


class _Awaited:
    """What the parser must know of a request to read its response."""

    __slots__ = ("head_request", "upgrade")

    def __init__(self, head_request: bool, upgrade: bool) -> None:
        self.head_request = head_request
        self.upgrade = upgrade


# Every kind of awaited request, shared: [responds to HEAD][asked to upgrade].
_AWAITED: Final = (
    (_Awaited(False, False), _Awaited(False, True)),
    (_Awaited(True, False), _Awaited(True, True)),
)


class ResponseParser:
    """Parses the responses an upstream sends on one connection, in the order of its requests.

    Call :meth:`expect` for each request as it is sent, :meth:`feed` with what the connection
    reads and :meth:`feed_eof` when it is closed by the upstream. Every error is a
    :class:`~bastion.http.errors.BadGateway`; after one, the connection must be dropped, and an
    error raised after ``on_response_end`` concerns the connection, not the response already
    delivered (bytes after a response that no request asked for, say).
    """

    __slots__ = (
        "_sink",
        "_limits",
        "_max_body_bytes",
        "_parser",
        "_awaited",
        "_phase",
        "_error",
        "_closing",
        "_upgraded",
        "_interim",
        "_prefix",
        "_head_bytes",
        "_tail",
        "_reason",
        "_headers",
        "_header_bytes",
        "_content_length",
        "_codings",
        "_connection",
        "_skip_body",
        "_final",
        "_switching",
        "_remaining",
        "_body_bytes",
        "_line",
        "_trailer_count",
        "_chunk_header",
        "_chunk_complete",
    )

    def __init__(
        self,
        sink: ResponseSink,
        limits: Limits | None = None,
        *,
        max_body_bytes: int | None = None,
    ) -> None:
        """``limits`` bounds the head (its ``max_request_line`` bounds the status line and
        chunk lines); its ``max_body_bytes`` is for requests and is not used here: a proxy
        streams response bodies of any size unless ``max_body_bytes`` is given."""
        self._sink = sink
        self._limits = limits or Limits()
        self._max_body_bytes = max_body_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._awaited: deque[_Awaited] = deque()
        self._phase = _IDLE
        self._error: ProtocolError | None = None
        self._closing = False
        self._upgraded = False
        # An interim response came for the awaited request: it is being answered.
        self._interim = False
        self._body_bytes = 0
        self._switching = False
        self._remaining = 0
        self._line = b""
        self._trailer_count = 0
        self._chunk_header = False
        self._chunk_complete = False
        self._start_message()

    def _start_message(self) -> None:
        # What only a chunked body uses is reset when one starts (in on_headers_complete).
        self._prefix = b""
        self._head_bytes = 0
        self._tail = b""
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._content_length: int | None = None
        self._codings: list[bytes] | None = None
        self._connection: list[bytes] | None = None
        self._skip_body = False
        self._final = False

    # State the proxy reads -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests sent whose final response has not started yet."""
        return len(self._awaited)

    @property
    def in_response(self) -> bool:
        """True from the first byte of a response (interim ones included) to its end."""
        return self._phase not in (_IDLE, _DONE) or self._interim

    @property
    def upgraded(self) -> bool:
        """A 101 was accepted: the connection now carries another protocol."""
        return self._upgraded

    @property
    def reusable(self) -> bool:
        """The connection can go back to an idle pool: between responses, none awaited, and
        the last one neither closed the connection nor switched protocols."""
        return (
            self._phase == _IDLE and not self._awaited and not self._closing and self._error is None
        )

    # Driving the parser ----------------------------------------------------------------------

    def expect(self, method: str, *, upgrade: bool = False) -> None:
        """Note a request sent on this connection; its response is read after those before it.

        ``upgrade`` says the request asked to switch protocols (``Upgrade`` with ``Connection:
        upgrade``): only then is a 101 accepted. Nothing may be sent after such a request until
        its response is known, and CONNECT is not something this parser can follow.
        """
        if self._phase == _DONE or self._closing or self._error is not None:
            raise RuntimeError("this connection takes no more requests")
        if method == "CONNECT":
            raise ValueError("CONNECT responses are not parsed")
        if self._awaited and self._awaited[-1].upgrade:
            raise ValueError("nothing may be sent after a request that asks to upgrade")
        self._awaited.append(_AWAITED[method == "HEAD"][upgrade])

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``; report what it completes to the sink; raise BadGateway if bad.

        Returns None, or, when a 101 Switching Protocols ended in ``data``, the offset in
        ``data`` of the first byte of the new protocol (``len(data)`` if there is none yet).
        """
        if self._error is not None:
            raise self._error
        if self._phase == _DONE:
            raise RuntimeError("the response stream has ended")
        view = memoryview(data)
        end = len(data)
        at = 0
        while at < end:
            phase = self._phase
            if phase == _IDLE:
                self._begin()
                phase = _HEAD
            if phase == _HEAD:
                at = self._feed_head(data, view, at)
            elif phase in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, end - at)
                self._remaining -= take
                self._execute(view[at : at + take])
                at += take
                if phase == _CHUNK_DATA and not self._remaining:
                    self._phase = _CHUNK_END
            elif phase == _UNTIL_EOF:
                self._execute(view[at:])
                at = end
            else:  # a chunk line, the CRLF after chunk data, or a trailer line
                at = self._feed_line(data, view, at)
            if self._phase == _DONE:
                return at
        return None

    def feed_eof(self) -> None:
        """The upstream closed the connection: end a close-delimited body, or say what was cut.

        Raises :class:`NoResponse` if a request was still awaiting its response and no byte of
        it had come, :class:`IncompleteResponse` if a response was cut short.
        """
        if self._error is not None:
            raise self._error
        phase = self._phase
        if phase == _DONE:
            return
        self._phase = _DONE
        self._closing = True
        if phase == _UNTIL_EOF:
            self._sink.on_response_end()
            phase = _IDLE
        if phase == _IDLE and not self._interim:
            if self._awaited:
                self._fail(NoResponse("the upstream closed the connection before responding"))
            return
        where = "head" if phase in (_HEAD, _IDLE) else "body"
        self._fail(IncompleteResponse(f"the upstream closed the connection in a response {where}"))

    # Feeding llhttp up to the boundaries it cannot tell us ----------------------------------

    def _begin(self) -> None:
        if not self._awaited:
            self._fail(BadGateway("the upstream sent bytes no request asked for"))
        if self._closing:
            self._fail(BadGateway("the upstream sent bytes after closing the connection"))
        self._phase = _HEAD

    def _feed_head(self, data: bytes, view: memoryview, at: int) -> int:
        """Feed up to the end of the head, the first empty line: a head holds no other."""
        prefix = self._prefix
        if len(prefix) < _VERSION_BYTES:
            # llhttp also reads RTSP and ICE status lines, and skips empty lines before one;
            # a response must start right where the previous one ended, with "HTTP/".
            prefix = self._prefix = prefix + data[at : at + _VERSION_BYTES - len(prefix)]
            if not _PROTOCOL.startswith(prefix[: len(_PROTOCOL)]):
                self._fail(BadGateway(f"not an HTTP status line: {prefix!r}"))
        tail = self._tail
        found = -1
        if tail:
            # The empty line may have started in the previous feed.
            joined = tail + data[at : at + 3]
            found = joined.find(_HEAD_END)
            if found >= 0:
                stop = at + found + 4 - len(tail)
        if found < 0:
            found = data.find(_HEAD_END, at)
            stop = found + 4 if found >= 0 else len(data)
        self._head_bytes += stop - at
        if self._head_bytes > self._limits.max_request_line + self._limits.max_header_bytes:
            self._fail(BadGateway("response head too large"))
        self._execute(view[at:stop])
        if found < 0:
            self._tail = (tail + data[max(at, stop - 3) : stop])[-3:]
            return stop
        if self._phase == _HEAD:
            # llhttp read an empty line and did not end the head: it cannot be ours to cut.
            self._fail(BadGateway("malformed response head"))
        if self._skip_body and self._phase != _IDLE:
            # A response to HEAD: llhttp waits for the body its fields announce. There is none;
            # its parser is left mid-message, so the next response gets a fresh one.
            self._parser = httptools.HttpResponseParser(self)
            self._message_complete()
        return stop

    def _feed_line(self, data: bytes, view: memoryview, at: int) -> int:
        """Feed one line of chunked framing (a size line, a CRLF, a trailer) or what there is."""
        found = data.find(b"\n", at)
        stop = found + 1 if found >= 0 else len(data)
        line = self._line + data[at:stop]
        if len(line) > self._limits.max_request_line:
            what = "trailer line" if self._phase == _TRAILERS else "chunk line"
            self._fail(BadGateway(f"{what} too long"))
        self._execute(view[at:stop])
        if found < 0:
            self._line = line
            return stop
        self._line = b""
        phase = self._phase
        if phase == _CHUNK_LINE:
            if not self._chunk_header:
                self._fail(BadGateway("malformed chunk line"))
            self._chunk_header = False
            self._remaining = _chunk_size(line)
            self._phase = _CHUNK_DATA if self._remaining else _TRAILERS
        elif phase == _CHUNK_END:
            if not self._chunk_complete:
                self._fail(BadGateway("malformed chunk end"))
            self._chunk_complete = False
            self._phase = _CHUNK_LINE
        elif phase == _TRAILERS:
            self._trailer_count += 1
            if self._trailer_count > self._limits.max_header_count:
                self._fail(BadGateway("too many trailer fields"))
        return stop

    def _execute(self, data: memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Only a 101 that passed on_headers_complete gets here, fed exactly to its end.
            if int(upgrade.args[0]) != len(data) or self._phase != _DONE:
                self._fail(BadGateway("malformed 101 response"))
        except httptools.HttpParserCallbackError as callback_error:
            error = self._error = callback_failure(self._error, callback_error)
            raise error from None
        except httptools.HttpParserError as exc:
            self._fail(BadGateway(str(exc) or "malformed response"))

    def _fail(self, error: ProtocolError) -> NoReturn:
        self._error = error
        raise error

    # httptools callbacks -------------------------------------------------------------------

    def on_status(self, fragment: bytes) -> None:
        reason = self._reason + fragment
        if len(reason) > self._limits.max_request_line:
            self._fail(BadGateway("status line too long"))
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # The count and size of the fields are checked once the head is complete: until
        # then what is held is bounded by the head's size, checked before llhttp reads it.
        self._header_bytes += len(name) + len(value) + 4
        if self._phase != _HEAD:
            # A trailer field: counted by _feed_line, not acted upon.
            if self._header_bytes > self._limits.max_header_bytes:
                self._fail(BadGateway("trailer fields too large"))
            return
        value = strip_field_value(value)
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered in _FRAMING:
            self._framing(lowered, value)

    def _framing(self, lowered: bytes, value: bytes) -> None:
        if lowered == b"content-length":
            try:
                self._content_length = parse_content_length(value)
            except BadRequest as error:
                self._fail(BadGateway(error.detail))
            return
        tokens = [c.strip(b" \t").lower() for c in value.split(b",")]
        if lowered == b"transfer-encoding":
            self._codings = tokens if self._codings is None else self._codings + tokens
        else:
            self._connection = tokens if self._connection is None else self._connection + tokens

    def on_headers_complete(self) -> None:
        limits = self._limits
        if len(self._headers) > limits.max_header_count:
            self._fail(BadGateway("too many header fields"))
        if self._header_bytes > limits.max_header_bytes:
            self._fail(BadGateway("header fields too large"))
        parser = self._parser
        version = _STATUS_LINE_VERSIONS.get(self._prefix) or parser.get_http_version()
        if version not in _SUPPORTED_VERSIONS:
            self._fail(BadGateway(f"HTTP/{version} responses are not supported"))
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            self._fail(BadGateway(f"invalid status code {status}"))
        reason = self._reason
        if _BAD_REASON.search(reason):
            self._fail(BadGateway("control character in the reason phrase"))
        length = self._content_length
        chunked = self._check_codings(version)
        awaited = self._awaited[0]
        upgrade = False
        if status < 200:
            if chunked or length:
                self._fail(BadGateway(f"a {status} response with a body length"))
            if status == 101:
                upgrade = self._check_upgrade(awaited, version)
        head_request = awaited.head_request
        has_body = not head_request and status >= 200 and status != 204 and status != 304
        close_delimited = has_body and not chunked and length is None
        has_body = has_body and (chunked or close_delimited or bool(length))
        connection = self._connection
        if connection is None:
            persistent = version == "1.1"
        elif b"close" in connection:
            persistent = False
        else:
            persistent = version == "1.1" or b"keep-alive" in connection
        head = ResponseHead(
            status,
            reason,
            version,
            self._headers,
            persistent and not close_delimited and not upgrade,
            length,
            chunked and has_body,
            close_delimited,
            has_body,
            upgrade,
        )
        if head.informational:
            self._phase = _NO_BODY
            self._interim = True
            self._sink.on_informational(head)
            return
        self._awaited.popleft()
        self._interim = False
        self._final = True
        if not head.keep_alive:
            self._closing = True
        if upgrade:
            self._phase = _NO_BODY
            self._switching = True
        elif not has_body:
            self._phase = _NO_BODY
            self._skip_body = head_request
        elif chunked:
            self._phase = _CHUNK_LINE
            self._line = b""
            self._trailer_count = 0
            self._chunk_header = False
            self._chunk_complete = False
        elif close_delimited:
            self._phase = _UNTIL_EOF
        else:
            self._phase = _LENGTH
            self._remaining = length or 0
        max_body = self._max_body_bytes
        if max_body is not None and length is not None and has_body and length > max_body:
            self._fail(BadGateway("response body too large"))
        self._body_bytes = 0
        self._sink.on_response(head)

    def _check_codings(self, version: str) -> bool:
        if self._codings is None:
            return False
        codings = [c for c in self._codings if c]
        # RFC 9112 §6.1: a Transfer-Encoding on HTTP/1.0 means the framing is faulty.
        if version != "1.1":
            self._fail(BadGateway("Transfer-Encoding on an HTTP/1.0 response"))
        # RFC 9112 §6.3: chunked must come last, once. A response whose last coding is not
        # chunked would run to the end of the connection; no other coding is decoded here.
        if codings != [b"chunked"]:
            self._fail(BadGateway(f"unsupported Transfer-Encoding {b', '.join(codings)!r}"))
        if self._content_length is not None:  # llhttp refuses this too
            self._fail(BadGateway("Content-Length with Transfer-Encoding"))
        return True

    def _check_upgrade(self, awaited: _Awaited, version: str) -> bool:
        if not awaited.upgrade:
            self._fail(BadGateway("101 Switching Protocols to a request that did not ask"))
        # RFC 9110 §15.2.2 and §7.8: a 101 names the protocol in Upgrade, and Upgrade is
        # listed in Connection; llhttp only treats the bytes after it as a tunnel then.
        if version != "1.1" or not self._parser.should_upgrade():
            self._fail(BadGateway("101 without Upgrade and Connection: upgrade"))
        return True

    def on_body(self, data: bytes) -> None:
        if self._max_body_bytes is not None:
            self._body_bytes += len(data)
            if self._body_bytes > self._max_body_bytes:
                self._fail(BadGateway("response body too large"))
        self._sink.on_body(data)

    def on_chunk_header(self) -> None:
        self._chunk_header = True

    def on_chunk_complete(self) -> None:
        self._chunk_complete = True

    def on_message_complete(self) -> None:
        if self._phase == _HEAD:
            # llhttp ended a message without its head being complete: never with our cuts.
            self._fail(BadGateway("malformed response"))
        self._message_complete()

    def _message_complete(self) -> None:
        final = self._final
        switching = self._switching
        self._start_message()
        if not final:  # an interim response: the final one follows
            self._phase = _IDLE
            return
        # The state is final before the sink hears of the end, so that it can ask whether
        # the connection is reusable and hand it to the next request from the callback.
        if switching:
            self._upgraded = True
            self._phase = _DONE
        else:
            self._phase = _IDLE
        self._sink.on_response_end()


def _chunk_size(line: bytes) -> int:
    """The size of a chunk from its line, once llhttp has accepted the line.

    llhttp has checked the hex digits and that the size fits in 64 bits; reading it again here
    is how the parser knows where the chunk's data ends, and it is read strictly all the same.
    """
    end = 0
    while end < len(line) and line[end] in _HEX:
        end += 1
    digits = line[:end].lstrip(b"0")
    if not end or len(digits) > _MAX_CHUNK_DIGITS:
        raise BadGateway("invalid chunk size")
    return int(digits, 16) if digits else 0

"""Response serialization: status lines, header blocks, chunked framing, error responses."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

_REASONS: Final[dict[int, str]] = {s.value: s.phrase for s in HTTPStatus}
_REASONS[413] = "Content Too Large"  # RFC 9110's name; older tables say "Request Entity Too Large"
STATUS_LINES: Final[dict[int, bytes]] = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode("latin-1") for code, reason in _REASONS.items()
}
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# A header value may hold any visible byte, space and tab; CR and LF would split the response
# (header injection), NUL and other controls confuse downstream parsers.
_BAD_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_line_cache: Final[dict[tuple[str, str], bytes]] = {}
_LINE_CACHE_SIZE: Final = 4096

LAST_CHUNK: Final = b"0\r\n\r\n"
CONTINUE_RESPONSE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "")


def status_line(status: int, reason: str | None = None) -> bytes:
    """``HTTP/1.1 <status> <reason>`` with CRLF; common statuses come pre-encoded."""
    if reason is None:
        line = STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = _REASONS.get(status, "")
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    if _BAD_VALUE.search(reason):
        raise ValueError("invalid character in reason phrase")
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


def status_allows_body(status: int) -> bool:
    """RFC 9110 §6.4.1: 1xx, 204 and 304 responses never carry content."""
    return status >= 200 and status != 204 and status != 304


def encode_header(name: str, value: str) -> bytes:
    """One ``name: value`` line, refusing anything that could split the response."""
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    value = str(value)
    if _BAD_VALUE.search(value):
        raise ValueError(f"invalid character in value of header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


def encode_headers(headers: Iterable[tuple[str, object]]) -> bytes:
    """Serialize ``(name, value)`` pairs, refusing anything that could split the response.
    A value that is not a ``str`` (a number) is written as ``str(value)``.

    Most responses repeat the same few lines (``content-type: text/plain``), so validated
    lines are remembered; the memory is bounded and later lines are simply not remembered.
    """
    # Items typed loosely: compiled code checks each against its declared type, and would
    # refuse a number where the pure build writes it.
    pairs: list[tuple[Any, Any]] = headers if type(headers) is list else list(headers)
    lines: list[bytes] = []
    cache = _line_cache
    for name, value in pairs:
        if type(value) is not str:
            value = str(value)
        key = (name, value)
        line = cache.get(key)
        if line is None:
            line = encode_header(name, value)
            if len(cache) < _LINE_CACHE_SIZE:
                cache[key] = line
        lines.append(line)
    return lines[0] if len(lines) == 1 else b"".join(lines)


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def format_date(timestamp: float) -> bytes:
    """An IMF-fixdate (RFC 9110 §5.6.7) header line for ``timestamp``."""
    return b"date: " + formatdate(timestamp, usegmt=True).encode("ascii") + b"\r\n"


def error_response(status: int, detail: str = "", *, date_line: bytes = b"") -> bytes:
    """A complete, self-framed ``text/plain`` error response that closes the connection."""
    reason = _REASONS.get(status, "Error")
    body = f"{status} {reason}\n".encode("latin-1")
    if detail:
        body += detail.encode("utf-8", "replace") + b"\n"
    return b"".join(
        (
            status_line(status),
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            date_line,
            b"\r\n",
            body,
        )
    )

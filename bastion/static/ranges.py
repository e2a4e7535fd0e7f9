"""``Range: bytes=...`` (RFC 9110 §14): parsing, and the layout of ``multipart/byteranges``.

Numbers are ASCII digits only, never ``int()`` on raw text (which takes ``+3``, ``1_0``, and
non-ASCII digits). Overlapping and adjacent ranges are merged, so a request for the same bytes
many times over (the "Apache Killer") gets them once; a header with more than ``MAX_RANGES``
ranges is ignored and the whole file is sent instead.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_RANGES = 64
# A number longer than this is larger than any file: it is treated as "beyond the end".
_MAX_DIGITS = 18
_HUGE = 1_000_000_000_000_000_000  # 10**_MAX_DIGITS

# parse() outcomes other than a list of ranges.
IGNORE = None
UNSATISFIABLE: list[tuple[int, int]] = []

Range = tuple[int, int]  # first and last byte, inclusive


def _number(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > _MAX_DIGITS:
        return _HUGE
    return int(text)


def parse(value: str, size: int) -> list[Range] | None:
    """The satisfiable ranges of ``value`` for a representation of ``size`` bytes.

    Returns ``IGNORE`` (None) when the header is malformed, uses another unit, or asks for
    too many ranges: the server then sends the whole representation, as RFC 9110 allows.
    Returns ``UNSATISFIABLE`` (an empty list) when no range overlaps the content: a 416.
    """
    unit, sep, specs = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return IGNORE
    wanted: list[Range] = []
    count = 0
    for raw in specs.split(","):
        spec = raw.strip(" \t")
        if not spec:
            continue
        count += 1
        if count > MAX_RANGES:
            return IGNORE
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return IGNORE
        if not first_text:  # suffix: the last N bytes
            length = _number(last_text)
            if length is None:
                return IGNORE
            if length > 0 and size > 0:
                wanted.append((max(0, size - length), size - 1))
            continue
        first = _number(first_text)
        if first is None:
            return IGNORE
        if last_text:
            last = _number(last_text)
            if last is None or last < first:
                return IGNORE
        else:
            last = size - 1
        if first < size:
            wanted.append((first, min(last, size - 1)))
    if count == 0:
        return IGNORE
    return _coalesce(wanted)


def _coalesce(ranges: list[Range]) -> list[Range]:
    if len(ranges) < 2:
        return ranges
    ranges.sort()
    merged = [ranges[0]]
    for first, last in ranges[1:]:
        top_first, top_last = merged[-1]
        if first <= top_last + 1:
            merged[-1] = (top_first, max(top_last, last))
        else:
            merged.append((first, last))
    return merged


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"


def unsatisfied_range(size: int) -> str:
    return f"bytes */{size}"


class Multipart:
    """The framing of a ``multipart/byteranges`` body: each part's head, and the closing line.

    ``length`` is the exact body size, so the response has a Content-Length (no chunking).
    """

    __slots__ = ("boundary", "content_type", "parts", "closing", "length")

    def __init__(self, ranges: Sequence[Range], size: int, part_type: str, boundary: str) -> None:
        self.boundary = boundary
        self.content_type = f"multipart/byteranges; boundary={boundary}"
        self.parts: list[tuple[bytes, int, int]] = []
        length = 0
        for index, (first, last) in enumerate(ranges):
            head = (b"" if index == 0 else b"\r\n") + (
                f"--{boundary}\r\n"
                f"content-type: {part_type}\r\n"
                f"content-range: {content_range(first, last, size)}\r\n\r\n"
            ).encode("latin-1")
            count = last - first + 1
            self.parts.append((head, first, count))
            length += len(head) + count
        self.closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
        self.length = length + len(self.closing)

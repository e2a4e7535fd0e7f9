"""Validators and preconditions (RFC 9110 §8.8, §13): ETag, Last-Modified and the ``If-*`` fields.

The ETag is made from the file's modification time (in nanoseconds) and size, like nginx's but
finer: it changes whenever the file does, costs no read of the file, and is the same on every
server that holds the same copy with the same times (so caches behind a balancer agree).
"""

from __future__ import annotations

import calendar
import re
import time
from email.utils import formatdate, parsedate_tz
from typing import Any, Final

_TAG: Final = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')

_dates: Final[dict[int, str]] = {}
_DATES_LIMIT: Final = 4096

NOT_MODIFIED: Final = 304
PRECONDITION_FAILED: Final = 412


def make_etag(mtime_ns: int, size: int, variant: str = "") -> str:
    """A strong ETag; ``variant`` tells encodings of the same file apart (``br``, ``gzip``)."""
    if variant:
        return f'"{mtime_ns:x}-{size:x}-{variant}"'
    return f'"{mtime_ns:x}-{size:x}"'


def http_date(seconds: int) -> str:
    """An IMF-fixdate for whole ``seconds`` since the epoch (remembered: files share times)."""
    found = _dates.get(seconds)
    if found is None:
        found = formatdate(seconds, usegmt=True)
        if len(_dates) >= _DATES_LIMIT:
            _dates.clear()
        _dates[seconds] = found
    return found


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch for any of HTTP's three date formats; None if it is not one."""
    if len(text) > 64:
        return None
    parts: Any = parsedate_tz(text)
    if parts is None:
        return None
    try:
        seconds = calendar.timegm((*parts[:6], 0, 0, 0))
    except (OverflowError, ValueError):
        return None
    return int(seconds) - (parts[9] or 0)


def _tags(value: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque)`` for each entity-tag in a list; None when the list is malformed."""
    tags = []
    position = 0
    length = len(value)
    while position < length:
        found = _TAG.match(value, position)
        if found is None:
            if value[position:].strip(" \t,") == "":
                break
            return None
        tags.append((found.group(1) is not None, found.group(2)))
        position = found.end()
    return tags


def etag_matches(value: str, etag: str, *, strong: bool) -> bool:
    """Whether ``etag`` is among the tags of an ``If-Match``/``If-None-Match`` value.

    ``*`` matches any current representation. Strong comparison (If-Match, If-Range) never
    matches a weak tag; weak comparison (If-None-Match) ignores the ``W/`` prefix.
    """
    if value.strip() == "*":
        return True
    tags = _tags(value)
    if not tags:
        return False
    ours = etag[1:-1] if not etag.startswith("W/") else etag[3:-1]
    return any(opaque == ours and not (strong and weak) for weak, opaque in tags)


def evaluate(
    method: str,
    etag: str,
    mtime: int,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    if_unmodified_since: str | None = None,
) -> int:
    """The precondition outcome for a GET/HEAD of a file: 304, 412, or 0 to go on serving.

    The order is RFC 9110 §13.2.2's; a date that does not parse, or lies in the future, is
    ignored as the RFC asks.
    """
    if if_match is not None:
        if not etag_matches(if_match, etag, strong=True):
            return PRECONDITION_FAILED
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and mtime > since:
            return PRECONDITION_FAILED
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, strong=False):
            return NOT_MODIFIED if method in ("GET", "HEAD") else PRECONDITION_FAILED
    elif if_modified_since is not None and method in ("GET", "HEAD"):
        since = parse_http_date(if_modified_since)
        if since is not None and since <= time.time() and mtime <= since:
            return NOT_MODIFIED
    return 0


def if_range_allows(value: str, etag: str, mtime: int) -> bool:
    """Whether ``If-Range`` lets the Range apply: a strong ETag match or the exact date."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return etag_matches(value, etag, strong=True)
    when = parse_http_date(value)
    return when is not None and when == mtime

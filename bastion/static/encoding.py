"""Precompressed siblings: ``app.js.br`` and ``app.js.gz`` served for ``app.js`` when accepted.

The client's ``Accept-Encoding`` is read with its q-values (RFC 9110 §12.5.3): a coding it does
not name is acceptable only through ``*``, and ``q=0`` refuses. Among the acceptable codings
whose sibling exists, the highest q wins, Brotli on a tie.
"""

from __future__ import annotations

import re
from typing import Final

# (coding in Accept-Encoding, Content-Encoding sent, file suffix, ETag variant)
CODINGS: Final = (("br", "br", ".br", "br"), ("gzip", "gzip", ".gz", "gz"))
_ALIASES: Final = {"x-gzip": "gzip"}
_QVALUE: Final = re.compile(r"q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z", re.IGNORECASE)

_cache: Final[dict[str, tuple[tuple[str, str, str], ...]]] = {}
_CACHE_LIMIT: Final = 256


def _qualities(value: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for element in value.split(","):
        name, _, params = element.partition(";")
        coding = name.strip(" \t").lower()
        if not coding:
            continue
        quality = 1.0
        for param in params.split(";"):
            param = param.strip(" \t")
            if not param:
                continue
            matched = _QVALUE.match(param)
            quality = float(matched.group(1)) if matched else 0.0
        coding = _ALIASES.get(coding, coding)
        found[coding] = max(found.get(coding, 0.0), quality)
    return found


def preferences(accept_encoding: str) -> tuple[tuple[str, str, str], ...]:
    """The precompressed codings the client accepts, best first.

    Each is ``(content_coding, suffix, etag_variant)``; empty when none is acceptable.
    """
    found = _cache.get(accept_encoding)
    if found is not None:
        return found
    qualities = _qualities(accept_encoding)
    wildcard = qualities.get("*", 0.0)
    ranked = []
    for order, (token, coding, suffix, variant) in enumerate(CODINGS):
        quality = qualities.get(token, wildcard)
        if quality > 0:
            ranked.append((-quality, order, (coding, suffix, variant)))
    ranked.sort()
    result = tuple(item for _, _, item in ranked)
    if len(accept_encoding) <= 256:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[accept_encoding] = result
    return result

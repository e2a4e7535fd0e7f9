"""Content types: ``mimetypes`` for the long tail, fixed answers for the web's own types.

``mimetypes`` also reads the host's ``mime.types``, whose answers differ between machines; the
types browsers are strict about (scripts, styles, wasm, fonts, JSON) are pinned here. Text gets
``charset=utf-8``; anything unknown is ``application/octet-stream``.
"""

from __future__ import annotations

import mimetypes
from typing import Final

DEFAULT: Final = "application/octet-stream"

_PINNED: Final = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".xml": "application/xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
}
# A compressed file served as itself (not as a Content-Encoding of another file).
_ARCHIVES: Final = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
}
_TEXT_LIKE: Final = frozenset(
    {
        "application/javascript",
        "application/xml",
        "application/xhtml+xml",
        "application/toml",
        "application/yaml",
        "image/svg+xml",
    }
)

_cache: Final[dict[str, str]] = {}
_CACHE_LIMIT: Final = 1024


def content_type(name: str) -> str:
    """The ``Content-Type`` for a file called ``name``."""
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot > 0 else ""
    found = _cache.get(extension)
    if found is not None:
        return found
    kind = _PINNED.get(extension)
    if kind is None:
        guessed, encoding = mimetypes.guess_type("x" + extension, strict=False)
        kind = _ARCHIVES.get(encoding, DEFAULT) if encoding is not None else guessed or DEFAULT
    if kind.startswith("text/") or kind in _TEXT_LIKE:
        kind += "; charset=utf-8"
    if len(extension) <= 16 and len(_cache) < _CACHE_LIMIT:
        _cache[extension] = kind
    return kind

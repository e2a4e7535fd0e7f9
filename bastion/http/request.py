"""The head of a parsed request, as the rest of the server sees it."""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_to_bytes

# Busy services see the same few targets again and again; their split is remembered (bounded).
_split_targets: Final[dict[bytes, tuple[str, bytes]]] = {}


class RequestHead:
    """Method, target, version and headers of one request, exactly as they were accepted.

    Header names keep the case the client sent (the ``http.server`` API shows them that way);
    ``get`` compares case-insensitively. The path and query are split lazily because most
    handlers touch only one of them.

    ``target`` is the request target as sent. ``path``, ``raw_path`` and ``query_string`` come
    from its origin-form: the target itself, or for an absolute-form target
    (``http://host/p?q``) its path and query, so that every handler routes it like ``/p?q``;
    the asterisk-form's path is ``*``. For an absolute-form target the ``Host`` field holds the
    target's authority (RFC 9112 §3.2.2), whatever the client sent in its own ``Host``.
    """

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "keep_alive",
        "content_length",
        "chunked",
        "expect_continue",
        "upgrade",
        "has_body",
        "_origin",
        "_path",
        "_query",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
        upgrade: bool = False,
        origin: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.has_body = chunked or bool(content_length)
        # Only set when the target is not already origin-form, so the common case costs nothing.
        self._origin = origin
        self._path: str | None = None
        self._query: bytes | None = None

    def _split_target(self) -> None:
        target = self._origin or self.target
        cached = _split_targets.get(target)
        if cached is not None:
            self._path, self._query = cached
            return
        cut = target.find(b"?")
        if cut >= 0:
            raw_path, self._query = target[:cut], target[cut + 1 :]
        else:
            raw_path, self._query = target, b""
        if 37 in raw_path:  # "%"
            raw_path = unquote_to_bytes(raw_path)
        self._path = raw_path.decode("utf-8", "surrogateescape")
        if len(target) <= 256 and len(_split_targets) < 4096:
            _split_targets[target] = (self._path, self._query)

    @property
    def path(self) -> str:
        """The percent-decoded path (undecodable bytes kept as surrogates, never guessed)."""
        if self._path is None:
            self._split_target()
        return self._path  # type: ignore[return-value]

    @property
    def raw_path(self) -> bytes:
        """The path as sent, still percent-encoded."""
        target = self._origin or self.target
        # Testing for a byte value is a C call; bytes.find parses its arguments every time.
        return target.partition(b"?")[0] if 63 in target else target  # "?"

    @property
    def authority(self) -> str | None:
        """``host[:port]`` the request is for, or None for an HTTP/1.0 request naming none.

        The ``Host`` field, which for an absolute-form target holds the target's authority.
        """
        return self.get("host")

    @property
    def query_string(self) -> bytes:
        if self._query is None:
            self._split_target()
        return self._query  # type: ignore[return-value]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as latin-1."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self.headers if key.lower() == wanted]

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.version}>"

"""What a native handler returns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None


def _header_list(headers: HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if headers.__class__ is dict or isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


class Response:
    """A status, headers and a body of bytes (``str`` is encoded as UTF-8).

    ``Content-Length`` is computed by the server; a ``content-type`` is added for ``str``
    bodies if none is given.
    """

    __slots__ = ("status", "headers", "body")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeaderInput = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers = [*headers.items()] if headers.__class__ is dict else _header_list(headers)
        if body.__class__ is not bytes and isinstance(body, str):
            body = body.encode("utf-8")
            if content_type is None and not self._has("content-type"):
                content_type = "text/plain; charset=utf-8"
        if content_type is not None:
            self.headers.append(("content-type", content_type))
        self.body = body

    def _has(self, name: str) -> bool:
        return any(key.lower() == name for key, _ in self.headers)


class JSONResponse(Response):
    """``data`` serialised as compact JSON with ``application/json``."""

    __slots__ = ()

    def __init__(self, data: Any, status: int = 200, headers: HeaderInput = None) -> None:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        super().__init__(body, status, headers, content_type="application/json")


class StreamingResponse:
    """A body produced piece by piece from an async or a plain iterator.

    An async iterator is consumed on the loop; a plain one on the thread pool, since producing
    each piece may block. Without ``content_length`` the body is sent chunked (HTTP/1.1).
    """

    __slots__ = ("status", "headers", "content", "content_length")

    def __init__(
        self,
        content: AsyncIterable[bytes | str] | Iterable[bytes | str],
        status: int = 200,
        headers: HeaderInput = None,
        content_type: str | None = None,
        content_length: int | None = None,
    ) -> None:
        self.status = status
        self.headers = _header_list(headers)
        if content_type is not None:
            self.headers.append(("content-type", content_type))
        self.content = content
        self.content_length = content_length

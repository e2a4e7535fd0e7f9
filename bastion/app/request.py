"""What a native handler receives: ``Request`` for ``async def``, ``SyncRequest`` for ``def``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

from bastion.engine.exchange import Exchange


class Headers:
    """A read-only, case-insensitive view of the request headers, in the order received."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self._raw:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == wanted]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]

    def __iter__(self) -> Iterator[str]:
        return (k.decode("latin-1") for k, _ in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


class _RequestBase:
    __slots__ = ("exchange", "path_params", "_query", "_headers")

    def __init__(self, exchange: Exchange, path_params: dict[str, Any]) -> None:
        self.exchange = exchange
        self.path_params = path_params
        self._query: dict[str, list[str]] | None = None
        self._headers: Headers | None = None

    @property
    def method(self) -> str:
        return self.exchange.head.method

    @property
    def path(self) -> str:
        return self.exchange.head.path

    @property
    def query_string(self) -> bytes:
        return self.exchange.head.query_string

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters, each name to all of its values in order."""
        if self._query is None:
            parsed: dict[str, list[str]] = {}
            text = self.query_string.decode("latin-1")
            for name, value in parse_qsl(text, keep_blank_values=True, max_num_fields=1000):
                parsed.setdefault(name, []).append(value)
            self._query = parsed
        return self._query

    def query_param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.exchange.head.headers)
        return self._headers

    @property
    def client(self) -> tuple[str, int] | None:
        return self.exchange.client

    @property
    def http_version(self) -> str:
        return self.exchange.head.version

    @property
    def scheme(self) -> str:
        return self.exchange.scheme

    @property
    def disconnected(self) -> bool:
        """True once the client has closed the connection, or its sending side.

        A client that half-closes after its request may still read the answer, so a response
        is still sent; this is for work that only matters while someone waits for it (a long
        poll, an event stream, an expensive computation).
        """
        return self.exchange.client_gone

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.path}>"


class Request(_RequestBase):
    """A request as seen by an ``async def`` handler; reading the body awaits the network."""

    __slots__ = ()

    async def body(self) -> bytes:
        return await self.exchange.body.read_all()

    async def text(self, encoding: str = "utf-8") -> str:
        return (await self.body()).decode(encoding)

    async def json(self) -> Any:
        return json.loads(await self.body())

    async def stream(self) -> AsyncIterator[bytes]:
        """The body chunk by chunk as it arrives; memory stays bounded for large uploads."""
        body = self.exchange.body
        while chunk := await body.read():
            yield chunk

    async def wait_disconnected(self) -> None:
        """Return once the client is gone (see :attr:`disconnected`); for long polls."""
        await self.exchange.wait_client_gone()


class SyncRequest(_RequestBase):
    """A request as seen by a plain ``def`` handler on the thread pool; reads block."""

    __slots__ = ("_read_timeout",)

    def __init__(
        self, exchange: Exchange, path_params: dict[str, Any], timeout: float | None = None
    ) -> None:
        super().__init__(exchange, path_params)
        self._read_timeout = timeout

    @property
    def _timeout(self) -> float:
        # Worked out on the first read, not per request: most requests have no body to read.
        timeout = self._read_timeout
        if timeout is None:
            timeout = self._read_timeout = self.exchange.conn.state.config.blocking_read_timeout
        return timeout

    def body(self) -> bytes:
        return self.exchange.body.read_all_blocking(self._timeout)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body().decode(encoding)

    def json(self) -> Any:
        return json.loads(self.body())

    def stream(self) -> Iterator[bytes]:
        body = self.exchange.body
        while chunk := body.read_blocking(self._timeout):
            yield chunk

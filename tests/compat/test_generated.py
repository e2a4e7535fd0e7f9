"""The same handler under ``http.server`` and ``bastion.compat``, over a generated request set.

Every method llhttp knows and extension tokens, every final status 200-999 and interim ones
before a final, header values in ASCII, Latin-1 and beyond, errors with and without a message,
HTTP/1.0 and 1.1 clients and handlers, keep-alive asked for or not: status line, fields (but
Date and Server), body and whether the connection stays open must be the same on both. Where
Bastion differs on purpose, :func:`~tests.compat.differential.comparable` takes the difference
out, with the reason, as in docs/migrating-from-http-server.md.
"""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from typing import Any

import pytest

import bastion.compat
from tests.compat import handlers
from tests.compat.differential import ask, comparable, running

_KNOWN = """DELETE GET HEAD POST PUT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH
SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE
UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY"""
KNOWN_METHODS = _KNOWN.split()
EXTENSION_METHODS = ["CUSTOM", "-BLARGH", "get", "Get", "PLAY", "X" * 30, "UNKNOWN"]


def request(method: str, path: str, version: str = "1.1", extra: str = "") -> bytes:
    host = "Host: t\r\n" if version == "1.1" else ""
    return f"{method} {path} HTTP/{version}\r\n{host}{extra}\r\n".encode("latin-1")


PATHS = {
    "Mirror10": ("/echo", "/keep/keep-alive", "/keep/close", "/nolength/-", "/error/404"),
    # An HTTP/1.1 handler that sends no length leaves the standard library's client waiting
    # for a close that never comes; Bastion ends such a body by closing (test_servers).
    "Mirror": ("/echo", "/keep/keep-alive", "/keep/close", "/error/404"),
}


def cases() -> Iterator[Any]:
    for method in KNOWN_METHODS + EXTENSION_METHODS:
        yield pytest.param("Mirror", request(method, "/echo"), method, id=f"method-{method[:12]}")
    # 1xx codes alone are no answer a client can end on: they come before a final one.
    for code in range(200, 1000):
        yield pytest.param("Mirror", request("GET", f"/status/{code}"), "GET", id=f"status-{code}")
    for code in (100, 102, 103, 104, 150, 199):
        yield pytest.param(
            "Mirror", request("GET", f"/interim/{code}"), "GET", id=f"interim-{code}"
        )
    for code in (400, 401, 404, 418, 500, 501, 599, 999):
        for method in ("GET", "HEAD"):
            yield pytest.param(
                "Mirror", request(method, f"/error/{code}"), method, id=f"error-{code}-{method}"
            )
    for kind in handlers.Mirror.HEADER_VALUES:
        if kind != "utf8":  # not Latin-1: see test_header_values_beyond_latin1
            yield pytest.param(
                "Mirror", request("GET", f"/header/{kind}"), "GET", id=f"header-{kind}"
            )
    for handler in ("Mirror", "Mirror10"):
        for version in ("1.0", "1.1"):
            for asked in ("", "Connection: keep-alive\r\n", "Connection: close\r\n"):
                for path in PATHS[handler]:
                    asking = asked[12:-2] or "default"
                    name = f"{handler}-{version}-{asking}-{path[1:].replace('/', '-')}"
                    data = request("GET", path, version, asked)
                    yield pytest.param(handler, data, "GET", id=name)


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[tuple[str, str], int]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        found = {}
        for name in ("Mirror", "Mirror10"):
            handler = getattr(handlers, name)
            found[("stdlib", name)] = stack.enter_context(
                running(http.server.ThreadingHTTPServer, handler)
            )
            found[("bastion", name)] = stack.enter_context(
                running(bastion.compat.ThreadingHTTPServer, handler)
            )
        yield found


@pytest.mark.parametrize(("handler", "data", "method"), list(cases()))
def test_same_as_the_standard_library(
    ports: dict[tuple[str, str], int], handler: str, data: bytes, method: str
) -> None:
    expected = ask(ports[("stdlib", handler)], data, method.encode())
    actual = ask(ports[("bastion", handler)], data, method.encode())
    assert comparable(actual) == comparable(expected)


def test_header_values_beyond_latin1(ports: dict[tuple[str, str], int]) -> None:
    # The standard library's send_header encodes strictly as Latin-1 and its server drops the
    # connection on the error; Bastion answers that handler error with a 500.
    data = request("GET", "/header/utf8")
    assert ask(ports[("stdlib", "Mirror")], data)[0] == []
    (response,), kept_open = ask(ports[("bastion", "Mirror")], data)
    assert response.status == 500
    assert not kept_open

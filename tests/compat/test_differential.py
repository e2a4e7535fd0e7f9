"""The same handler classes under the standard library's server and under Bastion's.

Every request is sent to both with ``http.client``; status, headers (except Date, Server and
Connection, which Bastion always states explicitly on HTTP/1.1) and body must agree.
"""

from __future__ import annotations

import http.client
import http.server
from typing import Any

import pytest

import bastion.compat
from tests.compat import handlers
from tests.compat.differential import running

_IGNORED = {"date", "server", "connection"}


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[Any, ...]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "text/x-test"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    fields = [(k.lower(), v) for k, v in response.getheaders() if k.lower() not in _IGNORED]
    conn.close()
    return response.status, response.reason, sorted(fields), data


CASES = [
    (handlers.Hello, "GET", "/", None),
    (handlers.Echo, "POST", "/echo", b"some posted bytes"),
    (handlers.Echo, "POST", "/empty", b""),
    (handlers.CustomHeaders, "GET", "/", None),
    (handlers.Errors, "GET", "/missing", None),
    (handlers.Errors, "GET", "/custom", None),
    (handlers.Head, "HEAD", "/", None),
    (handlers.NoLength, "GET", "/", None),
    (handlers.Hello, "PUT", "/", b"x"),  # no do_PUT: 501 from send_error
]


@pytest.mark.parametrize(("handler", "method", "path", "body"), CASES)
def test_same_response_as_the_standard_library(
    handler: type, method: str, path: str, body: bytes | None
) -> None:
    with running(http.server.ThreadingHTTPServer, handler) as port:
        expected = fetch(port, method, path, body)
    with running(bastion.compat.ThreadingHTTPServer, handler) as port:
        actual = fetch(port, method, path, body)
    assert actual == expected


def test_a_raising_handler_gets_500_instead_of_a_dropped_connection() -> None:
    with running(http.server.ThreadingHTTPServer, handlers.Raises) as port:
        with pytest.raises(http.client.RemoteDisconnected):
            fetch(port, "GET", "/", None)
    with running(bastion.compat.ThreadingHTTPServer, handlers.Raises) as port:
        status, _, _, _ = fetch(port, "GET", "/", None)
        assert status == 500
        assert fetch(port, "GET", "/", None)[0] == 500  # and the server keeps serving


def test_plain_http_server_is_also_a_drop_in() -> None:
    with running(http.server.HTTPServer, handlers.Hello) as port:
        expected = fetch(port, "GET", "/", None)
    with running(bastion.compat.HTTPServer, handlers.Hello) as port:
        assert fetch(port, "GET", "/", None) == expected

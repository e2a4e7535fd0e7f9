"""The environ a WSGI application sees, over real connections; and wsgiref's validator."""

from __future__ import annotations

import gc
import http.client
import json
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import WSGIWarning, validator

import httpx
import pytest

from bastion.wsgi import WSGIHandler
from tests.serving import RunningServer, serve
from tests.wsgi.apps import (
    Environ,
    StartResponse,
    environ_app,
    raw_request,
    read_all,
    split_response,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(WSGIHandler(environ_app)) as running:
        yield running


@pytest.fixture(scope="module")
def mounted() -> Iterator[RunningServer]:
    with serve(WSGIHandler(environ_app, root_path="/app/")) as running:
        yield running


def _environ(server: RunningServer, path: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.request(kwargs.pop("method", "GET"), server.url + path, **kwargs)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _raw_environ(server: RunningServer, request: bytes) -> dict[str, Any]:
    status, _, body = split_response(raw_request(server.port, request))
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def test_required_keys(server: RunningServer) -> None:
    env = _environ(server, "/hello/world?a=1&b=%20x")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/hello/world"
    assert env["QUERY_STRING"] == "a=1&b=%20x"  # the query is passed as received
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit()
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["has file_wrapper"] is True
    assert env["HTTP_HOST"] == f"127.0.0.1:{server.port}"
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["REQUEST_URI"] == "/hello/world?a=1&b=%20x"


def test_body_headers_become_content_keys(server: RunningServer) -> None:
    env = _environ(
        server, "/post", method="POST", content=b"x=1", headers={"Content-Type": "text/plain"}
    )
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["body"] == "x=1"


def test_path_info_is_percent_decoded_bytes_as_latin1(server: RunningServer) -> None:
    env = _environ(server, "/caf%C3%A9/a%2Fb%3F")
    assert env["PATH_INFO"] == "/café/a/b?".encode().decode("latin-1")
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b?"
    assert env["REQUEST_URI"] == "/caf%C3%A9/a%2Fb%3F"


def test_duplicate_headers_are_joined_cookies_with_semicolons(server: RunningServer) -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Multi: a\r\nx-multi: b\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nX-Empty: \r\nConnection: close\r\n\r\n"
    )
    env = _raw_environ(server, request)
    assert env["HTTP_X_MULTI"] == "a, b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_EMPTY"] == ""


def test_headers_with_underscores_and_proxy_are_not_passed(server: RunningServer) -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X_Forwarded_For: 6.6.6.6\r\nProxy: http://evil\r\nConnection: close\r\n\r\n"
    )
    env = _raw_environ(server, request)
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert "HTTP_PROXY" not in env


def test_server_name_and_port_from_host_header(server: RunningServer) -> None:
    cases = {
        b"example.com": ("example.com", "80"),
        b"example.com:8080": ("example.com", "8080"),
        b"[::1]:9000": ("[::1]", "9000"),
        b"[::1]": ("[::1]", "80"),
    }
    for host, (name, port) in cases.items():
        env = _raw_environ(server, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port), host


def test_server_name_from_socket_without_host(server: RunningServer) -> None:
    env = _raw_environ(server, b"GET /old HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)


def test_absolute_form_target(server: RunningServer) -> None:
    env = _raw_environ(
        server, b"GET http://example.com/p/q?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    )
    assert env["PATH_INFO"] == "/p/q"
    assert env["QUERY_STRING"] == "x=1"


def test_a_target_seen_again_gives_the_same_environ(
    server: RunningServer, mounted: RunningServer
) -> None:
    # Splitting a target is remembered; what depends on more than its bytes is not.
    for _ in range(2):
        env = _raw_environ(server, b"GET /a%20b/%C3%A9?q=%20 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/a b/\xc3\xa9", "q=%20")
        assert env["REQUEST_URI"] == "/a%20b/%C3%A9?q=%20"
        env = _environ(mounted, "/app/users/1")
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/users/1")
        request = b" http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"
        assert _raw_environ(server, b"OPTIONS" + request)["PATH_INFO"] == "*"
        assert _raw_environ(server, b"GET" + request)["PATH_INFO"] == "/"


def test_root_path_moves_the_prefix_to_script_name(mounted: RunningServer) -> None:
    env = _environ(mounted, "/app/users/1")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/users/1")
    env = _environ(mounted, "/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")
    env = _environ(mounted, "/app/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/")
    # Only at a segment boundary: /application is not under /app.
    env = _environ(mounted, "/application")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/application")
    # A proxy that already removed the prefix: the path is passed whole.
    env = _environ(mounted, "/users/2")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/users/2")


def test_non_ascii_root_path_is_latin1_like_path_info() -> None:
    with serve(WSGIHandler(environ_app, root_path="/café")) as server:
        env = _environ(server, "/caf%C3%A9/x")
    assert env["SCRIPT_NAME"] == "/café".encode().decode("latin-1")
    assert env["PATH_INFO"] == "/x"


# --- wsgiref.validate --------------------------------------------------------------------------


def _checked_app(environ: Environ, start_response: StartResponse) -> Any:
    path = environ["PATH_INFO"]
    if path == "/read":
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        lines = stream.readlines()
        body = b"%d %d %d" % (len(first), len(rest), len(lines))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return iter([b"and ", b"returned"])
    if path == "/generator":

        def generate() -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
            yield b"abc"
            yield b"def"

        return generate()
    if path == "/errors":
        environ["wsgi.errors"].write("validator says hello\n")
        environ["wsgi.errors"].flush()
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def test_validator_finds_nothing_to_complain_about() -> None:
    # What earlier tests left for the garbage collector must not be counted against this one.
    gc.collect()
    unraisable: list[Any] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("error")
            with serve(WSGIHandler(validator(_checked_app))) as server:
                with httpx.Client(base_url=server.url) as client:
                    for path in ("/", "/write", "/generator", "/errors", "/empty"):
                        for method in ("GET", "HEAD"):
                            response = client.request(method, path)
                            assert response.status_code in (200, 204), (path, response.text)
                    response = client.post("/read", content=b"line one\nmore\nlines\n")
                    assert response.text == "9 11 0"
                    assert client.get("/write").text == "written and returned"
                    assert client.get("/generator").text == "abcdef"
                    # A chunked body (no CONTENT_LENGTH) through the validator's input checks.
                    response = client.post("/read", content=iter([b"x\n", b"yz\n"]))
                    assert response.status_code == 200
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
                conn.request("GET", "/", headers={"Connection": "close"})
                assert conn.getresponse().read() == b"ok"
                conn.close()
            gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert not [w for w in caught if issubclass(w.category, WSGIWarning)], caught
    assert not unraisable, [u.exc_value for u in unraisable]


def test_unix_socket_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "wsgi.sock")
    with serve(WSGIHandler(environ_app), binds=("127.0.0.1:0", f"unix:{path}")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /u HTTP/1.0\r\n\r\n")
            status, _, body = split_response(read_all(sock))
    assert status == 200
    env = json.loads(body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("", "")
    assert env["PATH_INFO"] == "/u"

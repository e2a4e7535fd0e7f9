"""Re-framing for a proxy: the request head sent upstream, the response fields passed back.

Sans-IO checks of the rules, then two real upstreams on loopback (a Bastion app, and nginx
where it is installed): a request serialized here goes out on a plain socket, and the reply is
read with the response parser.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion import App, Request, Response
from bastion.http import (
    LAST_CHUNK,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    encode_chunk,
    encode_response_head,
    forward_request_head,
    forward_response_headers,
    forwarding_fields,
    remove_hop_by_hop,
)
from tests.serving import serve


class Requests:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.body = b""

    def on_request(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_request_end(self) -> None:
        pass


def request(data: bytes) -> RequestHead:
    sink = Requests()
    RequestParser(sink).feed(data)
    return sink.heads[0]


def fields_of(wire: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The request line and field lines of a serialized head (parsed again by our own parser)."""
    head = request(wire)
    line = wire.split(b"\r\n", 1)[0]
    return line, head.headers


# Hop-by-hop removal ---------------------------------------------------------------------------


def test_hop_by_hop_fields_and_the_fields_connection_names_are_removed() -> None:
    headers = [
        (b"Host", b"a"),
        (b"Connection", b"keep-alive, X-Secret, upgrade"),
        (b"X-Secret", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-T"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"proxy-connection", b"keep-alive"),
        (b"X-Kept", b"yes"),
        (b"connection", b"x-other"),
        (b"X-Other", b"gone"),
        (b"accept", b"*/*"),
    ]
    assert remove_hop_by_hop(headers) == [(b"Host", b"a"), (b"X-Kept", b"yes"), (b"accept", b"*/*")]
    tunnel = remove_hop_by_hop(headers, keep_upgrade=True)
    assert (b"Upgrade", b"websocket") in tunnel and (b"X-Secret", b"1") not in tunnel


def test_forwarded_request_is_reframed() -> None:
    head = request(
        b"POST /up?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close, X-Drop\r\n"
        b"X-Drop: 1\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nExpect: 100-continue\r\n"
        b"X-Keep: Mixed Case\r\n\r\n"
    )
    line, fields = fields_of(forward_request_head(head, client="192.0.2.1", style="none"))
    assert line == b"POST /up?x=1 HTTP/1.1"
    assert fields == [
        (b"Host", b"example.com"),
        (b"X-Keep", b"Mixed Case"),
        (b"Transfer-Encoding", b"chunked"),
    ]


def test_content_length_from_the_parse_and_never_copied() -> None:
    head = request(b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nHost: h\r\n\r\nabc")
    wire = forward_request_head(head, client=None, style="none")
    assert wire == b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
    buffered = forward_request_head(
        request(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
        client=None,
        style="none",
        content_length=10,
    )
    assert b"Content-Length: 10\r\n" in buffered and b"chunked" not in buffered
    get = forward_request_head(request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), client=None)
    assert b"Content-Length" not in get and b"Transfer-Encoding" not in get


def test_target_host_and_version() -> None:
    absolute = request(b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    line, fields = fields_of(forward_request_head(absolute, client=None, style="none"))
    assert line == b"GET /p?q=1 HTTP/1.1"
    assert fields == [(b"Host", b"example.com:8080")]
    old = request(b"GET /old HTTP/1.0\r\n\r\n")
    with pytest.raises(ValueError, match="Host"):
        forward_request_head(old, client=None)
    line, fields = fields_of(forward_request_head(old, client=None, style="none", host=b"up:80"))
    assert line == b"GET /old HTTP/1.1" and fields == [(b"Host", b"up:80")]
    options = request(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert forward_request_head(options, client=None).startswith(b"OPTIONS * HTTP/1.1\r\n")


def test_websocket_upgrade_is_kept_only_when_tunnelling() -> None:
    head = request(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    plain = forward_request_head(head, client=None, style="none")
    assert b"Upgrade" not in plain and b"Connection" not in plain
    _, fields = fields_of(forward_request_head(head, client=None, style="none", websocket=True))
    assert fields == [
        (b"Host", b"h"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Connection", b"upgrade"),
    ]


def test_unsafe_fields_are_refused() -> None:
    head = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(ValueError):
        forward_request_head(head, client=None, host=b"h\r\nX-Injected: 1")


# Forwarding fields ----------------------------------------------------------------------------

SPOOFED = [
    (b"Host", b"example.com"),
    (b"X-Forwarded-For", b"10.0.0.1"),
    (b"x-forwarded-for", b"10.0.0.2"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Host", b"evil"),
    (b"X-Real-IP", b"10.0.0.3"),
    (b"Forwarded", b"for=10.0.0.4"),
    (b"Accept", b"*/*"),
]


def test_untrusted_client_fields_are_replaced() -> None:
    fields = forwarding_fields(
        SPOOFED, client="203.0.113.7", proto="http", host=b"example.com", trusted=False
    )
    assert fields == [
        (b"Host", b"example.com"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", b"203.0.113.7"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"example.com"),
        (b"Forwarded", b"for=203.0.113.7;proto=http;host=example.com"),
    ]
    # Whatever the style, nothing the client sent survives.
    for style in ("x-forwarded", "forwarded", "none"):
        fields = forwarding_fields(
            SPOOFED, client="203.0.113.7", proto="http", host=None, trusted=False, style=style
        )
        values = b" ".join(value for _, value in fields)
        assert b"10.0.0." not in values and b"evil" not in values and b"https" not in values


def test_trusted_client_fields_are_appended_to() -> None:
    fields = forwarding_fields(
        SPOOFED, client="203.0.113.7", proto="http", host=b"example.com", trusted=True
    )
    assert fields == [
        (b"Host", b"example.com"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil"),
        (b"X-Real-IP", b"10.0.0.3"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", b"10.0.0.1, 10.0.0.2, 203.0.113.7"),
        (b"Forwarded", b"for=10.0.0.4, for=203.0.113.7;proto=http;host=example.com"),
    ]


def test_forwarded_quoting() -> None:
    def forwarded(client: str | None, host: bytes | None) -> bytes:
        fields = forwarding_fields(
            [], client=client, proto="https", host=host, trusted=False, style="forwarded"
        )
        assert [name for name, _ in fields] == [b"Forwarded"]
        return fields[0][1]

    assert forwarded("2001:DB8:0:0::1", None) == b'for="[2001:db8::1]";proto=https'
    assert (
        forwarded("::ffff:192.0.2.1", b"h:8443")
        == b'for="[::ffff:192.0.2.1]";proto=https;host="h:8443"'
    )
    assert forwarded(None, b"h") == b"for=unknown;proto=https;host=h"
    assert forwarded("192.0.2.60", b"[::1]:80") == b'for=192.0.2.60;proto=https;host="[::1]:80"'
    x_forwarded = forwarding_fields(
        [], client="2001:db8::1", proto="http", host=None, trusted=False, style="x-forwarded"
    )
    assert x_forwarded[0] == (b"X-Forwarded-For", b"2001:db8::1")
    with pytest.raises(ValueError):
        forwarded("not-an-address", None)


def test_connection_cannot_drop_the_proxys_own_fields() -> None:
    head = request(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-For, Forwarded, Host\r\n"
        b"X-Forwarded-For: 10.9.9.9\r\n\r\n"
    )
    _, fields = fields_of(forward_request_head(head, client="198.51.100.2"))
    assert (b"Host", b"h") in fields
    assert (b"X-Forwarded-For", b"198.51.100.2") in fields
    assert (b"Forwarded", b"for=198.51.100.2;proto=http;host=h") in fields


# The response side ----------------------------------------------------------------------------


def response_head(data: bytes, method: str = "GET", upgrade: bool = False) -> ResponseHead:
    heads: list[ResponseHead] = []

    class Sink:
        def on_informational(self, head: ResponseHead) -> None: ...
        def on_response(self, head: ResponseHead) -> None:
            heads.append(head)

        def on_body(self, data: bytes) -> None: ...
        def on_response_end(self) -> None: ...

    parser = ResponseParser(Sink())
    parser.expect(method, upgrade=upgrade)
    parser.feed(data)
    return heads[0]


def test_response_fields_are_cleaned_in_order() -> None:
    head = response_head(
        b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n"
        b"Proxy-Authenticate: Basic\r\nset-cookie: b=2\r\n\r\n"
    )
    assert forward_response_headers(head) == [
        (b"Server", b"up"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    head = response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", method="HEAD")
    assert forward_response_headers(head) == [(b"Content-Length", b"42")]


def test_switching_protocols_response_keeps_upgrade() -> None:
    head = response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        upgrade=True,
    )
    fields = forward_response_headers(head)
    assert encode_response_head(head, fields) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nConnection: upgrade\r\n\r\n"
    )


# Real upstreams -------------------------------------------------------------------------------


class Collected:
    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.bodies: list[bytes] = []
        self.ended = 0

    def on_informational(self, head: ResponseHead) -> None: ...

    def on_response(self, head: ResponseHead) -> None:
        self.heads.append(head)
        self.bodies.append(b"")

    def on_body(self, data: bytes) -> None:
        self.bodies[-1] += data

    def on_response_end(self) -> None:
        self.ended += 1


def exchange(address: tuple[str, int], wire: bytes, methods: list[str]) -> Collected:
    """Send ``wire`` (one or more pipelined requests) and parse until every answer ended."""
    sink = Collected()
    parser = ResponseParser(sink)
    for method in methods:
        parser.expect(method)
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(wire)
        while sink.ended < len(methods):
            data = sock.recv(65536)
            if not data:
                parser.feed_eof()
                break
            parser.feed(data)
    assert sink.ended == len(methods)
    assert parser.reusable
    return sink


def client_requests() -> tuple[bytes, list[str]]:
    """What a client sent the proxy (with spoofing and hop-by-hop fields), re-framed."""
    head = request(
        b"POST /echo?x=1 HTTP/1.1\r\nHost: proxy.test\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: s\r\nX-Forwarded-For: 10.6.6.6\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    post = forward_request_head(head, client="198.51.100.9", proto="https")
    post += encode_chunk(b"hello ") + encode_chunk(b"upstream") + LAST_CHUNK
    get = request(b"HEAD /echo HTTP/1.1\r\nHost: proxy.test\r\nTE: trailers\r\n\r\n")
    return post + forward_request_head(get, client="198.51.100.9"), ["POST", "HEAD"]


def echo_app() -> App:
    app = App()

    @app.route("/echo", methods=("POST", "GET", "HEAD"))
    async def echo(request: Request) -> Response:
        seen = {name.lower(): value for name, value in request.headers.items()}
        body = await request.body()
        return Response(
            json.dumps({"headers": seen, "body": body.decode()}).encode(),
            headers={"content-type": "application/json"},
        )

    return app


def test_bastion_upstream() -> None:
    wire, methods = client_requests()
    with serve(echo_app()) as server:
        sink = exchange((server.host, server.port), wire, methods)
    post, head = sink.heads
    assert post.status == 200 and head.status == 200
    echoed = json.loads(sink.bodies[0])
    assert echoed["body"] == "hello upstream"
    seen = echoed["headers"]
    assert seen["x-forwarded-for"] == "198.51.100.9"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["forwarded"] == "for=198.51.100.9;proto=https;host=proxy.test"
    assert "x-secret" not in seen and "connection" not in seen
    assert head.content_length is not None and not head.has_body and sink.bodies[1] == b""


# What the nginx upstream answers on /echo: the fields a spoofing client tried, as nginx saw them.
NGINX_ECHO = (
    "xff=$http_x_forwarded_for fwd=$http_forwarded secret=$http_x_secret te=$http_transfer_encoding"
)
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture
def nginx() -> Iterator[tuple[str, int]]:
    if NGINX is None:
        pytest.skip("nginx is not installed: the nginx upstream test needs /usr/sbin/nginx")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as root:
        conf = Path(root, "nginx.conf")
        conf.write_text(
            f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /echo {{
            return 200 "{NGINX_ECHO}\\n";
        }}
    }}
}}
"""
        )
        process = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", root],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        error = process.stderr.read() if process.stderr else b""
                        pytest.skip(f"nginx did not start: {error.decode(errors='replace')}")
                    time.sleep(0.02)
            yield ("127.0.0.1", port)
        finally:
            process.terminate()
            process.wait(5)


def test_nginx_upstream(nginx: tuple[str, int]) -> None:
    wire, methods = client_requests()
    sink = exchange(nginx, wire, methods)
    post, head = sink.heads
    assert post.status == 200 and head.status == 200
    assert sink.bodies[0] == (
        b"xff=198.51.100.9 fwd=for=198.51.100.9;proto=https;host=proxy.test secret= te=chunked\n"
    )
    assert head.content_length is not None and not head.has_body and sink.bodies[1] == b""

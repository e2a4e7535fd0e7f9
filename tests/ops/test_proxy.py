"""Proxy headers: believed from trusted peers only, walked right to left past our proxies."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.engine.proxy import (
    TrustedPeers,
    choose_client,
    forwarded_hops,
    parse_forwarded,
    parse_node,
    x_forwarded_hops,
)
from tests.ops.running import Supervisor, supervisor, wait_for_lines
from tests.serving import read_response

TRUSTED = "127.0.0.1,10.0.0.0/8"


def test_trusted_peers() -> None:
    peers = TrustedPeers(["127.0.0.1, 10.0.0.0/8", "2001:db8::/32"])
    assert peers.trusts("127.0.0.1") and peers.trusts("10.20.30.40")
    assert peers.trusts("::ffff:127.0.0.1")  # IPv4-mapped, as a dual-stack socket reports it
    assert peers.trusts("2001:db8::1")
    assert not peers.trusts("127.0.0.2") and not peers.trusts("unknown")
    assert not peers.trusts_peer(None)
    assert TrustedPeers(["unix"]).trusts_peer(None)
    assert TrustedPeers(["*"]).trusts("203.0.113.9")
    with pytest.raises(ValueError, match="not an IP address"):
        TrustedPeers(["10.0.0.300"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", [{"for": "192.0.2.60", "proto": "http",
                                                       "by": "203.0.113.43"}]),
        ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        ('for="_gazonk\\"x"; proto=https', [{"for": '_gazonk"x', "proto": "https"}]),
        ('for="unterminated', None),
        ("for", None),
        ("for=1.2.3.4;for=5.6.7.8", None),
    ],
)  # fmt: skip
def test_parse_forwarded(value: str, expected: list[dict[str, str]] | None) -> None:
    assert parse_forwarded(value) == expected


def test_parse_node() -> None:
    assert parse_node("192.0.2.1") == ("192.0.2.1", 0)
    assert parse_node("192.0.2.1:8080") == ("192.0.2.1", 8080)
    assert parse_node("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_node("2001:db8::1") == ("2001:db8::1", 0)
    assert parse_node("unknown") == ("unknown", 0)
    assert parse_node("1.2.3.4:99999") == ("1.2.3.4", 0)


def test_the_chain_is_walked_right_to_left() -> None:
    peers = TrustedPeers([TRUSTED])
    hops = x_forwarded_hops(["6.6.6.6", "203.0.113.7", "10.1.2.3"], ["http", "https", "http"], [])
    assert hops is not None
    client = choose_client(hops, peers)
    assert client is not None and (client.host, client.proto) == ("203.0.113.7", "https")
    # Counts that do not line up: the rightmost proto (from our own proxy) applies.
    hops = x_forwarded_hops(["6.6.6.6", "203.0.113.7"], ["https"], ["a.example", "b.example"])
    assert hops is not None
    client = choose_client(hops, peers)
    assert client is not None and (client.proto, client.hostname) == ("https", "b.example")
    # Every hop trusted: the leftmost is the client.
    hops = forwarded_hops("for=10.9.9.9, for=10.0.0.1")
    assert hops is not None
    client = choose_client(hops, peers)
    assert client is not None and client.host == "10.9.9.9"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Supervisor, Path]]:
    log = tmp_path_factory.mktemp("log") / "access.log"
    args = (
        "--bind", "127.0.0.1:0", "--proxy-headers", "--forwarded-allow-ips", TRUSTED,
        "--access-log", "--access-log-file", str(log), "--access-log-format", "%h %a %U",
    )  # fmt: skip
    with supervisor("tests.ops.apps:app", *args) as proc:
        yield proc, log


def ask(port: int, headers: str, source: str = "127.0.0.1", path: str = "/whoami") -> dict:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: inner:8000\r\n{headers}\r\n".encode())
        status, _, body = read_response(sock)
    assert status == 200
    return json.loads(body)


def test_a_trusted_proxy_names_the_client_scheme_and_host(
    proxied: tuple[Supervisor, Path],
) -> None:
    proc, _ = proxied
    seen = ask(
        proc.port,
        "X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.1.2.3\r\n"
        "X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example\r\n",
    )
    assert seen == {"client": ["203.0.113.7", 0], "scheme": "https", "host": "public.example"}
    seen = ask(
        proc.port,
        'Forwarded: for=6.6.6.6;proto=http, for="[2001:db8::7]:4711";proto=https;'
        "host=public.example, for=10.0.0.5\r\n",
    )
    assert seen == {"client": ["2001:db8::7", 4711], "scheme": "https", "host": "public.example"}
    # Forwarded wins over X-Forwarded-*.
    seen = ask(proc.port, "Forwarded: for=198.51.100.1\r\nX-Forwarded-For: 6.6.6.6\r\n")
    assert seen["client"] == ["198.51.100.1", 0]
    # Only a proto: the peer is the client, the scheme changes.
    seen = ask(proc.port, "X-Forwarded-Proto: https\r\n")
    assert seen == {"client": [seen["client"][0], seen["client"][1]], "scheme": "https",
                    "host": "inner:8000"}  # fmt: skip
    assert seen["client"][0] == "127.0.0.1"


def test_headers_from_an_untrusted_peer_are_ignored(proxied: tuple[Supervisor, Path]) -> None:
    proc, _ = proxied
    seen = ask(
        proc.port,
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
        "X-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6;proto=https\r\n",
        source="127.0.0.2",
    )
    assert seen["client"][0] == "127.0.0.2"
    assert seen["scheme"] == "http" and seen["host"] == "inner:8000"


def test_the_access_log_shows_the_client_and_the_peer(proxied: tuple[Supervisor, Path]) -> None:
    proc, log = proxied
    ask(proc.port, "X-Forwarded-For: 203.0.113.99\r\n", path="/whoami?logged")
    ask(proc.port, "X-Forwarded-For: 203.0.113.98\r\n", source="127.0.0.2", path="/whoami")
    expected = ["203.0.113.99 127.0.0.1 /whoami", "127.0.0.2 127.0.0.2 /whoami"]
    lines = wait_for_lines(log, lambda lines: all(line in lines for line in expected))
    assert all(line in lines for line in expected), lines


def test_wsgi_applications_see_the_forwarded_client() -> None:
    args = ("--bind", "127.0.0.1:0", "--proxy-headers", "--interface", "wsgi")
    with supervisor("tests.ops.apps:wsgi", *args) as proc:
        seen = ask(proc.port, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
        assert seen == {"REMOTE_ADDR": "203.0.113.7", "url_scheme": "https",
                        "HTTP_HOST": "inner:8000"}  # fmt: skip
        seen = ask(proc.port, "X-Forwarded-For: 203.0.113.7\r\n", source="127.0.0.2")
        assert seen["REMOTE_ADDR"] == "127.0.0.2" and seen["url_scheme"] == "http"


def test_without_the_option_nothing_is_believed() -> None:
    with supervisor("tests.ops.apps:app", "--bind", "127.0.0.1:0") as proc:
        seen = ask(proc.port, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
        assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http"


def test_asgi_applications_see_the_forwarded_client() -> None:
    args = ("--bind", "127.0.0.1:0", "--proxy-headers", "--interface", "asgi")
    with supervisor("tests.ops.apps:asgi", *args) as proc:
        seen = ask(proc.port, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
        assert seen == {"client": "203.0.113.7", "scheme": "https"}

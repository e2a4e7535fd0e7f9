"""Request-target forms and Host values the parser accepts, and what the head makes of them.

The refusals live in the table of ``test_parser.py``; here are the valid spellings (RFC 9112
§3.2, RFC 9110 §7.2) and the path, query and authority every adapter routes by.
"""

from __future__ import annotations

import pytest

from bastion.http import RequestHead, RequestParser
from bastion.http.parser import is_valid_authority
from tests.http.test_parser import Recorder, byte_by_byte, refusal


def head_of(data: bytes, *, split: bool = False) -> RequestHead:
    sink = Recorder()
    parser = RequestParser(sink)
    for piece in byte_by_byte(data) if split else [data]:
        parser.feed(piece)
    (head,) = sink.heads
    return head


@pytest.mark.parametrize(
    "value",
    [
        b"example.com",
        b"EXAMPLE.com",
        b"example.com.",
        b"localhost",
        b"a",
        b"example.com:80",
        b"example.com:080",
        b"example.com:0",
        b"example.com:65535",
        b"127.0.0.1",
        b"127.0.0.1:8080",
        b"999.1.1.1",  # not an IPv4 address, but a valid reg-name
        b"xn--bcher-kva.example",
        b"under_score.example",
        b"tilde~.example",
        b"ex%41mple.com",
        b"a!$&'()*+;=b",
        b"[::1]",
        b"[::1]:8443",
        b"[2001:db8::1]",
        b"[::ffff:192.0.2.1]",
        b"[v1.fe80::a+en1]",
    ],
)
def test_valid_host_values_are_accepted(value: bytes) -> None:
    head = head_of(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")
    assert head.get("host") == value.decode("latin-1")
    assert head.authority == value.decode("latin-1")
    assert is_valid_authority(value)


def test_host_whitespace_around_the_value_is_not_part_of_it() -> None:
    head = head_of(b"GET / HTTP/1.1\r\nHost:   example.com \t \r\n\r\n")
    assert head.authority == "example.com"


def test_host_name_is_case_insensitive() -> None:
    head = head_of(b"GET / HTTP/1.1\r\nhOsT: example.com\r\n\r\n")
    assert head.authority == "example.com"


def test_http10_may_omit_host() -> None:
    head = head_of(b"GET / HTTP/1.0\r\n\r\n")
    assert head.authority is None


def test_origin_form_keeps_its_path_and_query() -> None:
    head = head_of(b"GET /a/b%20c?x=1&y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (head.path, head.raw_path, head.query_string) == ("/a/b c", b"/a/b%20c", b"x=1&y")


def test_double_slash_is_an_origin_form_path() -> None:
    # absolute-path = 1*( "/" segment ) and a segment may be empty: "//x" is a path, not an
    # authority, and routes as one.
    head = head_of(b"GET //x/y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (head.path, head.raw_path, head.authority) == ("//x/y", b"//x/y", "h")


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query", "authority"),
    [
        (b"http://example.com/a/b?x=1", "/a/b", b"/a/b", b"x=1", "example.com"),
        (b"https://example.com/a", "/a", b"/a", b"", "example.com"),
        (b"HTTP://Example.COM/a", "/a", b"/a", b"", "Example.COM"),
        (b"hTTpS://example.com/", "/", b"/", b"", "example.com"),
        (b"http://example.com", "/", b"/", b"", "example.com"),
        (b"http://example.com?q=1", "/", b"/", b"q=1", "example.com"),
        (b"http://example.com:8080/p%2Fq", "/p/q", b"/p%2Fq", b"", "example.com:8080"),
        (b"http://[::1]:80/v6", "/v6", b"/v6", b"", "[::1]:80"),
        (b"http://127.0.0.1/", "/", b"/", b"", "127.0.0.1"),
        (b"http://h//double", "//double", b"//double", b"", "h"),
        (b"http://h/a?b=http://c/d", "/a", b"/a", b"b=http://c/d", "h"),
    ],
)
def test_absolute_form_routes_by_its_path(
    target: bytes, path: str, raw_path: bytes, query: bytes, authority: str
) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: other.example\r\n\r\n"
    for split in (False, True):
        head = head_of(request, split=split)
        assert head.target == target  # the raw target is kept as sent
        assert (head.path, head.raw_path, head.query_string) == (path, raw_path, query)
        # RFC 9112 §3.2.2: the target's authority wins over the received Host.
        assert head.authority == authority
        assert head.get_all("host") == [authority]
        assert [name for name, _ in head.headers] == [b"Host"]


def test_absolute_form_keeps_the_host_field_name_as_sent() -> None:
    head = head_of(b"GET http://a.example/ HTTP/1.1\r\nX: 1\r\nhost: b.example\r\nY: 2\r\n\r\n")
    assert head.headers == [(b"X", b"1"), (b"host", b"a.example"), (b"Y", b"2")]


def test_absolute_form_on_http10_without_host_gets_the_targets_authority() -> None:
    head = head_of(b"GET http://a.example:81/x HTTP/1.0\r\n\r\n")
    assert head.authority == "a.example:81"
    assert head.path == "/x"


def test_absolute_form_still_needs_one_host_on_http11() -> None:
    assert refusal(b"GET http://a.example/ HTTP/1.1\r\n\r\n").status == 400


def test_absolute_form_in_a_pipeline_does_not_leak_into_the_next_request() -> None:
    sink = Recorder()
    RequestParser(sink).feed(
        b"GET http://a.example/one?q HTTP/1.1\r\nHost: b\r\n\r\n"
        b"GET /two HTTP/1.1\r\nHost: c\r\n\r\n"
    )
    first, second = sink.heads
    assert (first.path, first.query_string, first.authority) == ("/one", b"q", "a.example")
    assert (second.path, second.query_string, second.authority) == ("/two", b"", "c")


def test_asterisk_form_for_options() -> None:
    head = head_of(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (head.target, head.path, head.raw_path, head.query_string) == (b"*", "*", b"*", b"")


def test_absolute_form_options_without_a_path_is_the_server_wide_options() -> None:
    # RFC 9112 §3.2.4: "OPTIONS http://h HTTP/1.1" is how a proxy's client asks for "*".
    head = head_of(b"OPTIONS http://h HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head.path == "*"
    head = head_of(b"OPTIONS http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert head.path == "/"


@pytest.mark.parametrize(
    "value",
    [b"", b"a b", b"a,b", b"u@h", b"h/p", b"h:", b"h:65536", b"[::1", b"[fe80::1%25x]", b"h\xff"],
)
def test_is_valid_authority_refuses(value: bytes) -> None:
    assert not is_valid_authority(value)

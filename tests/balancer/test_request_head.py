"""The head the balancer sends upstream: built once per distinct set of client fields."""

from __future__ import annotations

import pytest

from bastion.http import RequestHead, forward_request_head, forwarding
from tests.http.test_forwarding import fields_of, request

ID = (b"X-Request-ID", b"0123456789abcdef")


def test_same_fields_give_the_same_head_with_a_new_request_id() -> None:
    head = request(b"GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n")
    first = forward_request_head(head, client="192.0.2.1", request_id=ID)
    again = forward_request_head(
        request(b"GET /b HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"),
        client="192.0.2.1",
        request_id=(b"X-Request-ID", b"fedcba9876543210"),
    )
    assert first.replace(b"/a", b"/b").replace(ID[1], b"fedcba9876543210") == again
    line, fields = fields_of(first)
    assert line == b"GET /a HTTP/1.1"
    assert fields[-1] == ID
    # Another client, another field, another proto: never the block built for the first.
    other = forward_request_head(head, client="192.0.2.2", request_id=ID)
    assert b"X-Forwarded-For: 192.0.2.2\r\n" in other
    https = forward_request_head(head, client="192.0.2.1", proto="https", request_id=ID)
    assert b"X-Forwarded-Proto: https\r\n" in https


def test_a_request_id_the_client_sent_is_kept_in_any_case() -> None:
    head = request(b"GET / HTTP/1.1\r\nHost: h\r\nx-request-id: mine\r\n\r\n")
    _, fields = fields_of(forward_request_head(head, client=None, style="none", request_id=ID))
    assert fields == [(b"Host", b"h"), (b"x-request-id", b"mine")]


def test_fields_changed_after_a_forward_are_framed_again() -> None:
    head = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    forward_request_head(head, client=None, style="none")
    head.headers[0] = (b"Host", b"changed")
    _, fields = fields_of(forward_request_head(head, client=None, style="none"))
    assert fields == [(b"Host", b"changed")]


def test_unsafe_fields_are_refused_every_time() -> None:
    head = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    for _ in range(2):
        # The name was accepted before: each value is still checked.
        forward_request_head(head, client=None, request_id=(b"X-Request-ID", b"0123abcd"))
        for value in (b"a\r\nX: 1", b"a\rb", b"a\nb", b"a\x00b"):
            with pytest.raises(ValueError):
                forward_request_head(head, client=None, request_id=(b"X-Request-ID", value))
        with pytest.raises(ValueError):
            forward_request_head(head, client=None, request_id=(b"X Request", b"v"))
        with pytest.raises(ValueError):
            forward_request_head(head, client=None, extra=[(b"Bad Name", b"v")])
        with pytest.raises(ValueError):
            forward_request_head(head, client=None, host=b"h\r\nX-Injected: 1")
    built = RequestHead(
        "GET", b"/", "1.1", [(b"Host", b"h"), (b"X", b"a\nb")], True, None, False, False
    )
    with pytest.raises(ValueError):
        forward_request_head(built, client=None)


def test_target_is_checked_on_every_request() -> None:
    head = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    forward_request_head(head, client=None)
    with pytest.raises(ValueError, match="target"):
        forward_request_head(head, client=None, target=b"/a b")


def test_large_field_sets_are_framed_but_not_kept() -> None:
    head = request(b"GET / HTTP/1.1\r\nHost: h\r\nCookie: " + b"c" * 5000 + b"\r\n\r\n")
    for _ in range(2):
        _, fields = fields_of(forward_request_head(head, client=None, style="none"))
        assert fields == [(b"Host", b"h"), (b"Cookie", b"c" * 5000)]
    kept = forwarding._FIELD_BLOCKS.values()
    assert all(len(block) <= forwarding._FIELD_BLOCK_MAX_BYTES for block, _ in kept)
    assert len(forwarding._FIELD_BLOCKS) <= forwarding._FIELD_BLOCKS_LIMIT

"""The opening handshake as a table: request bytes in, a Handshake or an HTTP refusal out."""

from __future__ import annotations

import pytest

from bastion.http import RequestHead, RequestParser
from bastion.websocket import HandshakeRefused, asks_websocket, check_handshake
from bastion.websocket.handshake import accept_value, response_head
from tests.websocket.support import KEY, handshake_request


class _Heads:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def head_of(request: bytes) -> RequestHead:
    sink = _Heads()
    RequestParser(sink).feed(request)
    return sink.heads[0]


def test_rfc_6455_sample_key() -> None:
    # RFC 6455 §1.3's own example.
    assert accept_value(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_handshake() -> None:
    head = head_of(handshake_request("/ws", "Sec-WebSocket-Protocol: chat, superchat"))
    assert asks_websocket(head)
    handshake = check_handshake(head)
    assert handshake.key == KEY.encode()
    assert handshake.subprotocols == ["chat", "superchat"]
    assert handshake.extensions == []


def test_header_names_and_tokens_are_case_insensitive() -> None:
    request = (
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n"
        b"sec-websocket-key: " + KEY.encode() + b"\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n"
    )
    assert check_handshake(head_of(request)).key == KEY.encode()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(handshake_request(key="abc"), 400, id="short-key"),
        pytest.param(handshake_request(key="A" * 24), 400, id="key-not-base64-16"),
        pytest.param(handshake_request("/ws", f"Sec-WebSocket-Key: {KEY}"), 400, id="two-keys"),
        pytest.param(handshake_request(version="8"), 426, id="version-8"),
        pytest.param(handshake_request("/ws", "Sec-WebSocket-Version: 13"), 426, id="two-versions"),
        pytest.param(handshake_request().replace(b"GET", b"PUT", 1), 400, id="method"),
        pytest.param(handshake_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400, id="http-1.0"),
        pytest.param(
            handshake_request("/ws", "Sec-WebSocket-Protocol: a b"), 400, id="bad-subprotocol"
        ),
        pytest.param(
            handshake_request("/ws", "Sec-WebSocket-Extensions: ;;"), 400, id="bad-extensions"
        ),
    ],
)
def test_refused(request_bytes: bytes, status: int) -> None:
    with pytest.raises(HandshakeRefused) as refused:
        check_handshake(head_of(request_bytes))
    assert refused.value.status == status
    if status == 426:
        assert ("sec-websocket-version", "13") in refused.value.headers


def test_without_connection_upgrade_it_is_no_upgrade() -> None:
    request = handshake_request().replace(b"Connection: Upgrade", b"Connection: keep-alive")
    assert not asks_websocket(head_of(request))


def test_deflate_offer_accepted_only_with_compression_on() -> None:
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    head = head_of(handshake_request("/ws", offer))
    on = check_handshake(head, compression=True)
    assert on.extensions_answer is not None
    assert on.extensions_answer.startswith("permessage-deflate")
    assert len(on.extensions) == 1
    off = check_handshake(head, compression=False)
    assert (off.extensions_answer, off.extensions) == (None, [])


def test_unknown_extensions_are_declined() -> None:
    head = head_of(handshake_request("/ws", "Sec-WebSocket-Extensions: x-webkit-frobnicate"))
    assert check_handshake(head).extensions_answer is None


def test_response_head() -> None:
    handshake = check_handshake(head_of(handshake_request("/ws", "Sec-WebSocket-Protocol: chat")))
    head = response_head(
        handshake,
        subprotocol="chat",
        headers=[("x-one", "1"), ("Connection", "close"), ("Sec-WebSocket-Accept", "forged")],
        server_lines=b"server: t\r\n",
    )
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    assert b"sec-websocket-accept: " + accept_value(KEY.encode()) in lines
    assert b"sec-websocket-protocol: chat" in lines
    assert b"x-one: 1" in lines
    assert b"server: t" in lines
    assert head.endswith(b"\r\n\r\n")
    # What the handshake itself decides cannot be overridden by the application.
    assert b"Connection: close" not in lines and b"Sec-WebSocket-Accept: forged" not in lines


def test_response_head_refuses_a_subprotocol_not_offered() -> None:
    handshake = check_handshake(head_of(handshake_request()))
    with pytest.raises(ValueError):
        response_head(handshake, subprotocol="chat", headers=(), server_lines=b"")


def test_response_head_refuses_header_injection() -> None:
    handshake = check_handshake(head_of(handshake_request()))
    with pytest.raises(ValueError):
        response_head(
            handshake, subprotocol=None, headers=[("x", "a\r\nevil: 1")], server_lines=b""
        )

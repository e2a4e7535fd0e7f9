"""What a broken client gets: the RFC's close code or a 400, never a crash or a stuck socket.

Frames are written by hand on a plain socket, since no client library sends them wrong.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bastion.engine import ServerConfig
from bastion.websocket import WebSocketConfig
from tests.serving import RunningServer, read_until_close, serve, status_of
from tests.websocket.support import (
    BINARY,
    CLOSE,
    CONT,
    KEY,
    PING,
    PONG,
    TEXT,
    close_payload,
    closed_by_server,
    echo_app,
    frame,
    handshake_request,
    open_raw,
    read_close,
    read_frame,
)

app = echo_app(WebSocketConfig(max_message_size=64 * 1024, max_frame_size=16 * 1024))


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(app, ServerConfig(write_timeout=1.0)) as running:
        yield running


def fails_with(server: RunningServer, code: int, *frames: bytes) -> None:
    """Send ``frames`` after the handshake; the server must close with ``code``, then the
    TCP connection."""
    with open_raw(server) as sock:
        sock.sendall(b"".join(frames))
        assert read_close(sock) == code
        assert closed_by_server(sock)


def test_a_good_exchange_first(server: RunningServer) -> None:
    with open_raw(server) as sock:
        sock.sendall(frame(TEXT, b"hello"))
        assert read_frame(sock) == (TEXT, b"hello")
        sock.sendall(frame(PING, b"p"))
        assert read_frame(sock) == (PONG, b"p")
        sock.sendall(frame(CLOSE, close_payload(1000)))
        assert read_close(sock) == 1000
        assert closed_by_server(sock)


def test_unmasked_client_frame(server: RunningServer) -> None:
    fails_with(server, 1002, frame(TEXT, b"hi", mask=False))


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_without_an_extension(server: RunningServer, rsv: int) -> None:
    fails_with(server, 1002, frame(TEXT, b"hi", rsv=rsv))


def test_fragmented_control_frame(server: RunningServer) -> None:
    fails_with(server, 1002, frame(PING, b"p", fin=False))


def test_control_frame_over_125_bytes(server: RunningServer) -> None:
    fails_with(server, 1002, frame(PING, b"x" * 126))


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode(server: RunningServer, opcode: int) -> None:
    fails_with(server, 1002, frame(opcode, b"x"))


def test_invalid_utf8_in_a_text_frame(server: RunningServer) -> None:
    fails_with(server, 1007, frame(TEXT, b"ok \xff\xfe"))


def test_invalid_utf8_fails_at_the_first_bad_fragment(server: RunningServer) -> None:
    # The message never ends: the server must not wait for its end to find the bad byte.
    fails_with(server, 1007, frame(TEXT, b"fine", fin=False), frame(CONT, b"\xc0\xaf", fin=False))


def test_utf8_split_across_fragments_is_fine(server: RunningServer) -> None:
    snowman = "☃".encode()
    with open_raw(server) as sock:
        sock.sendall(frame(TEXT, snowman[:1], fin=False) + frame(CONT, snowman[1:]))
        assert read_frame(sock) == (TEXT, snowman)


def test_truncated_utf8_at_the_end_of_a_message(server: RunningServer) -> None:
    fails_with(server, 1007, frame(TEXT, "☃".encode()[:2]))


def test_continuation_without_a_start(server: RunningServer) -> None:
    fails_with(server, 1002, frame(CONT, b"orphan"))


def test_new_message_inside_a_fragmented_one(server: RunningServer) -> None:
    fails_with(server, 1002, frame(TEXT, b"a", fin=False), frame(BINARY, b"b"))


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000])
def test_bad_close_codes(server: RunningServer, code: int) -> None:
    fails_with(server, 1002, frame(CLOSE, close_payload(code)))


def test_close_payload_of_one_byte(server: RunningServer) -> None:
    fails_with(server, 1002, frame(CLOSE, b"\x03"))


def test_close_reason_not_utf8(server: RunningServer) -> None:
    fails_with(server, 1007, frame(CLOSE, close_payload(1000, b"\xff")))


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_good_close_codes_are_echoed(server: RunningServer, code: int) -> None:
    with open_raw(server) as sock:
        sock.sendall(frame(CLOSE, close_payload(code, b"why")))
        assert read_close(sock) == code
        assert closed_by_server(sock)


def test_frame_over_the_frame_limit(server: RunningServer) -> None:
    # Announced, not sent: the server refuses on the header, before buffering a payload.
    with open_raw(server) as sock:
        sock.sendall(frame(BINARY, b"", length=16 * 1024 + 1))
        assert read_close(sock) == 1009
        assert closed_by_server(sock)


def test_message_over_the_message_limit_in_small_frames(server: RunningServer) -> None:
    piece = b"x" * 8192
    frames = [frame(BINARY, piece, fin=False)]
    frames += [frame(CONT, piece, fin=False) for _ in range(8)]
    fails_with(server, 1009, *frames)


def test_huge_announced_length(server: RunningServer) -> None:
    fails_with(server, 1009, frame(BINARY, b"", length=1 << 62))


def test_garbage_after_the_handshake(server: RunningServer) -> None:
    with open_raw(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_close(sock) == 1002
        assert closed_by_server(sock)


def test_eof_without_a_close_frame(server: RunningServer) -> None:
    with open_raw(server) as sock:
        sock.sendall(frame(TEXT, b"partial", fin=False))
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_server(sock)
    # The server is fine afterwards.
    with open_raw(server) as sock:
        sock.sendall(frame(TEXT, b"again"))
        assert read_frame(sock) == (TEXT, b"again")


# the handshake -------------------------------------------------------------------------------


def refused(server: RunningServer, request: bytes) -> bytes:
    with server.connect() as sock:
        sock.sendall(request)
        return read_until_close(sock)


@pytest.mark.parametrize(
    "key",
    ["", "short", "AAAAAAAAAAAAAAAAAAAAAA", "!!!!!!!!!!!!!!!!!!!!!!==", KEY + "AAAA"],
)
def test_bad_key_is_400(server: RunningServer, key: str) -> None:
    assert status_of(refused(server, handshake_request(key=key))) == 400


def test_two_keys_is_400(server: RunningServer) -> None:
    request = handshake_request("/ws", f"Sec-WebSocket-Key: {KEY}")
    assert status_of(refused(server, request)) == 400


@pytest.mark.parametrize("version", ["8", "12", "14", "", "13, 8"])
def test_bad_version_is_426_naming_13(server: RunningServer, version: str) -> None:
    answer = refused(server, handshake_request(version=version))
    assert status_of(answer) == 426
    assert b"\r\nsec-websocket-version: 13\r\n" in answer.lower()


def test_post_is_400(server: RunningServer) -> None:
    request = handshake_request().replace(b"GET ", b"POST ", 1)
    assert status_of(refused(server, request)) == 400


def test_http_10_is_400(server: RunningServer) -> None:
    request = handshake_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    assert status_of(refused(server, request)) == 400


def test_upgrade_to_something_else_is_not_a_websocket(server: RunningServer) -> None:
    request = handshake_request().replace(b"Upgrade: websocket", b"Upgrade: h2c", 1)
    assert status_of(refused(server, request)) == 426


def test_malformed_extension_offer_is_400(server: RunningServer) -> None:
    request = handshake_request("/ws", "Sec-WebSocket-Extensions: permessage-deflate; =x")
    assert status_of(refused(server, request)) == 400


# a client that stops reading ------------------------------------------------------------------


def test_client_that_stops_reading_is_bounded_by_the_write_timeout(server: RunningServer) -> None:
    with open_raw(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = b"y" * 15000
        # Echoes pile up in the server's send buffer: it stops reading us, then gives up.
        sock.settimeout(10)
        try:
            for _ in range(2000):
                sock.sendall(frame(BINARY, big))
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
        assert closed_by_server(sock, timeout=10)


def test_close_between_fragments_is_a_normal_close(server: RunningServer) -> None:
    # RFC 6455 §5.4: control frames may come between fragments; the unfinished message is
    # dropped and the close answered with the peer's code.
    with open_raw(server) as sock:
        sock.sendall(frame(TEXT, b"frag", fin=False) + frame(CLOSE, close_payload(1000)))
        assert read_close(sock) == 1000
        assert closed_by_server(sock)


def test_ping_between_fragments_is_answered(server: RunningServer) -> None:
    with open_raw(server) as sock:
        sock.sendall(frame(TEXT, b"one ", fin=False) + frame(PING, b"in between"))
        assert read_frame(sock) == (PONG, b"in between")
        sock.sendall(frame(CONT, b"message"))
        assert read_frame(sock) == (TEXT, b"one message")

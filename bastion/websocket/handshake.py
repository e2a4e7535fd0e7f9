"""The opening handshake (RFC 6455 §4.2), checked on the request head the engine parsed.

Sans-IO: a :class:`~bastion.http.RequestHead` in, a :class:`Handshake` (what the client
offered) or a :class:`HandshakeRefused` (the HTTP answer to give instead) out, and the 101
response head as bytes. Every check happens before the application sees the request, so an
application is only ever handed a handshake it can accept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence

from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.headers import build_extension, parse_extension, parse_subprotocol

from bastion.http import RequestHead, encode_headers

# RFC 6455 §1.3: the server proves it read the key by hashing it with this GUID.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
# Fields the server writes itself; an application's accept headers may not override them.
_OWN_FIELDS = frozenset(
    (
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
        "transfer-encoding",
    )
)


class HandshakeRefused(Exception):
    """The request is not a handshake we can accept; ``status`` and ``headers`` answer it."""

    def __init__(self, status: int, detail: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = list(headers)


class Handshake:
    """A valid opening handshake: its key, the subprotocols the client offered, and the
    extensions agreed on (the Sec-WebSocket-Extensions answer, and the objects to run)."""

    __slots__ = ("key", "subprotocols", "extensions_answer", "extensions")

    def __init__(
        self,
        key: bytes,
        subprotocols: list[str],
        extensions_answer: str | None = None,
        extensions: Sequence[Extension] = (),
    ) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.extensions_answer = extensions_answer
        self.extensions = list(extensions)


def _tokens(values: Iterable[str]) -> list[str]:
    return [token.strip().lower() for value in values for token in value.split(",")]


def asks_websocket(head: RequestHead) -> bool:
    """True for a request that wants to upgrade to WebSocket (valid or not)."""
    return head.upgrade and "websocket" in _tokens(head.get_all("upgrade"))


def check_handshake(head: RequestHead, compression: bool = True) -> Handshake:
    """Check ``head`` against RFC 6455 §4.2.1; raise :class:`HandshakeRefused` if it fails.

    With ``compression``, a ``permessage-deflate`` offer is accepted (RFC 7692).

    The engine's parser sets ``head.upgrade`` only when ``Connection`` names ``upgrade`` and
    an ``Upgrade`` field is present; the rest is checked here. A version other than 13 gets
    426 with the version we speak (§4.4), so a client can retry with it.
    """
    if head.method != "GET":
        raise HandshakeRefused(400, "a WebSocket handshake must use GET")
    if head.version != "1.1":
        raise HandshakeRefused(400, "a WebSocket handshake needs HTTP/1.1")
    if not asks_websocket(head):
        raise HandshakeRefused(
            426,
            "this resource speaks WebSocket only",
            [("upgrade", "websocket"), ("connection", "Upgrade")],
        )
    versions = head.get_all("sec-websocket-version")
    if len(versions) != 1 or versions[0].strip() != "13":
        raise HandshakeRefused(
            426, "unsupported Sec-WebSocket-Version", [("sec-websocket-version", "13")]
        )
    keys = head.get_all("sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeRefused(400, "a WebSocket handshake needs one Sec-WebSocket-Key")
    key = keys[0].strip().encode("latin-1")
    try:
        nonce = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeRefused(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    try:
        subprotocols = [
            str(name) for value in head.get_all("sec-websocket-protocol")
            for name in parse_subprotocol(value)
        ]  # fmt: skip
    except InvalidHeader:
        raise HandshakeRefused(400, "malformed Sec-WebSocket-Protocol") from None
    answer, extensions = negotiate_extensions(head.get_all("sec-websocket-extensions"), compression)
    return Handshake(key, subprotocols, answer, extensions)


def accept_value(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for ``key`` (RFC 6455 §4.2.2, step 5.4)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def deflate_factory() -> ServerPerMessageDeflateFactory:
    # 4 KiB windows and memLevel 5: what the websockets library itself picks for servers,
    # trading a little ratio for a sixth of zlib's default memory per connection.
    return ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
    )


def negotiate_extensions(
    offers: list[str], compression: bool
) -> tuple[str | None, list[Extension]]:
    """The Sec-WebSocket-Extensions answer and the extensions to run, from the client's offers.

    Only ``permessage-deflate`` is known; the first acceptable offer of it wins (RFC 7692
    §5.1), others are declined by leaving them out of the answer.
    """
    if not offers or not compression:
        return None, []
    try:
        parsed = [item for value in offers for item in parse_extension(value)]
    except InvalidHeader:
        raise HandshakeRefused(400, "malformed Sec-WebSocket-Extensions") from None
    factory = deflate_factory()
    for name, params in parsed:
        if name != factory.name:
            continue
        try:
            answer, extension = factory.process_request_params(params, [])
        except NegotiationError:
            continue
        return build_extension([(name, answer)]), [extension]
    return None, []


def response_head(
    handshake: Handshake,
    *,
    subprotocol: str | None,
    headers: Iterable[tuple[str, str]],
    server_lines: bytes,
) -> bytes:
    """The complete 101 response head; ``headers`` are the application's extra fields.

    Raises ``ValueError`` for a subprotocol the client did not offer (RFC 6455 §4.2.2: the
    client would fail the connection) or a header that could split the response.
    """
    if subprotocol is not None and subprotocol not in handshake.subprotocols:
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    parts = [_SWITCHING, b"sec-websocket-accept: ", accept_value(handshake.key), b"\r\n"]
    if subprotocol is not None:
        parts.append(encode_headers([("sec-websocket-protocol", subprotocol)]))
    if handshake.extensions_answer is not None:
        parts.append(encode_headers([("sec-websocket-extensions", handshake.extensions_answer)]))
    extra = [(name, value) for name, value in headers if name.lower() not in _OWN_FIELDS]
    if extra:
        parts.append(encode_headers(extra))
    parts.append(server_lines)
    parts.append(b"\r\n")
    return b"".join(parts)

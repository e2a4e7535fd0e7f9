"""Re-framing for a reverse proxy: the request it sends upstream, the response it passes back.

A proxy never copies a client's framing. The request head it sends is built from what the
server's parser accepted: origin-form target, HTTP/1.1, the end-to-end fields in their order
and case, and a ``Content-Length`` or ``Transfer-Encoding: chunked`` of its own (the body is
streamed as the engine decoded it). So the upstream sees one framing, chosen by Bastion, and
nothing a client wrote can make it read two requests where Bastion saw one.

Hop-by-hop fields (RFC 9110 §7.6.1) are removed in both directions: ``Connection`` and every
field it names, ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade`` (unless
a WebSocket is being tunnelled) and ``Proxy-*``. Removing them before the forwarding fields are
added means a client cannot name ``X-Forwarded-For`` in ``Connection`` to drop the proxy's own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final, Literal

from bastion.http.request import RequestHead
from bastion.http.response import encode_header, status_line
from bastion.http.upstream import ResponseHead

Header = tuple[bytes, bytes]
ForwardingStyle = Literal["both", "x-forwarded", "forwarded", "none"]

_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Fields that decide where a forwarded request's body ends, or that the proxy answers itself:
# the engine answers "Expect: 100-continue" to the client, and forwarding it would have the
# upstream wait for a go-ahead the proxy is not listening for.
_REFRAMED: Final = frozenset({b"content-length", b"expect"})
_NOT_FORWARDED: Final = _HOP_BY_HOP | _REFRAMED
# What must not appear where a proxy writes a client's fields, or they could split the message
# (the server's parser already refuses them; a head built by hand might not have been parsed).
_NOT_TOKEN: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")
# What a client may send to claim an address, scheme or host it does not have. Applications
# read any of them (Werkzeug's ProxyFix reads the X-Forwarded-* family, others X-Real-IP), so
# all are dropped when the client is not a trusted proxy, whichever the proxy sets itself.
_FORWARDING: Final = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)
# RFC 7230 §3.2.6 tchar: a Forwarded value made only of these needs no quotes.
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def connection_options(value: bytes) -> list[bytes]:
    """The field names a ``Connection`` value makes hop-by-hop, lowercased, beyond those that
    always are (``keep-alive``, ``upgrade``, ...) and the ``close`` option."""
    options = []
    for token in value.split(b","):
        token = token.strip(b" \t").lower()
        if token and token not in _HOP_BY_HOP and token != b"close":
            options.append(token)
    return options


def remove_hop_by_hop(
    headers: Iterable[Header], *, keep_upgrade: bool = False, keep: frozenset[bytes] = frozenset()
) -> list[Header]:
    """The end-to-end fields of ``headers``, in order and with their case.

    ``keep_upgrade`` keeps ``Upgrade`` (and it alone of what ``Connection`` names) for a
    protocol switch that is tunnelled end to end; ``keep`` lists lowercase names never removed,
    even when ``Connection`` names them (``host`` for a request: it cannot be forwarded
    without one).
    """
    headers = list(headers)
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(connection_options(value))
    named -= keep
    if keep_upgrade:
        named.discard(b"upgrade")
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in named or lowered.startswith(b"proxy-"):
            continue
        if lowered in _HOP_BY_HOP and not (keep_upgrade and lowered == b"upgrade"):
            continue
        kept.append((name, value))
    return kept


def forwarding_fields(
    headers: Iterable[Header],
    *,
    client: str | None,
    proto: str,
    host: bytes | None,
    trusted: bool,
    style: ForwardingStyle = "both",
) -> list[Header]:
    """``headers`` with ``X-Forwarded-For``/``-Proto``/``-Host`` and/or ``Forwarded`` set.

    ``client`` is the address the request came from (an IP literal; None when there is none,
    as on a Unix socket; ValueError for anything else), ``proto`` the scheme it came in on,
    ``host`` the Host it asked for; ``style`` picks the fields set ("none" sets no field).

    From an untrusted client every forwarding field it sent is dropped, whatever the style, so
    none can reach the upstream as if this proxy had set it. A trusted client (another proxy in
    front of this one) keeps its fields: this hop is appended to ``X-Forwarded-For`` and
    ``Forwarded`` (RFC 7239 §4), joined into one line at the end (RFC 9110 §5.3 makes that
    equivalent to several), and the ``X-Forwarded-Proto``/``-Host`` it set stay as they are.
    """
    x_forwarded = style in ("both", "x-forwarded")
    forwarded = style in ("both", "forwarded")
    appended = {b"x-forwarded-for"} if x_forwarded else set()
    if forwarded:
        appended.add(b"forwarded")
    kept: list[Header] = []
    earlier: dict[bytes, list[bytes]] = {b"x-forwarded-for": [], b"forwarded": []}
    present: set[bytes] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _FORWARDING:
            kept.append((name, value))
        elif trusted:
            present.add(lowered)
            if lowered in appended:
                earlier[lowered].append(value)
            else:
                kept.append((name, value))
    node = _node(client)
    if x_forwarded:
        address = node.strip('"[]').encode("ascii")
        kept.append((b"X-Forwarded-For", b", ".join([*earlier[b"x-forwarded-for"], address])))
        if b"x-forwarded-proto" not in present:
            kept.append((b"X-Forwarded-Proto", proto.encode("ascii")))
        if b"x-forwarded-host" not in present and host is not None:
            kept.append((b"X-Forwarded-Host", host))
    if forwarded:
        element = [f"for={node}", f"proto={_quoted(proto)}"]
        if host is not None:
            element.append(f"host={_quoted(host.decode('latin-1'))}")
        this_hop = ";".join(element).encode("latin-1")
        kept.append((b"Forwarded", b", ".join([*earlier[b"forwarded"], this_hop])))
    return kept


def _node(client: str | None) -> str:
    """An RFC 7239 §6 node for ``client``: IPv4 bare, IPv6 bracketed and quoted."""
    if client is None:
        return "unknown"
    address = ipaddress.ip_address(client.strip("[]"))
    if address.version == 6:
        # RFC 5952 §5's mixed notation for an IPv4-mapped address, as Python 3.13 writes it
        # and older versions do not: the same field whichever Python runs the balancer.
        mapped = address.ipv4_mapped
        text = f"::ffff:{mapped}" if mapped is not None else address.compressed
        # ":" is not a token character, so an IPv6 node is always a quoted string.
        return f'"[{text}]"'
    return address.compressed


def _quoted(value: str) -> str:
    """A Forwarded parameter value: a token as it is, anything else a quoted string."""
    if value and all(c in _TOKEN_CHARS for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def origin_form(head: RequestHead) -> bytes:
    """The target to send upstream: origin-form (``/path?query``), or ``*`` for OPTIONS *.

    For an absolute-form target the server's parser already checked the authority and put it
    in the Host field; upstream, the path and query are enough.
    """
    target = head.target
    if target[:1] == b"/" or target == b"*":
        return target
    path = head.raw_path
    return path + b"?" + head.query_string if b"?" in target else path


def forward_request_head(
    head: RequestHead,
    *,
    client: str | None,
    proto: str = "http",
    trusted: bool = False,
    style: ForwardingStyle = "both",
    host: bytes | None = None,
    websocket: bool = False,
    content_length: int | None = None,
    extra: Iterable[Header] = (),
    target: bytes | None = None,
    request_id: Header | None = None,
) -> bytes:
    """The request head a proxy sends upstream for ``head``, ending with its empty line.

    Framing comes from what the server parsed, never from the client's fields: a
    ``Content-Length`` when the length is known (``content_length`` overrides it, for a body
    the proxy buffered), ``Transfer-Encoding: chunked`` when the client's body was chunked, and
    neither for a request without a body. The proxy then sends the body in that framing
    (:func:`bastion.http.encode_chunk` and :data:`bastion.http.LAST_CHUNK` for chunked).

    ``host`` replaces the Host field (and gives one to an HTTP/1.0 request that had none); the
    forwarding fields always describe the Host the client asked for. ``websocket`` keeps the
    client's ``Upgrade`` and sends ``Connection: upgrade``, for a tunnel; without it, a request
    that asked to upgrade is forwarded as a plain request. ``request_id`` (a name and a value)
    is added after the forwarding fields unless the client sent a field of that name (in any
    case); ``extra`` fields are added after it. ``target`` replaces the origin-form target (a
    path with a route's prefix taken off). Raises ValueError when no Host is known, or when a
    field would not serialize safely.

    The client's fields with this hop's forwarding fields are built once per distinct set:
    most clients send the same fields on every request, and re-framing them again would
    give the same bytes.
    """
    tunnel = websocket and head.upgrade
    if target is None:
        target = origin_form(head)
    id_name = request_id[0].lower() if request_id is not None else b""
    key = (tuple(head.headers), client, proto, trusted, style, host, tunnel, id_name)
    found = _FIELD_BLOCKS.get(key)
    if found is None:
        found = _field_block(head, client, proto, trusted, style, host, tunnel, id_name)
        if len(found[0]) <= _FIELD_BLOCK_MAX_BYTES:
            if len(_FIELD_BLOCKS) >= _FIELD_BLOCKS_LIMIT:
                _FIELD_BLOCKS.clear()
            _FIELD_BLOCKS[key] = found
    block, has_id = found
    if _BAD_TARGET.search(target):
        raise ValueError("invalid character in the request target")
    lines = [b"%s %s HTTP/1.1\r\n" % (head.method.encode("ascii"), target), block]
    if request_id is not None and not has_id:
        lines.append(_checked_line(request_id))
    for field in extra:
        lines.append(_checked_line(field))
    if tunnel:
        lines.append(b"Connection: upgrade\r\n")
    if content_length is None:
        content_length = head.content_length
    if content_length is not None:
        lines.append(b"Content-Length: %d\r\n" % content_length)
    elif head.chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


# Field blocks already built, by (the client's fields, and every argument they depend on).
_FIELD_BLOCKS: Final[
    dict[
        tuple[tuple[Header, ...], str | None, str, bool, str, bytes | None, bool, bytes],
        tuple[bytes, bool],
    ]
] = {}
# Bounded in count and in size: a block (and its key, the fields it was built from) over a
# few KiB is rebuilt each time, so the cache holds a few MiB at most whatever clients send.
_FIELD_BLOCKS_LIMIT: Final = 512
_FIELD_BLOCK_MAX_BYTES: Final = 4096


def _checked_line(field: Header) -> bytes:
    name, value = field
    # The names are a proxy's own few (its request-id field), so each is checked once; the
    # value is new with every request.
    if name not in _CHECKED_NAMES:
        if _NOT_TOKEN.search(name):
            return _line(name, value)  # raises ValueError
        if len(_CHECKED_NAMES) < _CHECKED_NAMES_LIMIT:
            _CHECKED_NAMES.add(name)
    if _unsafe_value(value):
        return _line(name, value)  # raises ValueError
    return b"%s: %s\r\n" % field


def _unsafe_value(value: bytes) -> bool:
    """Whether ``value`` holds a CR, LF or NUL, any of which could split the message."""
    # Byte values, not one-byte strings: CPython's ``bytes in bytes`` first tries the needle
    # as an integer, and raising and clearing that TypeError costs more than the search; and
    # three byte searches cost less than a pattern's.
    return 13 in value or 10 in value or 0 in value


# Field names _checked_line found to be tokens.
_CHECKED_NAMES: Final[set[bytes]] = set()
_CHECKED_NAMES_LIMIT: Final = 64


def _field_block(
    head: RequestHead,
    client: str | None,
    proto: str,
    trusted: bool,
    style: ForwardingStyle,
    host: bytes | None,
    tunnel: bool,
    id_name: bytes,
) -> tuple[bytes, bool]:
    """The field lines of the forwarded head, up to and with the forwarding fields, and
    whether the client sent a field named ``id_name``."""
    # One pass over the client's fields: what is dropped outright, what Connection names
    # (dropped after the pass, as it may come last), and the forwarding fields a trusted
    # client may have set.
    named: set[bytes] | None = None
    fields: list[tuple[bytes, bytes, bytes]] = []
    sent_forwarding: list[tuple[bytes, bytes, bytes]] = []
    asked: bytes | None = None
    has_id = False
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == id_name:
            has_id = True
        if lowered in _NOT_FORWARDED:
            if lowered == b"connection":
                options = connection_options(value)
                if options:
                    named = named or set()
                    named.update(options)
            elif tunnel and lowered == b"upgrade":
                fields.append((lowered, name, value))
            continue
        if lowered in _FORWARDING:
            if trusted:
                sent_forwarding.append((lowered, name, value))
            continue
        if lowered[:6] == b"proxy-":
            continue
        if lowered == b"host" and asked is None:
            asked = value
        fields.append((lowered, name, value))
    if named:
        named.discard(b"host")
        if tunnel:
            named.discard(b"upgrade")
        fields = [field for field in fields if field[0] not in named]
        sent_forwarding = [field for field in sent_forwarding if field[0] not in named]
    lines = []
    have_host = False
    for lowered, name, value in fields:
        if lowered == b"host":
            if have_host:
                continue
            have_host = True
            if host is not None:
                value = host
        lines.append(b"%s: %s\r\n" % (name, value))
    if not have_host:
        if host is None:
            raise ValueError("the request has no Host field: pass host=")
        lines.insert(0, b"Host: %s\r\n" % host)
    if sent_forwarding:
        hop = forwarding_fields(
            [(name, value) for _, name, value in sent_forwarding],
            client=client,
            proto=proto,
            host=asked,
            trusted=True,
            style=style,
        )
        lines.extend(b"%s: %s\r\n" % field for field in hop)
    else:
        lines.append(_this_hop(client, proto, asked, style))
    _check_safe(fields, host)
    return b"".join(lines), has_id


def _check_safe(fields: list[tuple[bytes, bytes, bytes]], host: bytes | None) -> None:
    """ValueError if a field could split the head; a few searches over joined parts."""
    names = []
    values = []
    for _, name, value in fields:
        names.append(name)
        values.append(value)
    if _NOT_TOKEN.search(b"".join(names)) or _unsafe_value(b"".join(values)):
        for _, name, value in fields:
            _line(name, value)
    if host is not None and _unsafe_value(host):
        raise ValueError("invalid character in the Host value")


@lru_cache(maxsize=4096)
def _this_hop(client: str | None, proto: str, host: bytes | None, style: ForwardingStyle) -> bytes:
    """The forwarding fields this proxy sets for a client it does not trust: they depend on
    nothing else, and a busy proxy sees the same few clients and hosts again and again."""
    fields = forwarding_fields(
        (), client=client, proto=proto, host=host, trusted=False, style=style
    )
    return b"".join(_line(name, value) for name, value in fields)


def forward_response_headers(head: ResponseHead) -> list[Header]:
    """The fields of an upstream's response to pass on to the client, in order and case.

    Hop-by-hop fields are removed; ``Content-Length`` stays (on a response to HEAD or a 304 it
    is the representation's, and elsewhere the body passed on has exactly that length).
    For an accepted 101, ``Upgrade`` stays and ``Connection: upgrade`` is added back, so the
    client sees the protocol switch it asked for.
    """
    fields = remove_hop_by_hop(head.headers, keep_upgrade=head.upgrade)
    if head.upgrade:
        fields.append((b"Connection", b"upgrade"))
    return fields


def encode_response_head(head: ResponseHead, fields: Iterable[Header]) -> bytes:
    """``HTTP/1.1 <status> <reason>``, ``fields`` and the empty line, each field checked.

    For a proxy that writes the response head itself (a 101 before a tunnel, say); the framing
    of any body that follows is the caller's to add to ``fields``.
    """
    reason = head.reason.decode("latin-1")
    lines = [status_line(head.status, reason)]
    lines.extend(_line(name, value) for name, value in fields)
    lines.append(b"\r\n")
    return b"".join(lines)


def _line(name: bytes, value: bytes) -> bytes:
    """One field line, refused (ValueError) if it could split the message."""
    return encode_header(name.decode("latin-1"), value.decode("latin-1"))

"""Proxy headers: the real client and scheme of a request that came through a trusted proxy.

Behind a reverse proxy every connection comes from the proxy. The proxy reports the client in
``Forwarded`` (RFC 7239) or ``X-Forwarded-For``/``-Proto``/``-Host``; those are believed only
when the connection comes from an address in ``forwarded_allow_ips``. Each proxy appends the
address it received from, so the chain is walked right to left, skipping hops that are
themselves trusted proxies: the first untrusted hop is the client. Anything to its left was
written by that client and is ignored, which is what makes a spoofed header harmless.

``Forwarded`` wins when both kinds are present. The result lands on the exchange
(``forwarded_client``/``forwarded_scheme``; a forwarded host replaces the ``Host`` header), so
handlers, WSGI ``REMOTE_ADDR``/``wsgi.url_scheme``, ASGI ``client``/``scheme`` and the access
log all see it. With the option off none of this code runs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bastion.engine.handler import Handler, HandlerWrapper

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED = b"forwarded"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"
_XFH = b"x-forwarded-host"
_WANTED = frozenset((_FORWARDED, _XFF, _XFP, _XFH))
_SCHEMES = {"http": "http", "https": "https"}
# A Host value: reg-name or IP literal characters and an optional port, nothing else.
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%:\[\]-]{1,255}")
_CACHE_LIMIT = 1024


class TrustedPeers:
    """Which peers may speak for a client: addresses and networks, ``unix``, or ``*``."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.any = False
        self.unix = False
        self.networks: list[Network] = []
        for item in entries:
            for entry in item.split(","):
                entry = entry.strip()
                if not entry:
                    continue
                if entry == "*":
                    self.any = True
                elif entry.lower() == "unix":
                    self.unix = True
                else:
                    try:
                        self.networks.append(ipaddress.ip_network(entry, strict=False))
                    except ValueError:
                        raise ValueError(
                            f"{entry!r} is not an IP address, a CIDR network, 'unix' or '*'"
                        ) from None
        self._cache: dict[str, bool] = {}

    def trusts(self, host: str) -> bool:
        """Whether the address ``host`` (text, as in a socket address or a header) is trusted."""
        known = self._cache.get(host)
        if known is not None:
            return known
        trusted = self.any or self._match(host)
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[host] = trusted
        return trusted

    def trusts_peer(self, peer: tuple[str, int] | None) -> bool:
        """The connection's peer; ``None`` is a Unix-socket peer."""
        if peer is None:
            return self.any or self.unix
        return self.trusts(peer[0])

    def _match(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class ProxyHeaders(HandlerWrapper):
    """Wraps a handler: applies trusted proxy headers to each exchange before it runs."""

    def __init__(self, inner: Handler, trusted: TrustedPeers) -> None:
        super().__init__(inner)
        self.trusted = trusted
        self._handle = inner.handle

    def handle(self, exchange: Exchange) -> None:
        apply_proxy_headers(exchange, self.trusted)
        self._handle(exchange)


def apply_proxy_headers(exchange: Exchange, trusted: TrustedPeers) -> None:
    """Set the exchange's forwarded client/scheme/host from a trusted peer's headers."""
    if not trusted.trusts_peer(exchange.conn.client):
        return
    head = exchange.head
    found: dict[bytes, list[str]] = {}
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in _WANTED:
            found.setdefault(lowered, []).append(value.decode("latin-1"))
    if not found:
        return
    hops: list[Hop] | None = None
    if _FORWARDED in found:
        hops = forwarded_hops(", ".join(found[_FORWARDED]))
    elif _XFF in found:
        hops = x_forwarded_hops(
            _split_list(found[_XFF]), _split_list(found.get(_XFP)), _split_list(found.get(_XFH))
        )
    if hops is None:
        # Only -Proto/-Host (or an unreadable Forwarded): the peer itself is the client.
        protos, hosts = _split_list(found.get(_XFP)), _split_list(found.get(_XFH))
        _set_scheme(exchange, protos[-1] if protos else None)
        _set_host(exchange, hosts[-1] if hosts else None)
        return
    hop = choose_client(hops, trusted)
    if hop is None:
        return
    exchange.forwarded_client = (hop.host, hop.port)
    _set_scheme(exchange, hop.proto)
    _set_host(exchange, hop.hostname)


class Hop:
    """One step of a forwarding chain: the address a proxy received from, and what it saw."""

    __slots__ = ("host", "port", "proto", "hostname")

    def __init__(
        self, host: str, port: int = 0, proto: str | None = None, hostname: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.proto = proto
        self.hostname = hostname

    def __repr__(self) -> str:
        return f"Hop({self.host!r}, {self.port}, {self.proto!r}, {self.hostname!r})"


def choose_client(hops: list[Hop], trusted: TrustedPeers) -> Hop | None:
    """Walk right to left past trusted proxies; the first other hop is the client."""
    for index in range(len(hops) - 1, -1, -1):
        hop = hops[index]
        if index == 0 or not trusted.trusts(hop.host):
            return hop
    return None


def x_forwarded_hops(fors: list[str], protos: list[str], hosts: list[str]) -> list[Hop] | None:
    """Hops from ``X-Forwarded-For``; proto and host line up with them when the counts match,
    else the rightmost value (the one our trusted peer wrote) applies to every hop."""
    if not fors:
        return None
    hops = []
    for index, node in enumerate(fors):
        host, port = parse_node(node)
        proto = _aligned(protos, index, len(fors))
        hostname = _aligned(hosts, index, len(fors))
        hops.append(Hop(host, port, proto, hostname))
    return hops


def _aligned(values: list[str], index: int, count: int) -> str | None:
    if not values:
        return None
    return values[index] if len(values) == count else values[-1]


def forwarded_hops(value: str) -> list[Hop] | None:
    """Hops from an RFC 7239 ``Forwarded`` value; ``None`` when it does not parse."""
    elements = parse_forwarded(value)
    if not elements:
        return None
    hops = []
    for element in elements:
        node = element.get("for")
        if node is None:
            return None  # a hop that does not say whom it received from: the chain is broken
        host, port = parse_node(node)
        hops.append(Hop(host, port, element.get("proto"), element.get("host")))
    return hops


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """``for=1.2.3.4;proto=https, for="[::1]:80"`` → one dict per element (names lowercased)."""
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    i, size = 0, len(value)
    while i < size:
        char = value[i]
        if char in " \t;":
            i += 1
            continue
        if char == ",":
            elements.append(pairs)
            pairs = {}
            i += 1
            continue
        equals = value.find("=", i)
        if equals < 0:
            return None
        name = value[i:equals].strip().lower()
        if not name or any(c in name for c in ' \t",;'):
            return None
        i = equals + 1
        if i < size and value[i] == '"':
            i += 1
            text = []
            while i < size and value[i] != '"':
                if value[i] == "\\" and i + 1 < size:
                    i += 1
                text.append(value[i])
                i += 1
            if i >= size:
                return None  # unterminated quoted-string
            i += 1
            item = "".join(text)
        else:
            end = i
            while end < size and value[end] not in ";, \t":
                end += 1
            item = value[i:end]
            i = end
        if name in pairs:
            return None  # RFC 7239 §4: a parameter must not occur twice in one element
        pairs[name] = item
    elements.append(pairs)
    return [element for element in elements if element] or None


def parse_node(node: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``, ``unknown`` → (host, port)."""
    node = node.strip()
    if node.startswith("["):
        end = node.find("]")
        if end > 0:
            host, rest = node[1:end], node[end + 1 :]
            return host, _port(rest[1:]) if rest.startswith(":") else 0
        return node, 0
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        return host, _port(port)
    return node, 0


def _port(text: str) -> int:
    if text.isdigit() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return 0


def _split_list(values: list[str] | None) -> list[str]:
    if not values:
        return []
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _set_scheme(exchange: Exchange, proto: str | None) -> None:
    if proto:
        scheme = _SCHEMES.get(proto.strip().lower())
        if scheme is not None:
            exchange.forwarded_scheme = scheme


def _set_host(exchange: Exchange, host: str | None) -> None:
    if not host or _HOST.fullmatch(host) is None:
        return
    encoded = host.encode("latin-1")
    headers = exchange.head.headers
    for index, (name, _) in enumerate(headers):
        if name.lower() == b"host":
            headers[index] = (name, encoded)
            return
    headers.append((b"Host", encoded))
